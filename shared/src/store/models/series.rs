//! Pure arithmetic over read-model series: bucket completeness, follower
//! counts from audience facts, and spikes against a key's own baseline.

use std::collections::BTreeMap;

use super::{Granularity, Spike};

/// A bucket is complete once its end plus the grace period is at or before
/// the watermark.
pub fn is_complete(
    start: u32,
    granularity: Granularity,
    grace_seconds: u32,
    watermark: u32,
) -> bool {
    start
        .saturating_add(granularity.seconds())
        .saturating_add(grace_seconds)
        <= watermark
}

/// One audience fact: a follow (+1), an unfollow (-1) or a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudienceFact {
    pub at: u32,
    pub follows: i8,
    pub snapshot: Option<i64>,
}

/// Followers at `at` (inclusive): the latest snapshot at or before it, plus
/// follows and unfollows after that snapshot up to `at`. `facts` are in
/// event-time order.
pub fn followers_at(facts: &[AudienceFact], at: u32) -> i64 {
    let upto: Vec<&AudienceFact> = facts.iter().filter(|f| f.at <= at).collect();
    let last_snapshot = upto.iter().rposition(|f| f.snapshot.is_some());
    let (base, rest) = match last_snapshot {
        Some(i) => (upto[i].snapshot.unwrap_or(0), &upto[i + 1..]),
        None => (0, &upto[..]),
    };
    base + rest.iter().map(|f| i64::from(f.follows)).sum::<i64>()
}

/// Followers at the end of each day that overlaps `[from, to)` (days start
/// at midnight UTC); empty for an empty range.
pub fn follower_series(facts: &[AudienceFact], from: u32, to: u32) -> Vec<(u32, i64)> {
    let day = 86_400;
    let mut series = Vec::new();
    if from >= to {
        return series;
    }
    let mut start = from / day * day;
    while start < to {
        series.push((start, followers_at(facts, start.saturating_add(day - 1))));
        start = match start.checked_add(day) {
            Some(next) => next,
            None => break,
        };
    }
    series
}

/// When a bucket counts as a spike.
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeRule {
    /// Buckets before it that form the baseline.
    pub window: usize,
    /// Fewest baseline buckets needed to judge.
    pub min_history: usize,
    /// Standard deviations above the mean.
    pub sigmas: f64,
    /// Smallest value that can be a spike at all.
    pub min_value: i64,
}

impl Default for SpikeRule {
    fn default() -> SpikeRule {
        SpikeRule {
            window: 24,
            min_history: 6,
            sigmas: 3.0,
            min_value: 10,
        }
    }
}

/// Spikes in a series of (bucket start, value), sorted by start, with
/// missing buckets meaning zero: a bucket is a spike when its value is at
/// least `min_value` and above mean + `sigmas` × standard deviation of the
/// `window` buckets before it.
pub fn spikes(series: &[(u32, i64)], granularity: Granularity, rule: &SpikeRule) -> Vec<Spike> {
    let step = granularity.seconds();
    let Some(&(first, _)) = series.first() else {
        return Vec::new();
    };
    let values: BTreeMap<u32, i64> = series.iter().copied().collect();
    let mut found = Vec::new();
    for &(start, value) in series {
        if value < rule.min_value {
            continue;
        }
        let history: Vec<f64> = (1..=rule.window as u32)
            .filter_map(|back| start.checked_sub(back * step))
            .filter(|at| *at >= first)
            .map(|at| *values.get(&at).unwrap_or(&0) as f64)
            .collect();
        if history.len() < rule.min_history {
            continue;
        }
        let mean = history.iter().sum::<f64>() / history.len() as f64;
        let variance =
            history.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / history.len() as f64;
        let stddev = variance.sqrt();
        if value as f64 > mean + rule.sigmas * stddev.max(1.0) {
            found.push(Spike {
                influencer_id: String::new(),
                start,
                value,
                baseline_mean: mean,
                baseline_stddev: stddev,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::models::{Counters, Metric};

    fn fact(at: u32, follows: i8, snapshot: Option<i64>) -> AudienceFact {
        AudienceFact {
            at,
            follows,
            snapshot,
        }
    }

    #[test]
    fn followers_start_from_the_latest_snapshot() {
        let facts = [
            fact(10, 1, None),
            fact(20, 1, None),
            fact(30, 0, Some(1_000)),
            fact(40, 1, None),
            fact(50, -1, None),
            fact(60, 1, None),
        ];
        assert_eq!(followers_at(&facts, 25), 2);
        assert_eq!(followers_at(&facts, 30), 1_000);
        assert_eq!(followers_at(&facts, 55), 1_000);
        assert_eq!(followers_at(&facts, u32::MAX), 1_001);
        assert_eq!(followers_at(&[], 100), 0);
    }

    #[test]
    fn the_follower_series_has_one_point_per_day() {
        let day = 86_400;
        let facts = [
            fact(day / 2, 0, Some(100)),
            fact(day + 5, 1, None),
            fact(day + 6, 1, None),
            fact(3 * day + 1, -1, None),
        ];
        assert_eq!(
            follower_series(&facts, 0, 4 * day),
            vec![(0, 100), (day, 102), (2 * day, 102), (3 * day, 101)]
        );
        assert!(follower_series(&facts, 5, 5).is_empty());
    }

    #[test]
    fn completeness_needs_the_bucket_end_and_grace_behind_the_watermark() {
        assert!(!is_complete(0, Granularity::Minute, 30, 89));
        assert!(is_complete(0, Granularity::Minute, 30, 90));
        assert!(!is_complete(0, Granularity::Day, 0, 86_399));
        assert!(is_complete(u32::MAX - 10, Granularity::Hour, 60, u32::MAX));
    }

    #[test]
    fn a_spike_stands_out_against_its_own_baseline() {
        let hour = 3_600;
        let mut series: Vec<(u32, i64)> =
            (0..12).map(|i| (i * hour, 10 + i64::from(i % 3))).collect();
        series.push((12 * hour, 60));
        series.push((13 * hour, 12));
        let found = spikes(&series, Granularity::Hour, &SpikeRule::default());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].start, found[0].value), (12 * hour, 60));
        assert!((found[0].baseline_mean - 11.0).abs() < 1e-9);
    }

    #[test]
    fn no_spike_without_history_or_below_the_floor() {
        let hour = 3_600;
        let short: Vec<(u32, i64)> = vec![(0, 1), (hour, 1), (2 * hour, 500)];
        assert!(spikes(&short, Granularity::Hour, &SpikeRule::default()).is_empty());
        let quiet: Vec<(u32, i64)> = (0..10)
            .map(|i| (i * hour, 0))
            .chain([(10 * hour, 9)])
            .collect();
        assert!(spikes(&quiet, Granularity::Hour, &SpikeRule::default()).is_empty());
        // Missing buckets count as zero in the baseline.
        let sparse: Vec<(u32, i64)> = vec![(0, 1), (20 * hour, 40)];
        assert_eq!(
            spikes(&sparse, Granularity::Hour, &SpikeRule::default()).len(),
            1
        );
    }

    #[test]
    fn metric_names_round_trip() {
        for metric in Metric::ALL {
            assert_eq!(Metric::parse(metric.as_str()), Some(metric));
        }
        assert_eq!(Metric::parse("likes; DROP TABLE"), None);
        assert_eq!(Granularity::parse("hour"), Some(Granularity::Hour));
        assert_eq!(Granularity::parse("week"), None);
    }

    #[test]
    fn rates_are_zero_without_a_denominator() {
        let c = Counters::default();
        assert_eq!(
            (c.ctr(), c.conversion_rate(), c.engagement_rate()),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(c.sentiment(), None);
        let c = Counters {
            likes: 3,
            shares: 1,
            comments: 2,
            views: 60,
            clicks: 6,
            conversions: 3,
            sentiment_sum: 1_000,
            events: 0,
        };
        assert_eq!(
            (c.ctr(), c.conversion_rate(), c.engagement_rate()),
            (0.1, 0.5, 0.1)
        );
        assert_eq!(c.sentiment(), Some(0.5));
    }
}

//! Small pieces the benchmarks share: latency percentiles and a summary.

use std::time::Duration;

/// The `p`-th percentile (0–100) of `samples` by nearest rank: the
/// smallest sample at or above `p`% of them. `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `p50 / p99 / max` in milliseconds, for a table.
pub fn summary(samples: &[Duration]) -> String {
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    format!(
        "p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (n={})",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0)),
        ms(samples.iter().max().copied()),
        samples.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
        let few = ms(&[30, 10, 20]);
        assert_eq!(percentile(&few, 50.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&few, 99.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}

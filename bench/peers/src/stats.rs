//! What a run reports: one [`Summary`] per peer, latency percentiles.

use std::time::Duration;

use serde::Serialize;

/// The nearest-rank percentile `p` (0–100) of ascending `sorted` values:
/// the smallest value with at least p% of the values at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999: in floating point the
    // product is a hair above it.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One peer's figures, as printed in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Ops applied successfully.
    pub ops: u64,
    /// From the first op's start to the last op's end.
    pub seconds: f64,
    pub ops_per_second: f64,
    /// Per-op latency, retries included; under `--rate`, measured from the
    /// op's scheduled time, so queueing behind a slow op counts.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Extra attempts after an optimistic-concurrency conflict.
    pub retries: u64,
    /// Ops that needed at least one retry.
    pub conflicted_ops: u64,
    /// The most attempts any one op needed beyond its first.
    pub max_retries_one_op: u32,
    /// Ops that failed for good (not applied); `first_error` says why.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Posts whose final count differs from likes minus unlikes (must be 0).
    pub mismatches: u64,
    /// Posts checked.
    pub posts_checked: u64,
    pub notes: String,
}

/// The raw outcome of driving one peer through the ops.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of each applied op, in microseconds.
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
    pub retries: u64,
    pub conflicted_ops: u64,
    pub max_retries_one_op: u32,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    /// Folds a worker's outcome into this one (elapsed is the run's, set
    /// by the driver).
    pub fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.retries += other.retries;
        self.conflicted_ops += other.conflicted_ops;
        self.max_retries_one_op = self.max_retries_one_op.max(other.max_retries_one_op);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The report, given the correctness check's result.
    pub fn summarise(mut self, mismatches: u64, posts_checked: u64, notes: String) -> Summary {
        self.latencies_us.sort_unstable();
        let ms = |p: f64| percentile(&self.latencies_us, p).map(|us| us as f64 / 1000.0);
        let ops = self.latencies_us.len() as u64;
        let seconds = self.elapsed.as_secs_f64();
        Summary {
            ops,
            seconds: round3(seconds),
            ops_per_second: if seconds > 0.0 {
                round3(ops as f64 / seconds)
            } else {
                0.0
            },
            p50_ms: ms(50.0),
            p99_ms: ms(99.0),
            p999_ms: ms(99.9),
            max_ms: ms(100.0),
            retries: self.retries,
            conflicted_ops: self.conflicted_ops,
            max_retries_one_op: self.max_retries_one_op,
            errors: self.errors,
            first_error: self.first_error,
            mismatches,
            posts_checked,
            notes,
        }
    }
}

/// Logs the first few mismatches to stderr.
pub fn log_mismatches(peer: &str, mismatches: &[(String, i64, i64)]) {
    for (post, want, got) in mismatches.iter().take(10) {
        eprintln!("{peer}: post {post}: expected {want}, found {got}");
    }
    if !mismatches.is_empty() {
        eprintln!("{peer}: {} posts mismatched", mismatches.len());
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred: Vec<u64> = (1..=100).collect();
        let thousand: Vec<u64> = (1..=1000).collect();
        let check = |values: &[u64], p: f64, want: Option<u64>| {
            assert_eq!(
                percentile(values, p),
                want,
                "p{p} of {} values",
                values.len()
            );
        };
        check(&hundred, 50.0, Some(50));
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.9, Some(100));
        check(&hundred, 100.0, Some(100));
        check(&hundred, 0.0, Some(1));
        check(&thousand, 99.9, Some(999));
        check(&[7], 99.9, Some(7));
        check(&[1, 2], 50.0, Some(1));
        check(&[], 50.0, None);
    }

    #[test]
    fn a_summary_counts_applied_ops_and_merges_workers() {
        let mut total = Outcome::default();
        total.merge(Outcome {
            latencies_us: vec![3000, 1000],
            retries: 2,
            conflicted_ops: 1,
            max_retries_one_op: 2,
            ..Outcome::default()
        });
        total.merge(Outcome {
            latencies_us: vec![2000],
            retries: 1,
            conflicted_ops: 1,
            max_retries_one_op: 1,
            errors: 1,
            first_error: Some("boom".into()),
            ..Outcome::default()
        });
        total.elapsed = Duration::from_secs(2);
        let s = total.summarise(0, 5, String::new());
        assert_eq!((s.ops, s.retries, s.conflicted_ops), (3, 3, 2));
        assert_eq!((s.max_retries_one_op, s.errors), (2, 1));
        assert_eq!(s.first_error.as_deref(), Some("boom"));
        assert_eq!(s.ops_per_second, 1.5);
        assert_eq!((s.p50_ms, s.max_ms), (Some(2.0), Some(3.0)));
    }
}

//! Rolling ranges of stream sequences into per-minute sums (ADR 0006,
//! `tally_shared::store::rollups`). Every worker runs it: two workers that
//! roll the same range write the same sums, and the query side reads one.

use std::time::Duration;

use metrics::{counter, gauge};
use tally_shared::config::{ClickHouseConfig, ProjectorConfig};
use tally_shared::metrics as names;
use tally_shared::store::rollups::{self, Roller};
use tokio_util::sync::CancellationToken;

/// Looks at an unchanged position after which the stream counts as quiet
/// and is rolled up to its position (short ranges; see `rollups::next`).
const QUIET_LOOKS: u32 = 3;

/// Looks between two retirements of superseded ranges (one is also made
/// right after each new base).
const RETIRE_LOOKS: u32 = 60;

/// Level-0 ranges of facts past the rollups beyond which rolling is not
/// deferred, however far behind the projection is: a ranking reads those
/// facts one by one.
const DEFERRED_RANGES_AT_MOST: u64 = 16;

/// How often a worker rolls, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Events per level-0 range.
    pub size: u64,
    /// How often it looks for a range to roll.
    pub interval: Duration,
    /// With `Some` (how long retired ranges' rows are kept), it retires the
    /// ranges that newer joins supersede.
    pub retire: Option<Duration>,
    /// While the projection is more than this many events behind the
    /// stream, it leaves rolling for later (0: never).
    pub defer_lag: u64,
}

impl Settings {
    /// The projector's settings; `None` if rolling is off.
    pub fn of(config: &ProjectorConfig) -> Option<Settings> {
        (config.rollup_range > 0).then(|| Settings {
            size: config.rollup_range,
            interval: Duration::from_millis(config.rollup_interval_ms),
            retire: config
                .rollup_retire
                .then(|| Duration::from_millis(config.rollup_retired_keep_ms)),
            defer_lag: config.rollup_defer_lag,
        })
    }

    /// Whether rolling waits at a look that found the projection at
    /// `position` and the stream at `stream_last`, with the ranges rolled up
    /// to `rolled`. A projection catching up a backlog folds faster with
    /// the cores to itself, and its rankings would be behind anyway; once
    /// within `defer_lag` of the stream, it rolls what it passed, range
    /// after range. Never while the facts past the rollups would exceed
    /// [`DEFERRED_RANGES_AT_MOST`] ranges.
    pub fn defers(&self, position: u64, stream_last: u64, rolled: u64) -> bool {
        self.defer_lag > 0
            && stream_last.saturating_sub(position) > self.defer_lag
            && position.saturating_sub(rolled) < DEFERRED_RANGES_AT_MOST * self.size
    }
}

/// [`run`] on a thread and runtime of its own: a roll is CPU work in this
/// process too (reading tens of thousands of summed rows, adding them up by
/// attribution), which on the worker's runtime would hold up its fetch.
pub fn spawn(clickhouse: ClickHouseConfig, settings: Settings, shutdown: CancellationToken) {
    let rolling = move || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(clickhouse, settings, shutdown)),
        Err(e) => {
            tracing::error!(error = %e, "no runtime for rolling; rollups stay where they are")
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("rollup".to_owned())
        .spawn(rolling)
    {
        tracing::error!(error = %e, "no thread for rolling; rollups stay where they are");
    }
}

/// Rolls every range that is due, then looks again every
/// `settings.interval`, until `shutdown`; not while [`Settings::defers`],
/// unless the position has stood still for [`QUIET_LOOKS`] looks. With
/// `settings.retire`, retires the ranges that newer joins supersede and
/// the attempts never recorded done (see [`Roller::retire`]), after each
/// new base and every [`RETIRE_LOOKS`] looks (deferred or not).
pub async fn run(clickhouse: ClickHouseConfig, settings: Settings, shutdown: CancellationToken) {
    let Settings {
        size,
        interval,
        retire,
        ..
    } = settings;
    let roller = Roller::connect(&clickhouse);
    // The position, and for how many looks it has stood still.
    let mut last = (0, 0);
    let mut looks = 0u32;
    // Whether rolling waits for the projection to catch up.
    let mut deferred = false;
    loop {
        looks = looks.wrapping_add(1);
        let mut based = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Where the rollups reach: other workers move it, and a rebuild's
        // release takes it back to the start.
        let rolled = match roller.done().await {
            Ok(done) => {
                let rolled = rollups::cover(&done, u64::MAX).0;
                gauge!(names::ROLLUP_POSITION).set(rolled as f64);
                Some(rolled)
            }
            Err(_) => None,
        };
        if let (Ok((position, stream_last)), Some(rolled)) = (roller.progress().await, rolled) {
            last = if position == last.0 {
                (position, last.1 + 1)
            } else {
                (position, 0)
            };
            // A projection standing still has nothing to fold faster.
            let defers = last.1 < QUIET_LOOKS && settings.defers(position, stream_last, rolled);
            if defers != deferred {
                tracing::debug!(
                    position,
                    stream_last,
                    rolled,
                    "{}",
                    if defers {
                        "rolling deferred while the projection catches up"
                    } else {
                        "rolling resumed"
                    }
                );
                if defers {
                    counter!(names::ROLLUP_DEFERRALS).increment(1);
                }
                deferred = defers;
            }
            gauge!(names::ROLLUP_DEFERRED).set(f64::from(u8::from(deferred)));
        }
        let quiet = last.1 >= QUIET_LOOKS;
        // Several ranges may be due (after a pause, or joins after rolls).
        while !deferred && !shutdown.is_cancelled() {
            let started = std::time::Instant::now();
            match roller.step(size, quiet).await {
                Ok(Some(range)) => {
                    let took_ms = started.elapsed().as_millis() as u64;
                    tracing::debug!(
                        level = range.level,
                        lo = range.lo,
                        hi = range.hi,
                        took_ms,
                        "rolled"
                    );
                    counter!(names::ROLLUPS, "level" => range.level.to_string()).increment(1);
                    based |= range.level == rollups::BASE;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "rolling failed; retrying");
                    counter!(names::ROLLUP_ERRORS).increment(1);
                    break;
                }
            }
        }
        if let Some(keep) = retire.filter(|_| based || looks % RETIRE_LOOKS == 0) {
            match roller.retire(keep, size).await {
                Ok(retired) if retired.any() => {
                    let rollups::Retired {
                        superseded,
                        unrecorded,
                        deleted,
                        forgotten,
                    } = retired;
                    tracing::debug!(
                        superseded,
                        unrecorded,
                        deleted,
                        forgotten,
                        "retired rollup attempts"
                    );
                    for (why, attempts) in [("superseded", superseded), ("unrecorded", unrecorded)]
                    {
                        counter!(names::ROLLUPS_RETIRED, "why" => why).increment(attempts as u64);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retiring rollup ranges failed; retrying later");
                    counter!(names::ROLLUP_ERRORS).increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(defer_lag: u64) -> Settings {
        Settings {
            size: 100,
            interval: Duration::from_secs(1),
            retire: None,
            defer_lag,
        }
    }

    #[test]
    fn rolling_waits_only_while_far_behind() {
        let s = settings(1_000);
        // Caught up, or within the lag allowed: it rolls.
        assert!(!s.defers(5_000, 5_000, 4_900));
        assert!(!s.defers(5_000, 6_000, 4_900));
        // Further behind: it waits.
        assert!(s.defers(5_000, 6_001, 4_900));
        // A stream recorded behind the position (an older record) is no lag.
        assert!(!s.defers(5_000, 10, 4_900));
        // 0 never defers.
        assert!(!settings(0).defers(5_000, 1_000_000, 4_900));
    }

    #[test]
    fn rolling_waits_for_at_most_sixteen_ranges_of_facts() {
        let s = settings(1_000);
        assert!(s.defers(1_599, 1_000_000, 0));
        assert!(!s.defers(1_600, 1_000_000, 0));
        assert!(s.defers(11_599, 1_000_000, 10_000));
    }

    #[test]
    fn rolling_is_off_with_ranges_of_none() {
        let mut config = tally_shared::Config::defaults().projector;
        assert_eq!(Settings::of(&config).map(|s| s.defer_lag), Some(262_144));
        config.rollup_retire = false;
        assert_eq!(Settings::of(&config).unwrap().retire, None);
        config.rollup_range = 0;
        assert_eq!(Settings::of(&config), None);
    }
}

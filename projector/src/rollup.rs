//! Rolling ranges of stream sequences into per-minute sums (ADR 0006,
//! `tally_shared::store::rollups`). Every worker runs it: two workers that
//! roll the same range write the same sums, and the query side reads one.

use std::time::Duration;

use metrics::{counter, gauge};
use tally_shared::config::ClickHouseConfig;
use tally_shared::metrics as names;
use tally_shared::store::rollups::{self, Roller};
use tokio_util::sync::CancellationToken;

/// Looks at an unchanged position after which the stream counts as quiet
/// and is rolled up to its position (short ranges; see `rollups::next`).
const QUIET_LOOKS: u32 = 3;

/// Looks between two retirements of superseded ranges (one is also made
/// right after each new base).
const RETIRE_LOOKS: u32 = 60;

/// [`run`] on a thread and runtime of its own: a roll is CPU work in this
/// process too (reading tens of thousands of summed rows, adding them up by
/// attribution), which on the worker's runtime would hold up its fetch.
pub fn spawn(
    clickhouse: ClickHouseConfig,
    size: u64,
    interval: Duration,
    retire: Option<Duration>,
    shutdown: CancellationToken,
) {
    let rolling = move || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(clickhouse, size, interval, retire, shutdown)),
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

/// Rolls every range that is due, then looks again every `interval`, until
/// `shutdown`. Ranges hold `size` events at level 0. With `retire` (how
/// long retired ranges' rows are kept), retires the ranges that newer bases
/// supersede, after each new base and every [`RETIRE_LOOKS`] looks.
pub async fn run(
    clickhouse: ClickHouseConfig,
    size: u64,
    interval: Duration,
    retire: Option<Duration>,
    shutdown: CancellationToken,
) {
    let roller = Roller::connect(&clickhouse);
    // The position, and for how many looks it has stood still.
    let mut last = (0, 0);
    let mut looks = 0u32;
    loop {
        looks = looks.wrapping_add(1);
        let mut based = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Ok(position) = roller.position().await {
            last = if position == last.0 {
                (position, last.1 + 1)
            } else {
                (position, 0)
            };
        }
        let quiet = last.1 >= QUIET_LOOKS;
        // Several ranges may be due (after a pause, or joins after rolls).
        while !shutdown.is_cancelled() {
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
            match roller.retire(keep).await {
                Ok((retired, deleted)) if retired + deleted > 0 => {
                    tracing::debug!(retired, deleted, "retired superseded rollup ranges");
                    counter!(names::ROLLUPS_RETIRED).increment(retired as u64);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retiring rollup ranges failed; retrying later");
                    counter!(names::ROLLUP_ERRORS).increment(1);
                }
            }
        }
        if let Ok(done) = roller.done().await {
            gauge!(names::ROLLUP_POSITION).set(rollups::cover(&done, u64::MAX).0 as f64);
        }
    }
}

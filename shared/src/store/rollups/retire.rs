//! Retiring rollup attempts (ADR 0006): readers stop choosing them at once,
//! their rows are deleted once no reader can still be reading them, and
//! those that were recorded done are struck from `rollup_retired` once
//! those rows are gone (the others stay listed: see [`State`]).
//!
//! Two kinds are retired: the ranges newer joins supersede, and the
//! attempts that wrote rows but were never recorded done (a roll that
//! crashed or failed after writing, or found its work stale: a join whose
//! parts were retired meanwhile, a roll that raced a rebuild's switch).

use std::collections::{HashMap, HashSet};
use std::sync::PoisonError;
use std::time::Duration;

use super::{numbers, superseded, timed, Range, Roller, StoreError};

/// What one [`Roller::retire`] did, in attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Retired: newer joins supersede their ranges.
    pub superseded: usize,
    /// Retired: rows written, never recorded done.
    pub unrecorded: usize,
    /// Their rows deleted (retired at least the keep time before).
    pub deleted: usize,
    /// Struck from `rollup_retired`: recorded done once, deleted at least
    /// the keep time before, and no row of them left.
    pub forgotten: usize,
}

impl Retired {
    /// Whether it did anything.
    pub fn any(&self) -> bool {
        *self != Retired::default()
    }
}

impl Roller {
    /// Retires the ranges newer joins supersede (see [`superseded`]; level-0
    /// ranges of `size` events), and
    /// the attempts with rows in `rollups` that were not recorded done at
    /// two looks at least `keep` apart (a roll in progress records its
    /// range within a few statements' timeouts, and `keep` is at least
    /// three). Readers ignore a retired attempt from then on; one recorded
    /// done after it was retired is ignored too, and its range rolled
    /// again. Then deletes the rows of the attempts retired at least `keep`
    /// ago, which no reader can still be reading, and strikes from
    /// `rollup_retired` those recorded done, deleted at least `keep` ago,
    /// whose rows are gone (the deletes are mutations ClickHouse runs in
    /// the background); the others stay listed, and rows that reach them
    /// after their delete are deleted again.
    /// A retire repeated (two workers) retires the same attempts again.
    /// Nothing while rolling is held.
    pub async fn retire(&self, keep: Duration, size: u64) -> Result<Retired, StoreError> {
        let (held, changed) = self.hold_state().await?;
        if held {
            // A rebuild's tables, not complete yet.
            return Ok(Retired::default());
        }
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let recorded: Vec<Range> = self
            .fetch(&format!(
                "SELECT level, lo, hi, attempt FROM rollup_ranges
                 WHERE done_ms > {changed}
                   AND attempt NOT IN (SELECT attempt FROM rollup_retired)"
            ))
            .await?;
        // Each statement reads one table, or reads them in the order a
        // rebuild's `RENAME` locks them (see `facts`), and the sets are
        // taken apart here. Rows recorded before the last hold or release
        // count as not recorded: readers ignore them.
        let written: HashSet<u64> = self
            .fetch::<u64>("SELECT DISTINCT attempt FROM rollups")
            .await?
            .into_iter()
            .collect();
        let listed: HashSet<u64> = self
            .fetch::<u64>("SELECT DISTINCT attempt FROM rollup_retired")
            .await?
            .into_iter()
            .collect();
        let done: HashSet<u64> = recorded.iter().map(|r| r.attempt).collect();
        let mut found: Vec<u64> = written
            .iter()
            .filter(|a| !done.contains(a) && !listed.contains(a))
            .copied()
            .collect();
        found.sort_unstable();
        let now_ms = self.server_ms().await?;
        let unrecorded = {
            let mut seen = self
                .unrecorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            overdue(&mut seen, &found, now_ms, keep_ms)
        };
        let superseded: Vec<u64> = superseded(&recorded, size)
            .iter()
            .map(|r| r.attempt)
            .collect();
        self.mark(&superseded, State::Retired, now_ms).await?;
        self.mark(&unrecorded, State::RetiredUnrecorded, now_ms)
            .await?;

        let kept_since = now_ms.saturating_sub(keep_ms);
        let due: Vec<u64> = self
            .fetch(&format!(
                "SELECT attempt FROM rollup_retired GROUP BY attempt
                 HAVING argMax(purged, at_ms) IN ({}, {}) AND min(at_ms) <= {kept_since}",
                State::Retired as u8,
                State::RetiredUnrecorded as u8
            ))
            .await?;
        // A thousand at a time: a statement is at most 256 KiB.
        for due in due.chunks(1_000) {
            // Whether each was recorded done, from the records themselves
            // (earlier versions listed every retired attempt as 0): a record
            // written before the deletes below goes with them, and one
            // written after finds its attempt listed for good.
            let ranged = self.among("rollup_ranges", due).await?;
            // Mutations: ClickHouse rewrites the parts that hold the rows,
            // in the background.
            for table in ["rollups", "rollup_ranges"] {
                self.delete(table, due).await?;
            }
            let (recorded, never): (Vec<u64>, Vec<u64>) =
                due.iter().partition(|a| ranged.contains(a));
            self.mark(&recorded, State::Purged, now_ms + 1).await?;
            self.mark(&never, State::PurgedUnrecorded, now_ms + 1)
                .await?;
        }
        // Rows that reached an attempt listed for good after its delete (a
        // join's `INSERT … SELECT` that ran on after its client's timeout)
        // are deleted again.
        let stray: Vec<u64> = self
            .fetch::<u64>(&format!(
                "SELECT attempt FROM rollup_retired GROUP BY attempt
                 HAVING argMax(purged, at_ms) = {} AND max(at_ms) <= {kept_since}",
                State::PurgedUnrecorded as u8
            ))
            .await?
            .into_iter()
            .filter(|a| written.contains(a))
            .collect();
        for stray in stray.chunks(1_000) {
            self.delete("rollups", stray).await?;
        }

        // Deleted at least the keep time ago, and no row of them left
        // (the mutations are done).
        let purged: Vec<u64> = self
            .fetch(&format!(
                "SELECT attempt FROM rollup_retired GROUP BY attempt
                 HAVING argMax(purged, at_ms) = {} AND max(at_ms) <= {kept_since}",
                State::Purged as u8
            ))
            .await?;
        let mut forgotten = 0;
        for purged in purged.chunks(1_000) {
            let ranged = self.among("rollup_ranges", purged).await?;
            let gone: Vec<u64> = purged
                .iter()
                .filter(|a| !written.contains(a) && !ranged.contains(a))
                .copied()
                .collect();
            if !gone.is_empty() {
                self.delete("rollup_retired", &gone).await?;
                forgotten += gone.len();
            }
        }
        Ok(Retired {
            superseded: superseded.len(),
            unrecorded: unrecorded.len(),
            deleted: due.len(),
            forgotten,
        })
    }

    /// The rows a statement selects.
    async fn fetch<T>(&self, sql: &str) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        timed(&self.config, self.client.query(sql).fetch_all()).await
    }

    /// Those of `attempts` with rows in `table`.
    async fn among(&self, table: &str, attempts: &[u64]) -> Result<HashSet<u64>, StoreError> {
        Ok(self
            .fetch::<u64>(&format!(
                "SELECT DISTINCT attempt FROM {table} WHERE attempt IN ({})",
                numbers(attempts.iter().copied())
            ))
            .await?
            .into_iter()
            .collect())
    }

    /// Deletes `attempts`' rows from `table` (a mutation).
    async fn delete(&self, table: &str, attempts: &[u64]) -> Result<(), StoreError> {
        let attempts = numbers(attempts.iter().copied());
        timed(
            &self.config,
            self.client
                .query(&format!(
                    "ALTER TABLE {table} DELETE WHERE attempt IN ({attempts})"
                ))
                .execute(),
        )
        .await
    }

    /// Records `attempts` in `rollup_retired` in `state` at `at_ms` (the
    /// newest row of an attempt wins).
    async fn mark(&self, attempts: &[u64], state: State, at_ms: u64) -> Result<(), StoreError> {
        // A thousand at a time, as the deletes (a database upgraded after a
        // long history retires many at first).
        for attempts in attempts.chunks(1_000) {
            let rows = attempts
                .iter()
                .map(|a| format!("({a}, {}, {at_ms})", state as u8))
                .collect::<Vec<_>>()
                .join(", ");
            timed(
                &self.config,
                self.client
                    .query(&format!(
                        "INSERT INTO rollup_retired (attempt, purged, at_ms) VALUES {rows}"
                    ))
                    .execute(),
            )
            .await?;
        }
        Ok(())
    }
}

/// What `rollup_retired` says of an attempt: its column `purged`, of the
/// newest row of the attempt. Readers ignore every attempt it lists. At
/// the delete, whether an attempt was recorded done is read from
/// `rollup_ranges`, whatever it was retired as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Superseded: its rows are kept for the keep time.
    Retired = 0,
    /// Its rows deleted; forgotten once they are gone, the keep time
    /// later. It was recorded done, so nothing records it again.
    Purged = 1,
    /// Never recorded done: its rows are kept for the keep time.
    RetiredUnrecorded = 2,
    /// Its rows deleted; never forgotten, since a roll stalled that long
    /// might still record it, and readers must go on ignoring it.
    PurgedUnrecorded = 3,
}

/// Of the attempts `found` unrecorded at `now_ms`, those first found so at
/// least `keep_ms` before. `seen` holds when each was first found, and
/// forgets those found no longer (recorded done meanwhile, or retired).
fn overdue(seen: &mut HashMap<u64, u64>, found: &[u64], now_ms: u64, keep_ms: u64) -> Vec<u64> {
    let found_now: HashSet<u64> = found.iter().copied().collect();
    seen.retain(|attempt, _| found_now.contains(attempt));
    found
        .iter()
        .filter(|&&attempt| {
            let first = *seen.entry(attempt).or_insert(now_ms);
            now_ms.saturating_sub(first) >= keep_ms
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrecorded_attempt_is_retired_once_found_so_for_the_keep_time() {
        let mut seen = HashMap::new();
        assert!(overdue(&mut seen, &[7, 8], 1_000, 600).is_empty());
        // Still unrecorded, but not for the keep time yet.
        assert!(overdue(&mut seen, &[7, 8], 1_500, 600).is_empty());
        // 8 was recorded meanwhile; 9 is new.
        assert_eq!(overdue(&mut seen, &[7, 9], 1_600, 600), vec![7]);
        assert_eq!(seen.get(&8), None);
        assert_eq!(seen.get(&9), Some(&1_600));
    }

    #[test]
    fn an_attempt_found_again_after_a_gap_starts_its_wait_again() {
        let mut seen = HashMap::new();
        overdue(&mut seen, &[7], 1_000, 600);
        // Not found at one look (recorded, say): forgotten.
        overdue(&mut seen, &[], 1_300, 600);
        assert!(overdue(&mut seen, &[7], 1_700, 600).is_empty());
        assert_eq!(overdue(&mut seen, &[7], 2_300, 600), vec![7]);
    }
}

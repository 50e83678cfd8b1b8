//! Rollups (ADR 0006): the facts of closed ranges of stream sequences,
//! summed per tenant, minute and attribution. Rankings read them for the
//! ranges they cover and the facts only beyond.
//!
//! A level-0 range `(lo, hi]` is rolled from the facts once every event up
//! to `hi` is projected, attributed from the catalogue as it stood at `hi`;
//! catalogue events in the range also correct the attribution of their
//! posts' earlier facts (minus as attributed at `lo`, plus as at `hi`). The
//! sum of consecutive ranges from the start to `R` is therefore exactly the
//! facts up to `R` attributed as at `R`. Once the level-0 ranges after the
//! last base span [`BASE_EVERY`] full ranges, they are summed with it into
//! a new base, a range from the start (level [`BASE`]); meanwhile short
//! ranges (rolled while the stream was quiet) are joined into longer
//! level-0 ones a few at a time. A ranking reads one base and a few
//! level-0 ranges, and each of the base's cells (tenant, minute,
//! attribution) once.
//!
//! Rolling is a pure function of the facts: an attempt repeated after a
//! crash, or made by two workers at once, writes the same sums. Each
//! attempt writes under a random `attempt` number and counts only once
//! `rollup_ranges` records it done; any done attempt of a range is as good
//! as another.

mod facts;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{timed, StoreError};
use crate::config::ClickHouseConfig;

/// The level of a base: a range from the start of the stream.
pub const BASE: u8 = 1;
/// Full level-0 ranges' worth of sequences after the base that make a new
/// base; also the fewest level-0 ranges that a level-0 join takes.
pub const BASE_EVERY: usize = 4;

/// A rolled range of stream sequences `(lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct Range {
    pub level: u8,
    pub lo: u64,
    pub hi: u64,
    pub attempt: u64,
}

/// A row of `rollups`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(super) struct RollupRow {
    tenant: String,
    level: u8,
    lo: u64,
    hi: u64,
    attempt: u64,
    minute: u32,
    influencer: String,
    campaign: String,
    platform: String,
    content_type: String,
    tags: Vec<String>,
    likes: i64,
    shares: i64,
    comments: i64,
    views: i64,
    clicks: i64,
    conversions: i64,
    follows: i64,
    sentiment: i64,
    events: i64,
}

/// What to roll next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Sum the facts of `(lo, hi]`.
    Facts { lo: u64, hi: u64 },
    /// Sum `parts`, consecutive ranges (the base, then level-0 ones).
    Join { level: u8, parts: Vec<Range> },
}

impl Plan {
    pub fn level(&self) -> u8 {
        match self {
            Plan::Facts { .. } => 0,
            Plan::Join { level, .. } => *level,
        }
    }

    /// The sequences it covers, `(lo, hi]`.
    pub fn bounds(&self) -> (u64, u64) {
        match self {
            Plan::Facts { lo, hi } => (*lo, *hi),
            Plan::Join { parts, .. } => (
                parts.first().map_or(0, |p| p.lo),
                parts.last().map_or(0, |p| p.hi),
            ),
        }
    }
}

/// The chain of done ranges of `level` that starts at `from`, in order
/// (one attempt per range).
fn chain(done: &[Range], level: u8, from: u64) -> Vec<Range> {
    let mut chain = Vec::new();
    let mut at = from;
    while let Some(next) = done
        .iter()
        .filter(|r| r.level == level && r.lo == at)
        .max_by_key(|r| r.hi)
    {
        chain.push(*next);
        at = next.hi;
    }
    chain
}

/// The next range to roll, given the ranges done, the position up to which
/// every event is projected, and the size of a level-0 range:
/// - a new base once the level-0 ranges after the last one cover
///   [`BASE_EVERY`] ranges' worth of sequences;
/// - else one level-0 range joining ranges at the end of the chain, once
///   [`BASE_EVERY`] of them can be joined (see [`joinable`]);
/// - else the level-0 range after the last one if the position has passed
///   its end. When the stream is `quiet` (the position has stood still),
///   the level-0 range ends at the position: rankings then read no facts
///   at all.
///
/// A base rewrites every cell of the history, so it waits for sequences,
/// not for ranges: counted in ranges, a stream that pauses every few
/// seconds (a short range each time) would rewrite its whole history every
/// four pauses. The ranges after the base are joined instead, a few at a
/// time, which rewrites only their own cells, so that a ranking still reads
/// a few ranges after the base (38 in the worst pattern found, the test
/// `ranges_that_halve_are_joined_in_few`).
pub fn next(done: &[Range], position: u64, size: u64, quiet: bool) -> Option<Plan> {
    let size = size.max(1);
    let base = done
        .iter()
        .filter(|r| r.level == BASE && r.lo == 0)
        .max_by_key(|r| r.hi);
    let from = base.map_or(0, |b| b.hi);
    let after = chain(done, 0, from);
    let covered = after.last().map_or(from, |r| r.hi) - from;
    if covered >= BASE_EVERY as u64 * size {
        return Some(Plan::Join {
            level: BASE,
            parts: base.into_iter().copied().chain(after).collect(),
        });
    }
    let joinable = joinable(&after);
    if joinable >= BASE_EVERY {
        return Some(Plan::Join {
            level: 0,
            parts: after[after.len() - joinable..].to_vec(),
        });
    }
    let lo = after.last().map_or(from, |r| r.hi);
    let hi = lo + size;
    if hi <= position {
        Some(Plan::Facts { lo, hi })
    } else if quiet && position > lo {
        Some(Plan::Facts { lo, hi: position })
    } else {
        None
    }
}

/// How many ranges at the end of `chain` a level-0 join would take: from
/// the last one back, each while it is no longer than all those after it
/// together (it stops before the first that is longer). A join so at least
/// doubles the span of every range it rewrites but the last: each event is
/// rewritten a few times at most (about log2 of four ranges), and a long
/// range (say the history of a stream that was never busy) is not
/// rewritten with every pause after it.
fn joinable(chain: &[Range]) -> usize {
    let mut after = 0;
    chain
        .iter()
        .rev()
        .take_while(|r| {
            let span = r.hi - r.lo;
            let take = after == 0 || span <= after;
            after += span;
            take
        })
        .count()
}

/// The ranges that a newer base supersedes: every recorded range (any
/// attempt) that ends at or before the base before the latest one, but that
/// base. Readers at the position choose the latest base and the ranges
/// after it; the previous base and the ranges between the two stay for a
/// reader at an older position (a page pinned to it), which otherwise
/// falls back to reading the facts.
pub fn superseded(recorded: &[Range]) -> Vec<Range> {
    let mut bases: Vec<u64> = recorded
        .iter()
        .filter(|r| r.level == BASE && r.lo == 0)
        .map(|r| r.hi)
        .collect();
    bases.sort_unstable();
    bases.dedup();
    let Some(&previous) = bases.len().checked_sub(2).and_then(|i| bases.get(i)) else {
        return Vec::new();
    };
    recorded
        .iter()
        .filter(|r| r.hi <= previous && !(r.level == BASE && r.lo == 0 && r.hi == previous))
        .copied()
        .collect()
}

/// The fewest done ranges that cover `(0, R]` with `R` as high as possible
/// but not past `position`, and `R`. With nothing rolled, `R` is 0.
pub fn cover(done: &[Range], position: u64) -> (u64, Vec<Range>) {
    let mut ranges = Vec::new();
    let mut at = 0;
    while let Some(next) = done
        .iter()
        .filter(|r| r.lo == at && r.hi <= position)
        .max_by_key(|r| (r.hi, r.level))
    {
        ranges.push(*next);
        at = next.hi;
    }
    (at, ranges)
}

/// The counters a rollup row sums, as the columns of [`attributed_at`].
const SUMS: &str = "toInt64(sum(likes)) AS s_likes, toInt64(sum(shares)) AS s_shares,
    toInt64(sum(comments)) AS s_comments, toInt64(sum(views)) AS s_views,
    toInt64(sum(clicks)) AS s_clicks, toInt64(sum(conversions)) AS s_conversions,
    toInt64(sum(follows)) AS s_follows, toInt64(sum(sentiment)) AS s_sentiment,
    toInt64(sum(events)) AS s_events";

/// A row whose sums are all zero (a correction that changed nothing) is
/// left out: it adds nothing.
const NOT_ZERO: &str = "HAVING s_likes != 0 OR s_shares != 0 OR s_comments != 0 OR s_views != 0
    OR s_clicks != 0 OR s_conversions != 0 OR s_follows != 0 OR s_sentiment != 0
    OR s_events != 0";

const COLUMNS: &str = "tenant, level, lo, hi, attempt, minute, influencer, campaign, platform,
    content_type, tags, likes, shares, comments, views, clicks, conversions, follows, sentiment,
    events";

/// The statement that sums `parts` into one range of `level` as
/// `attempt` (it reads and writes `rollups` only).
fn join_sql(level: u8, parts: &[Range], attempt: u64) -> String {
    let lo = parts.first().map_or(0, |p| p.lo);
    let hi = parts.last().map_or(0, |p| p.hi);
    let attempts = attempt_list(parts);
    format!(
        "INSERT INTO rollups ({COLUMNS})
         SELECT tenant, {level}, {lo}, {hi}, {attempt}, minute, influencer, campaign,
                platform, content_type, tags, {SUMS}
         FROM rollups WHERE attempt IN ({attempts})
         GROUP BY tenant, minute, influencer, campaign, platform, content_type, tags
         {NOT_ZERO}"
    )
}

/// `ranges`' attempt numbers as an SQL list (numbers only).
pub(crate) fn attempt_list(ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|r| r.attempt.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rolls ranges in one database.
#[derive(Clone)]
pub struct Roller {
    client: clickhouse::Client,
    config: ClickHouseConfig,
}

impl Roller {
    /// Rolling is background work: each of its statements runs on one
    /// ClickHouse thread (the default is one per core), so that a roll
    /// never takes every core from ingest and projection.
    pub fn connect(config: &ClickHouseConfig) -> Roller {
        Roller {
            client: super::client(config).with_setting("max_threads", "1"),
            config: config.clone(),
        }
    }

    /// The ranges rolled to the end.
    pub async fn done(&self) -> Result<Vec<Range>, StoreError> {
        done(&self.client, &self.config).await
    }

    /// Whether rolling is held (see [`Roller::hold`]), and when that was
    /// last changed (0 if never).
    async fn hold_state(&self) -> Result<(bool, u64), StoreError> {
        let (held, changed): (u8, u64) = timed(
            &self.config,
            self.client
                .query("SELECT toUInt8(argMax(held, at_ms)), max(at_ms) FROM rollup_hold")
                .fetch_one(),
        )
        .await?;
        Ok((held == 1, changed))
    }

    /// Whether rolling is held.
    pub async fn held(&self) -> Result<bool, StoreError> {
        Ok(self.hold_state().await?.0)
    }

    /// Holds or releases rolling in this database. A rebuild holds it in
    /// the tables it builds and releases it once they have every event up
    /// to the position the workers record; ranges recorded done before the
    /// release (by a roll that raced the switch) are ignored from then on.
    /// Times are ClickHouse's clock, and each change is later than the last.
    pub async fn hold(&self, held: bool) -> Result<(), StoreError> {
        let (_, changed) = self.hold_state().await?;
        let at_ms = self.server_ms().await?.max(changed + 1);
        timed(
            &self.config,
            self.client
                .query(&format!(
                    "INSERT INTO rollup_hold (held, at_ms) VALUES ({}, {at_ms})",
                    u8::from(held)
                ))
                .execute(),
        )
        .await
    }

    /// ClickHouse's clock, in milliseconds (whole seconds): holds and
    /// ranges are ordered by one clock whichever process writes them.
    async fn server_ms(&self) -> Result<u64, StoreError> {
        timed(
            &self.config,
            self.client
                .query("SELECT toUInt64(now()) * 1000")
                .fetch_one(),
        )
        .await
    }

    /// The position below which every event is projected, as the workers
    /// last recorded it (0 if none did).
    pub async fn position(&self) -> Result<u64, StoreError> {
        let positions = super::models::Models::new(self.client.clone(), &self.config)
            .positions()
            .await?;
        Ok(positions.iter().map(|p| p.position).min().unwrap_or(0))
    }

    /// Rolls `plan`, made from what was done when rolling was in the hold
    /// state `before`, and records it done, unless a rebuild switched the
    /// tables since (then `None`: the facts read may have been the rebuilt
    /// ones before its last pass, and the plan's ranges the old tables').
    async fn roll(&self, plan: &Plan, before: (bool, u64)) -> Result<Option<Range>, StoreError> {
        if before.0 {
            return Ok(None);
        }
        let attempt = uuid::Uuid::new_v4().as_u64_pair().0;
        let (lo, hi) = plan.bounds();
        let catalogued = match plan {
            Plan::Facts { .. } => {
                let published: u64 = timed(
                    &self.config,
                    self.client
                        .query(&format!(
                            "SELECT count() FROM catalogue
                             WHERE type = 'post_published' AND seq > {lo} AND seq <= {hi}"
                        ))
                        .fetch_one(),
                )
                .await?;
                published > 0
            }
            Plan::Join { .. } => false,
        };
        match plan {
            Plan::Facts { .. } => {
                let rows =
                    facts::roll(&self.client, &self.config, (lo, hi), attempt, catalogued).await?;
                timed(&self.config, async {
                    let mut insert = self.client.insert::<RollupRow>("rollups").await?;
                    for row in &rows {
                        insert.write(row).await?;
                    }
                    insert.end().await
                })
                .await?;
            }
            Plan::Join { level, parts } => {
                let sql = join_sql(*level, parts, attempt);
                timed(&self.config, self.client.query(&sql).execute()).await?;
                // A part retired meanwhile (by a worker a base ahead of
                // this one's plan) may have lost its rows before the join
                // read them.
                let retired: u64 = timed(
                    &self.config,
                    self.client
                        .query(&format!(
                            "SELECT count() FROM rollup_retired WHERE attempt IN ({})",
                            attempt_list(parts)
                        ))
                        .fetch_one(),
                )
                .await?;
                if retired > 0 {
                    tracing::info!(lo, hi, "a range joined was retired meanwhile; not recorded");
                    return Ok(None);
                }
            }
        }
        if self.hold_state().await? != before {
            tracing::info!(
                lo,
                hi,
                "the tables were switched while rolling; rolling again"
            );
            return Ok(None);
        }
        let range = Range {
            level: plan.level(),
            lo,
            hi,
            attempt,
        };
        // Later than the last hold or release, so that it counts. Should a
        // switch come now, this row lands in the rebuilt tables before their
        // release, which is later, and it is ignored.
        let done_ms = self.server_ms().await?.max(before.1 + 1);
        timed(
            &self.config,
            self.client
                .query(&format!(
                    "INSERT INTO rollup_ranges (level, lo, hi, attempt, done_ms)
                     VALUES ({}, {lo}, {hi}, {attempt}, {done_ms})",
                    range.level
                ))
                .execute(),
        )
        .await?;
        Ok(Some(range))
    }

    /// Retires the ranges a newer base supersedes (see [`superseded`]):
    /// readers ignore them from now on. Then deletes the rows of the ranges
    /// retired at least `keep` ago, which no reader can still be reading.
    /// Returns how many attempts it retired and how many it deleted. A
    /// retire repeated (two workers) retires the same attempts again.
    /// Nothing while rolling is held.
    pub async fn retire(&self, keep: std::time::Duration) -> Result<(usize, usize), StoreError> {
        let (held, changed) = self.hold_state().await?;
        if held {
            // A rebuild's tables, not complete yet.
            return Ok((0, 0));
        }
        let recorded: Vec<Range> = timed(
            &self.config,
            self.client
                .query(&format!(
                    "SELECT level, lo, hi, attempt FROM rollup_ranges
                     WHERE done_ms > {changed}
                       AND attempt NOT IN (SELECT attempt FROM rollup_retired)"
                ))
                .fetch_all(),
        )
        .await?;
        let retiring = superseded(&recorded);
        let now_ms = self.server_ms().await?;
        let attempts: Vec<u64> = retiring.iter().map(|r| r.attempt).collect();
        self.mark_retired(&attempts, false, now_ms).await?;
        let kept_since = now_ms.saturating_sub(keep.as_millis() as u64);
        let due: Vec<u64> = timed(
            &self.config,
            self.client
                .query(&format!(
                    "SELECT attempt FROM rollup_retired GROUP BY attempt
                     HAVING argMax(purged, at_ms) = 0 AND min(at_ms) <= {kept_since}"
                ))
                .fetch_all(),
        )
        .await?;
        // A thousand at a time: a statement is at most 256 KiB.
        for due in due.chunks(1_000) {
            let attempts = due
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            // Mutations: ClickHouse rewrites the parts that hold the rows,
            // in the background.
            for table in ["rollups", "rollup_ranges"] {
                timed(
                    &self.config,
                    self.client
                        .query(&format!(
                            "ALTER TABLE {table} DELETE WHERE attempt IN ({attempts})"
                        ))
                        .execute(),
                )
                .await?;
            }
            self.mark_retired(due, true, now_ms + 1).await?;
        }
        Ok((retiring.len(), due.len()))
    }

    /// Records `attempts` in `rollup_retired` as retired, or as `purged`
    /// (their rows deleted), at `at_ms` (the newest row of an attempt wins).
    async fn mark_retired(
        &self,
        attempts: &[u64],
        purged: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        // A thousand at a time, as the deletes (a database upgraded after a
        // long history retires many at first).
        for attempts in attempts.chunks(1_000) {
            let rows = attempts
                .iter()
                .map(|a| format!("({a}, {}, {at_ms})", u8::from(purged)))
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

    /// Rolls the next range if one is due (ranges of `size` events at level
    /// 0, or up to the position if the stream is `quiet`; see [`next`]) and
    /// says which; `None` if none is due or rolling is held.
    pub async fn step(&self, size: u64, quiet: bool) -> Result<Option<Range>, StoreError> {
        // Read before the ranges done, so that a switch after them shows.
        let before = self.hold_state().await?;
        let (done, position) = tokio::try_join!(self.done(), self.position())?;
        match next(&done, position, size, quiet) {
            Some(plan) => self.roll(&plan, before).await,
            None => Ok(None),
        }
    }
}

/// The ranges rolled to the end, one attempt each: those recorded after
/// the last hold or release (see [`Roller::hold`]) and not retired (see
/// [`Roller::retire`]); none while rolling is held. The statement reads
/// `rollup_ranges`, then `rollup_retired` in its subquery: the order in
/// which a rebuild's `RENAME` locks them (by name; see [`facts`] on why
/// that matters).
pub(crate) async fn done(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
) -> Result<Vec<Range>, StoreError> {
    let (held, changed): (u8, u64) = timed(
        config,
        client
            .query("SELECT toUInt8(argMax(held, at_ms)), max(at_ms) FROM rollup_hold")
            .fetch_one(),
    )
    .await?;
    if held == 1 {
        // A roll that raced a rebuild's switch may have recorded a range
        // here whose rows are in the old tables; until the release makes it
        // stale, rankings read the facts.
        return Ok(Vec::new());
    }
    timed(
        config,
        client
            .query(&format!(
                "SELECT level, lo, hi, min(attempt) AS one_attempt
                 FROM rollup_ranges
                 WHERE done_ms > {changed}
                   AND attempt NOT IN (SELECT attempt FROM rollup_retired)
                 GROUP BY level, lo, hi ORDER BY level, lo"
            ))
            .fetch_all(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(level: u8, lo: u64, hi: u64) -> Range {
        Range {
            level,
            lo,
            hi,
            attempt: lo * 100 + u64::from(level),
        }
    }

    /// Level-0 ranges of `size` up to `end`.
    fn level0(size: u64, end: u64) -> Vec<Range> {
        (0..end / size)
            .map(|i| r(0, i * size, (i + 1) * size))
            .collect()
    }

    #[test]
    fn the_first_range_waits_for_the_position_to_pass_its_end() {
        assert_eq!(next(&[], 9, 10, false), None);
        assert_eq!(
            next(&[], 10, 10, false),
            Some(Plan::Facts { lo: 0, hi: 10 })
        );
        let done = level0(10, 30);
        assert_eq!(next(&done, 39, 10, false), None);
        assert_eq!(
            next(&done, 45, 10, false),
            Some(Plan::Facts { lo: 30, hi: 40 })
        );
    }

    #[test]
    fn a_quiet_stream_is_rolled_up_to_its_position() {
        let done = level0(10, 20);
        assert_eq!(
            next(&done, 24, 10, true),
            Some(Plan::Facts { lo: 20, hi: 24 })
        );
        assert_eq!(next(&done, 20, 10, true), None);
        // A full range is rolled whole, quiet or not.
        assert_eq!(
            next(&done, 55, 10, true),
            Some(Plan::Facts { lo: 20, hi: 30 })
        );
        // The next range starts where the short one ended.
        let mut done = done;
        done.push(r(0, 20, 24));
        assert_eq!(
            next(&done, 34, 10, false),
            Some(Plan::Facts { lo: 24, hi: 34 })
        );
        assert_eq!(cover(&done, 100).0, 24);
    }

    #[test]
    fn every_few_ranges_are_summed_with_the_base_into_a_new_base() {
        let done = level0(10, 10 * BASE_EVERY as u64);
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 10_000, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(parts, done);
        // Once summed, level 0 goes on from where it stopped.
        let mut done = done;
        done.push(r(BASE, 0, 40));
        assert_eq!(
            next(&done, 10_000, 10, false),
            Some(Plan::Facts { lo: 40, hi: 50 })
        );
        // Three more do not make a base; the fourth does, with the last base.
        done.extend((4..7).map(|i| r(0, i * 10, (i + 1) * 10)));
        assert_eq!(
            next(&done, 10_000, 10, false),
            Some(Plan::Facts { lo: 70, hi: 80 })
        );
        done.push(r(0, 70, 80));
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 10_000, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(parts[0], r(BASE, 0, 40));
        assert_eq!(
            parts.iter().map(|p| p.hi).collect::<Vec<_>>(),
            [40, 50, 60, 70, 80]
        );
        assert_eq!(Plan::Join { level: BASE, parts }.bounds(), (0, 80));
    }

    #[test]
    fn short_ranges_are_joined_and_make_no_base_before_full_ranges_worth() {
        let mut done = vec![r(BASE, 0, 40)];
        done.extend((0..BASE_EVERY as u64).map(|i| r(0, 40 + 2 * i, 42 + 2 * i)));
        // Four short ranges after the base: joined at level 0, not into a
        // new base (which would rewrite the history for 8 events).
        let Some(Plan::Join { level: 0, parts }) = next(&done, 48, 10, true) else {
            panic!("expected a level-0 join")
        };
        assert_eq!(parts, done[1..]);
        done.push(r(0, 40, 48));
        assert_eq!(chain(&done, 0, 40), [r(0, 40, 48)]);
        assert_eq!(cover(&done, 48), (48, vec![r(BASE, 0, 40), r(0, 40, 48)]));
        // A full range then follows it, and a short one.
        assert_eq!(
            next(&done, 60, 10, false),
            Some(Plan::Facts { lo: 48, hi: 58 })
        );
        done.push(r(0, 48, 58));
        assert_eq!(
            next(&done, 60, 10, true),
            Some(Plan::Facts { lo: 58, hi: 60 })
        );
        done.push(r(0, 58, 60));
        assert_eq!(next(&done, 60, 10, true), None);
        // Once the ranges after the base span four full ones, all of them
        // make the new base.
        done.extend([r(0, 60, 70), r(0, 70, 80)]);
        let Some(Plan::Join { level: BASE, parts }) = next(&done, 80, 10, false) else {
            panic!("expected a base")
        };
        assert_eq!(
            parts.iter().map(|p| (p.lo, p.hi)).collect::<Vec<_>>(),
            [(0, 40), (40, 48), (48, 58), (58, 60), (60, 70), (70, 80)]
        );
    }

    #[test]
    fn a_join_takes_no_range_longer_than_those_after_it() {
        let spans = |spans: &[u64]| {
            let mut at = 0;
            spans
                .iter()
                .map(|s| {
                    at += s;
                    r(0, at - s, at)
                })
                .collect::<Vec<_>>()
        };
        // The history of a quiet stream stays out of a join of its pauses.
        assert_eq!(joinable(&spans(&[50, 3, 3, 3, 3])), 4);
        assert_eq!(joinable(&spans(&[12, 3, 3, 3, 3])), 5);
        assert_eq!(joinable(&spans(&[16, 8, 4, 2, 1])), 1);
        assert_eq!(joinable(&spans(&[1, 1, 1, 60])), 4);
        // A full range too, once those after it are as long.
        assert_eq!(joinable(&spans(&[100, 30, 30, 30])), 3);
        assert_eq!(joinable(&spans(&[100, 30, 30, 40])), 4);
        assert_eq!(joinable(&[]), 0);
    }

    /// Rolls what [`next`] asks for until nothing is due: the bases made
    /// and the sequences that level-0 joins rewrote.
    fn roll_all(done: &mut Vec<Range>, position: u64, size: u64, quiet: bool) -> (usize, u64) {
        let (mut bases, mut rewritten) = (0, 0);
        while let Some(plan) = next(done, position, size, quiet) {
            let (lo, hi) = plan.bounds();
            match plan.level() {
                BASE => bases += 1,
                _ if matches!(plan, Plan::Join { .. }) => rewritten += hi - lo,
                _ => {}
            }
            done.push(Range {
                level: plan.level(),
                lo,
                hi,
                attempt: done.len() as u64,
            });
        }
        (bases, rewritten)
    }

    #[test]
    fn a_stream_that_pauses_often_makes_a_base_per_four_ranges_of_events() {
        // A history of 90 events rolled as one short range, then bursts of
        // 1 to 9 events, each followed by a pause, with ranges of 100:
        // 5,000 pauses, 25,000 events after the history.
        let size = 100;
        let mut done = Vec::new();
        let (mut position, mut bases, mut rewritten) = (90, 0, 0);
        roll_all(&mut done, position, size, true);
        for i in 0..5_000 {
            position += i * 7 % 9 + 1;
            for quiet in [false, true] {
                let (b, r) = roll_all(&mut done, position, size, quiet);
                bases += b;
                rewritten += r;
            }
            // Rolled up to the position, from a few ranges.
            let (rolled, ranges) = cover(&done, position);
            assert_eq!(rolled, position);
            assert!(ranges.len() <= 1 + 4 * BASE_EVERY, "{ranges:?}");
        }
        // A base per 400 events at most (a base takes every range after the
        // last one, at times a little more than 400), where a base per four
        // pauses made 1,250, each rewriting the history.
        assert!((55..=25_090 / 400).contains(&bases), "{bases} bases");
        // Joins rewrote each event a few times (at most log2 of a range,
        // about 7, if they all were joined).
        assert!(rewritten <= 7 * 25_090, "{rewritten} rewritten");
    }

    #[test]
    fn ranges_that_halve_are_joined_in_few() {
        // The worst pattern found: quiet ranges of 3 * 2^k - 2 events, each
        // followed by two of one event, k falling from 13 to 2; then full
        // ranges and the same again, three times, at the default size.
        let size = 65_536;
        let mut done = vec![r(BASE, 0, 1_000_000), r(0, 0, 1_000_000)];
        let mut position = 1_000_000;
        let mut longest = 0;
        for _ in 0..4 {
            for k in (2..=13).rev() {
                for span in [3 * (1 << k) - 2, 1, 1] {
                    position += span;
                    roll_all(&mut done, position, size, true);
                    longest = longest.max(cover(&done, position).1.len());
                }
            }
            position += size;
            roll_all(&mut done, position, size, false);
        }
        assert_eq!(cover(&done, position).0, position);
        assert!(longest <= 40, "{longest} ranges");
    }

    #[test]
    fn ranges_two_bases_back_are_superseded() {
        let mut recorded = level0(10, 120);
        assert!(superseded(&recorded).is_empty());
        recorded.push(r(BASE, 0, 40));
        assert!(
            superseded(&recorded).is_empty(),
            "one base supersedes nothing"
        );
        recorded.push(r(BASE, 0, 80));
        assert_eq!(superseded(&recorded), level0(10, 40));
        // Every attempt of a superseded range goes; the previous base stays.
        let again = |range: Range| Range {
            attempt: 7_000 + range.attempt,
            ..range
        };
        recorded.extend([again(r(0, 0, 10)), again(r(BASE, 0, 40))]);
        let gone = superseded(&recorded);
        assert!(gone.contains(&again(r(0, 0, 10))));
        assert!(!gone.contains(&r(BASE, 0, 40)) && !gone.contains(&again(r(BASE, 0, 40))));
        // A third base supersedes the first.
        recorded.push(r(BASE, 0, 120));
        let gone = superseded(&recorded);
        assert!(gone.contains(&r(BASE, 0, 40)) && !gone.contains(&r(BASE, 0, 80)));
        assert!(gone.iter().all(|g| g.hi <= 80), "{gone:?}");
        // What stays covers the position from the latest base, a position
        // after the previous base from that one, and an older one not at
        // all (a ranking there reads the facts).
        let kept: Vec<Range> = recorded
            .iter()
            .filter(|r| !gone.contains(r))
            .copied()
            .collect();
        assert_eq!(cover(&kept, 125), (120, vec![r(BASE, 0, 120)]));
        assert_eq!(cover(&kept, 95), (90, vec![r(BASE, 0, 80), r(0, 80, 90)]));
        assert_eq!(cover(&kept, 55), (0, vec![]));
    }

    #[test]
    fn the_cover_takes_the_largest_ranges_and_stops_at_the_position() {
        let mut done = level0(10, 200);
        done.push(r(BASE, 0, 160));
        let (rolled, ranges) = cover(&done, 10_000);
        assert_eq!(rolled, 200);
        assert_eq!(ranges[0], r(BASE, 0, 160));
        assert_eq!(ranges.len(), 1 + 4);
        // A position inside the large range falls back to the small ones.
        let (rolled, ranges) = cover(&done, 155);
        assert_eq!(rolled, 150);
        assert!(ranges.iter().all(|r| r.level == 0));
        // A position inside a range stops before it.
        assert_eq!(cover(&done, 175).0, 170);
        assert_eq!(cover(&[], 175), (0, vec![]));
    }

    #[test]
    fn a_gap_ends_the_cover() {
        let done = vec![r(0, 0, 10), r(0, 20, 30)];
        assert_eq!(cover(&done, 100), (10, vec![r(0, 0, 10)]));
    }

    #[test]
    fn ranges_of_another_size_chain_on() {
        // The size was changed from 10 to 25 after 30 events.
        let mut done = level0(10, 30);
        assert_eq!(
            next(&done, 100, 25, false),
            Some(Plan::Facts { lo: 30, hi: 55 })
        );
        done.push(r(0, 30, 55));
        assert_eq!(cover(&done, 100).0, 55);
    }

    #[test]
    fn joins_sum_the_parts_attempts() {
        let parts = level0(10, 30);
        let sql = join_sql(1, &parts, 7);
        assert!(sql.contains("attempt IN (0, 1000, 2000)"), "{sql}");
        assert!(sql.contains("SELECT tenant, 1, 0, 30, 7,"), "{sql}");
    }
}

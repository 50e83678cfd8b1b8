//! Rollups (ADR 0006): the facts of closed ranges of stream sequences,
//! summed per tenant, minute and attribution. Rankings read them for the
//! ranges they cover and the facts only beyond.
//!
//! A level-0 range `(lo, hi]` is rolled from the facts once every event up
//! to `hi` is projected, attributed from the catalogue as it stood at `hi`;
//! catalogue events in the range also correct the attribution of their
//! posts' earlier facts (minus as attributed at `lo`, plus as at `hi`). The
//! sum of consecutive ranges from the start to `R` is therefore exactly the
//! facts up to `R` attributed as at `R`. Ranges at the end of the chain
//! from the start are joined into one once [`JOIN_FEWEST`] of them can be,
//! each no longer than those after it together (see [`next`]); the whole
//! chain is joined into a base (level [`BASE`]) once the ranges after the
//! base reach an eighth of it ([`BASE_AHEAD`]). So a base, which holds
//! every cell (tenant, minute, attribution) of the history, is rewritten
//! each time the history grows by an eighth (about nine times its length
//! in all), and a ranking reads the base and at most an eighth of the
//! history's events more, in a few ranges.
//!
//! Rolling is a pure function of the facts: an attempt repeated after a
//! crash, or made by two workers at once, writes the same sums. Each
//! attempt writes under a random `attempt` number and counts only once
//! `rollup_ranges` records it done; any done attempt of a range is as good
//! as another.

mod facts;
mod plan;
mod retire;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{timed, StoreError};
use crate::config::ClickHouseConfig;
pub use plan::{cover, next, superseded, Plan, BASE_AHEAD};
pub use retire::Retired;

/// The level of a base: a range from the start of the stream.
pub const BASE: u8 = 1;
/// The fewest ranges that a join takes.
pub const JOIN_FEWEST: usize = 4;

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
    numbers(ranges.iter().map(|r| r.attempt))
}

/// Numbers as an SQL list.
fn numbers(values: impl Iterator<Item = u64>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

/// Rolls ranges in one database.
#[derive(Clone)]
pub struct Roller {
    client: clickhouse::Client,
    config: ClickHouseConfig,
    /// Attempts seen with rows but not recorded done, and when first seen
    /// (ClickHouse's clock, ms): see [`Roller::retire`].
    unrecorded: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, u64>>>,
}

impl Roller {
    /// Rolling is background work: each of its statements runs on one
    /// ClickHouse thread (the default is one per core), so that a roll
    /// never takes every core from ingest and projection.
    pub fn connect(config: &ClickHouseConfig) -> Roller {
        Roller {
            client: super::client(config).with_setting("max_threads", "1"),
            config: config.clone(),
            unrecorded: Default::default(),
        }
    }

    /// The ranges rolled to the end.
    pub async fn done(&self) -> Result<Vec<Range>, StoreError> {
        done(&self.client, &self.config).await
    }

    /// Whether rolling is held (see [`Roller::hold`]), and when that was
    /// last changed (0 if never).
    async fn hold_state(&self) -> Result<(bool, u64), StoreError> {
        hold_state(&self.client, &self.config).await
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
        Ok(self.progress().await?.0)
    }

    /// The position (as [`Roller::position`]) and the stream's last
    /// sequence when a worker last recorded it: how far the projection is
    /// behind.
    pub async fn progress(&self) -> Result<(u64, u64), StoreError> {
        let positions = super::models::Models::new(self.client.clone(), &self.config)
            .positions()
            .await?;
        Ok((
            positions.iter().map(|p| p.position).min().unwrap_or(0),
            positions.iter().map(|p| p.stream_last).max().unwrap_or(0),
        ))
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
                // A part retired meanwhile (by a worker ahead of this
                // one's plan) may have lost its rows before the join read
                // them: every part must still be recorded done and not
                // retired. (Not merely absent from `rollup_retired`: an
                // attempt is struck from it once its rows and its record
                // are deleted.)
                let standing: u64 = timed(
                    &self.config,
                    self.client
                        .query(&format!(
                            "SELECT count(DISTINCT attempt) FROM rollup_ranges
                             WHERE attempt IN ({}) AND done_ms > {}
                               AND attempt NOT IN (SELECT attempt FROM rollup_retired)",
                            attempt_list(parts),
                            before.1
                        ))
                        .fetch_one(),
                )
                .await?;
                if standing < parts.len() as u64 {
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

    /// Rolls the next range if one is due (ranges of `size` events at level
    /// 0, or up to the position if the stream is `quiet`; see [`next`]) and
    /// says which; `None` if none is due or rolling is held.
    pub async fn step(&self, size: u64, quiet: bool) -> Result<Option<Range>, StoreError> {
        // Read before the ranges done, so that a switch after them shows.
        let before = self.hold_state().await?;
        if before.0 {
            return Ok(None);
        }
        let (done, position) = tokio::try_join!(
            done_since(&self.client, &self.config, before.1),
            self.position()
        )?;
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
    match hold_state(client, config).await? {
        // A roll that raced a rebuild's switch may have recorded a range
        // here whose rows are in the old tables; until the release makes it
        // stale, rankings read the facts.
        (true, _) => Ok(Vec::new()),
        (false, changed) => done_since(client, config, changed).await,
    }
}

/// The ranges recorded done after `changed` (the last hold or release) and
/// not retired, one attempt each.
async fn done_since(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    changed: u64,
) -> Result<Vec<Range>, StoreError> {
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

/// Whether rolling is held in this database, and when that was last
/// changed (0 if never).
async fn hold_state(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
) -> Result<(bool, u64), StoreError> {
    let (held, changed): (u8, u64) = timed(
        config,
        client
            .query("SELECT toUInt8(argMax(held, at_ms)), max(at_ms) FROM rollup_hold")
            .fetch_one(),
    )
    .await?;
    Ok((held == 1, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_sum_the_parts_attempts() {
        let part = |lo: u64| Range {
            level: 0,
            lo,
            hi: lo + 10,
            attempt: lo * 100,
        };
        let parts = [part(0), part(10), part(20)];
        let sql = join_sql(1, &parts, 7);
        assert!(sql.contains("attempt IN (0, 1000, 2000)"), "{sql}");
        assert!(sql.contains("SELECT tenant, 1, 0, 30, 7,"), "{sql}");
    }
}

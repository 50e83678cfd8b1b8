//! Report queries with filters, paging pinned to a stream position, and
//! trends. Pinning works because every fact carries its stream sequence:
//! `seq <= position` is the read model exactly as it stood at `position`.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::narrowed::{enriched_narrowed, Side};
use super::{
    attributed, enriched_with, posts_of, timed, LateEvent, Metric, Models, Ranked, StoreError,
    LONG_QUERY,
};
use crate::store::rollups;

/// Optional filters on enriched facts (attribution included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub platform: Option<String>,
    pub campaign_id: Option<String>,
    pub content_type: Option<String>,
    pub tag: Option<String>,
}

impl Filters {
    /// The conditions (constants of this module) and their values, in order.
    fn conditions(&self) -> (String, Vec<&str>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        for (value, condition) in [
            (&self.platform, " AND plat = ?"),
            (&self.campaign_id, " AND campaign = ?"),
            (&self.content_type, " AND content_type = ?"),
            (&self.tag, " AND has(tags, ?)"),
        ] {
            if let Some(value) = value {
                sql.push_str(condition);
                values.push(value.as_str());
            }
        }
        (sql, values)
    }
}

/// What a trend follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    Post(String),
    Influencer(String),
    Campaign(String),
}

/// One point of a trend: a window starting at `start` and its value.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrendPoint {
    pub start: u32,
    pub value: i64,
}

/// The facts of a range pinned at a position: enriched facts with
/// `occurred_at` in `[from, to)` and `seq <= position`; binds from, to,
/// position.
const RANGE_AT: &str =
    "AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) AND seq <= ?";
/// The catalogue as it stood at a position; binds position.
const CATALOGUE_AT: &str = "AND seq <= ?";

impl Models {
    /// One page of influencers ranked by `metric` over `[from, to)`, as the
    /// read model stood at `position`: highest first, ties by id, skipping
    /// `offset` lines. Pages of the same position never overlap or miss.
    ///
    /// It sums, with the same answer as [`Models::ranking_page_from_facts`]:
    /// - the rollups of the ranges that cover `(0, R]` (`R <= position`), for
    ///   the whole minutes of the period;
    /// - the facts after `R`, for those minutes;
    /// - the facts of the period's partial first and last minutes;
    /// - for posts with a catalogue event after `R`: their facts up to `R`
    ///   attributed as at `position`, minus as at `R` (as the rollups have
    ///   them).
    #[allow(clippy::too_many_arguments)]
    pub async fn ranking_page(
        &self,
        tenant: &str,
        metric: Metric,
        (from, to): (u32, u32),
        filters: &Filters,
        position: u64,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<Ranked>, StoreError> {
        let done = rollups::done(&self.client, &self.config).await?;
        let (rolled, ranges) = rollups::cover(&done, position);
        let (a, b) = whole_minutes(from, to);
        let minutes = format!("occurred_at >= toDateTime({a}) AND occurred_at < toDateTime({b})");
        // The facts after `R` (and those of the partial minutes), counted as
        // at the position; and the facts up to `R` of posts catalogued after
        // it, counted as at the position and minus as at `R`.
        let kept = format!(
            "tenant = ? AND seq <= {position} AND ((seq > {rolled} AND {minutes})
                 OR (occurred_at >= toDateTime({from}) AND occurred_at < toDateTime({a}))
                 OR (occurred_at >= toDateTime({b}) AND occurred_at < toDateTime({to})))"
        );
        let corrected = if rolled > 0 {
            format!(
                "tenant = ? AND seq <= {rolled} AND {minutes} AND post_id IN (
                     SELECT post_id FROM catalogue
                     WHERE tenant = ? AND type = 'post_published'
                       AND seq > {rolled} AND seq <= {position})"
            )
        } else {
            "0".to_owned()
        };
        let binds: &[&str] = if rolled > 0 {
            &[tenant, tenant, tenant]
        } else {
            &[tenant]
        };
        // With the rollups at the position and the period in whole minutes,
        // no fact is read.
        let facts_needed = rolled < position || (a, b) != (from, to);
        if !facts_needed && ranges.is_empty() {
            return Ok(Vec::new());
        }
        let mut lists = None;
        let mut parts = Vec::new();
        if facts_needed {
            lists = Some(posts_of(&self.client, &self.config, &kept, &corrected, binds).await?);
            parts.push(attributed(&kept, &corrected, position, rolled));
        }
        // The facts first, the rollups after: a statement that locked
        // `rollups` before `engagements` could deadlock with a rebuild's
        // `RENAME`, which takes them in the other order (ClickHouse 18.16).
        if !ranges.is_empty() {
            parts.push(format!(
                "SELECT tenant, minute AS occurred_at, influencer, campaign, platform AS plat,
                        content_type, tags, likes, shares, comments, views, clicks, conversions,
                        follows, sentiment, events
                 FROM rollups
                 WHERE tenant = ? AND attempt IN ({})
                   AND minute >= toDateTime({a}) AND minute < toDateTime({b})",
                rollups::attempt_list(&ranges)
            ));
        }
        let (conditions, values) = filters.conditions();
        let sql = ranking_sql(
            metric,
            &parts.join(" UNION ALL "),
            &conditions,
            offset,
            limit,
        );
        let (name, value) = LONG_QUERY;
        let mut query = self.client.query(&sql).with_setting(name, value);
        if let Some((tenants, posts)) = &lists {
            for bind in binds {
                query = query.bind(*bind);
            }
            query = query.bind(tenants).bind(posts);
        }
        if !ranges.is_empty() {
            query = query.bind(tenant);
        }
        for value in values {
            query = query.bind(value);
        }
        timed(&self.config, query.fetch_all()).await
    }

    /// [`Models::ranking_page`] from the facts alone, without rollups: the
    /// reference the rollups are checked against.
    #[allow(clippy::too_many_arguments)]
    pub async fn ranking_page_from_facts(
        &self,
        tenant: &str,
        metric: Metric,
        (from, to): (u32, u32),
        filters: &Filters,
        position: u64,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<Ranked>, StoreError> {
        let (conditions, values) = filters.conditions();
        let sql = ranking_sql(
            metric,
            &enriched_with(RANGE_AT, CATALOGUE_AT),
            &conditions,
            offset,
            limit,
        );
        let mut query = self
            .client
            .query(&sql)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .bind(position)
            .bind(tenant)
            .bind(position);
        for value in values {
            query = query.bind(value);
        }
        timed(&self.config, query.fetch_all()).await
    }

    /// `metric` of `entity` per `step` seconds over `[from, to)` at
    /// `position`, one point per step that has facts, oldest first.
    pub async fn trend_steps(
        &self,
        tenant: &str,
        entity: &Entity,
        metric: Metric,
        (from, to): (u32, u32),
        step: u32,
        position: u64,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        let (side, id) = match entity {
            Entity::Post(id) => (None, id),
            Entity::Influencer(id) => (Some(Side::Influencer), id),
            Entity::Campaign(id) => (Some(Side::Campaign), id),
        };
        // A post's facts are a slice of the key; an influencer's or a
        // campaign's are narrowed first.
        let (source, outer, posts) = match side {
            None => (
                enriched_with(&format!("{RANGE_AT} AND post_id = ?"), CATALOGUE_AT),
                String::new(),
                None,
            ),
            Some(side) => (
                enriched_narrowed(side, RANGE_AT, CATALOGUE_AT),
                format!("WHERE {} = ?", side.attributed()),
                Some(self.narrowing(tenant, side, id).await?),
            ),
        };
        let sql = format!(
            "SELECT toUInt32(intDiv(toUInt32(occurred_at), {step}) * {step}) AS step_start,
                    {} AS metric_value
             FROM ({source})
             {outer}
             GROUP BY step_start ORDER BY step_start",
            metric.sql(),
            step = step.max(1),
        );
        let (name, value) = LONG_QUERY;
        let query = self
            .client
            .query(&sql)
            .with_setting(name, value)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .bind(position);
        let query = match &posts {
            None => query.bind(id.as_str()).bind(tenant).bind(position),
            Some(posts) => query
                .bind(posts)
                .bind(id.as_str())
                .bind(tenant)
                .bind(position)
                .bind(posts)
                .bind(id.as_str()),
        };
        timed(&self.config, query.fetch_all()).await
    }

    /// The tenant's late events at `position`, newest sequence first,
    /// below `before` (a sequence; `u64::MAX` for the first page), and their
    /// total at `position`.
    pub async fn late_events_page(
        &self,
        tenant: &str,
        position: u64,
        before: u64,
        limit: u32,
    ) -> Result<(u64, Vec<LateEvent>), StoreError> {
        let total: u64 = timed(
            &self.config,
            self.client
                .query(
                    "SELECT toUInt64(count()) FROM late_events FINAL
                     WHERE tenant = ? AND seq <= ?",
                )
                .bind(tenant)
                .bind(position)
                .fetch_one(),
        )
        .await?;
        let listed = timed(
            &self.config,
            self.client
                .query(&format!(
                    "SELECT seq, event_id, type, post_id, toUInt32(occurred_at) AS occurred_s,
                            toUInt32(received_at) AS received_s, toUInt32(bucket_end) AS bucket_end_s,
                            lateness_s
                     FROM late_events FINAL WHERE tenant = ? AND seq <= ? AND seq < ?
                     ORDER BY seq DESC LIMIT {}",
                    limit.min(1_000)
                ))
                .bind(tenant)
                .bind(position)
                .bind(before)
                .fetch_all(),
        )
        .await?;
        Ok((total, listed))
    }

    /// Whether the tenant knows the influencer (a catalogue event or a fact
    /// names it). Another tenant's influencer is unknown.
    pub async fn influencer_known(
        &self,
        tenant: &str,
        influencer_id: &str,
    ) -> Result<bool, StoreError> {
        let known: u8 = timed(
            &self.config,
            self.client
                .query(
                    // `engagements` before `catalogue`, the order a
                    // rebuild's `RENAME` locks them in.
                    "SELECT toUInt8(
                        (SELECT count() FROM engagements WHERE tenant = ? AND influencer_id = ?)
                      + (SELECT count() FROM catalogue WHERE tenant = ? AND influencer_id = ?) > 0)",
                )
                .bind(tenant)
                .bind(influencer_id)
                .bind(tenant)
                .bind(influencer_id)
                .fetch_one(),
        )
        .await?;
        Ok(known == 1)
    }
}

/// A page of influencers ranked by `metric` over the enriched facts (or
/// rollups) `source`, with the filters' `conditions`.
fn ranking_sql(metric: Metric, source: &str, conditions: &str, offset: u32, limit: u32) -> String {
    format!(
        "SELECT influencer, {} AS metric_value
         FROM ({source})
         WHERE influencer != '' {conditions}
         GROUP BY influencer ORDER BY metric_value DESC, influencer
         LIMIT {offset}, {}",
        metric.sql(),
        limit.min(1_000),
    )
}

/// The whole minutes `[a, b)` within `[from, to)`; `a == b == from` when
/// there are none, so that `[from, a)` and `[b, to)`, the partial minutes,
/// cover the rest.
fn whole_minutes(from: u32, to: u32) -> (u32, u32) {
    let a = from.div_ceil(60).saturating_mul(60);
    let b = to / 60 * 60;
    if a < b {
        (a, b)
    } else {
        (from, from)
    }
}

/// Sliding windows of `window` seconds every `step` seconds over `[from,
/// to)`, from per-step values (`window` a multiple of `step`, `from` aligned
/// to `step`). Tumbling windows are `window == step`. A window starting at
/// `s` sums the steps in `[s, s + window)`; windows are listed from `from`
/// while they start before `to`, empty ones with 0.
pub fn sliding(
    steps: &[TrendPoint],
    from: u32,
    to: u32,
    step: u32,
    window: u32,
) -> Vec<TrendPoint> {
    let step = step.max(1);
    let per_window = (window / step).max(1) as usize;
    let slots = to.saturating_sub(from).div_ceil(step) as usize;
    let mut values = vec![0i64; slots + per_window];
    for point in steps {
        if point.start >= from && point.start < to {
            values[((point.start - from) / step) as usize] += point.value;
        }
    }
    let mut windows = Vec::with_capacity(slots);
    let mut sum: i64 = values[..per_window.min(values.len())].iter().sum();
    for slot in 0..slots {
        windows.push(TrendPoint {
            start: from + slot as u32 * step,
            value: sum,
        });
        sum -= values[slot];
        sum += values.get(slot + per_window).copied().unwrap_or(0);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u32, value: i64) -> TrendPoint {
        TrendPoint { start, value }
    }

    #[test]
    fn tumbling_windows_are_the_steps_with_gaps_filled() {
        let steps = [p(100, 3), p(120, 5)];
        assert_eq!(
            sliding(&steps, 100, 140, 10, 10),
            [p(100, 3), p(110, 0), p(120, 5), p(130, 0)]
        );
    }

    #[test]
    fn sliding_windows_sum_the_steps_they_cover() {
        // A 60 s window stepped every 10 s over 100 s.
        let steps: Vec<TrendPoint> = (0..10).map(|i| p(i * 10, 1 + i as i64)).collect();
        let windows = sliding(&steps, 0, 100, 10, 60);
        assert_eq!(windows.len(), 10);
        assert_eq!(windows[0], p(0, 1 + 2 + 3 + 4 + 5 + 6));
        assert_eq!(windows[1], p(10, 2 + 3 + 4 + 5 + 6 + 7));
        // The last windows run past the data: only what exists is summed.
        assert_eq!(windows[9], p(90, 10));
        for (i, w) in windows.iter().enumerate() {
            let expected: i64 = steps
                .iter()
                .filter(|s| s.start >= w.start && s.start < w.start + 60)
                .map(|s| s.value)
                .sum();
            assert_eq!(w.value, expected, "window {i}");
        }
    }

    #[test]
    fn points_outside_the_range_are_ignored() {
        assert_eq!(
            sliding(&[p(90, 7), p(100, 1), p(200, 9)], 100, 120, 10, 20),
            [p(100, 1), p(110, 0)]
        );
        assert!(sliding(&[], 100, 100, 10, 10).is_empty());
    }

    #[test]
    fn whole_minutes_and_partial_ones_cover_the_period() {
        assert_eq!(whole_minutes(60, 180), (60, 180));
        assert_eq!(whole_minutes(61, 250), (120, 240));
        // Within one minute, or across one boundary only: no whole minute.
        assert_eq!(whole_minutes(61, 119), (61, 61));
        assert_eq!(whole_minutes(100, 130), (100, 100));
        assert_eq!(whole_minutes(61, 179), (61, 61));
        for (from, to) in [(0, 1), (59, 61), (61, 250), (3_600, 90_000), (7, 7_777)] {
            let (a, b) = whole_minutes(from, to);
            assert!(from <= a && a <= b && b <= to, "{from} {to}");
            if a < b {
                // The partial minutes are less than a minute each.
                assert!(a % 60 == 0 && b % 60 == 0 && a - from < 60 && to - b < 60);
            }
        }
    }

    #[test]
    fn filters_become_conditions_in_a_fixed_order() {
        let filters = Filters {
            platform: Some("tiktok".into()),
            tag: Some("summer".into()),
            ..Filters::default()
        };
        let (sql, values) = filters.conditions();
        assert_eq!(sql, " AND plat = ? AND has(tags, ?)");
        assert_eq!(values, ["tiktok", "summer"]);
        assert_eq!(Filters::default().conditions().0, "");
    }
}

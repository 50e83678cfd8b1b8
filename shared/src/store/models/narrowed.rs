//! Reads of one influencer's or one campaign's facts, narrowed before they
//! are attributed.
//!
//! Attribution is completed when read (a fact that carries no influencer
//! takes its post's from the latest `post_published` event), so a filter
//! on the influencer can only apply after the join with the catalogue. Read
//! that way, a report on one influencer or campaign deduplicated (`FINAL`)
//! and attributed all of the tenant's facts in its period and the whole
//! catalogue. Here the facts are first narrowed to those that can be
//! attributed to the one followed, and the catalogue to their posts, then
//! attributed and filtered as before: the same answer from a superset.
//!
//! A fact can be attributed to influencer X only if it carries X, or
//! carries none and its post was published for X at some time: so only
//! facts of the posts that a `post_published` event names X for, or that
//! a fact carrying X is on, and carrying X or nothing. The posts are a
//! slice of `engagements`' key. They are looked up by statements of their
//! own and passed as lists: a subquery on `post_catalogue` or
//! `engagements` would make the statement lock that table twice, which on
//! ClickHouse 18.16 deadlocks with a `RENAME` queued between the two (a
//! rebuild's switch). A read pinned to a stream position (trends) takes
//! the lists after that position is projected, so it is exact. An
//! unpinned one leaves out a post first published for X, or first carried
//! for X, between those statements and the read, while it counts the
//! other facts that arrived meanwhile: the skew of any read of tables
//! that are written apart, gone at the next read.

use clickhouse::Row;
use serde::Deserialize;

use super::{
    enriched_from, timed, Breakdown, Campaign, Counters, KeyedCounters, Models, StoreError,
    COUNTERS, LONG_QUERY,
};

/// Whom a narrowed read follows: an attribution column of the facts and
/// of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Influencer,
    Campaign,
}

impl Side {
    fn column(self) -> &'static str {
        match self {
            Side::Influencer => "influencer_id",
            Side::Campaign => "campaign_id",
        }
    }

    /// The column of [`enriched_from`]'s rows that holds the attribution.
    pub(crate) fn attributed(self) -> &'static str {
        match self {
            Side::Influencer => "influencer",
            Side::Campaign => "campaign",
        }
    }
}

/// The tenant's facts that can be attributed to one influencer or campaign
/// (see the module), each sequence once, with their attribution completed:
/// the rows of [`enriched_from`], a superset of those attributed to it.
/// `filter` and `catalogue_filter` are constant conditions on the facts and
/// on the catalogue.
///
/// Binds: the tenant, `filter`'s values, the posts ([`Models::narrowing`]),
/// the id; then the tenant, `catalogue_filter`'s values, the posts.
///
/// The first row of each sequence stands for it, as in [`super::attributed`]:
/// a fact written twice is the same row twice, and `FINAL` would merge the
/// rows of every post in the narrowed parts, not only of these.
pub(crate) fn enriched_narrowed(side: Side, filter: &str, catalogue_filter: &str) -> String {
    let column = side.column();
    enriched_from(
        &format!(
            "SELECT * FROM engagements
             WHERE tenant = ? {filter}
               AND post_id IN (SELECT arrayJoin(?)) AND {column} IN ('', ?)
             LIMIT 1 BY seq"
        ),
        &format!("{catalogue_filter} AND post_id IN (SELECT arrayJoin(?))"),
    )
}

impl Models {
    /// The posts whose facts can be attributed to `id` (see the module):
    /// those a `post_published` event of the tenant names it for, and
    /// those a fact carrying it is on; sorted, with `""` so that the list
    /// is never empty.
    pub(crate) async fn narrowing(
        &self,
        tenant: &str,
        side: Side,
        id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let column = side.column();
        let posts_of = |table: &str, condition: &str| {
            let query = self
                .client
                .query(&format!(
                    "SELECT DISTINCT post_id FROM {table} WHERE tenant = ? {condition} AND {column} = ?"
                ))
                .bind(tenant)
                .bind(id);
            timed(&self.config, query.fetch_all::<String>())
        };
        let (published, carried) = tokio::try_join!(
            posts_of("post_catalogue", "AND type = 'post_published'"),
            posts_of("engagements", ""),
        )?;
        let mut posts = published;
        posts.extend(carried);
        posts.push(String::new());
        posts.sort_unstable();
        posts.dedup();
        Ok(posts)
    }

    /// A campaign's totals, CTR, conversion rate and ROI over events in
    /// `[from, to)`, with breakdowns per influencer and per platform; `None`
    /// if nothing is known of it.
    pub async fn campaign(
        &self,
        tenant: &str,
        campaign_id: &str,
        (from, to): (u32, u32),
    ) -> Result<Option<Campaign>, StoreError> {
        #[derive(Row, Deserialize)]
        struct Definition {
            name: String,
            currency: String,
            budget_e4: i64,
            n: u64,
        }
        let definition = async {
            timed(
                &self.config,
                self.client
                    .query(
                        "SELECT argMaxIf(name, seq, name != '') AS campaign_name,
                                argMaxIf(currency, seq, currency != '') AS campaign_currency,
                                argMaxIf(budget_e4, seq, has_budget = 1) AS campaign_budget,
                                toUInt64(count()) AS n
                         FROM catalogue FINAL
                         WHERE tenant = ? AND campaign_id = ?
                           AND type IN ('campaign_created', 'campaign_updated')",
                    )
                    .bind(tenant)
                    .bind(campaign_id)
                    .fetch_one::<Definition>(),
            )
            .await
        };
        let (definition, posts) = tokio::try_join!(
            definition,
            self.narrowing(tenant, Side::Campaign, campaign_id)
        )?;
        // Both breakdowns from one statement: its cells, by influencer and
        // platform, summed here each way.
        let sql = format!(
            "SELECT (influencer, plat) AS key, {COUNTERS},
                    toInt64(sumIf(value_e4, currency = ?)) AS extra
             FROM ({})
             WHERE {} = ?
             GROUP BY key",
            enriched_narrowed(
                Side::Campaign,
                "AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)",
                "",
            ),
            Side::Campaign.attributed(),
        );
        let (name, value) = LONG_QUERY;
        let query = self
            .client
            .query(&sql)
            .with_setting(name, value)
            .bind(definition.currency.as_str())
            .bind(tenant)
            .bind(from)
            .bind(to)
            .bind(&posts)
            .bind(campaign_id)
            .bind(tenant)
            .bind(&posts)
            .bind(campaign_id);
        let cells: Vec<KeyedCounters<(String, String)>> =
            timed(&self.config, query.fetch_all()).await?;
        if definition.n == 0 && cells.is_empty() {
            return Ok(None);
        }
        let (by_influencer, by_platform) = breakdowns(cells);
        let mut counters = Counters::default();
        let mut value_e4 = 0;
        for b in &by_platform {
            counters.add(&b.counters);
            value_e4 += b.value_e4;
        }
        Ok(Some(Campaign {
            campaign_id: campaign_id.to_owned(),
            name: definition.name,
            currency: definition.currency,
            budget_e4: definition.budget_e4,
            ctr: counters.ctr(),
            conversion_rate: counters.conversion_rate(),
            roi: (definition.budget_e4 > 0).then(|| value_e4 as f64 / definition.budget_e4 as f64),
            counters,
            value_e4,
            by_influencer,
            by_platform,
        }))
    }
}

/// Cells keyed by (influencer, platform) summed by influencer and by
/// platform, each sorted by key.
fn breakdowns(cells: Vec<KeyedCounters<(String, String)>>) -> (Vec<Breakdown>, Vec<Breakdown>) {
    use std::collections::BTreeMap;
    let mut by_influencer: BTreeMap<String, Breakdown> = BTreeMap::new();
    let mut by_platform: BTreeMap<String, Breakdown> = BTreeMap::new();
    for cell in cells {
        let ((influencer, platform), counters, value_e4) = cell.split();
        for (sums, key) in [
            (&mut by_influencer, influencer),
            (&mut by_platform, platform),
        ] {
            let line = sums.entry(key.clone()).or_insert_with(|| Breakdown {
                key,
                counters: Counters::default(),
                value_e4: 0,
            });
            line.counters.add(&counters);
            line.value_e4 += value_e4;
        }
    }
    (
        by_influencer.into_values().collect(),
        by_platform.into_values().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(
        influencer: &str,
        platform: &str,
        likes: i64,
        value_e4: i64,
    ) -> KeyedCounters<(String, String)> {
        KeyedCounters {
            key: (influencer.to_owned(), platform.to_owned()),
            likes,
            shares: 1,
            comments: 0,
            views: 10,
            clicks: 2,
            conversions: 1,
            sentiment_sum: -5,
            events: 3,
            extra: value_e4,
        }
    }

    #[test]
    fn cells_sum_into_both_breakdowns_sorted_by_key() {
        let (by_influencer, by_platform) = breakdowns(vec![
            cell("inf-2", "tiktok", 4, 100),
            cell("inf-1", "tiktok", -1, 0),
            cell("inf-2", "instagram", 2, 50),
            cell("", "instagram", 1, 7),
        ]);
        let keys = |lines: &[Breakdown]| lines.iter().map(|b| b.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&by_influencer), ["", "inf-1", "inf-2"]);
        assert_eq!(keys(&by_platform), ["instagram", "tiktok"]);
        let inf2 = &by_influencer[2];
        assert_eq!(
            (
                inf2.counters.likes,
                inf2.counters.views,
                inf2.counters.events,
                inf2.value_e4
            ),
            (6, 20, 6, 150)
        );
        let tiktok = &by_platform[1];
        assert_eq!(
            (
                tiktok.counters.likes,
                tiktok.counters.sentiment_sum,
                tiktok.value_e4
            ),
            (3, -10, 100)
        );
        let total = |lines: &[Breakdown]| lines.iter().map(|b| b.counters.clicks).sum::<u64>();
        assert_eq!(total(&by_influencer), total(&by_platform));
    }

    #[test]
    fn the_narrowed_facts_are_of_the_posts_and_carry_the_id_or_nothing() {
        let sql = enriched_narrowed(Side::Campaign, "AND seq <= ?", "AND seq <= ?");
        let facts = sql.find("FROM engagements").unwrap();
        let catalogue = sql.find("FROM post_catalogue").unwrap();
        let (facts, catalogue) = (&sql[facts..catalogue], &sql[catalogue..]);
        let tight = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(tight(facts).contains(
            "WHERE tenant = ? AND seq <= ? AND post_id IN (SELECT arrayJoin(?)) \
             AND campaign_id IN ('', ?) LIMIT 1 BY seq"
        ));
        assert!(tight(catalogue)
            .contains("type = 'post_published' AND seq <= ? AND post_id IN (SELECT arrayJoin(?))"));
        // Each table once (see the module).
        assert_eq!(sql.matches("engagements").count(), 1);
        assert_eq!(sql.matches("post_catalogue").count(), 1);
    }
}

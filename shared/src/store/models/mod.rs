//! The read models, as queries over the projected facts (ADR 0004).
//!
//! The projector writes one row per event, keyed by stream sequence; every
//! aggregate here is computed from those rows with `FINAL` (or, where few
//! rows are read, the first row of each sequence), so whatever was
//! redelivered or replayed counts once. Rankings also read the rollups of
//! closed sequence ranges (`super::rollups`, ADR 0006). Attribution an
//! interaction lacks (influencer, campaign, platform, content type, tags) is
//! joined from the latest `post_published` event of its post when read: a
//! catalogue event that arrives after its interactions still attributes
//! them. One post's metrics look the catalogue's attribution up once
//! instead, with the same precedence.
//!
//! Every value from a caller is a bound parameter; the only SQL assembled
//! here is from constants of this module.

use clickhouse::Row;
use serde::Deserialize;

use super::{timed, StoreError};
use crate::config::ClickHouseConfig;
use narrowed::{enriched_narrowed, Side};

mod narrowed;
mod reports;
mod series;
mod types;

pub use reports::{sliding, Entity, Filters, TrendPoint};
pub use series::*;
pub use types::*;

/// A read-model query: the ClickHouse client and its timeout.
#[derive(Clone)]
pub struct Models {
    client: clickhouse::Client,
    config: ClickHouseConfig,
}

/// The counters' aggregates. Aliases differ from column names so that no
/// alias shadows a column another expression aggregates.
const COUNTERS: &str = "toInt64(sum(likes)) AS n_likes, toUInt64(sum(shares)) AS n_shares,
    toUInt64(sum(comments)) AS n_comments, toUInt64(sum(views)) AS n_views,
    toUInt64(sum(clicks)) AS n_clicks, toUInt64(sum(conversions)) AS n_conversions,
    toInt64(sum(sentiment)) AS n_sentiment, toUInt64(count()) AS n_events";

/// The facts of one tenant with their attribution completed from the
/// catalogue. `{filter}` is a constant condition on `engagements` (with `?`
/// parameters bound after the tenant).
fn enriched(filter: &str) -> String {
    enriched_with(filter, "")
}

/// [`enriched`], with a constant condition on `catalogue` too (its `?`
/// parameters bound after the catalogue's tenant).
fn enriched_with(filter: &str, catalogue_filter: &str) -> String {
    enriched_from(
        &format!("SELECT * FROM engagements FINAL WHERE tenant = ? {filter}"),
        catalogue_filter,
    )
}

/// `facts`, a statement on `engagements` whose first parameter is the
/// tenant, with their attribution completed from the tenant's catalogue
/// (narrowed by `catalogue_filter`, whose `?` parameters are bound after
/// the catalogue's tenant). The catalogue side needs no `FINAL`: the
/// latest value by sequence is the same whichever copy of a row holds it.
fn enriched_from(facts: &str, catalogue_filter: &str) -> String {
    format!(
        "SELECT tenant, seq, occurred_at, received_at, type, post_id, user_id,
                likes, shares, comments, views, clicks, conversions, value_e4, currency,
                follows, followers, sentiment, late,
                if(influencer_id != '', influencer_id, p_influencer) AS influencer,
                if(campaign_id != '', campaign_id, p_campaign) AS campaign,
                if(platform != '', platform, p_platform) AS plat,
                p_content_type AS content_type, p_tags AS tags
         FROM ({facts})
         ANY LEFT JOIN (
             SELECT post_id,
                    argMaxIf(influencer_id, seq, influencer_id != '') AS p_influencer,
                    argMaxIf(campaign_id, seq, campaign_id != '') AS p_campaign,
                    argMaxIf(platform, seq, platform != '') AS p_platform,
                    argMax(content_type, seq) AS p_content_type,
                    argMaxIf(tags, seq, has_tags = 1) AS p_tags
             FROM post_catalogue
             WHERE tenant = ? AND type = 'post_published' {catalogue_filter}
             GROUP BY post_id
         ) USING post_id"
    )
}

/// Facts, each sequence once, with their attribution completed from the
/// catalogue and their counters as `Int64`, one row per attribution they
/// count under: the facts that satisfy `kept` count as attributed at
/// sequence `now`; those that satisfy `corrected` count as attributed at
/// `now`, and minus as attributed at `then` (what a rollup made at `then`
/// holds for them). Columns: tenant, occurred_at, influencer, campaign,
/// plat, content_type, tags, then likes, shares, comments, views, clicks,
/// conversions, follows, sentiment, events (±1 per fact).
///
/// Binds: those of `corrected`, then those of `kept`, then the tenants and
/// the posts the catalogue side is narrowed to (arrays; see [`posts_of`]).
///
/// Every table appears once: on ClickHouse 18.16 a statement that locks a
/// table twice deadlocks with a `RENAME` queued between the two (a
/// rebuild's switch). It reads without `FINAL`: a fact written twice is the
/// same row twice, so keeping the first row of each sequence is exact and
/// costs only the rows selected, where `FINAL` merges all of the tenant's.
/// The catalogue needs no deduplication: the latest value by sequence is
/// the same whichever copy of a row holds it.
pub(crate) fn attributed(kept: &str, corrected: &str, now: u64, then: u64) -> String {
    let at = |prefix: &str, position: u64| {
        format!(
            "argMaxIf(influencer_id, seq, influencer_id != '' AND seq <= {position}) AS {prefix}_influencer,
             argMaxIf(campaign_id, seq, campaign_id != '' AND seq <= {position}) AS {prefix}_campaign,
             argMaxIf(platform, seq, platform != '' AND seq <= {position}) AS {prefix}_platform,
             argMaxIf(content_type, seq, seq <= {position}) AS {prefix}_content_type,
             argMaxIf(tags, seq, has_tags = 1 AND seq <= {position}) AS {prefix}_tags"
        )
    };
    let attribution = |prefix: &str, sign: i8| {
        format!(
            "(if(influencer_id != '', influencer_id, {prefix}_influencer),
              if(campaign_id != '', campaign_id, {prefix}_campaign),
              if(platform != '', platform, {prefix}_platform),
              {prefix}_content_type, {prefix}_tags, toInt64({sign}))"
        )
    };
    format!(
        "SELECT tenant, occurred_at, tupleElement(v, 1) AS influencer,
                tupleElement(v, 2) AS campaign, tupleElement(v, 3) AS plat,
                tupleElement(v, 4) AS content_type, tupleElement(v, 5) AS tags,
                toInt64(f_likes) * tupleElement(v, 6) AS likes,
                toInt64(f_shares) * tupleElement(v, 6) AS shares,
                toInt64(f_comments) * tupleElement(v, 6) AS comments,
                toInt64(f_views) * tupleElement(v, 6) AS views,
                toInt64(f_clicks) * tupleElement(v, 6) AS clicks,
                toInt64(f_conversions) * tupleElement(v, 6) AS conversions,
                toInt64(f_follows) * tupleElement(v, 6) AS follows,
                toInt64(f_sentiment) * tupleElement(v, 6) AS sentiment,
                tupleElement(v, 6) AS events
         FROM (
             SELECT tenant, occurred_at, likes AS f_likes, shares AS f_shares,
                    comments AS f_comments, views AS f_views, clicks AS f_clicks,
                    conversions AS f_conversions, follows AS f_follows,
                    sentiment AS f_sentiment,
                    if(corrected, [{now_plus}, {then_minus}], [{now_plus}]) AS counted
             FROM (SELECT *, ({corrected}) AS corrected FROM engagements
                   WHERE ({kept}) OR corrected LIMIT 1 BY seq)
             ANY LEFT JOIN (
                 SELECT tenant, post_id, {now_at}, {then_at}
                 FROM post_catalogue
                 WHERE type = 'post_published' AND seq <= {now}
                   AND tenant IN (SELECT arrayJoin(?)) AND post_id IN (SELECT arrayJoin(?))
                 GROUP BY tenant, post_id
             ) USING (tenant, post_id)
         ) ARRAY JOIN counted AS v",
        now_plus = attribution("n", 1),
        then_minus = attribution("t", -1),
        now_at = at("n", now),
        then_at = at("t", then),
    )
}

/// The tenants and posts of the facts that [`attributed`] with the same
/// `kept`, `corrected` and `binds` selects, to narrow its catalogue side
/// to them (each list holds `""` too, so that neither is empty).
pub(crate) async fn posts_of(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    kept: &str,
    corrected: &str,
    binds: &[&str],
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let mut query = client.query(&format!(
        "SELECT DISTINCT tenant, post_id FROM engagements WHERE ({corrected}) OR ({kept})"
    ));
    for value in binds {
        query = query.bind(*value);
    }
    let pairs: Vec<(String, String)> = timed(config, query.fetch_all()).await?;
    let mut tenants: Vec<String> = pairs.iter().map(|(t, _)| t.clone()).collect();
    let mut posts: Vec<String> = pairs.into_iter().map(|(_, p)| p).collect();
    for list in [&mut tenants, &mut posts] {
        list.push(String::new());
        list.sort_unstable();
        list.dedup();
    }
    Ok((tenants, posts))
}

/// The most cells [`Models::bursts`] counts exactly by hash.
const BURST_CANDIDATES: usize = 10_000;

/// Lists of posts run long: let the statement that carries them be long.
pub(crate) const LONG_QUERY: (&str, &str) = ("max_query_size", "268435456");

/// A key and its counters as ClickHouse returns them (RowBinary has no
/// nested structs).
#[derive(Row, Deserialize)]
struct KeyedCounters<K> {
    key: K,
    likes: i64,
    shares: u64,
    comments: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    sentiment_sum: i64,
    events: u64,
    /// `late` for buckets, `value_e4` for breakdowns.
    extra: i64,
}

impl<K> KeyedCounters<K> {
    fn split(self) -> (K, Counters, i64) {
        let counters = Counters {
            likes: self.likes,
            shares: self.shares,
            comments: self.comments,
            views: self.views,
            clicks: self.clicks,
            conversions: self.conversions,
            sentiment_sum: self.sentiment_sum,
            events: self.events,
        };
        (self.key, counters, self.extra)
    }
}

#[derive(Row, Deserialize)]
struct CurrencyValue {
    currency: String,
    value_e4: i64,
}

/// A post's attribution as its `post_published` events give it.
#[derive(Row, Deserialize, Default)]
struct Published {
    influencer_id: String,
    campaign_id: String,
    platform: String,
    content_type: String,
    tags: Vec<String>,
    /// `post_published` events seen.
    n: u64,
}

impl Published {
    /// The post's metrics: these counters and conversion values, this
    /// attribution.
    fn metrics(
        self,
        post_id: &str,
        counters: Counters,
        values: impl IntoIterator<Item = (String, i64)>,
    ) -> PostMetrics {
        PostMetrics {
            post_id: post_id.to_owned(),
            counters,
            conversion_value_e4: values.into_iter().collect(),
            influencer_id: self.influencer_id,
            campaign_id: self.campaign_id,
            platform: self.platform,
            content_type: self.content_type,
            tags: self.tags,
        }
    }
}

impl Models {
    pub fn new(client: clickhouse::Client, config: &ClickHouseConfig) -> Models {
        Models {
            client,
            config: config.clone(),
        }
    }

    /// From the configuration alone.
    pub fn connect(config: &ClickHouseConfig) -> Models {
        Models::new(super::client(config), config)
    }

    /// A post's counters and attribution; `None` if the tenant has no fact
    /// for it and never published it.
    ///
    /// A post has one attribution, so the catalogue's is looked up once, not
    /// joined to every fact: as everywhere, an influencer, campaign or
    /// platform that the facts carry themselves comes first, and the latest
    /// `post_published` event's fills what they lack. For a viral post's
    /// hundred thousand facts the statement with the join took 28–38 ms, the
    /// counters' statement alone 13–19 ms (ClickHouse 18.16, each by itself).
    pub async fn post(
        &self,
        tenant: &str,
        post_id: &str,
    ) -> Result<Option<PostMetrics>, StoreError> {
        let counters = self
            .client
            .query(&format!(
                "SELECT {COUNTERS}
                 FROM (SELECT seq, likes, shares, comments, views, clicks, conversions, sentiment
                       FROM engagements WHERE tenant = ? AND post_id = ? LIMIT 1 BY seq)"
            ))
            .bind(tenant)
            .bind(post_id);
        let values = self
            .client
            .query(
                "SELECT currency, toInt64(sum(value_e4)) AS total_e4
                 FROM (SELECT seq, currency, value_e4 FROM engagements
                       WHERE tenant = ? AND post_id = ? AND conversions > 0 LIMIT 1 BY seq)
                 GROUP BY currency ORDER BY currency",
            )
            .bind(tenant)
            .bind(post_id);
        // The attribution the facts carry, read apart from the counters: their
        // deduplication would otherwise carry three more columns (a viral
        // post's counters, median of 14 runs: 22.05 ms with them, 18.45 without).
        let carried = self
            .client
            .query(
                "SELECT anyIf(influencer_id, influencer_id != '') AS c_influencer,
                        anyIf(campaign_id, campaign_id != '') AS c_campaign,
                        anyIf(platform, platform != '') AS c_platform
                 FROM engagements WHERE tenant = ? AND post_id = ?",
            )
            .bind(tenant)
            .bind(post_id);
        // All four at once: one round trip's latency, not four.
        let (counters, values, (influencer_id, campaign_id, platform), published) = tokio::try_join!(
            timed(&self.config, counters.fetch_one::<Counters>()),
            timed(&self.config, values.fetch_all::<CurrencyValue>()),
            timed(
                &self.config,
                carried.fetch_one::<(String, String, String)>()
            ),
            self.published(tenant, post_id),
        )?;
        if counters.events == 0 {
            // Published but not interacted with yet: zeros, attributed.
            return Ok(published.map(|post| post.metrics(post_id, Counters::default(), [])));
        }
        let mut post = published.unwrap_or_default();
        for (field, carried) in [
            (&mut post.influencer_id, influencer_id),
            (&mut post.campaign_id, campaign_id),
            (&mut post.platform, platform),
        ] {
            if !carried.is_empty() {
                *field = carried;
            }
        }
        let values = values.into_iter().map(|v| (v.currency, v.value_e4));
        Ok(Some(post.metrics(post_id, counters, values)))
    }

    /// A post's attribution from its latest `post_published` event; `None`
    /// if the tenant never published it.
    async fn published(
        &self,
        tenant: &str,
        post_id: &str,
    ) -> Result<Option<Published>, StoreError> {
        let query = self
            .client
            .query(
                "SELECT argMaxIf(influencer_id, seq, influencer_id != '') AS a_influencer,
                        argMaxIf(campaign_id, seq, campaign_id != '') AS a_campaign,
                        argMaxIf(platform, seq, platform != '') AS a_platform,
                        argMax(content_type, seq) AS a_content_type,
                        argMaxIf(tags, seq, has_tags = 1) AS a_tags,
                        toUInt64(count()) AS n
                 FROM post_catalogue
                 WHERE tenant = ? AND post_id = ? AND type = 'post_published'",
            )
            .bind(tenant)
            .bind(post_id);
        let post: Published = timed(&self.config, query.fetch_one()).await?;
        Ok((post.n > 0).then_some(post))
    }

    /// An influencer's engagement in event-time buckets within `[from, to)`
    /// (seconds since the epoch), oldest first; empty buckets are left out.
    pub async fn influencer_series(
        &self,
        tenant: &str,
        influencer_id: &str,
        granularity: Granularity,
        from: u32,
        to: u32,
    ) -> Result<Vec<Bucket>, StoreError> {
        let sql = format!(
            "SELECT toUInt32({}(occurred_at)) AS key, {COUNTERS}, toInt64(sum(late)) AS extra
             FROM ({})
             WHERE {} = ? AND follows = 0 AND followers < 0
             GROUP BY key ORDER BY key",
            granularity.truncate(),
            enriched_narrowed(
                Side::Influencer,
                "AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)",
                "",
            ),
            Side::Influencer.attributed(),
        );
        let posts = self
            .narrowing(tenant, Side::Influencer, influencer_id)
            .await?;
        let (name, value) = LONG_QUERY;
        let query = self
            .client
            .query(&sql)
            .with_setting(name, value)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .bind(&posts)
            .bind(influencer_id)
            .bind(tenant)
            .bind(&posts)
            .bind(influencer_id);
        let rows: Vec<KeyedCounters<u32>> = timed(&self.config, query.fetch_all()).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let (start, counters, late) = row.split();
                Bucket {
                    start,
                    counters,
                    late: late.unsigned_abs(),
                }
            })
            .collect())
    }

    /// Top `limit` influencers of a tenant by `metric` over `[from, to)`,
    /// highest first (ties by id).
    pub async fn ranking(
        &self,
        tenant: &str,
        metric: Metric,
        from: u32,
        to: u32,
        limit: u32,
    ) -> Result<Vec<Ranked>, StoreError> {
        let sql = format!(
            "SELECT influencer, {} AS metric_value
             FROM ({})
             WHERE influencer != ''
             GROUP BY influencer ORDER BY metric_value DESC, influencer LIMIT {}",
            metric.sql(),
            enriched("AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)"),
            limit.min(10_000),
        );
        let query = self
            .client
            .query(&sql)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .bind(tenant);
        timed(&self.config, query.fetch_all()).await
    }

    /// An influencer's followers: the latest snapshot plus the follows and
    /// unfollows after it, and a daily series over `[from, to)`.
    pub async fn followers(
        &self,
        tenant: &str,
        influencer_id: &str,
        from: u32,
        to: u32,
    ) -> Result<Followers, StoreError> {
        #[derive(Row, Deserialize)]
        struct Audience {
            occurred_at: u32,
            follows: i8,
            followers: i64,
        }
        let facts: Vec<Audience> = timed(
            &self.config,
            self.client
                .query(
                    "SELECT toUInt32(occurred_at) AS at_s, follows, followers
                     FROM engagements FINAL
                     WHERE tenant = ? AND post_id = '' AND influencer_id = ?
                       AND (follows != 0 OR followers >= 0)
                     ORDER BY at_s, seq",
                )
                .bind(tenant)
                .bind(influencer_id)
                .fetch_all(),
        )
        .await?;
        let facts: Vec<AudienceFact> = facts
            .into_iter()
            .map(|f| AudienceFact {
                at: f.occurred_at,
                follows: f.follows,
                snapshot: (f.followers >= 0).then_some(f.followers),
            })
            .collect();
        let count = followers_at(&facts, u32::MAX);
        let series = follower_series(&facts, from, to);
        let growth_rate = match (series.first(), series.last()) {
            (Some((_, first)), Some((_, last))) if *first != 0 => {
                Some((*last - *first) as f64 / *first as f64)
            }
            _ => None,
        };
        Ok(Followers {
            influencer_id: influencer_id.to_owned(),
            count,
            series,
            growth_rate,
        })
    }

    /// The tenant's late events, newest sequence first, and their total.
    pub async fn late_events(
        &self,
        tenant: &str,
        limit: u32,
    ) -> Result<(u64, Vec<LateEvent>), StoreError> {
        self.late_events_page(tenant, u64::MAX, u64::MAX, limit)
            .await
    }

    /// Buckets in `[from, to)` where an influencer's engagements exceed its
    /// own baseline (see [`spikes`]).
    pub async fn spikes(
        &self,
        tenant: &str,
        influencer_id: &str,
        granularity: Granularity,
        from: u32,
        to: u32,
    ) -> Result<Vec<Spike>, StoreError> {
        let buckets = self
            .influencer_series(tenant, influencer_id, granularity, from, to)
            .await?;
        let series: Vec<(u32, i64)> = buckets
            .iter()
            .map(|b| {
                (
                    b.start,
                    b.counters.likes.max(0) + (b.counters.shares + b.counters.comments) as i64,
                )
            })
            .collect();
        Ok(spikes(&series, granularity, &SpikeRule::default())
            .into_iter()
            .map(|s| Spike {
                influencer_id: influencer_id.to_owned(),
                ..s
            })
            .collect())
    }

    /// Users with more than `threshold` interactions on one post within one
    /// minute, in `[from, to)` (the first 1,000).
    ///
    /// Nearly every (user, post, minute) holds one fact, so grouping the
    /// period's facts by those strings, after `FINAL`, is most of the cost:
    /// 5.8 s at 10 million facts. First the cells over the threshold are
    /// found by a hash of the three, counting rows as they are (a fact
    /// written twice, or two cells with one hash, only add candidates):
    /// 1.1 s there. Then only the candidates are counted exactly, each
    /// sequence once. With more candidates than [`BURST_CANDIDATES`] the
    /// exact count runs over the period instead.
    pub async fn bursts(
        &self,
        tenant: &str,
        from: u32,
        to: u32,
        threshold: u64,
    ) -> Result<Vec<Burst>, StoreError> {
        const PERIOD: &str =
            "tenant = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)
             AND user_id != '' AND post_id != ''";
        const CELL: &str = "cityHash64(user_id, post_id, toStartOfMinute(occurred_at))";
        let candidates: Vec<u64> = timed(
            &self.config,
            self.client
                .query(&format!(
                    "SELECT {CELL} AS cell FROM engagements WHERE {PERIOD}
                     GROUP BY cell HAVING count() > ? LIMIT {}",
                    BURST_CANDIDATES + 1
                ))
                .bind(tenant)
                .bind(from)
                .bind(to)
                .bind(threshold)
                .fetch_all(),
        )
        .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let only = if candidates.len() > BURST_CANDIDATES {
            String::new()
        } else {
            format!("AND {CELL} IN (SELECT arrayJoin(?))")
        };
        let (name, value) = LONG_QUERY;
        let mut query = self
            .client
            .query(&format!(
                "SELECT user_id, post_id, toUInt32(toStartOfMinute(occurred_at)) AS minute,
                        toUInt64(uniqExact(seq)) AS n_events
                 FROM engagements
                 WHERE {PERIOD} {only}
                 GROUP BY user_id, post_id, minute
                 HAVING n_events > ?
                 ORDER BY minute, user_id, post_id
                 LIMIT 1000"
            ))
            .with_setting(name, value)
            .bind(tenant)
            .bind(from)
            .bind(to);
        if !only.is_empty() {
            query = query.bind(&candidates);
        }
        timed(&self.config, query.bind(threshold).fetch_all()).await
    }

    /// Where every read model stands (the newest record of each).
    pub async fn positions(&self) -> Result<Vec<Position>, StoreError> {
        timed(
            &self.config,
            self.client
                .query(
                    "SELECT model, argMax(position, updated_ms) AS at_position,
                            argMax(stream_last, updated_ms) AS at_stream_last,
                            toUInt32(argMax(watermark, updated_ms)) AS at_watermark,
                            max(updated_ms) AS last_update
                     FROM projection_positions GROUP BY model ORDER BY model",
                )
                .fetch_all(),
        )
        .await
    }
}

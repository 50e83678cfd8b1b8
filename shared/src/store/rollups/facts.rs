//! Rolling a level-0 range from the facts, with statements that each read
//! one table: on ClickHouse 18.16 a statement that locks several tables can
//! deadlock with a rebuild's `RENAME` that locks them meanwhile. The facts
//! are read summed per post and minute, the posts' catalogue events after
//! them, and the two are put together here.

use std::collections::{BTreeMap, HashMap};

use clickhouse::Row;
use serde::Deserialize;

use super::RollupRow;
use crate::config::ClickHouseConfig;
use crate::store::models::LONG_QUERY;
use crate::store::{timed, StoreError};

/// The facts of one post, minute and own attribution, summed; `corrected`
/// when they precede a catalogue event of the range (see [`roll`]).
#[derive(Row, Deserialize)]
struct PostFacts {
    tenant: String,
    post_id: String,
    minute: u32,
    influencer_id: String,
    campaign_id: String,
    platform: String,
    corrected: u8,
    counters: Vec<i64>,
}

/// A `post_published` fact.
#[derive(Row, Deserialize)]
struct Published {
    tenant: String,
    post_id: String,
    seq: u64,
    influencer_id: String,
    campaign_id: String,
    platform: String,
    content_type: String,
    tags: Vec<String>,
    has_tags: u8,
}

/// A post's attribution as its catalogue stood at a position: the latest
/// value of each field its `post_published` events carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Attribution {
    influencer: String,
    campaign: String,
    platform: String,
    content_type: String,
    tags: Vec<String>,
}

fn attribution_at(events: &[&Published], position: u64) -> Attribution {
    // `events` are in sequence order; later ones win field by field.
    let mut a = Attribution::default();
    for e in events.iter().filter(|e| e.seq <= position) {
        if !e.influencer_id.is_empty() {
            a.influencer.clone_from(&e.influencer_id);
        }
        if !e.campaign_id.is_empty() {
            a.campaign.clone_from(&e.campaign_id);
        }
        if !e.platform.is_empty() {
            a.platform.clone_from(&e.platform);
        }
        a.content_type.clone_from(&e.content_type);
        if e.has_tags == 1 {
            a.tags.clone_from(&e.tags);
        }
    }
    a
}

/// A rollup row's key: tenant, minute, influencer, campaign, platform,
/// content type, tags.
type Key = (String, u32, String, String, String, String, Vec<String>);

/// The facts of `table` that satisfy `condition`, each once, summed per
/// post, minute and own attribution, marked `corrected` as given.
fn summed(table: &str, condition: &str, corrected: u8) -> String {
    format!(
        "SELECT tenant, post_id, toUInt32(toStartOfMinute(occurred_at)) AS at_minute,
                influencer_id, campaign_id, platform, toUInt8({corrected}) AS is_corrected,
                [toInt64(sum(likes)), toInt64(sum(shares)), toInt64(sum(comments)),
                 toInt64(sum(views)), toInt64(sum(clicks)), toInt64(sum(conversions)),
                 toInt64(sum(follows)), toInt64(sum(sentiment)), toInt64(count())]
         FROM (SELECT tenant, seq, post_id, occurred_at, influencer_id, campaign_id, platform,
                      likes, shares, comments, views, clicks, conversions, follows, sentiment
               FROM {table} WHERE {condition} LIMIT 1 BY seq)
         GROUP BY tenant, post_id, at_minute, influencer_id, campaign_id, platform"
    )
}

/// The rows of the level-0 range `(lo, hi]` as `attempt`: its facts
/// attributed as at `hi`; and, if `catalogued` (catalogue events are in the
/// range), the earlier facts of the posts they publish, as at `hi` minus as
/// at `lo`, which is what the ranges before hold for them.
pub(super) async fn roll(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    (lo, hi): (u64, u64),
    attempt: u64,
    catalogued: bool,
) -> Result<Vec<RollupRow>, StoreError> {
    let started = std::time::Instant::now();
    // The posts published in the range (their earlier facts are corrected):
    // any superset would do, since a post whose attribution did not change
    // corrects by nothing.
    let republished: Vec<String> = if catalogued {
        timed(
            config,
            client
                .query(&format!(
                    "SELECT DISTINCT post_id FROM catalogue
                     WHERE type = 'post_published' AND seq > {lo} AND seq <= {hi}"
                ))
                .fetch_all(),
        )
        .await?
    } else {
        Vec::new()
    };
    // The range's facts, a slice of `facts_by_seq`'s key; then the facts
    // that the range's catalogue events correct, found by post in
    // `engagements` (sorted by post).
    let (name, value) = LONG_QUERY;
    let mut facts: Vec<PostFacts> = timed(
        config,
        client
            .query(&summed(
                "facts_by_seq",
                &format!("seq > {lo} AND seq <= {hi}"),
                0,
            ))
            .with_setting(name, value)
            .fetch_all(),
    )
    .await?;
    if !republished.is_empty() {
        let corrected: Vec<PostFacts> = timed(
            config,
            client
                .query(&summed(
                    "engagements",
                    "seq <= ? AND post_id IN (SELECT arrayJoin(?))",
                    1,
                ))
                .with_setting(name, value)
                .bind(lo)
                .bind(&republished)
                .fetch_all(),
        )
        .await?;
        facts.extend(corrected);
    }

    let facts_ms = started.elapsed().as_millis() as u64;
    let mut posts: Vec<&str> = facts.iter().map(|f| f.post_id.as_str()).collect();
    posts.push("");
    posts.sort_unstable();
    posts.dedup();
    let published: Vec<Published> = timed(
        config,
        client
            .query(&format!(
                "SELECT tenant, post_id, seq, influencer_id, campaign_id, platform, content_type,
                        tags, has_tags
                 FROM post_catalogue
                 WHERE type = 'post_published' AND seq <= {hi}
                   AND post_id IN (SELECT arrayJoin(?))
                 ORDER BY tenant, post_id, seq"
            ))
            .with_setting(name, value)
            .bind(&posts)
            .fetch_all(),
    )
    .await?;
    let catalogue_ms = started.elapsed().as_millis() as u64 - facts_ms;
    let mut catalogue: HashMap<(&str, &str), Vec<&Published>> = HashMap::new();
    for p in &published {
        catalogue
            .entry((p.tenant.as_str(), p.post_id.as_str()))
            .or_default()
            .push(p);
    }

    let mut sums: BTreeMap<Key, [i64; 9]> = BTreeMap::new();
    for f in &facts {
        let events = catalogue
            .get(&(f.tenant.as_str(), f.post_id.as_str()))
            .map_or(&[][..], Vec::as_slice);
        let mut add = |position: u64, sign: i64| {
            let a = attribution_at(events, position);
            let pick = |own: &str, from_catalogue: String| {
                if own.is_empty() {
                    from_catalogue
                } else {
                    own.to_owned()
                }
            };
            let key = (
                f.tenant.clone(),
                f.minute,
                pick(&f.influencer_id, a.influencer),
                pick(&f.campaign_id, a.campaign),
                pick(&f.platform, a.platform),
                a.content_type,
                a.tags,
            );
            let sum = sums.entry(key).or_default();
            for (s, c) in sum.iter_mut().zip(&f.counters) {
                *s += sign * c;
            }
        };
        add(hi, 1);
        if f.corrected == 1 {
            add(lo, -1);
        }
    }
    tracing::debug!(
        lo,
        hi,
        summed_rows = facts.len(),
        posts = posts.len() - 1,
        facts_ms,
        catalogue_ms,
        sum_ms = started.elapsed().as_millis() as u64 - facts_ms - catalogue_ms,
        "read a range's facts"
    );
    Ok(sums
        .into_iter()
        .filter(|(_, c)| c.iter().any(|v| *v != 0))
        .map(|(key, c)| RollupRow {
            tenant: key.0,
            level: 0,
            lo,
            hi,
            attempt,
            minute: key.1,
            influencer: key.2,
            campaign: key.3,
            platform: key.4,
            content_type: key.5,
            tags: key.6,
            likes: c[0],
            shares: c[1],
            comments: c[2],
            views: c[3],
            clicks: c[4],
            conversions: c[5],
            follows: c[6],
            sentiment: c[7],
            events: c[8],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(seq: u64, influencer: &str, campaign: &str, tags: Option<&[&str]>) -> Published {
        Published {
            tenant: "t".into(),
            post_id: "p".into(),
            seq,
            influencer_id: influencer.into(),
            campaign_id: campaign.into(),
            platform: String::new(),
            content_type: format!("type-{seq}"),
            tags: tags
                .unwrap_or_default()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            has_tags: u8::from(tags.is_some()),
        }
    }

    #[test]
    fn the_latest_value_of_each_field_at_the_position_wins() {
        let events = [
            published(3, "i1", "c1", Some(&["a"])),
            published(7, "", "c2", None),
            published(9, "i2", "", Some(&[])),
        ];
        let events: Vec<&Published> = events.iter().collect();
        assert_eq!(attribution_at(&events, 2), Attribution::default());
        let at = |p| attribution_at(&events, p);
        assert_eq!(
            (at(3).influencer, at(3).campaign),
            ("i1".into(), "c1".into())
        );
        assert_eq!(at(3).tags, ["a"]);
        // A field an event leaves out keeps its earlier value.
        assert_eq!(
            (at(8).influencer, at(8).campaign),
            ("i1".into(), "c2".into())
        );
        assert_eq!(
            (at(8).content_type, at(8).tags),
            ("type-7".into(), vec!["a".to_owned()])
        );
        // Tags present but empty clear them.
        assert_eq!((at(9).influencer, at(9).tags), ("i2".into(), vec![]));
    }
}

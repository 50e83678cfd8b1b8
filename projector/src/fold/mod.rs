//! The fold: pure arithmetic from recorded events to read-model rows, so
//! replay tooling and tests reuse it as it is; [`write`] is its one I/O.
//!
//! Every row is keyed by the event's stream sequence, which makes writing a
//! batch idempotent: a redelivered event produces the identical row, and the
//! ReplacingMergeTree tables keep one (ADR 0004).

pub mod sentiment;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_shared::event::{Category, EventKind, StoredEvent};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An interaction or audience event's contribution, a row of `engagements`.
/// Attribution the event lacks (influencer, campaign, content type, tags)
/// is joined from the catalogue when read, never frozen here.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct EngagementRow {
    pub tenant: String,
    pub seq: u64,
    pub occurred_at: u32,
    pub received_at: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub platform: String,
    pub influencer_id: String,
    pub post_id: String,
    pub campaign_id: String,
    pub user_id: String,
    /// +1 for a like, -1 for an unlike.
    pub likes: i8,
    pub shares: u8,
    pub comments: u8,
    pub views: u64,
    pub clicks: u8,
    pub conversions: u8,
    /// Conversion value in ten-thousandths of `currency`.
    pub value_e4: i64,
    pub currency: String,
    /// +1 for a follow, -1 for an unfollow.
    pub follows: i8,
    /// A follower snapshot's count; -1 on other events.
    pub followers: i64,
    /// Comment sentiment, -1000..=1000.
    pub sentiment: i16,
    /// 1 when received after its minute bucket closed.
    pub late: u8,
}

/// A catalogue event, a row of `catalogue`. `has_*` marks a field the event
/// carried, so partial updates leave the others as they were.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct CatalogueRow {
    pub tenant: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: u32,
    pub influencer_id: String,
    pub post_id: String,
    pub campaign_id: String,
    pub platform: String,
    pub handle: String,
    pub name: String,
    pub content_type: String,
    pub tags: Vec<String>,
    pub has_tags: u8,
    pub budget_e4: i64,
    pub has_budget: u8,
    pub currency: String,
    pub starts_at: u32,
    pub ends_at: u32,
}

/// A fact as `facts_by_seq` holds it: the columns a rollup sums, sorted by
/// sequence so that a range of the stream is read alone (ADR 0006).
#[derive(Debug, Row, Serialize)]
pub struct FactRow<'a> {
    pub tenant: &'a str,
    pub seq: u64,
    pub occurred_at: u32,
    pub platform: &'a str,
    pub influencer_id: &'a str,
    pub post_id: &'a str,
    pub campaign_id: &'a str,
    pub likes: i8,
    pub shares: u8,
    pub comments: u8,
    pub views: u64,
    pub clicks: u8,
    pub conversions: u8,
    pub follows: i8,
    pub sentiment: i16,
}

impl<'a> From<&'a EngagementRow> for FactRow<'a> {
    fn from(row: &'a EngagementRow) -> FactRow<'a> {
        FactRow {
            tenant: &row.tenant,
            seq: row.seq,
            occurred_at: row.occurred_at,
            platform: &row.platform,
            influencer_id: &row.influencer_id,
            post_id: &row.post_id,
            campaign_id: &row.campaign_id,
            likes: row.likes,
            shares: row.shares,
            comments: row.comments,
            views: row.views,
            clicks: row.clicks,
            conversions: row.conversions,
            follows: row.follows,
            sentiment: row.sentiment,
        }
    }
}

/// An event received after its minute bucket closed, a row of `late_events`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct LateRow {
    pub tenant: String,
    pub seq: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub post_id: String,
    pub occurred_at: u32,
    pub received_at: u32,
    pub bucket_end: u32,
    pub lateness_s: u32,
}

/// What the fold needs to know besides the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldOptions {
    /// How long after its end a bucket still takes events on time.
    pub grace_seconds: u32,
}

/// The rows a batch of events becomes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub engagements: Vec<EngagementRow>,
    pub catalogue: Vec<CatalogueRow>,
    pub late: Vec<LateRow>,
}

impl Rows {
    /// Room for `events` engagement rows (most events are engagements):
    /// a batch's rows are megabytes, and growing a vector by doubling
    /// copies them over and over.
    pub fn with_capacity(events: usize) -> Rows {
        Rows {
            engagements: Vec::with_capacity(events),
            ..Rows::default()
        }
    }

    /// Where the rows end now, to [`Rows::truncate`] back to.
    fn mark(&self) -> [usize; 3] {
        [
            self.engagements.len(),
            self.catalogue.len(),
            self.late.len(),
        ]
    }

    /// Drops the rows added since `mark`.
    fn truncate(&mut self, [engagements, catalogue, late]: [usize; 3]) {
        self.engagements.truncate(engagements);
        self.catalogue.truncate(catalogue);
        self.late.truncate(late);
    }

    /// Events folded: each is an engagement or a catalogue row.
    pub fn len(&self) -> usize {
        self.engagements.len() + self.catalogue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows of `post_catalogue`: the catalogue rows of published posts.
    pub fn posts(&self) -> Vec<&CatalogueRow> {
        self.catalogue
            .iter()
            .filter(|row| row.kind == EventKind::PostPublished.as_str())
            .collect()
    }
}

/// Events set aside by configuration (`projector.quarantine`, entries
/// `<tenant>:<event_id>`): they go to the dead-letter stream on sight, for
/// an event that takes a worker down in a way no retry survives (a crash,
/// memory), until a fix lets them be redriven.
#[derive(Debug, Clone, Default)]
pub struct Quarantine(std::collections::HashSet<String>);

impl Quarantine {
    pub fn new(entries: &[String]) -> Quarantine {
        Quarantine(entries.iter().cloned().collect())
    }

    pub fn holds(&self, event: &StoredEvent) -> bool {
        !self.0.is_empty()
            && self
                .0
                .contains(&format!("{}:{}", event.tenant, event.event.event_id))
    }
}

/// An event of a batch that cannot be projected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Its place in the batch.
    pub index: usize,
    pub seq: u64,
    pub error: String,
    /// Set aside by [`Quarantine`]: not worth retrying.
    pub quarantined: bool,
}

/// A batch of recorded events, folded.
#[derive(Debug, Default)]
pub struct FoldedBatch {
    pub rows: Rows,
    /// Stream sequences of the events folded into `rows`.
    pub seqs: Vec<u64>,
    pub poison: Vec<Poison>,
}

/// Events decoded and folded at a time: a batch's decoded events would be
/// far larger than its rows, so no more than this many are held at once.
const FOLD_CHUNK: usize = 4096;

/// Decodes and folds `(stream sequence, payload)` pairs as recorded on the
/// stream. Events that cannot be decoded, are quarantined, or make the fold
/// panic (a bug some event triggers) become [`Poison`] instead of rows, so
/// they never hold up the rest. The worker and the replay tooling both
/// project through this.
pub fn fold_recorded<'a>(
    batch: impl IntoIterator<Item = (u64, &'a [u8])>,
    options: FoldOptions,
    quarantine: &Quarantine,
) -> FoldedBatch {
    let batch = batch.into_iter();
    let expected = batch.size_hint().0;
    let mut folded = FoldedBatch {
        rows: Rows::with_capacity(expected),
        seqs: Vec::with_capacity(expected),
        poison: Vec::new(),
    };
    let mut events = Vec::with_capacity(expected.min(FOLD_CHUNK));
    for (index, (seq, payload)) in batch.enumerate() {
        match StoredEvent::decode(payload) {
            Ok(event) if quarantine.holds(&event) => folded.poison.push(Poison {
                index,
                seq,
                error: "quarantined by projector.quarantine".into(),
                quarantined: true,
            }),
            Ok(event) => events.push((index, seq, event)),
            Err(e) => folded.poison.push(Poison {
                index,
                seq,
                error: e.to_string(),
                quarantined: false,
            }),
        }
        if events.len() == FOLD_CHUNK {
            fold_chunk(&mut events, &mut folded, options);
        }
    }
    fold_chunk(&mut events, &mut folded, options);
    folded
}

/// Folds decoded `events` into `into` and empties `events`. If the fold
/// panics, the rows it added are taken back and the events are folded one
/// by one, those that panic alone becoming poison.
fn fold_chunk(
    events: &mut Vec<(usize, u64, StoredEvent)>,
    into: &mut FoldedBatch,
    options: FoldOptions,
) {
    let rows = &mut into.rows;
    let before = rows.mark();
    let all = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fold_into(rows, events.iter().map(|(_, s, e)| (*s, e)), options)
    }));
    match all {
        Ok(()) => into.seqs.extend(events.iter().map(|(_, seq, _)| *seq)),
        Err(_) => {
            rows.truncate(before);
            tracing::error!("folding a chunk of a batch panicked; folding its events one by one");
            for (index, seq, event) in events.iter() {
                let at = rows.mark();
                let one = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    fold_into(rows, [(*seq, event)], options)
                }));
                match one {
                    Ok(()) => into.seqs.push(*seq),
                    Err(_) => {
                        rows.truncate(at);
                        into.poison.push(Poison {
                            index: *index,
                            seq: *seq,
                            error: "folding panicked".into(),
                            quarantined: false,
                        });
                    }
                }
            }
        }
    }
    events.clear();
}

/// The end of the minute bucket holding `at` (seconds since the epoch).
pub fn minute_bucket_end(at: u32) -> u32 {
    (at / 60).saturating_add(1).saturating_mul(60)
}

/// Folds `(stream sequence, event)` pairs into rows. Deterministic: the
/// same events always give the same rows, whoever folds them and when.
pub fn fold<'a>(
    batch: impl IntoIterator<Item = (u64, &'a StoredEvent)>,
    options: FoldOptions,
) -> Rows {
    let batch = batch.into_iter();
    let mut rows = Rows::with_capacity(batch.size_hint().0);
    fold_into(&mut rows, batch, options);
    rows
}

/// [`fold`], appending to `rows`.
fn fold_into<'a>(
    rows: &mut Rows,
    batch: impl IntoIterator<Item = (u64, &'a StoredEvent)>,
    options: FoldOptions,
) {
    for (seq, stored) in batch {
        let event = &stored.event;
        let occurred_at = epoch_seconds(event.occurred_at);
        let received_at = epoch_seconds(stored.received_at);
        let id = |value: &Option<String>| value.clone().unwrap_or_default();
        let platform = event.platform.map(|p| p.as_str()).unwrap_or("").to_owned();
        if event.kind.category() == Category::Catalogue {
            let (tags, budget_e4) = (tags(stored), money_e4(stored, "budget"));
            rows.catalogue.push(CatalogueRow {
                tenant: stored.tenant.clone(),
                seq,
                kind: event.kind.as_str().to_owned(),
                occurred_at,
                influencer_id: id(&event.influencer_id),
                post_id: id(&event.post_id),
                campaign_id: id(&event.campaign_id),
                platform,
                handle: text(stored, "handle"),
                name: text(stored, "name"),
                content_type: text(stored, "content_type"),
                has_tags: u8::from(tags.is_some()),
                tags: tags.unwrap_or_default(),
                has_budget: u8::from(budget_e4.is_some()),
                budget_e4: budget_e4.unwrap_or(0),
                currency: text(stored, "currency"),
                starts_at: timestamp(stored, "starts_at"),
                ends_at: timestamp(stored, "ends_at"),
            });
            continue;
        }
        let bucket_end = minute_bucket_end(occurred_at);
        let late = received_at > bucket_end.saturating_add(options.grace_seconds);
        if late {
            rows.late.push(LateRow {
                tenant: stored.tenant.clone(),
                seq,
                event_id: event.event_id.clone(),
                kind: event.kind.as_str().to_owned(),
                post_id: id(&event.post_id),
                occurred_at,
                received_at,
                bucket_end,
                lateness_s: received_at - bucket_end,
            });
        }
        let mut row = EngagementRow {
            tenant: stored.tenant.clone(),
            seq,
            occurred_at,
            received_at,
            kind: event.kind.as_str().to_owned(),
            platform,
            influencer_id: id(&event.influencer_id),
            post_id: id(&event.post_id),
            campaign_id: id(&event.campaign_id),
            user_id: id(&event.user_id),
            likes: 0,
            shares: 0,
            comments: 0,
            views: 0,
            clicks: 0,
            conversions: 0,
            value_e4: 0,
            currency: String::new(),
            follows: 0,
            followers: -1,
            sentiment: 0,
            late: u8::from(late),
        };
        match event.kind {
            EventKind::Liked => row.likes = 1,
            EventKind::Unliked => row.likes = -1,
            EventKind::Shared => row.shares = 1,
            EventKind::Commented => {
                row.comments = 1;
                row.sentiment = sentiment::score(&text(stored, "text"));
            }
            EventKind::Viewed => row.views = stored.view_count(),
            EventKind::Clicked => row.clicks = 1,
            EventKind::Converted => {
                row.conversions = 1;
                row.value_e4 = money_e4(stored, "value").unwrap_or(0);
                row.currency = text(stored, "currency");
            }
            EventKind::Followed => row.follows = 1,
            EventKind::Unfollowed => row.follows = -1,
            EventKind::FollowersCounted => {
                row.followers = stored
                    .event
                    .payload
                    .get("followers")
                    .and_then(Value::as_u64)
                    .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
            }
            EventKind::InfluencerRegistered
            | EventKind::InfluencerUpdated
            | EventKind::PostPublished
            | EventKind::CampaignCreated
            | EventKind::CampaignUpdated => unreachable!("catalogue events return above"),
        }
        // A stand-in for a bug that some event triggers, after its late row
        // is pushed: the tests' way into the recovery in `fold_chunk`.
        #[cfg(test)]
        assert!(event.event_id != tests::PANICS, "folding {}", tests::PANICS);
        rows.engagements.push(row);
    }
}

/// Writes a batch's rows, one INSERT per table, the tables' at once (each
/// insert is a query of its own that ClickHouse parses and writes on a
/// thread of its own). Idempotent: the rows are keyed by stream sequence,
/// so after a failure, writing the batch again replaces whatever part of
/// it the other inserts wrote.
pub async fn write(
    client: &clickhouse::Client,
    rows: &Rows,
) -> Result<(), tally_shared::store::StoreError> {
    write_only(client, rows, |_| true).await
}

/// [`write`], to the tables `wanted` names only (`engagements`, which
/// also writes its facts to `facts_by_seq`, `catalogue`, `post_catalogue`,
/// `late_events`).
pub async fn write_only(
    client: &clickhouse::Client,
    rows: &Rows,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), tally_shared::store::StoreError> {
    let engagements = only(wanted("engagements"), &rows.engagements);
    let posts = if wanted("post_catalogue") {
        rows.posts()
    } else {
        Vec::new()
    };
    futures::try_join!(
        insert(client, "engagements", engagements),
        insert_facts(client, engagements),
        insert(
            client,
            "catalogue",
            only(wanted("catalogue"), &rows.catalogue)
        ),
        insert::<CatalogueRow>(client, "post_catalogue", &posts),
        insert(
            client,
            "late_events",
            only(wanted("late_events"), &rows.late)
        ),
    )?;
    Ok(())
}

/// `rows` if `wanted`, else none (an insert of none sends nothing).
fn only<T>(wanted: bool, rows: &[T]) -> &[T] {
    if wanted {
        rows
    } else {
        &[]
    }
}

async fn insert<T>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[impl std::borrow::Borrow<T>],
) -> Result<(), tally_shared::store::StoreError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row.borrow()).await?;
    }
    Ok(insert.end().await?)
}

/// `rows` into `facts_by_seq`, borrowed (no copy of their strings).
async fn insert_facts(
    client: &clickhouse::Client,
    rows: &[EngagementRow],
) -> Result<(), tally_shared::store::StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<FactRow<'_>>("facts_by_seq").await?;
    for row in rows {
        insert.write(&FactRow::from(row)).await?;
    }
    Ok(insert.end().await?)
}

fn text(stored: &StoredEvent, field: &str) -> String {
    stored
        .event
        .payload
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn tags(stored: &StoredEvent) -> Option<Vec<String>> {
    let tags = stored.event.payload.get("tags")?.as_array()?;
    Some(
        tags.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}

/// A money field in ten-thousandths (validation bounds it to 0..=1e12).
fn money_e4(stored: &StoredEvent, field: &str) -> Option<i64> {
    let value = stored.event.payload.get(field)?.as_f64()?;
    Some((value * 10_000.0).round() as i64)
}

fn timestamp(stored: &StoredEvent, field: &str) -> u32 {
    stored
        .event
        .payload
        .get(field)
        .and_then(Value::as_str)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        .map_or(0, epoch_seconds)
}

/// ClickHouse `DateTime` is unsigned seconds; clamp what it cannot hold.
fn epoch_seconds(at: OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp().max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;

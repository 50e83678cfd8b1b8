//! The benchmarks' harness: latency percentiles and a summary, a generated
//! dataset published straight to JetStream, load drivers, the services as
//! processes, and the report.

pub mod disk;
pub mod load;
pub mod merges;
pub mod procs;
pub mod report;

use std::time::Duration;

use async_nats::jetstream;
use serde_json::{json, Value};
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use time::OffsetDateTime;

const INFLUENCERS: u64 = 2_000;
const CAMPAIGNS: u64 = 50;

/// The `p`-th percentile (0–100) of `samples` by nearest rank: the
/// smallest sample at or above `p`% of them. `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `p50 / p99 / max` in milliseconds, for a table.
pub fn summary(samples: &[Duration]) -> String {
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    format!(
        "p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (n={})",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0)),
        ms(samples.iter().max().copied()),
        samples.len()
    )
}

/// `GET url` with `token`: how long the whole answer took, its status, and
/// whether the query API's hot tier answered it (`Tally-Cache: hit`).
pub async fn timed_get(http: &reqwest::Client, url: &str, token: &str) -> (Duration, u16, bool) {
    let started = std::time::Instant::now();
    let response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("the query API answers");
    let hit = response
        .headers()
        .get("tally-cache")
        .is_some_and(|v| v == "hit");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    (started.elapsed(), status, hit)
}

/// Waits, up to `limit`, until the ClickHouse server at `url` runs no
/// merge: measurements then see the steady state, not a bulk load's
/// background merges competing for the cores.
pub async fn merges_done(url: &str, limit: Duration) {
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let Ok(running) = ask_clickhouse(&http, url, "SELECT count() FROM system.merges").await
        else {
            return;
        };
        if running.trim() == "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text answer of the ClickHouse server at `url` (HTTP) to `sql`.
async fn ask_clickhouse(
    http: &reqwest::Client,
    url: &str,
    sql: &str,
) -> Result<String, reqwest::Error> {
    http.post(url)
        .body(sql.to_owned())
        .send()
        .await?
        .text()
        .await
}

/// What ClickHouse's storage did over a phase, from its server-wide
/// counters (`system.events`): the rows that inserts wrote and the rows
/// that background merges read back. Merges are ClickHouse's main work
/// besides inserting (each insert is a part, merged again and again into
/// larger ones), so their rows per inserted row say where its share of the
/// cores went. The benchmark's ClickHouse serves nothing else but its own
/// part log (a part every 7.5 s, and its merges), which these counters
/// include.
pub struct StorageMeter {
    http: reqwest::Client,
    url: String,
    before: Option<StorageWork>,
    /// ClickHouse's clock at the start (seconds since the epoch), from
    /// which its part log is read.
    from: Option<u64>,
    started: std::time::Instant,
}

/// Rows written by inserts and rows read by merges, since the server began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageWork {
    pub inserted: u64,
    pub merged: u64,
}

impl StorageWork {
    const QUERY: &'static str = "SELECT sumIf(value, event = 'InsertedRows'), \
        sumIf(value, event = 'MergedRows') FROM system.events FORMAT TSV";

    /// The counters from the query's answer (`inserted\tmerged`).
    pub fn parse(answer: &str) -> Option<StorageWork> {
        let mut fields = answer.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(inserted)), Some(Ok(merged)), None) => Some(StorageWork { inserted, merged }),
            _ => None,
        }
    }

    /// The phase's note from the counters before and after it: "ClickHouse:
    /// 1,234,567 rows inserted, merges read 8.5 rows per row inserted".
    pub fn note(before: StorageWork, after: StorageWork) -> String {
        let inserted = after.inserted.saturating_sub(before.inserted);
        let merged = after.merged.saturating_sub(before.merged);
        let per_row = if inserted == 0 {
            "no rows inserted".to_owned()
        } else {
            format!(
                "{} rows inserted, merges read {:.1} rows per row inserted",
                report::grouped(inserted as f64, 0),
                merged as f64 / inserted as f64
            )
        };
        format!("ClickHouse: {per_row}")
    }
}

impl StorageMeter {
    /// Starts counting on the ClickHouse server at `url` (HTTP).
    pub async fn start(url: &str) -> StorageMeter {
        let mut meter = StorageMeter {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            before: None,
            from: None,
            started: std::time::Instant::now(),
        };
        meter.before = meter.read().await;
        let now = ask_clickhouse(&meter.http, &meter.url, "SELECT toUnixTimestamp(now())").await;
        meter.from = now.ok().and_then(|n| n.trim().parse().ok());
        meter.started = std::time::Instant::now();
        meter
    }

    async fn read(&self) -> Option<StorageWork> {
        let answer = ask_clickhouse(&self.http, &self.url, StorageWork::QUERY).await;
        StorageWork::parse(&answer.ok()?)
    }

    /// The work since the start, as a note; and, where the part log tells,
    /// the tables that merged most.
    pub async fn note(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let counters = match (self.before, self.read().await) {
            (Some(before), Some(after)) => StorageWork::note(before, after),
            _ => "ClickHouse: its counters could not be read".to_owned(),
        };
        match self.merges(seconds).await {
            Some(merges) => format!("{counters}; {merges}"),
            None => counters,
        }
    }

    async fn merges(&self, seconds: f64) -> Option<String> {
        let from = self.from?;
        // The part log is written every few seconds: all of it first.
        ask_clickhouse(&self.http, &self.url, "SYSTEM FLUSH LOGS")
            .await
            .ok()?;
        let answer = ask_clickhouse(&self.http, &self.url, &merges::query(from))
            .await
            .ok()?;
        merges::note(merges::parse(&answer)?, seconds)
    }
}

/// xorshift: deterministic and cheap.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// Skewed towards 0: a few posts take most of the traffic.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = self.below(1 << 30) as f64 / (1u64 << 30) as f64;
        ((u * u * u) * n as f64) as u64
    }
}

fn stored(tenant: &str, envelope: Value, now: OffsetDateTime) -> StoredEvent {
    let event = validate(&envelope, now, &Limits::default()).expect("a valid generated event");
    StoredEvent::new(tenant, Source::Import, event, now)
}

/// `tenant`'s catalogue of `posts` posts (spread over 2,000 influencers
/// and 50 campaigns), then `events` interactions over the last six hours,
/// a few posts taking most of them.
pub fn dataset(tenant: &str, posts: u64, events: u64) -> Vec<StoredEvent> {
    let now = OffsetDateTime::now_utc();
    let at = |ago: u64| {
        (now - time::Duration::seconds(ago as i64))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut all = Vec::with_capacity((posts + events) as usize);
    for p in 0..posts {
        all.push(stored(
            tenant,
            json!({"event_id": format!("cat-{p}"), "type": "post_published", "occurred_at": at(86_400),
                   "post_id": format!("post-{p}"), "influencer_id": format!("inf-{}", p % INFLUENCERS),
                   "campaign_id": format!("camp-{}", p % CAMPAIGNS), "platform": "instagram",
                   "payload": {"content_type": "reel"}}),
            now,
        ));
    }
    for i in 0..events {
        let post = format!("post-{}", rng.skewed(posts));
        let (kind, payload) = match rng.below(100) {
            0..=54 => ("view", json!({"count": 1 + rng.below(5)})),
            55..=79 => ("like", json!({})),
            80..=87 => ("comment", json!({"text": "love this"})),
            88..=92 => ("share", json!({})),
            93..=98 => ("click", json!({})),
            _ => ("conversion", json!({"value": 9.99, "currency": "EUR"})),
        };
        all.push(stored(
            tenant,
            json!({"event_id": format!("e-{i}"), "type": kind, "occurred_at": at(rng.below(6 * 3600)),
                   "post_id": post, "user_id": format!("u{}", rng.below(1_000_000)), "payload": payload}),
            now,
        ));
    }
    all
}

/// Publishes `events` straight to JetStream at `nats` (with `Nats-Msg-Id`,
/// as the command API does, up to 4,096 acks outstanding); the highest
/// sequence acknowledged.
pub async fn publish(nats: &str, events: &[StoredEvent]) -> u64 {
    publish_under(nats, events, "").await
}

/// [`publish`], each subject prefixed with `prefix` (to put the same
/// messages into a scratch stream). A sliding window: a new publish goes
/// out as soon as one of the 4,096 outstanding acks arrives.
pub async fn publish_under(nats: &str, events: &[StoredEvent], prefix: &str) -> u64 {
    let client = async_nats::connect(nats).await.unwrap();
    let mut js = jetstream::new(client);
    // A busy machine (a build beside the benchmark) can stall acks for
    // seconds; a benchmark's load should wait, not fail.
    js.set_timeout(Duration::from_secs(60));
    publish_on(&js, events, prefix).await
}

/// Publishes `events` into a scratch stream defined as the event stream is
/// (its subjects under `bench.raw.`), then deletes it; how long it took.
pub async fn raw_publish_scratch(nats: &str, events: &[StoredEvent]) -> anyhow::Result<Duration> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await?);
    let mut definition =
        tally_shared::nats::events_stream_config(&tally_shared::Config::defaults().nats);
    definition.name = "BENCH_RAW".into();
    definition.subjects = vec!["bench.raw.>".into()];
    js.create_stream(definition).await?;
    let started = std::time::Instant::now();
    publish_under(nats, events, "bench.raw.").await;
    let took = started.elapsed();
    js.delete_stream("BENCH_RAW").await?;
    Ok(took)
}

/// [`publish_under`] on a connection the caller holds.
pub async fn publish_on(js: &jetstream::Context, events: &[StoredEvent], prefix: &str) -> u64 {
    use futures::StreamExt as _;
    use std::future::IntoFuture as _;
    const WINDOW: usize = 4096;
    type Ack = futures::future::BoxFuture<
        'static,
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    >;
    let mut pending: futures::stream::FuturesUnordered<Ack> = Default::default();
    let mut last = 0;
    for event in events {
        if pending.len() == WINDOW {
            let ack: jetstream::publish::PublishAck =
                pending.next().await.expect("an outstanding ack").unwrap();
            last = last.max(ack.sequence);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.msg_id().as_str());
        let ack = js
            .publish_with_headers(
                format!("{prefix}{}", event.subject()),
                headers,
                event.encode().into(),
            )
            .await
            .unwrap();
        pending.push(Box::pin(ack.into_future()));
    }
    while let Some(ack) = pending.next().await {
        let ack: jetstream::publish::PublishAck = ack.unwrap();
        last = last.max(ack.sequence);
    }
    last
}

/// Recorded `payloads` (stream sequences from 1) decoded and folded in
/// batches of `batch`, as a worker folds them.
pub fn fold_in_batches(
    payloads: &[Vec<u8>],
    batch: usize,
    options: tally_projector::fold::FoldOptions,
    quarantine: &tally_projector::fold::Quarantine,
) -> Vec<tally_projector::fold::FoldedBatch> {
    payloads
        .chunks(batch.max(1))
        .enumerate()
        .map(|(b, chunk)| {
            let first = (b * batch.max(1)) as u64 + 1;
            tally_projector::fold::fold_recorded(
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (first + i as u64, &p[..])),
                options,
                quarantine,
            )
        })
        .collect()
}

/// Projector-sized batches of folded rows as batches of about `events`
/// events (whole batches put together, in order), as a rebuild writes
/// them.
pub fn regroup(
    batches: Vec<tally_projector::fold::FoldedBatch>,
    events: usize,
) -> Vec<tally_projector::fold::Rows> {
    let mut grouped: Vec<tally_projector::fold::Rows> = Vec::new();
    for tally_projector::fold::FoldedBatch { rows, .. } in batches {
        match grouped.last_mut() {
            Some(last) if last.len() < events => {
                last.engagements.extend(rows.engagements);
                last.catalogue.extend(rows.catalogue);
                last.late.extend(rows.late);
            }
            _ => grouped.push(rows),
        }
    }
    grouped
}

/// Reads the whole event stream as a rebuild does (the replay tooling's
/// reader, in its batches), handing each batch to `each`; the events read.
pub async fn read_all<F, Fut>(env: &tally_replay::Env, mut each: F) -> anyhow::Result<u64>
where
    F: FnMut(Vec<tally_replay::reader::Recorded>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tally_replay::reader::{Reader, Start};
    let mut reader = Reader::open(&env.events, "", Start::Beginning, None).await?;
    let mut read = 0;
    while let Some(batch) = reader.next_batch(tally_replay::BATCH).await? {
        read += batch.len() as u64;
        each(batch).await;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_work_reads_the_counters_and_notes_merged_rows_per_inserted_row() {
        let before = StorageWork::parse("1000\t5000\n").expect("two counters");
        assert_eq!(
            before,
            StorageWork {
                inserted: 1000,
                merged: 5000
            }
        );
        let after = StorageWork {
            inserted: 1_251_000,
            merged: 10_635_000,
        };
        assert_eq!(
            StorageWork::note(before, after),
            "ClickHouse: 1,250,000 rows inserted, merges read 8.5 rows per row inserted"
        );
        assert_eq!(
            StorageWork::note(after, after),
            "ClickHouse: no rows inserted"
        );
        // An error text, a missing or an extra counter is no reading.
        assert_eq!(StorageWork::parse("Code: 47. DB::Exception"), None);
        assert_eq!(StorageWork::parse("12"), None);
        assert_eq!(StorageWork::parse("1\t2\t3"), None);
    }

    #[test]
    fn regrouping_puts_whole_batches_together_and_keeps_every_row_in_order() {
        use tally_projector::fold::{FoldOptions, Quarantine};
        let payloads: Vec<Vec<u8>> = dataset("t", 30, 1_000)
            .iter()
            .map(StoredEvent::encode)
            .collect();
        let options = FoldOptions { grace_seconds: 0 };
        let batches = fold_in_batches(&payloads, 70, options, &Quarantine::default());
        let sizes: Vec<usize> = batches.iter().map(|b| b.rows.len()).collect();
        let seqs = |rows: &[&tally_projector::fold::Rows]| -> (Vec<u64>, Vec<u64>, Vec<u64>) {
            (
                rows.iter()
                    .flat_map(|r| r.engagements.iter().map(|e| e.seq))
                    .collect(),
                rows.iter()
                    .flat_map(|r| r.catalogue.iter().map(|c| c.seq))
                    .collect(),
                rows.iter()
                    .flat_map(|r| r.late.iter().map(|l| l.seq))
                    .collect(),
            )
        };
        let before = seqs(&batches.iter().map(|b| &b.rows).collect::<Vec<_>>());
        assert!(!before.2.is_empty(), "the dataset has late events");
        let grouped = regroup(batches, 200);
        // 1,030 events in batches of 70: groups of three (210 events), the
        // last of what is left.
        let grouped_sizes: Vec<usize> = grouped.iter().map(|r| r.len()).collect();
        let expected: Vec<usize> = sizes.chunks(3).map(|c| c.iter().sum()).collect();
        assert_eq!(grouped_sizes, expected);
        assert_eq!(seqs(&grouped.iter().collect::<Vec<_>>()), before);
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
        let few = ms(&[30, 10, 20]);
        assert_eq!(percentile(&few, 50.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&few, 99.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}

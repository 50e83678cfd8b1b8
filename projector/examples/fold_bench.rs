//! Fold benchmark: one projector worker's rate beside the raw ClickHouse
//! insert rate of the same rows, measured in the same run.
//!
//! ```text
//! ./dev up     # or any NATS and ClickHouse; the configuration is read as usual
//! cargo run --release -p tally-projector --example fold_bench -- [events] [batch]
//! ```
//!
//! It generates `events` (default 500,000) recorded events with the v1 mix
//! (2% of them late), publishes them to a scratch stream defined as the
//! event stream, on the subjects and with the `Nats-Msg-Id` the command API
//! uses, and measures:
//! 1. decode + fold alone, in batches of `batch` (default: the projector's
//!    `batch_size`): the worker's CPU work;
//! 2. raw insert: the folded rows written to ClickHouse, one insert per
//!    table and batch, nothing else (the limit);
//! 3. raw consume: pull batches from the stream and ack them, no work
//!    between (the other limit): each event acked, as workers sharing a
//!    consumer do, and one cumulative ack per batch, as a worker alone on
//!    its consumer does (`projector.exclusive`);
//! 4. one projector [`Worker`], as it runs in production, over the scratch
//!    stream: fetch, decode, fold, insert, ack (pipelined); on a shared
//!    consumer and on an exclusive one.
//!
//! Rows go to a scratch database (`<database>_bench`) and the events to a
//! scratch stream (`TALLY_BENCH_FOLD`); both are deleted at the end.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tally_projector::deadletter::DeadLetters;
use tally_projector::fold::{fold, write, FoldOptions, Rows};
use tally_projector::{Progress, Worker};
use tally_shared::event::{validate, Limits, Source, StoredEvent, SUBJECT_PREFIX};
use tally_shared::{nats, store, Config};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The projector service's allocator (its `main.rs`), so the worker measured
/// here allocates as it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STREAM: &str = "TALLY_BENCH_FOLD";
const SUBJECT: &str = "bench.fold";

fn events(n: usize) -> Vec<StoredEvent> {
    let now = OffsetDateTime::now_utc();
    let limits = Limits::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    (0..n)
        .map(|i| {
            let post = format!("post-{}", next(10_000));
            let (kind, payload) = match next(100) {
                0..=49 => ("view", json!({"count": next(20) + 1})),
                50..=74 => ("like", json!({})),
                75..=79 => ("unlike", json!({})),
                80..=87 => ("comment", json!({"text": "love this, so good"})),
                88..=92 => ("share", json!({})),
                93..=97 => ("click", json!({})),
                _ => ("conversion", json!({"value": 19.99, "currency": "EUR"})),
            };
            // Most events arrive within seconds of happening; 2% arrive
            // minutes to an hour late (past their bucket's grace).
            let age = if next(100) < 2 {
                300 + next(3300)
            } else {
                next(20)
            };
            let envelope = json!({"event_id": format!("e-{i}"), "type": kind,
                "occurred_at": (now - time::Duration::seconds(age as i64))
                    .format(&time::format_description::well_known::Rfc3339).unwrap(),
                "post_id": post, "user_id": format!("u{}", next(100_000)),
                "platform": "instagram", "payload": payload});
            let event = validate(&envelope, now, &limits).expect("a valid generated event");
            StoredEvent::new(
                ["acme", "globex", "initech"][i % 3],
                Source::Api,
                event,
                now,
            )
        })
        .collect()
}

fn fold_batch(first_seq: u64, batch: &[Vec<u8>], options: FoldOptions) -> Rows {
    let decoded: Vec<(u64, StoredEvent)> = batch
        .iter()
        .enumerate()
        .map(|(i, bytes)| (first_seq + i as u64, StoredEvent::decode(bytes).unwrap()))
        .collect();
    fold(decoded.iter().map(|(seq, e)| (*seq, e)), options)
}

fn arg(n: usize) -> anyhow::Result<Option<usize>> {
    Ok(std::env::args().nth(n).map(|s| s.parse()).transpose()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::load()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tally_shared::telemetry::init_tracing(&config.log, "fold-bench");
    }
    let n = arg(1)?.unwrap_or(500_000);
    let batch_size = arg(2)?.unwrap_or(config.projector.batch_size);
    config.projector.batch_size = batch_size;
    config.clickhouse.database = format!("{}_bench", config.clickhouse.database);
    config.clickhouse.timeout_ms = 120_000;
    let options = FoldOptions {
        grace_seconds: config.windows.grace_seconds,
    };
    println!("generating {n} events…");
    let stored = events(n);
    let encoded: Vec<Vec<u8>> = stored.iter().map(StoredEvent::encode).collect();
    let bytes: usize = encoded.iter().map(Vec::len).sum();

    // The scratch stream, defined as the event stream is (its subjects under
    // `bench.fold.`), filled by raw async publishes with `Nats-Msg-Id`, as
    // the command API appends.
    let client = nats::connect(&config.nats, "tally-fold-bench").await?;
    let js = nats::jetstream(client, &config.nats);
    let _ = js.delete_stream(STREAM).await;
    let mut definition = nats::events_stream_config(&config.nats);
    definition.name = STREAM.into();
    definition.subjects = vec![format!("{SUBJECT}.>")];
    let stream = js.create_stream(definition).await?;
    println!("publishing them to {STREAM}…");
    let started = Instant::now();
    let mut acks = Vec::with_capacity(4096);
    for (event, payload) in stored.iter().zip(&encoded) {
        let subject = event.subject();
        let subject = format!("{SUBJECT}{}", &subject[SUBJECT_PREFIX.len()..]);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.msg_id().as_str());
        acks.push(
            js.publish_with_headers(subject, headers, payload.clone().into())
                .await?,
        );
        if acks.len() == 4096 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    drop(stored);
    let publish_secs = started.elapsed().as_secs_f64();

    // 1. Decode + fold.
    let started = Instant::now();
    let all_rows: Vec<Rows> = encoded
        .chunks(batch_size)
        .enumerate()
        .map(|(i, batch)| fold_batch((i * batch_size) as u64 + 1, batch, options))
        .collect();
    let fold_secs = started.elapsed().as_secs_f64();
    let rows_per_event = all_rows
        .iter()
        .map(|r| r.engagements.len() + r.catalogue.len() + r.late.len())
        .sum::<usize>() as f64
        / n as f64;

    // 2. Raw insert of the same rows.
    store::migrate(&config.clickhouse).await?;
    let clickhouse = store::client(&config.clickhouse);
    let started = Instant::now();
    for rows in &all_rows {
        write(&clickhouse, rows).await?;
    }
    let insert_secs = started.elapsed().as_secs_f64();
    drop(all_rows);

    // 3. Raw consume: the same pull batches, acked, with no work between;
    // 4. one worker over the stream, into fresh tables. Each both ways: on a
    // shared consumer (an ack per event) and on an exclusive one (an ack
    // per batch).
    let mut consume_secs = [0.0; 2];
    let mut worker_secs = [0.0; 2];
    for (i, exclusive) in [false, true].into_iter().enumerate() {
        consume_secs[i] = raw_consume(&stream, &config, n, exclusive).await?;
        for table in [
            "engagements",
            "facts_by_seq",
            "catalogue",
            "post_catalogue",
            "late_events",
        ] {
            let sql = format!("TRUNCATE TABLE {table}");
            store::timed(&config.clickhouse, clickhouse.query(&sql).execute()).await?;
        }
        worker_secs[i] = run_worker(&stream, &js, &config, options, n, exclusive).await?;
    }

    let sql = format!("DROP DATABASE IF EXISTS {}", config.clickhouse.database);
    store::timed(&config.clickhouse, clickhouse.query(&sql).execute()).await?;
    js.delete_stream(STREAM).await?;

    let rate = |secs: f64| n as f64 / secs;
    let raw = rate(insert_secs);
    println!(
        "\nfold benchmark: {n} events ({:.0} bytes each), batches of {batch_size}, {rows_per_event:.2} rows per event",
        bytes as f64 / n as f64
    );
    println!("{:<50} {:>12} {:>10}", "measure", "events/s", "vs raw");
    let line = |name: &str, secs: f64| {
        println!("{name:<50} {:>12.0} {:>9.2}x", rate(secs), rate(secs) / raw);
    };
    line("raw ClickHouse insert of the rows (limit)", insert_secs);
    line("decode + fold alone (one thread)", fold_secs);
    line(
        "worker, shared consumer: fetch, fold, insert, ack",
        worker_secs[0],
    );
    line(
        "raw fetch + ack each event, no work (limit)",
        consume_secs[0],
    );
    line("worker, exclusive consumer (ack per batch)", worker_secs[1]);
    line(
        "raw fetch + ack per batch, no work (limit)",
        consume_secs[1],
    );
    line("(raw JetStream publish, for scale)", publish_secs);
    Ok(())
}

/// Seconds to fetch the `n` events in the projector's batches and ack them,
/// one by one or (`exclusive`) once per batch, with no work between.
async fn raw_consume(
    stream: &async_nats::jetstream::stream::Stream,
    config: &Config,
    n: usize,
    exclusive: bool,
) -> anyhow::Result<f64> {
    let name = if exclusive {
        "bench-raw-solo"
    } else {
        "bench-raw"
    };
    // Unfiltered, as the projector's: the scratch stream holds `bench.fold.>`
    // only.
    let raw = stream
        .create_consumer(nats::projector_consumer_config(name, exclusive))
        .await?;
    let started = Instant::now();
    let mut consumed = 0;
    while consumed < n {
        let mut messages = raw
            .fetch()
            .max_messages(config.projector.batch_size)
            .max_bytes(config.projector.batch_bytes)
            .expires(Duration::from_millis(config.projector.fetch_wait_ms))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut batch = Vec::with_capacity(config.projector.batch_size);
        while let Some(Ok(message)) = messages.next().await {
            batch.push(message);
        }
        let acked = if exclusive {
            batch.last().into_iter().collect::<Vec<_>>()
        } else {
            batch.iter().collect()
        };
        for message in acked {
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        consumed += batch.len();
    }
    let secs = started.elapsed().as_secs_f64();
    stream.delete_consumer(name).await?;
    Ok(secs)
}

/// Seconds one projector [`Worker`] takes to project the `n` events, on a
/// consumer of its own, shared (`exclusive` false) or exclusive.
async fn run_worker(
    stream: &async_nats::jetstream::stream::Stream,
    js: &async_nats::jetstream::Context,
    config: &Config,
    options: FoldOptions,
    n: usize,
    exclusive: bool,
) -> anyhow::Result<f64> {
    let name = if exclusive { "bench-solo" } else { "bench" };
    let consumer = stream
        .create_consumer(nats::projector_consumer_config(name, exclusive))
        .await?;
    let mut settings = config.projector.clone();
    settings.exclusive = exclusive;
    let progress = Arc::new(Progress::default());
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        consumer,
        DeadLetters::new(js.clone()),
        &config.clickhouse,
        &settings,
        options,
        progress.clone(),
    );
    let started = Instant::now();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    while progress.projected.load(Ordering::Relaxed) < n as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the worker stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    running.await??;
    stream.delete_consumer(name).await?;
    Ok(secs)
}

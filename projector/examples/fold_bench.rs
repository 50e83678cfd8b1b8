//! Fold benchmark: one worker's fold rate beside the raw ClickHouse insert
//! rate of the same rows, measured in the same run.
//!
//! ```text
//! ./dev up     # or any ClickHouse; the configuration is read as usual
//! cargo run --release -p tally-projector --example fold_bench -- [events]
//! ```
//!
//! It generates `events` (default 500,000) recorded events with the v1 mix,
//! encoded as they lie on the stream, then measures on one thread:
//! 1. decode + fold (the worker's CPU work per batch);
//! 2. raw insert: the folded rows written to ClickHouse, nothing else;
//! 3. decode + fold + insert, batch after batch (one worker's whole path).
//!
//! Rows go to a scratch database (`<database>_bench`), dropped at the end.

use std::time::Instant;

use serde_json::json;
use tally_projector::fold::{fold, write, FoldOptions, Rows};
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use tally_shared::{store, Config};
use time::OffsetDateTime;

const BATCH: usize = 1000;

fn events(n: usize) -> Vec<Vec<u8>> {
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
            let envelope = json!({"event_id": format!("e-{i}"), "type": kind,
                "occurred_at": (now - time::Duration::seconds(next(3600) as i64 + 1))
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
            .encode()
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(500_000);
    let mut config = Config::load()?;
    config.clickhouse.database = format!("{}_bench", config.clickhouse.database);
    config.clickhouse.timeout_ms = 120_000;
    let options = FoldOptions {
        grace_seconds: config.windows.grace_seconds,
    };
    println!("generating {n} events…");
    let encoded = events(n);

    // 1. Decode + fold.
    let started = Instant::now();
    let mut all_rows = Vec::new();
    for (i, batch) in encoded.chunks(BATCH).enumerate() {
        all_rows.push(fold_batch((i * BATCH) as u64 + 1, batch, options));
    }
    let fold_secs = started.elapsed().as_secs_f64();
    let rows_per_event: f64 = all_rows
        .iter()
        .map(|r| r.events.len() + r.engagements.len() + r.catalogue.len() + r.late.len())
        .sum::<usize>() as f64
        / n as f64;

    store::migrate(&config.clickhouse).await?;
    let client = store::client(&config.clickhouse);

    // 2. Raw insert of the same rows.
    let started = Instant::now();
    for rows in &all_rows {
        write(&client, rows).await?;
    }
    let insert_secs = started.elapsed().as_secs_f64();

    // 3. The whole path, into fresh rows (new sequences).
    let started = Instant::now();
    for (i, batch) in encoded.chunks(BATCH).enumerate() {
        let rows = fold_batch((n + i * BATCH) as u64 + 1, batch, options);
        write(&client, &rows).await?;
    }
    let path_secs = started.elapsed().as_secs_f64();

    let sql = format!("DROP DATABASE IF EXISTS {}", config.clickhouse.database);
    store::timed(&config.clickhouse, client.query(&sql).execute()).await?;

    let rate = |secs: f64| n as f64 / secs;
    let raw = rate(insert_secs);
    println!("\nfold benchmark: {n} events, batches of {BATCH}, one worker (one thread), {rows_per_event:.2} rows per event");
    println!("{:<36} {:>14} {:>10}", "measure", "events/s", "vs raw");
    println!(
        "{:<36} {:>14.0} {:>9.2}x",
        "decode + fold (CPU only)",
        rate(fold_secs),
        rate(fold_secs) / raw
    );
    println!(
        "{:<36} {:>14.0} {:>9.2}x",
        "raw ClickHouse insert, same rows", raw, 1.0
    );
    println!(
        "{:<36} {:>14.0} {:>9.2}x",
        "decode + fold + insert (per worker)",
        rate(path_secs),
        rate(path_secs) / raw
    );
    Ok(())
}

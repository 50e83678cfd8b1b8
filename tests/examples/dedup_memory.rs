//! Measures what the dedup horizon costs nats-server: resident memory per
//! million distinct `Nats-Msg-Id`s held in a stream's duplicate window, and
//! the time to rebuild that state after a restart.
//!
//!     cargo run --release -p tally-tests --example dedup_memory -- [ids]
//!
//! Two fresh servers receive the same events, one with a 24 h duplicate
//! window and a `Nats-Msg-Id` on every message, one without ids (the
//! control). The difference in resident memory, divided by the number of
//! ids, is the cost per id.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::stream::{FuturesUnordered, StreamExt};
use tally_tests::NatsServer;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Publishes `ids` events; returns the time taken and the first id used.
async fn fill(server: &NatsServer, ids: usize, with_ids: bool) -> (Duration, String) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "DEDUP".into(),
        subjects: vec!["tally.events.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: if with_ids {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_secs(1)
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut first = String::new();
    for i in 0..ids {
        let id = format!("tenant-{:02}:{}", i % 20, uuid::Uuid::new_v4());
        if i == 0 {
            first = id.clone();
        }
        let body = format!(
            r#"{{"schema_version":2,"tenant":"tenant-{:02}","source":"api","event_id":"{id}","type":"view","occurred_at":"2026-11-22T10:00:00Z","received_at":"2026-11-22T10:00:01Z","post_id":"post-{}","payload":{{"count":1}}}}"#,
            i % 20,
            i % 5000
        );
        let mut headers = async_nats::HeaderMap::new();
        if with_ids {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        let ack = js
            .publish_with_headers(
                format!("tally.events.tenant-{:02}.view", i % 20),
                headers,
                body.into(),
            )
            .await
            .unwrap();
        in_flight.push(std::future::IntoFuture::into_future(ack));
        if in_flight.len() >= 2_000 {
            in_flight.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = in_flight.next().await {
        ack.unwrap();
    }
    (started.elapsed(), first)
}

async fn settle(pid: u32) -> u64 {
    // Let the server finish flushing, then read its resident set.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_kib(pid)
}

#[tokio::main]
async fn main() {
    let ids: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    println!("publishing {ids} events to each of two fresh nats-servers");

    let control = NatsServer::start();
    let control_pid = control.pid().unwrap();
    let base_control = rss_kib(control_pid);
    let (took, _) = fill(&control, ids, false).await;
    let control_rss = settle(control_pid).await;
    println!("without Nats-Msg-Id: {took:.1?}, RSS {base_control} KiB -> {control_rss} KiB");

    let mut dedup = NatsServer::start();
    let dedup_pid = dedup.pid().unwrap();
    let base_dedup = rss_kib(dedup_pid);
    let (took, first_id) = fill(&dedup, ids, true).await;
    let dedup_rss = settle(dedup_pid).await;
    println!("with Nats-Msg-Id, 24 h window: {took:.1?}, RSS {base_dedup} KiB -> {dedup_rss} KiB");

    let per_id = (dedup_rss - base_dedup) as f64 * 1024.0 / ids as f64
        - (control_rss - base_control) as f64 * 1024.0 / ids as f64;
    println!(
        "cost of the dedup window: {:.0} bytes per id = {:.0} MiB per million ids",
        per_id,
        per_id * 1e6 / (1024.0 * 1024.0)
    );

    // After a restart the server rebuilds the window from the stored
    // messages, on the first publish: time that publish (a retry of the
    // very first id, which must still be a duplicate).
    drop(control);
    dedup.restart();
    let client = async_nats::connect(dedup.url()).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream("DEDUP").await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    let before = rss_kib(dedup.pid().unwrap());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", first_id.as_str());
    let retry = Instant::now();
    let ack = js
        .publish_with_headers("tally.events.tenant-00.view", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let took = retry.elapsed();
    let after = settle(dedup.pid().unwrap()).await;
    println!(
        "after restart ({messages} messages): RSS {before} KiB; first publish (a retry of the first id) took {took:.1?}, duplicate = {}; RSS then {after} KiB",
        ack.duplicate
    );
}

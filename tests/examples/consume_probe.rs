//! Consume probe: how fast nats-server serves a pull consumer the
//! projector's way (batches of 20,000, one cumulative ack per batch), on a
//! nats-server of its own, without ClickHouse or the services:
//! 1. a backlog of N events alone;
//! 2. the same backlog, on a second consumer, while events are published
//!    at R per second;
//! 3. at the stream's tail while events are published at R per second, a
//!    consumer that spends W ms per batch (as folding and writing would),
//!    each fetch printed.
//!
//! ```text
//! cargo run --release -p tally-tests --example consume_probe -- [N [R [W]]]
//! ```
//!
//! Defaults: 300,000 events, 30,000 per second, 500 ms.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use tally_tests::bench::{dataset, publish_on, publish_under};
use tally_tests::NatsServer;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(default)
}

/// Publishes `events` at `rate` per second, on one connection, in slices
/// of 10 ms (each slice's acks awaited before the next is due).
async fn paced(url: String, events: Vec<tally_shared::event::StoredEvent>, rate: f64) {
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let started = Instant::now();
    let chunk = (rate / 100.0).max(1.0) as usize;
    for (i, slice) in events.chunks(chunk).enumerate() {
        let due = Duration::from_secs_f64(i as f64 * chunk as f64 / rate);
        tokio::time::sleep_until((started + due).into()).await;
        publish_on(&js, slice, "").await;
    }
}

/// One pull request of the projector's size (20,000 messages, 16 MiB,
/// 250 ms), waited for 50 ms past its expiry; what it took and how long.
async fn fetch(
    consumer: &jetstream::consumer::PullConsumer,
) -> (Vec<jetstream::Message>, Duration) {
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut messages = consumer
        .fetch()
        .max_messages(20_000)
        .max_bytes(16 << 20)
        .expires(Duration::from_millis(250))
        .messages()
        .await
        .unwrap();
    let collect = async {
        while let Some(Ok(m)) = messages.next().await {
            batch.push(m);
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), collect).await;
    (batch, started.elapsed())
}

async fn consume(consumer: &jetstream::consumer::PullConsumer, until: u64, label: &str) {
    let started = Instant::now();
    let (mut reached, mut fetch_time, mut batches) = (0u64, Duration::ZERO, 0);
    let mut taken = 0u64;
    while reached < until {
        let (batch, took) = fetch(consumer).await;
        fetch_time += took;
        batches += 1;
        taken += batch.len() as u64;
        if let Some(last) = batch.last() {
            last.ack().await.unwrap();
            reached = reached.max(last.info().unwrap().stream_sequence);
        }
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "{label}: {taken} messages to seq {reached} in {s:.2} s: {:.0}/s; {batches} fetches, {:.2} s fetching",
        taken as f64 / s,
        fetch_time.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let backlog = arg(1, 300_000);
    let rate = arg(2, 30_000) as f64;
    let nats = NatsServer::start();
    let url = nats.url();
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    js.create_stream(tally_shared::nats::events_stream_config(
        &tally_shared::Config::defaults().nats,
    ))
    .await
    .unwrap();
    let mut all = Vec::new();
    for t in 0..3 {
        all.extend(dataset(&format!("t{t}"), 2_000, backlog * 2 / 3));
    }
    let (first, rest) = all.split_at(backlog as usize);
    let t = Instant::now();
    let top = publish_under(&url, first, "").await;
    println!("published {top} in {:.2} s", t.elapsed().as_secs_f64());
    let stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    let alone = stream
        .create_consumer(tally_shared::nats::projector_consumer_config("alone", true))
        .await
        .unwrap();
    consume(&alone, top, "alone").await;
    let busy = stream
        .create_consumer(tally_shared::nats::projector_consumer_config("busy", true))
        .await
        .unwrap();
    let (now, later) = rest.split_at(rest.len() / 2);
    let load = tokio::spawn(paced(url.clone(), now.to_vec(), rate));
    consume(&busy, top, &format!("under {rate} events/s of publishing")).await;
    load.abort();
    // At the tail: a worker that spends `work` ms per batch, fetching what
    // came meanwhile.
    let work = Duration::from_millis(arg(3, 500));
    let tail = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..tally_shared::nats::projector_consumer_config("tail", true)
        })
        .await
        .unwrap();
    let load = tokio::spawn(paced(url.clone(), later.to_vec(), rate));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let (batch, took) = fetch(&tail).await;
        let pending = batch.last().map_or(0, |m| m.info().unwrap().pending);
        println!(
            "tail: {} messages in {:.0} ms ({:.0}/s), {pending} pending after",
            batch.len(),
            took.as_secs_f64() * 1000.0,
            batch.len() as f64 / took.as_secs_f64()
        );
        tokio::time::sleep(work).await;
        if let Some(last) = batch.last() {
            last.ack().await.unwrap();
        }
    }
    load.abort();
}

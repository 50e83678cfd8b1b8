//! How long the command service's catalogue follower takes to copy a burst
//! of `post_published` events into `TALLY_CATALOGUE` (what the like button
//! reads to attribute a like), and the CPU it costs nats-server and the
//! command service. The burst is published straight to JetStream, as an
//! import of a catalogue would arrive; the follower is timed from the
//! burst's first publish until its consumer has nothing pending or
//! unacknowledged, and the catalogue is then checked to hold every post.
//!
//! ```text
//! cargo run --release -p tally-tests --example catalogue_probe [POSTS]
//! ```

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use tally_tests::bench::procs::{binaries, cpu_time, ServiceProcess};
use tally_tests::bench::publish;
use tally_tests::NatsServer;
use time::OffsetDateTime;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let posts: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(150_000);
    let nats = NatsServer::start();
    // The command service alone: no ClickHouse beside it on the cores.
    let mut config = tally_shared::Config::development();
    config.nats.url = nats.url();
    config.log.filter = "warn".into();
    let logs = std::env::temp_dir().join("tally-catalogue-probe");
    std::fs::create_dir_all(&logs)?;
    let command = ServiceProcess::start("tally-command", &binaries(), &config, &logs).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    // The follower binds its consumer once the streams are there.
    let mut consumer = loop {
        match js.get_stream("TALLY_EVENTS").await {
            Ok(stream) => match stream
                .get_consumer::<jetstream::consumer::pull::Config>("catalogue")
                .await
            {
                Ok(consumer) => break consumer,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };

    let now = OffsetDateTime::now_utc();
    let published_at =
        (now - time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339)?;
    let burst: Vec<StoredEvent> = (0..posts)
        .map(|p| {
            let envelope = json!({"event_id": format!("pub-{p}"), "type": "post_published",
                "occurred_at": published_at, "post_id": format!("post-{p}"),
                "influencer_id": format!("inf-{}", p % 500), "campaign_id": format!("camp-{}", p % 50),
                "platform": "instagram", "payload": {"content_type": "reel"}});
            let event = validate(&envelope, now, &Limits::default()).expect("a valid event");
            StoredEvent::new(&format!("t{}", p % 3), Source::Import, event, now)
        })
        .collect();

    let pids = [
        ("tally-command", command.pid()),
        ("nats-server", nats.pid().expect("a running server")),
    ];
    let before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let started = Instant::now();
    publish(&nats.url(), &burst).await;
    let published = started.elapsed();
    loop {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the follower did not catch up in 10 minutes: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copied = started.elapsed();
    let after: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();

    let mut catalogue = js.get_stream("TALLY_CATALOGUE").await?;
    let held = catalogue.info().await?.state.messages;
    println!(
        "{posts} post_published events: published in {:.2} s; copied into the catalogue \
         after {:.2} s ({:.0} posts/s); the catalogue holds {held} posts",
        published.as_secs_f64(),
        copied.as_secs_f64(),
        posts as f64 / copied.as_secs_f64()
    );
    for (((name, _), b), a) in pids.iter().zip(&before).zip(&after) {
        let cpu = a.saturating_sub(*b);
        println!(
            "  {name}: {:.2} s of CPU ({:.1} µs per post)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / posts as f64
        );
    }
    anyhow::ensure!(held == posts, "the catalogue lost posts");
    Ok(())
}

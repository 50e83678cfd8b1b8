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
use tally_shared::event::StoredEvent;
use tally_tests::bench::procs::{binaries, cpu_time, ServiceProcess};
use tally_tests::bench::{dataset, publish};
use tally_tests::NatsServer;

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

    // Three tenants' catalogues, as `./dev bench full` publishes them.
    let burst: Vec<StoredEvent> = (0..3)
        .flat_map(|t| dataset(&format!("t{t}"), posts / 3, 0))
        .collect();
    let posts = burst.len() as u64;

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

//! Rebuild benchmark: `tally-replay rebuild`'s rate beside the raw limits
//! measured in the same run, on the same events.
//!
//! ```text
//! cargo run --release -p tally-tests --example rebuild_bench -- [events]
//! ./dev bench-rebuild [events]
//! ```
//!
//! Default 1,000,000 events (plus 100,000 catalogue events). It starts its
//! own nats-server and clickhouse-server (the test harness's) and the
//! services in this process, publishes the dataset straight to JetStream,
//! lets the projector project it, and then measures:
//! 1. raw consume: the whole stream read through the reader the replay
//!    tooling uses (a pull consumer without acks), no work (a limit);
//! 2. raw insert: the same events' rows (folded beforehand) written to a
//!    scratch database in batches like the rebuild's (a limit);
//! 3. raw consume + insert: reading each batch, then inserting its
//!    pre-folded rows (the limit of a rebuild that did no folding);
//! 4. rebuild: a full `rebuild` of every read model, switch included.

use std::time::{Duration, Instant};

use tally_projector::fold::{fold_recorded, write, FoldedBatch};
use tally_replay::reader::Start;
use tally_replay::{rebuild, tables, Env, BATCH};
use tally_shared::store::models::Models;
use tally_tests::bench::{dataset, publish, read_all};
use tally_tests::Stack;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(default)
}

/// The replay tool's allocator (its `main.rs`), so the rebuild measured in
/// this process allocates as `tally-replay rebuild` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let events = arg(1, 1_000_000);
    let posts = (events / 10).max(1);
    let stack = Stack::start_with("rebuild_bench", |config| {
        config.clickhouse.timeout_ms = 120_000;
        config.log.filter = "error".into();
    })
    .await;
    println!("generating {posts} posts and {events} events…");
    let data = dataset("bench", posts, events);
    let last = publish(&stack.nats.url(), &data).await;
    drop(data);
    let models = Models::connect(&stack.config.clickhouse);
    loop {
        let positions = models.positions().await.unwrap_or_default();
        if !positions.is_empty() && positions.iter().all(|p| p.position >= last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The projector has nothing left to do; stop it so it competes with
    // nothing measured.
    let Stack {
        projector, config, ..
    } = &stack;
    projector.shutdown.cancel();
    println!("{last} events stored and projected; measuring…");

    let mut env = Env::connect(config.clone()).await.unwrap();
    let (options, quarantine) = (env.fold_options(), env.quarantine());

    // 1. Raw consume.
    let started = Instant::now();
    let mut folded: Vec<FoldedBatch> = Vec::new();
    let consumed = read_all(&env, |_| async {}).await.unwrap();
    let consume = started.elapsed();
    // Fold once, outside any timing, for the insert measures.
    read_all(&env, |batch| {
        folded.push(fold_recorded(
            batch.iter().map(|r| (r.seq, &r.payload[..])),
            options,
            &quarantine,
        ));
        async {}
    })
    .await
    .unwrap();

    // 2. Raw insert into a scratch database.
    let scratch = env.database(&format!("{}_raw", config.clickhouse.database));
    let admin = env.client(env.live());
    tables::create_database(&scratch).await.unwrap();
    let client = env.client(&scratch);
    let started = Instant::now();
    for batch in &folded {
        write(&client, &batch.rows).await.unwrap();
    }
    let insert = started.elapsed();
    tables::drop_database(&admin, &scratch.database)
        .await
        .unwrap();

    // 3. Raw consume + insert (rows folded beforehand).
    tables::create_database(&scratch).await.unwrap();
    let mut rows = folded.iter();
    let started = Instant::now();
    read_all(&env, |_| {
        let next = rows.next().expect("as many batches as before");
        let client = &client;
        async move { write(client, &next.rows).await.unwrap() }
    })
    .await
    .unwrap();
    let consume_insert = started.elapsed();
    tables::drop_database(&admin, &scratch.database)
        .await
        .unwrap();
    drop(folded);

    // 4. The rebuild.
    let started = Instant::now();
    let report = rebuild::rebuild(
        &mut env,
        rebuild::Options {
            models: vec![],
            start: Start::Beginning,
            restart: true,
            keep_old: false,
            batch: BATCH,
        },
    )
    .await
    .unwrap();
    let rebuilt = started.elapsed();
    assert!(report.projected.events >= consumed - report.projected.skipped);

    let rate = |d: Duration| consumed as f64 / d.as_secs_f64();
    let limit = rate(consume_insert);
    println!("\nrebuild benchmark: {consumed} events ({posts} catalogue), batches of {BATCH}");
    println!(
        "{:<40} {:>12} {:>14}",
        "measure", "events/s", "vs consume+insert"
    );
    for (name, took) in [
        ("raw consume (pull, no acks)", consume),
        ("raw insert (pre-folded rows)", insert),
        ("raw consume + insert", consume_insert),
        ("rebuild (fold, insert, switch)", rebuilt),
    ] {
        println!(
            "{name:<40} {:>12.0} {:>13.2}x",
            rate(took),
            rate(took) / limit
        );
    }
}

//! The benchmark: every figure beside the raw limit measured in the same
//! run, on the same payloads.
//!
//! ```text
//! ./dev bench [quick|full]
//! cargo run --release -p tally-tests --example bench -- [quick|full] [--out DIR] [--no-peers]
//! ```
//!
//! It starts its own nats-server and clickhouse-server (the test
//! harness's) and the three services as processes of their own (the
//! release binaries), with rate limits off, then measures in order:
//! 1. raw limits: JetStream async publish with `Nats-Msg-Id` straight from
//!    a client; the ClickHouse insert of the same events' rows, in the
//!    projector's batches and in the rebuild's; fetching and acking them as
//!    a projector does, with no work between; reading them as a rebuild
//!    does; an HTTP baseline (the command API's `/healthz`: the same server
//!    stack, no work). Each after the publish starts once the servers and
//!    services are quiet. From their CPU per event, the fold's and the
//!    rebuild's CPU ceilings: what the cores would carry if an event cost
//!    those stages and nothing more;
//! 2. projection: one projector worker folding that backlog; a replay
//!    rebuild of it (the consume, fold and rebuild rows note the cores
//!    nats-server, clickhouse-server and the consuming process used
//!    meanwhile: which of them the limit is);
//! 3. ingest: single events and batches, closed loop at several client
//!    counts (the best is the saturation point), then an open loop at half
//!    of it;
//! 4. accept-to-visible at half of batch saturation;
//! 5. the query API, per endpoint: cache hits (each followed by a
//!    `/healthz`, the no-work baseline at the same moments) and
//!    ClickHouse-backed answers;
//! 6. the like button: Tally's like endpoints, then the peers (`bench/peers`:
//!    a Redis INCR counter per post, cqrs-es + postgres-es) on the same
//!    operations;
//! 7. each service's peak resident memory.
//!
//! Results: `bench-results/<time>/` (`results.json`, `chart.svg`, the
//! printed table in `table.txt`, the same as Markdown for the README in
//! `results.md`, service logs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{json, Value};
use tally_projector::fold::write;
use tally_replay::reader::Start;
use tally_replay::{rebuild, tables, Env, BATCH};
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use tally_shared::store::models::Models;
use tally_shared::store::rollups::{self, Roller};
use tally_tests::bench::disk;
use tally_tests::bench::load::{saturation, Driver, Prepared, Run};
use tally_tests::bench::procs::{binaries, CpuMeter, ServiceProcess};
use tally_tests::bench::report::{ceiling_note, cpu_ceiling, Aim, Cost, Memory, Report, Row};
use tally_tests::bench::{
    fold_in_batches, publish, raw_publish_scratch, read_all, regroup, StorageMeter,
};
use tally_tests::workload::{client_of, expected_likes, LikeOp, LikeToggles, Spec, Workload};
use tally_tests::{config_for, NatsServer, TokenScope as Scope};
use time::OffsetDateTime;

mod phases;
mod setup;

use phases::*;
use setup::*;

/// Says which phase starts, with the seconds since the run began.
macro_rules! phase {
    ($started:expr, $($arg:tt)*) => {
        eprintln!("[{:6.1} s] {}", $started.elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Size {
    name: &'static str,
    posts: u64,
    /// Events published raw (the backlog folded and rebuilt).
    backlog: usize,
    /// Each closed-loop level and each open-loop run.
    level: Duration,
    batch_clients: &'static [usize],
    single_clients: &'static [usize],
    probes: usize,
    hits: usize,
    misses: usize,
    likes: usize,
    like_clients: usize,
}

const QUICK: Size = Size {
    name: "quick",
    posts: 5_000,
    backlog: 150_000,
    level: Duration::from_secs(2),
    batch_clients: &[4, 16],
    single_clients: &[8, 64],
    probes: 12,
    hits: 150,
    misses: 10,
    likes: 5_000,
    like_clients: 32,
};

const FULL: Size = Size {
    name: "full",
    posts: 50_000,
    backlog: 1_000_000,
    level: Duration::from_secs(6),
    batch_clients: &[1, 2, 4, 8, 16],
    single_clients: &[8, 32, 64, 128],
    probes: 60,
    hits: 1_000,
    misses: 40,
    likes: 30_000,
    like_clients: 32,
};

/// The accept-to-visible measures: under half of batch saturation, and
/// under half of single-event saturation.
const VISIBLE_AT_HALF_BATCH: &str = "accept-to-visible, half of batch saturation";
const VISIBLE_AT_HALF_SINGLE: &str = "accept-to-visible, half of single-event saturation";
const RAW_INSERT: &str = "raw ClickHouse insert (same events' rows)";
const RAW_INSERT_REBUILD: &str = "raw ClickHouse insert, the rebuild's batches";
const FOLD_CEILING: &str = "CPU ceiling: consume + ack + insert, no fold";
const REBUILD_CEILING: &str = "CPU ceiling: read + insert (the rebuild's batches), no fold";
/// The processes doing a raw limit's work, whose CPU it costs.
const INSERTING: [&str; 2] = ["clickhouse-server", "tally-bench"];
const READING: [&str; 2] = ["nats-server", "tally-bench"];

/// Events in a batch request.
const BATCH_EVENTS: usize = 500;
/// The replay tool's allocator (its `main.rs`), so the rebuild measured in
/// this process allocates as `tally-replay rebuild` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "full") {
        FULL
    } else {
        QUICK
    };
    let with_peers = !args.iter().any(|a| a == "--no-peers");
    let started_at = OffsetDateTime::now_utc();
    let out = match args.iter().position(|a| a == "--out") {
        Some(i) => PathBuf::from(&args[i + 1]),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../bench-results")
            .join(started_at.format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))?),
    };
    std::fs::create_dir_all(out.join("logs"))?;
    let run_started = Instant::now();

    let disk = Disk::probe();
    let nats = NatsServer::start();
    let mut config = config_for("bench", &nats);
    config.clickhouse.timeout_ms = 120_000;
    // One projector worker, alone on its consumer: one cumulative ack per
    // batch (`projector.exclusive`).
    config.projector.exclusive = true;
    // The projector's fetch wait as in production (the test harness
    // shortens it to 100 ms); the linger is the default's already.
    config.projector.fetch_wait_ms = tally_shared::Config::defaults().projector.fetch_wait_ms;
    let bins = binaries();
    let logs = out.join("logs");
    // The projector migrates the schema the query API needs, then steps
    // aside so that a backlog builds up for it.
    ServiceProcess::start("tally-projector", &bins, &config, &logs)
        .await
        .stop();
    let command = ServiceProcess::start("tally-command", &bins, &config, &logs).await;
    let query = ServiceProcess::start("tally-query", &bins, &config, &logs).await;
    // The services idle through the raw limits, or should: waited for.
    let services = [
        ("tally-command", command.pid()),
        ("tally-query", query.pid()),
    ];
    let tenants = Spec::default().tenants;
    let mut tokens = Tokens {
        config: config.clone(),
        writers: HashMap::new(),
    };
    for t in 0..tenants {
        let name = format!("bench-{t}");
        let token = tokens.mint(&name, &[Scope::EventsWrite]);
        tokens.writers.insert(name, token);
    }
    let mut events = Events {
        workload: Workload::new(Spec {
            posts: size.posts,
            ..Spec::default()
        }),
    };
    let mut rows = Vec::new();

    // 1. Raw limits.
    phase!(
        run_started,
        "raw JetStream publish of {} events…",
        size.backlog
    );
    let backlog = events.stored(size.backlog);
    let started = Instant::now();
    let last = publish(&nats.url(), &backlog).await;
    let into_events = started.elapsed();
    // Once more into a scratch stream of the same definition: the limit is
    // the better of the two (a short run is easily disturbed).
    let into_scratch = raw_publish_scratch(&nats.url(), &backlog).await?;
    rows.push(
        Row::rate(
            "raw limits",
            "raw JetStream publish (async, Nats-Msg-Id)",
            backlog.len() as f64 / into_events.min(into_scratch).as_secs_f64(),
            "events",
            backlog.len() as u64,
        )
        .note(format!(
            "best of {:.0} and {:.0}",
            backlog.len() as f64 / into_events.as_secs_f64(),
            backlog.len() as f64 / into_scratch.as_secs_f64()
        )),
    );

    phase!(
        run_started,
        "raw ClickHouse insert of the same events' rows…"
    );
    let env = Env::connect(config.clone()).await?;
    let (options, quarantine) = (env.fold_options(), env.quarantine());
    let payloads: Vec<Vec<u8>> = backlog.iter().map(StoredEvent::encode).collect();
    // In the projector's batches: the limit of what a worker writes.
    let folded = fold_in_batches(&payloads, config.projector.batch_size, options, &quarantine);
    drop((payloads, backlog));
    let scratch = env.database(&format!("{}_raw", config.clickhouse.database));
    tables::create_database(&scratch).await?;
    let client = env.client(&scratch);
    settle_servers(&nats, &services, run_started).await;
    // The cores the servers and this process (the raw clients, the
    // rebuild) use from now.
    let bench_cpu = || CpuMeter::start(&servers(&nats, &[("tally-bench", std::process::id())]));
    let cpu = bench_cpu();
    let storage = StorageMeter::start(&env.live().url).await;
    let started = Instant::now();
    for batch in &folded {
        write(&client, &batch.rows).await?;
    }
    let inserted = size.backlog as f64 / started.elapsed().as_secs_f64();
    let insert_cost = Cost::new("insert", cpu.per_event(&INSERTING, size.backlog as u64));
    rows.push(
        Row::rate(
            "raw limits",
            RAW_INSERT,
            inserted,
            "events",
            size.backlog as u64,
        )
        .note(format!("{}; {}", cpu.note(), storage.note().await)),
    );
    tables::drop_database(&env.client(env.live()), &scratch.database).await?;

    // The same rows in the rebuild's batches: the limit of what it writes.
    phase!(
        run_started,
        "raw ClickHouse insert in the rebuild's batches…"
    );
    let regrouped = regroup(folded, BATCH);
    tables::create_database(&scratch).await?;
    settle_servers(&nats, &services, run_started).await;
    let cpu = bench_cpu();
    let storage = StorageMeter::start(&env.live().url).await;
    let started = Instant::now();
    for batch in &regrouped {
        write(&client, batch).await?;
    }
    let inserted = size.backlog as f64 / started.elapsed().as_secs_f64();
    let rebuild_insert_cost = Cost::new(
        "insert (the rebuild's batches)",
        cpu.per_event(&INSERTING, size.backlog as u64),
    );
    rows.push(
        Row::rate(
            "raw limits",
            RAW_INSERT_REBUILD,
            inserted,
            "events",
            size.backlog as u64,
        )
        .note(format!(
            "batches of {BATCH} events; {}; {}",
            cpu.note(),
            storage.note().await
        )),
    );
    tables::drop_database(&env.client(env.live()), &scratch.database).await?;
    drop(regrouped);

    phase!(run_started, "raw consume + ack of the backlog…");
    settle_servers(&nats, &services, run_started).await;
    let cpu = bench_cpu();
    let consumed = raw_consume_ack(&config, last).await?;
    let consumed_n = consumed.n;
    let consume_cost = Cost::new("consume + ack", cpu.per_event(&READING, consumed_n));
    rows.push(consumed.note(cpu.note()));

    phase!(run_started, "raw read of the backlog, as a rebuild reads…");
    settle_servers(&nats, &services, run_started).await;
    let cpu = bench_cpu();
    let started = Instant::now();
    let read = read_all(&env, |_| async {}).await?;
    let read_cost = Cost::new("read", cpu.per_event(&READING, read));
    rows.push(
        Row::rate(
            "raw limits",
            "raw JetStream read, the rebuild's reader (no acks)",
            read as f64 / started.elapsed().as_secs_f64(),
            "events",
            read,
        )
        .note(format!("batches of {BATCH} events; {}", cpu.note())),
    );

    // What the cores allow a fold and a rebuild that did no work of their
    // own: every event costs the CPU of its raw limits' stages.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (measure, stages, n) in [
        (FOLD_CEILING, [consume_cost, insert_cost], consumed_n),
        (REBUILD_CEILING, [read_cost, rebuild_insert_cost], read),
    ] {
        if let Some(ceiling) = cpu_ceiling(cores, &stages) {
            rows.push(
                Row::rate("raw limits", measure, ceiling, "events", n)
                    .note(ceiling_note(cores, &stages)),
            );
        }
    }

    phase!(run_started, "HTTP baseline…");
    settle_servers(&nats, &services, run_started).await;
    let command_driver = Driver::new(command.url.clone());
    let query_driver = Driver::new(query.url.clone());
    let token = tokens.writer("bench-0");
    let mut levels = Vec::new();
    for &n in size.single_clients {
        let requests = Arc::new(vec![Prepared::get("/healthz", token.clone()); 400_000]);
        levels.push((n, command_driver.closed_loop(requests, n, size.level).await));
    }
    let (n, best) = saturation(&levels).unwrap();
    rows.push(
        Row::run(
            "raw limits",
            "HTTP baseline (command API /healthz)",
            best,
            "req",
        )
        .note(format!("{n} clients")),
    );

    // 2. Projection: one worker folds the backlog; then a rebuild of it.
    phase!(
        run_started,
        "one projector worker folding the backlog ({last} events)…"
    );
    let models = Models::connect(&config.clickhouse);
    let projector = ServiceProcess::start("tally-projector", &bins, &config, &logs).await;
    let (first_seen, from) = projected(&models, 1).await;
    let cpu = CpuMeter::start(&servers(&nats, &[("tally-projector", projector.pid())]));
    let storage = StorageMeter::start(&env.live().url).await;
    projected(&models, last).await;
    let folded_events = last.saturating_sub(from);
    rows.push(
        Row::rate(
            "projection",
            "fold, one projector worker",
            folded_events as f64 / first_seen.elapsed().as_secs_f64(),
            "events",
            folded_events,
        )
        .note(format!(
            "fetch, decode, fold, insert, one ack per batch (exclusive consumer); {}; {}",
            cpu.note(),
            storage.note().await
        )),
    );
    // The rolls the fold left for later (a projector catching up defers
    // them) are done before the rebuild, not during it.
    let mut settle = Settle { env, models };
    settle.settle().await;
    phase!(run_started, "replay rebuild…");
    let started = Instant::now();
    let cpu = bench_cpu();
    let storage = StorageMeter::start(&settle.env.live().url).await;
    let report = rebuild::rebuild(
        &mut settle.env,
        rebuild::Options {
            models: vec![],
            start: Start::Beginning,
            restart: true,
            keep_old: false,
            batch: BATCH,
        },
    )
    .await?;
    rows.push(
        Row::rate(
            "projection",
            "replay rebuild (fold, insert, switch)",
            report.projected.events as f64 / started.elapsed().as_secs_f64(),
            "events",
            report.projected.events,
        )
        .note(format!("{}; {}", cpu.note(), storage.note().await)),
    );

    // 3. Ingest.
    let ingesting = servers(
        &nats,
        &[
            ("tally-command", command.pid()),
            ("tally-projector", projector.pid()),
            ("tally-bench", std::process::id()),
        ],
    );
    phase!(run_started, "batch ingest…");
    let (sat, half, batch_rate) = ingest(
        &mut settle,
        &command_driver,
        &mut events,
        &tokens,
        &size,
        (true, &ingesting),
    )
    .await;
    rows.extend([sat, half]);
    phase!(run_started, "single-event ingest…");
    let (sat, half, single_rate) = ingest(
        &mut settle,
        &command_driver,
        &mut events,
        &tokens,
        &size,
        (false, &ingesting),
    )
    .await;
    rows.extend([sat, half]);

    // 4. End to end.
    phase!(run_started, "accept-to-visible…");
    for (rate, batch, measure) in [
        (batch_rate / 2.0, true, VISIBLE_AT_HALF_BATCH),
        (single_rate / 2.0, false, VISIBLE_AT_HALF_SINGLE),
    ] {
        settle.settle().await;
        rows.push(
            accept_to_visible(
                &command_driver,
                &query_driver,
                &mut events,
                &tokens,
                &size,
                (rate, batch, measure),
            )
            .await,
        );
    }

    // 5. Queries, once everything is projected.
    let stream_last = settle.settle_quiet().await;
    phase!(
        run_started,
        "queries ({stream_last} events stored and projected)…"
    );
    let reader = tokens.mint("bench-0", &[Scope::ReportsRead]);
    rows.extend(queries(&query_driver, reader, &size, size.posts).await);

    // 6. The like button, and the peers.
    phase!(run_started, "like button: Tally…");
    settle.settle().await;
    let ops: Vec<LikeOp> = LikeToggles::new(7, size.posts, 50_000, 1.1)
        .take(size.likes)
        .collect();
    let (like_row, like_mismatches) = likes(
        &mut settle,
        &command_driver,
        &query_driver,
        &ops,
        &size,
        &tokens,
    )
    .await;
    rows.push(like_row);
    if with_peers {
        phase!(run_started, "like button: peers…");
        rows.extend(peers(&ops, &size, &out)?);
    }

    let memory: Vec<Memory> = [&command, &query, &projector]
        .iter()
        .map(|s| Memory {
            service: s.name.to_owned(),
            peak_mib: s.peak_resident_bytes().unwrap_or(0) as f64 / 1048576.0,
        })
        .collect();
    let stored = settle.env.stream_last().await?;
    let mut report = Report {
        size: size.name.to_owned(),
        started_at: started_at.format(&time::format_description::well_known::Rfc3339)?,
        machine: format!(
            "{}; {}",
            machine(&config.clickhouse.url).await,
            disk.finish()
        ),
        dataset: format!("{stored} events stored in the run ({} tenants, {} posts each, Zipf 1.1, 5% duplicates, 2% late)", tenants, size.posts),
        rows,
        memory,
        aims: vec![],
    };
    let raw_publish = "raw JetStream publish (async, Nats-Msg-Id)";
    for measure in [
        "batch ingest, saturation",
        "single-event ingest, saturation",
    ] {
        report.compare(measure, raw_publish);
    }
    report.compare("fold, one projector worker", RAW_INSERT);
    report.compare("replay rebuild (fold, insert, switch)", RAW_INSERT_REBUILD);
    report.compare_peer(
        "Redis INCR counter per post",
        "Tally like endpoints (PUT/DELETE)",
    );
    report.compare_peer(
        "cqrs-es + postgres-es aggregate per post",
        "Tally like endpoints (PUT/DELETE)",
    );
    report.aims = aims(&report, like_mismatches);

    command.stop();
    query.stop();
    projector.stop();
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("results.json"), &json)?;
    report.chart(&out.join("chart.svg"))?;
    let table = report.table();
    std::fs::write(out.join("table.txt"), &table)?;
    std::fs::write(out.join("results.md"), report.markdown())?;
    println!("\n{}\n{}\n\n{table}", report.machine, report.dataset);
    println!(
        "results in {} ({:.0} s)",
        out.display(),
        run_started.elapsed().as_secs_f64()
    );
    eprintln!("removing the run's ClickHouse data (its logs kept in logs/)…");
    tally_tests::clickhouse().stop_and_remove(Some(&logs));
    Ok(())
}

/// Waits until nats-server, clickhouse-server and `services` are quiet (up
/// to a minute), and says how long that took and who was busy.
async fn settle_servers(nats: &NatsServer, services: &[(&str, u32)], run_started: Instant) {
    let processes = servers(nats, services);
    let (waited, quiet, first) =
        tally_tests::bench::procs::quiet(&processes, Duration::from_secs(60)).await;
    let how = if quiet { "quiet" } else { "still busy" };
    let busy: Vec<String> = first
        .iter()
        .filter(|(_, cores)| *cores > 0.05)
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect();
    phase!(
        run_started,
        "  servers {how} after {:.1} s (busy at first: {})",
        waited.as_secs_f64(),
        if busy.is_empty() {
            "none".into()
        } else {
            busy.join(", ")
        }
    );
}

/// The issue's aims against this run.
fn aims(r: &Report, like_mismatches: u64) -> Vec<Aim> {
    let ratio = |m: &str| r.row(m).and_then(|row| row.ratio).unwrap_or(0.0);
    let rate = |m: &str| r.row(m).and_then(|row| row.rate).unwrap_or(0.0);
    let p99 = |m: &str| r.row(m).and_then(|row| row.p99_ms).unwrap_or(f64::INFINITY);
    let max_memory = r.memory.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
    let worst_hit = r
        .rows
        .iter()
        .filter(|row| row.measure.ends_with("cache hit"))
        .filter_map(|row| row.p99_ms)
        .fold(0.0, f64::max);
    // (aim, measured, how it is shown, met)
    let at_least = |x: f64, limit: f64| x >= limit;
    let at_most = |x: f64, limit: f64| x <= limit;
    let batch = ratio("batch ingest, saturation");
    let single = ratio("single-event ingest, saturation");
    let single_p99 = p99("single-event ingest, half of saturation");
    let visible = p99(VISIBLE_AT_HALF_BATCH);
    let visible_single = p99(VISIBLE_AT_HALF_SINGLE);
    let fold = rate("fold, one projector worker");
    let rebuild = rate("replay rebuild (fold, insert, switch)");
    // Beside a rate, the CPU ceiling of the same work without its own.
    let of_ceiling = |x: f64, ceiling: &str| match r.row(ceiling).and_then(|row| row.rate) {
        Some(c) if c > 0.0 => format!("{x:.0} ({:.2}x its CPU ceiling, {c:.0})", x / c),
        _ => format!("{x:.0}"),
    };
    let posts = p99("post metrics: ClickHouse");
    let baseline = p99(QUERY_BASELINE);
    let rankings = p99("influencer rankings: ClickHouse");
    [
        (
            "batch ingest >= 70% of raw publish",
            format!("{batch:.2}x"),
            at_least(batch, 0.7),
        ),
        (
            "single-event ingest >= 30% of raw publish",
            format!("{single:.2}x"),
            at_least(single, 0.3),
        ),
        (
            "single-event p99 <= 10 ms at half of saturation",
            format!("{single_p99:.1} ms"),
            at_most(single_p99, 10.0),
        ),
        (
            "accept-to-visible p99 <= 1 s, half of batch saturation",
            format!("{visible:.0} ms"),
            at_most(visible, 1000.0),
        ),
        (
            "accept-to-visible p99 <= 1 s, half of single-event saturation",
            format!("{visible_single:.0} ms"),
            at_most(visible_single, 1000.0),
        ),
        (
            "fold >= 250,000 events/s per worker",
            of_ceiling(fold, FOLD_CEILING),
            at_least(fold, 250_000.0),
        ),
        (
            "rebuild >= 300,000 events/s",
            of_ceiling(rebuild, REBUILD_CEILING),
            at_least(rebuild, 300_000.0),
        ),
        (
            "cache-hit p99 <= 1 ms (every endpoint)",
            format!("worst {worst_hit:.2} ms (no work between hits, pooled: {baseline:.2} ms)"),
            at_most(worst_hit, 1.0),
        ),
        (
            "post metrics from ClickHouse p99 <= 30 ms",
            format!("{posts:.1} ms"),
            at_most(posts, 30.0),
        ),
        (
            "rankings from ClickHouse p99 <= 100 ms",
            format!("{rankings:.1} ms"),
            at_most(rankings, 100.0),
        ),
        (
            "each service < 256 MiB resident",
            format!("max {max_memory:.0} MiB"),
            max_memory < 256.0,
        ),
        (
            "like counts exact",
            format!("{like_mismatches} posts wrong"),
            like_mismatches == 0,
        ),
    ]
    .into_iter()
    .map(|(aim, measured, met)| Aim {
        aim: aim.into(),
        measured,
        met,
    })
    .collect()
}

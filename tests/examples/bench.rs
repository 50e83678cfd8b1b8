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
//!    a client; the ClickHouse insert of the same events' rows; an HTTP
//!    baseline (the command API's `/healthz`: the same server stack, no
//!    work);
//! 2. projection: one projector worker folding that backlog; a replay
//!    rebuild of it;
//! 3. ingest: single events and batches, closed loop at several client
//!    counts (the best is the saturation point), then an open loop at half
//!    of it;
//! 4. accept-to-visible at half of batch saturation;
//! 5. the query API, per endpoint: cache hits and ClickHouse-backed answers;
//! 6. the like button: Tally's like endpoints, then the peers (`bench/peers`:
//!    a Redis INCR counter per post, cqrs-es + postgres-es) on the same
//!    operations;
//! 7. each service's peak resident memory.
//!
//! Results: `bench-results/<time>/` (`results.json`, `chart.svg`, the
//! printed table in `table.txt`, service logs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{json, Value};
use tally_projector::fold::{fold_recorded, write};
use tally_replay::reader::Start;
use tally_replay::{rebuild, tables, Env, BATCH};
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use tally_shared::store::models::Models;
use tally_tests::bench::load::{saturation, Driver, Prepared, Run};
use tally_tests::bench::procs::{binaries, ServiceProcess};
use tally_tests::bench::publish;
use tally_tests::bench::report::{Aim, Memory, Report, Row};
use tally_tests::workload::{client_of, expected_likes, LikeOp, LikeToggles, Spec, Workload};
use tally_tests::{config_for, NatsServer, TokenScope as Scope};
use time::OffsetDateTime;

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
    level: Duration::from_millis(2_500),
    batch_clients: &[1, 4, 16],
    single_clients: &[8, 64],
    probes: 30,
    hits: 150,
    misses: 25,
    likes: 10_000,
    like_clients: 32,
};

const FULL: Size = Size {
    name: "full",
    posts: 50_000,
    backlog: 1_000_000,
    level: Duration::from_secs(8),
    batch_clients: &[1, 2, 4, 8, 16],
    single_clients: &[8, 32, 64, 128],
    probes: 100,
    hits: 1_000,
    misses: 150,
    likes: 100_000,
    like_clients: 32,
};

/// Events in a batch request.
const BATCH_EVENTS: usize = 500;

fn now_rfc3339(age_seconds: u64, now: OffsetDateTime) -> String {
    (now - time::Duration::seconds(age_seconds as i64))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The workload, stamped with times: (tenant, envelope).
struct Events {
    workload: Workload,
}

impl Events {
    fn next(&mut self, now: OffsetDateTime) -> (String, Value) {
        let g = self.workload.next().expect("an endless workload");
        let mut envelope = g.envelope;
        envelope["occurred_at"] = json!(now_rfc3339(g.age_seconds, now));
        (g.tenant, envelope)
    }

    /// As the command API would store them.
    fn stored(&mut self, n: usize) -> Vec<StoredEvent> {
        let now = OffsetDateTime::now_utc();
        (0..n)
            .map(|_| {
                let (tenant, envelope) = self.next(now);
                let event = validate(&envelope, now, &Limits::default()).expect("a valid event");
                StoredEvent::new(&tenant, Source::Api, event, now)
            })
            .collect()
    }

    /// Requests carrying about `events` events: batches of
    /// [`BATCH_EVENTS`] of one tenant each, or single events.
    fn requests(&mut self, events: usize, batch: bool, tokens: &Tokens) -> Vec<Prepared> {
        let now = OffsetDateTime::now_utc();
        if !batch {
            return (0..events)
                .map(|_| {
                    let (tenant, envelope) = self.next(now);
                    let body = Bytes::from(serde_json::to_vec(&envelope).unwrap());
                    Prepared::json("/v1/events", tokens.writer(&tenant), body, 1)
                })
                .collect();
        }
        let mut open: HashMap<String, Vec<Value>> = HashMap::new();
        let mut requests = Vec::new();
        for _ in 0..events {
            let (tenant, envelope) = self.next(now);
            let items = open.entry(tenant.clone()).or_default();
            items.push(envelope);
            if items.len() == BATCH_EVENTS {
                let body = Bytes::from(serde_json::to_vec(&std::mem::take(items)).unwrap());
                let token = tokens.writer(&tenant);
                requests.push(Prepared::json(
                    "/v1/events/batch",
                    token,
                    body,
                    BATCH_EVENTS as u64,
                ));
            }
        }
        requests
    }
}

/// Tokens per tenant.
struct Tokens {
    config: tally_shared::Config,
    writers: HashMap<String, Arc<str>>,
}

impl Tokens {
    fn writer(&self, tenant: &str) -> Arc<str> {
        self.writers.get(tenant).cloned().expect("a known tenant")
    }

    fn mint(&self, tenant: &str, scopes: &[Scope]) -> Arc<str> {
        tally_shared::auth::mint_token(&self.config.auth, "bench", tenant, scopes, 24 * 3600).into()
    }
}

/// Waits until every read model reflects the stream up to `last`.
async fn projected(models: &Models, last: u64) -> (Instant, u64) {
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let positions = models.positions().await.unwrap_or_default();
        let at = positions.iter().map(|p| p.position).min().unwrap_or(0);
        if positions.is_empty() || at == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        first.get_or_insert((Instant::now(), at));
        if at >= last {
            return first.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the projection has caught up with everything stored, so
/// that each phase starts from a quiet system (not competing with the
/// last phase's backlog on the same cores).
struct Settle {
    env: Env,
    models: Models,
}

impl Settle {
    async fn settle(&mut self) -> u64 {
        let last = self
            .env
            .stream_last()
            .await
            .expect("the stream's last sequence");
        projected(&self.models, last).await;
        last
    }
}

/// Closed loops at each client count, then an open loop at half of the
/// best; (saturation row, half row).
async fn ingest(
    settle: &mut Settle,
    driver: &Driver,
    events: &mut Events,
    tokens: &Tokens,
    size: &Size,
    batch: bool,
) -> (Row, Row, f64) {
    let (clients, per_second_guess) = if batch {
        (size.batch_clients, 120_000.0)
    } else {
        (size.single_clients, 25_000.0)
    };
    let need = (per_second_guess * size.level.as_secs_f64()) as usize;
    let mut levels = Vec::new();
    for &n in clients {
        let requests = Arc::new(events.requests(need, batch, tokens));
        settle.settle().await;
        let run = driver.closed_loop(requests, n, size.level).await;
        eprintln!(
            "  {} clients: {:.0} events/s, p99 {:.1} ms",
            n,
            run.events_per_second(),
            run.ms(99.0)
        );
        levels.push((n, run));
    }
    let (n, best) = saturation(&levels).expect("at least one level").clone();
    let kind = if batch { "batch" } else { "single-event" };
    let at_saturation = Row::run(
        "ingest",
        &format!("{kind} ingest, saturation"),
        &best,
        "events",
    )
    .note(format!("{n} clients"));
    let rate = best.requests_per_second() / 2.0;
    let need = (rate * size.level.as_secs_f64() * 1.05) as usize + 1;
    let requests =
        Arc::new(events.requests(need * if batch { BATCH_EVENTS } else { 1 }, batch, tokens));
    settle.settle().await;
    let half = driver.open_loop(requests, rate, size.level, 4_096).await;
    let at_half = Row::run(
        "ingest",
        &format!("{kind} ingest, half of saturation"),
        &half,
        "events",
    )
    .note(format!("open loop at {rate:.0} req/s"));
    (at_saturation, at_half, best.events_per_second())
}

/// Accept-to-visible: a like on a fresh post, then its metrics polled
/// until they show it; under an open loop of batches at `rate` events/s.
async fn accept_to_visible(
    command: &Driver,
    query: &Driver,
    events: &mut Events,
    tokens: &Tokens,
    size: &Size,
    rate: f64,
) -> Row {
    let span = Duration::from_millis(120 * size.probes as u64) + Duration::from_secs(2);
    let need = (rate * span.as_secs_f64() * 1.05) as usize;
    let load = Arc::new(events.requests(need, true, tokens));
    let background = {
        let command = command.clone();
        tokio::spawn(async move {
            command
                .open_loop(load, rate / BATCH_EVENTS as f64, span, 4_096)
                .await
        })
    };
    let writer = tokens.writer("bench-0");
    let reader = tokens.mint("bench-0", &[Scope::ReportsRead]);
    let mut visible = Run::default();
    let started = Instant::now();
    for i in 0..size.probes {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = json!({"event_id": format!("probe-{i}"), "type": "like", "post_id": format!("probe-{i}"),
                          "user_id": "prober", "occurred_at": now_rfc3339(0, OffsetDateTime::now_utc())});
        let like = Prepared::json(
            "/v1/events",
            writer.clone(),
            Bytes::from(body.to_string()),
            1,
        );
        let (status, _) = command.send(&like).await;
        assert_eq!(status, 202, "probe {i} refused");
        let accepted = Instant::now();
        let path = format!("/v1/posts/probe-{i}/metrics");
        loop {
            let response = query
                .http
                .get(format!("{}{path}", query.base))
                .bearer_auth(&*reader)
                .send()
                .await;
            if let Ok(response) = response {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if body["likes"] == 1 {
                    visible.latencies.push(accepted.elapsed());
                    break;
                }
            }
            assert!(
                accepted.elapsed() < Duration::from_secs(30),
                "probe {i} never visible"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    visible.elapsed = started.elapsed();
    let load = background.await.expect("the background load");
    Row::latency(
        "end to end",
        "accept-to-visible (like, then post metrics)",
        &visible,
    )
    .note(format!(
        "under {:.0} events/s of batches",
        load.events_per_second()
    ))
}

/// The `i`-th path to ask an endpoint.
type PathOf = Box<dyn Fn(usize) -> String>;

/// Each endpoint: one path asked again and again (cache hits counted), and
/// distinct paths (ClickHouse-backed answers counted).
async fn queries(query: &Driver, reader: Arc<str>, size: &Size, posts: u64) -> Vec<Row> {
    let influencers = Spec::default().influencers;
    let endpoints: Vec<(&str, PathOf)> = vec![
        (
            "post metrics",
            Box::new(move |i| format!("/v1/posts/post-{}/metrics", i as u64 % posts)),
        ),
        (
            "influencer engagement (minute)",
            Box::new(move |i| {
                format!(
                    "/v1/influencers/inf-{}/engagement?granularity=minute",
                    i as u64 % influencers
                )
            }),
        ),
        (
            "influencer followers",
            Box::new(move |i| format!("/v1/influencers/inf-{}/followers", i as u64 % influencers)),
        ),
        (
            "campaign aggregates",
            Box::new(|i| {
                format!(
                    "/v1/campaigns/camp-{}/aggregates?period={}",
                    i % 20,
                    ["24h", "7d", "30d", "1h"][i / 20 % 4]
                )
            }),
        ),
        (
            "influencer rankings",
            Box::new(|i| {
                let metrics = [
                    "likes",
                    "views",
                    "comments",
                    "shares",
                    "engagements",
                    "engagement_rate",
                ];
                format!(
                    "/v1/influencers/rankings?metric={}&period={}&limit={}",
                    metrics[i % 6],
                    ["24h", "7d", "30d"][i % 3],
                    10 + i
                )
            }),
        ),
        (
            "trends (post, 1m windows)",
            Box::new(move |i| {
                format!(
                    "/v1/trends?entity=post:post-{}&metric=likes&window=1m&step=10s",
                    i as u64 % posts
                )
            }),
        ),
        (
            "late events",
            Box::new(|i| format!("/v1/late-events?limit={}", 10 + i)),
        ),
        (
            "anomalies",
            Box::new(move |i| {
                format!("/v1/anomalies?influencer_id=inf-{}", i as u64 % influencers)
            }),
        ),
    ];
    let mut rows = Vec::new();
    for (name, path) in endpoints {
        let (mut hits, mut misses) = (Run::default(), Run::default());
        let mut statuses = HashMap::new();
        for round in 0..size.hits {
            let (took, status, hit) = timed(query, &reader, &path(0)).await;
            *statuses.entry(status).or_insert(0) += 1;
            if hit {
                hits.latencies.push(took);
            }
            if round % 50 == 49 {
                tokio::task::yield_now().await;
            }
        }
        for i in 1..=size.misses {
            let (took, status, hit) = timed(query, &reader, &path(i)).await;
            *statuses.entry(status).or_insert(0) += 1;
            if !hit && status == 200 {
                misses.latencies.push(took);
            }
        }
        let mut hit_row = Row::latency("query", &format!("{name}: cache hit"), &hits);
        let miss_row = Row::latency("query", &format!("{name}: ClickHouse"), &misses);
        if statuses.keys().any(|s| *s != 200 && *s != 404) {
            hit_row = hit_row.note(format!("statuses {statuses:?}"));
        }
        rows.extend([hit_row, miss_row]);
    }
    rows
}

async fn timed(query: &Driver, token: &str, path: &str) -> (Duration, u16, bool) {
    let started = Instant::now();
    let response = query
        .http
        .get(format!("{}{path}", query.base))
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

/// Tally's like endpoints on `ops`: each user's operations in order on one
/// client; then the counts checked against the query API.
async fn likes(
    settle: &mut Settle,
    command: &Driver,
    query: &Driver,
    ops: &[LikeOp],
    size: &Size,
    tokens: &Tokens,
) -> (Row, u64) {
    let writer = tokens.mint("bench-likes", &[Scope::EventsWrite]);
    let mut queues: Vec<Vec<Prepared>> = vec![Vec::new(); size.like_clients];
    for op in ops {
        let method = if op.like { Method::PUT } else { Method::DELETE };
        queues[client_of(&op.user, size.like_clients)].push(Prepared {
            method,
            path: format!("/v1/posts/{}/likes/{}", op.post, op.user),
            token: writer.clone(),
            body: None,
            events: 1,
        });
    }
    let run = command.partitioned(queues).await;
    // Every count as expected, once projected (read-your-writes by waiting).
    let reader = tokens.mint("bench-likes", &[Scope::ReportsRead]);
    let expected = expected_likes(ops);
    // Once projected, every post's likes must be exactly the pairs left liked.
    settle.settle().await;
    let checks = expected.iter().map(|(post, count)| {
        let (http, url, reader) = (
            query.http.clone(),
            format!("{}/v1/posts/{post}/metrics", query.base),
            reader.clone(),
        );
        async move {
            let seen: Value = match http.get(url).bearer_auth(&*reader).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            seen["likes"].as_i64().unwrap_or(0) != *count
        }
    });
    let mismatches = futures::stream::iter(checks)
        .buffer_unordered(16)
        .filter(|wrong| std::future::ready(*wrong))
        .count()
        .await as u64;
    let row = Row::run(
        "like button",
        "Tally like endpoints (PUT/DELETE)",
        &run,
        "ops",
    )
    .note(format!(
        "{} clients, {mismatches} of {} posts' counts wrong",
        size.like_clients,
        expected.len()
    ));
    (row, mismatches)
}

/// The peers on the same operations, from `bench/peers`.
fn peers(ops: &[LikeOp], size: &Size, out: &Path) -> anyhow::Result<Vec<Row>> {
    let file = out.join("like-ops.ndjson");
    let lines: Vec<String> = ops.iter().map(|op| op.to_json().to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n")?;
    let binary =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peers/target/release/tally-peers");
    let output = std::process::Command::new(&binary)
        .arg("--ops")
        .arg(&file)
        .args(["--concurrency", &size.like_clients.to_string()])
        .stderr(std::fs::File::create(out.join("logs/peers.log"))?)
        .output()
        .with_context(|| format!("running {} (build it: cargo build --release --manifest-path bench/peers/Cargo.toml)", binary.display()))?;
    let answer: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the peers' answer ({}); see logs/peers.log", output.status))?;
    let mut rows = Vec::new();
    for (key, name) in [
        ("redis", "Redis INCR counter per post"),
        ("cqrs_es", "cqrs-es + postgres-es aggregate per post"),
    ] {
        let peer = &answer[key];
        let mut row = Row::rate(
            "like button",
            name,
            peer["ops_per_second"].as_f64().unwrap_or(0.0),
            "ops",
            peer["ops"].as_u64().unwrap_or(0),
        );
        row.p50_ms = peer["p50_ms"].as_f64();
        row.p99_ms = peer["p99_ms"].as_f64();
        row.p999_ms = peer["p999_ms"].as_f64();
        row.note = Some(format!(
            "{} retries, {} mismatches, {} errors",
            peer["retries"], peer["mismatches"], peer["errors"]
        ));
        rows.push(row);
    }
    Ok(rows)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = memory
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    format!(
        "{model}, {cores} cores, {:.0} GiB; nats-server {}, ClickHouse {}; client, servers and services on the same cores",
        total as f64 / 1024.0 / 1024.0,
        version("nats-server", "--version"),
        version("clickhouse-server", "--version"),
    )
}

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

    let nats = NatsServer::start();
    let mut config = config_for("bench", &nats);
    config.clickhouse.timeout_ms = 120_000;
    let bins = binaries();
    let logs = out.join("logs");
    // The projector migrates the schema the query API needs, then steps
    // aside so that a backlog builds up for it.
    ServiceProcess::start("tally-projector", &bins, &config, &logs)
        .await
        .stop();
    let command = ServiceProcess::start("tally-command", &bins, &config, &logs).await;
    let query = ServiceProcess::start("tally-query", &bins, &config, &logs).await;
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
    eprintln!("raw JetStream publish of {} events…", size.backlog);
    let backlog = events.stored(size.backlog);
    let started = Instant::now();
    let last = publish(&nats.url(), &backlog).await;
    rows.push(Row::rate(
        "raw limits",
        "raw JetStream publish (async, Nats-Msg-Id)",
        backlog.len() as f64 / started.elapsed().as_secs_f64(),
        "events",
        backlog.len() as u64,
    ));

    eprintln!("raw ClickHouse insert of the same events' rows…");
    let env = Env::connect(config.clone()).await?;
    let (options, quarantine) = (env.fold_options(), env.quarantine());
    let payloads: Vec<Vec<u8>> = backlog.iter().map(StoredEvent::encode).collect();
    let folded: Vec<_> = payloads
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let first = (b * BATCH) as u64 + 1;
            fold_recorded(
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (first + i as u64, &p[..])),
                options,
                &quarantine,
            )
        })
        .collect();
    drop((payloads, backlog));
    let scratch = env.database(&format!("{}_raw", config.clickhouse.database));
    tables::create_database(&scratch).await?;
    let client = env.client(&scratch);
    let started = Instant::now();
    for batch in &folded {
        write(&client, &batch.rows).await?;
    }
    rows.push(Row::rate(
        "raw limits",
        "raw ClickHouse insert (same events' rows)",
        size.backlog as f64 / started.elapsed().as_secs_f64(),
        "events",
        size.backlog as u64,
    ));
    tables::drop_database(&env.client(env.live()), &scratch.database).await?;
    drop(folded);

    eprintln!("HTTP baseline…");
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
    eprintln!("one projector worker folding the backlog ({last} events)…");
    let models = Models::connect(&config.clickhouse);
    let projector = ServiceProcess::start("tally-projector", &bins, &config, &logs).await;
    let (first_seen, from) = projected(&models, 1).await;
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
        .note("fetch, decode, fold, insert, ack"),
    );
    eprintln!("replay rebuild…");
    let mut env = env;
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
    .await?;
    rows.push(Row::rate(
        "projection",
        "replay rebuild (fold, insert, switch)",
        report.projected.events as f64 / started.elapsed().as_secs_f64(),
        "events",
        report.projected.events,
    ));

    // 3. Ingest.
    let mut settle = Settle { env, models };
    eprintln!("batch ingest…");
    let (sat, half, batch_rate) = ingest(
        &mut settle,
        &command_driver,
        &mut events,
        &tokens,
        &size,
        true,
    )
    .await;
    rows.extend([sat, half]);
    eprintln!("single-event ingest…");
    let (sat, half, _) = ingest(
        &mut settle,
        &command_driver,
        &mut events,
        &tokens,
        &size,
        false,
    )
    .await;
    rows.extend([sat, half]);

    // 4. End to end.
    eprintln!("accept-to-visible…");
    settle.settle().await;
    rows.push(
        accept_to_visible(
            &command_driver,
            &query_driver,
            &mut events,
            &tokens,
            &size,
            batch_rate / 2.0,
        )
        .await,
    );

    // 5. Queries, once everything is projected.
    let stream_last = settle.settle().await;
    eprintln!("queries ({stream_last} events stored and projected)…");
    let reader = tokens.mint("bench-0", &[Scope::ReportsRead]);
    rows.extend(queries(&query_driver, reader, &size, size.posts).await);

    // 6. The like button, and the peers.
    eprintln!("like button: Tally…");
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
        eprintln!("like button: peers…");
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
        machine: machine(),
        dataset: format!("{stored} events stored in the run ({} tenants, {} posts each, Zipf 1.1, 5% duplicates, 2% late)", tenants, size.posts),
        rows,
        memory,
        aims: vec![],
    };
    let raw_publish = "raw JetStream publish (async, Nats-Msg-Id)";
    for measure in [
        "batch ingest, saturation",
        "batch ingest, half of saturation",
        "single-event ingest, saturation",
        "single-event ingest, half of saturation",
    ] {
        report.compare(measure, raw_publish);
    }
    report.compare(
        "fold, one projector worker",
        "raw ClickHouse insert (same events' rows)",
    );
    report.compare(
        "replay rebuild (fold, insert, switch)",
        "raw ClickHouse insert (same events' rows)",
    );
    report.compare(
        "Redis INCR counter per post",
        "Tally like endpoints (PUT/DELETE)",
    );
    report.compare(
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
    println!("\n{}\n{}\n\n{table}", report.machine, report.dataset);
    println!(
        "results in {} ({:.0} s)",
        out.display(),
        run_started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The issue's aims against this run.
fn aims(r: &Report, like_mismatches: u64) -> Vec<Aim> {
    let ratio = |m: &str| r.row(m).and_then(|row| row.ratio).unwrap_or(0.0);
    let rate = |m: &str| r.row(m).and_then(|row| row.rate).unwrap_or(0.0);
    let p99 = |m: &str| r.row(m).and_then(|row| row.p99_ms).unwrap_or(f64::INFINITY);
    let aim = |aim: &str, measured: String, met: bool| Aim {
        aim: aim.into(),
        measured,
        met,
    };
    let max_memory = r.memory.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
    let worst_hit = r
        .rows
        .iter()
        .filter(|row| row.measure.ends_with("cache hit"))
        .filter_map(|row| row.p99_ms)
        .fold(0.0, f64::max);
    vec![
        aim(
            "batch ingest >= 70% of raw publish",
            format!("{:.2}x", ratio("batch ingest, saturation")),
            ratio("batch ingest, saturation") >= 0.7,
        ),
        aim(
            "single-event ingest >= 30% of raw publish",
            format!("{:.2}x", ratio("single-event ingest, saturation")),
            ratio("single-event ingest, saturation") >= 0.3,
        ),
        aim(
            "single-event p99 <= 10 ms at half of saturation",
            format!("{:.1} ms", p99("single-event ingest, half of saturation")),
            p99("single-event ingest, half of saturation") <= 10.0,
        ),
        aim(
            "accept-to-visible p99 <= 1 s (aim 250 ms)",
            format!(
                "{:.0} ms",
                p99("accept-to-visible (like, then post metrics)")
            ),
            p99("accept-to-visible (like, then post metrics)") <= 1000.0,
        ),
        aim(
            "fold >= 250,000 events/s per worker",
            format!("{:.0}", rate("fold, one projector worker")),
            rate("fold, one projector worker") >= 250_000.0,
        ),
        aim(
            "rebuild >= 300,000 events/s",
            format!("{:.0}", rate("replay rebuild (fold, insert, switch)")),
            rate("replay rebuild (fold, insert, switch)") >= 300_000.0,
        ),
        aim(
            "cache-hit p99 <= 1 ms (every endpoint)",
            format!("worst {worst_hit:.2} ms"),
            worst_hit <= 1.0,
        ),
        aim(
            "post metrics from ClickHouse p99 <= 30 ms",
            format!("{:.1} ms", p99("post metrics: ClickHouse")),
            p99("post metrics: ClickHouse") <= 30.0,
        ),
        aim(
            "rankings from ClickHouse p99 <= 100 ms",
            format!("{:.1} ms", p99("influencer rankings: ClickHouse")),
            p99("influencer rankings: ClickHouse") <= 100.0,
        ),
        aim(
            "each service < 256 MiB resident",
            format!("max {max_memory:.0} MiB"),
            max_memory < 256.0,
        ),
        aim(
            "like counts exact",
            format!("{like_mismatches} posts wrong"),
            like_mismatches == 0,
        ),
    ]
}

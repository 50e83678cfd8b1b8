//! Effectively once, under fire: two projector worker processes fold
//! 100,000 events while one of them is killed with SIGKILL at random
//! instants (at least ten times, restarted each time) and clickhouse-server
//! is killed once and restarted. Afterwards every read model must equal the
//! truth recomputed from the stream, exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use clickhouse::Row;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_tests::{
    config_for, read, start_service, ClickHouseServer, Kind, NatsServer, TokenScope as Scope,
    WorkerProcess,
};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const BATCHES: usize = 100;
const PER_BATCH: usize = 1000;

/// The worker process `projections_are_exact_after_kill_9_and_a_clickhouse_outage`
/// starts (twice, and again after every kill). Does nothing when run by hand.
#[test]
#[ignore = "a projector worker process, started by the fault test"]
fn projector_process() {
    if std::env::var_os("FAULT_TEST_PROJECTOR_WORKER").is_none() {
        return;
    }
    let config = tally_shared::Config::load().expect("the worker's configuration");
    tally_shared::telemetry::init_tracing(&config.log, "tally-projector");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(tally_projector::run(
            config,
            tokio_util::sync::CancellationToken::new(),
        ))
        .expect("the projector worker");
}

/// A small deterministic generator (xorshift), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(rng: &mut Rng, id: String) -> Value {
    let post = format!("post-{}", rng.below(300));
    let seconds_ago = rng.below(6 * 3600) as i64 + 1;
    let occurred_at = tally_tests::rfc3339_ago(seconds_ago);
    let (kind, payload) = match rng.below(100) {
        0..=44 => ("view", json!({"count": rng.below(50) + 1})),
        45..=69 => ("like", json!({})),
        70..=74 => ("unlike", json!({})),
        75..=84 => ("comment", json!({"text": "great"})),
        85..=91 => ("share", json!({})),
        92..=97 => ("click", json!({})),
        _ => ("conversion", json!({"value": 12.5, "currency": "EUR"})),
    };
    json!({"event_id": id, "type": kind, "occurred_at": occurred_at, "post_id": post,
           "user_id": format!("u{}", rng.below(5000)), "payload": payload})
}

/// Per (tenant, post): likes, shares, comments, views, clicks, counted events.
type Totals = BTreeMap<(String, String), [i64; 6]>;

#[derive(Row, Deserialize)]
struct PostRow {
    tenant: String,
    post_id: String,
    likes: i64,
    shares: i64,
    comments: i64,
    views: i64,
    clicks: i64,
    events: i64,
}

#[derive(Row, Deserialize)]
struct Count {
    n: u64,
}

/// Not yet in the default run: in most runs (nats-server
/// 2.9.10) the shared durable consumer stops delivering after the chaos
/// phase, with both workers alive and idle, and the test times out; runs
/// that finish are exact. Under investigation (issue 4). Run it with
/// `cargo test -p tally-tests --test it faults -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the consumer sometimes stalls after the chaos phase; see the doc comment"]
async fn projections_are_exact_after_kill_9_and_a_clickhouse_outage() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("fault test seed {seed}");
    let mut rng = Rng(seed);

    let nats = NatsServer::start();
    let clickhouse = ClickHouseServer::start_dedicated("faults");
    let mut config = config_for("faults", &nats);
    config.clickhouse.url = clickhouse.url();
    config.rate_limit.enabled = false;
    let command = start_service(Kind::Command, config.clone()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    tally_tests::eventually(
        "the command API to be ready",
        Duration::from_secs(60),
        || async {
            match http.get(format!("{}/readyz", command.url())).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let env: Vec<(String, String)> = [
        ("FAULT_TEST_PROJECTOR_WORKER", "1".to_owned()),
        ("TALLY_NATS__URL", config.nats.url.clone()),
        ("TALLY_CLICKHOUSE__URL", config.clickhouse.url.clone()),
        (
            "TALLY_CLICKHOUSE__DATABASE",
            config.clickhouse.database.clone(),
        ),
        ("TALLY_CLICKHOUSE__TIMEOUT_MS", "5000".to_owned()),
        (
            "TALLY_AUTH__HS256_SECRET",
            tally_shared::config::DEVELOPMENT_HS256_SECRET.to_owned(),
        ),
        ("TALLY_PROJECTOR__LISTEN", "127.0.0.1:0".to_owned()),
        ("TALLY_PROJECTOR__FETCH_WAIT_MS", "100".to_owned()),
        ("TALLY_PROJECTOR__BATCH_SIZE", "500".to_owned()),
        ("TALLY_PROJECTOR__MAX_ATTEMPTS", "1000000".to_owned()),
        ("TALLY_LOG__FILTER", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let log_dir = tempfile::tempdir().unwrap();
    let mut workers = [0, 1].map(|i| {
        WorkerProcess::start(
            "faults::projector_process",
            &env,
            log_dir.path().join(format!("worker-{i}.log")),
        )
    });

    // Ingest 100,000 events in batches of 1,000 over three tenants, 5% of
    // them repeats of earlier ids (answered as duplicates, stored once).
    let tokens: Vec<String> = TENANTS
        .iter()
        .map(|t| {
            tally_shared::auth::mint_token(&config.auth, "faults", t, &[Scope::EventsWrite], 3600)
        })
        .collect();
    let url = format!("{}/v1/events/batch", command.url());
    let mut ingest_rng = Rng(seed.rotate_left(17) | 1);
    let ingest = tokio::spawn(async move {
        let mut stored = 0usize;
        for batch in 0..BATCHES {
            let tenant = batch % TENANTS.len();
            let items: Vec<Value> = (0..PER_BATCH)
                .map(|i| {
                    let id = if i % 20 == 0 && batch >= 3 {
                        format!("e-{}-{}", batch - 3, i + 1)
                    } else {
                        format!("e-{batch}-{i}")
                    };
                    event(&mut ingest_rng, id)
                })
                .collect();
            loop {
                let response = http
                    .post(&url)
                    .bearer_auth(&tokens[tenant])
                    .json(&items)
                    .send()
                    .await
                    .unwrap();
                let (status, body) = read(response).await;
                match status {
                    202 => {
                        stored += body["accepted"].as_u64().unwrap() as usize;
                        break;
                    }
                    503 => tokio::time::sleep(Duration::from_millis(200)).await,
                    other => panic!("batch {batch}: {other} {body}"),
                }
            }
        }
        stored
    });

    // Chaos: kill a random worker every 0.2-1.2 s while events flow (at least
    // ten times), and kill clickhouse-server once for three seconds.
    let mut kills = 0;
    let mut outage = false;
    while kills < 10 || !ingest.is_finished() {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
        let victim = rng.below(2) as usize;
        if !workers[victim].is_running() {
            let log = std::fs::read_to_string(log_dir.path().join(format!("worker-{victim}.log")))
                .unwrap_or_default();
            panic!("worker {victim} died on its own; its log:\n{log}");
        }
        workers[victim].kill();
        kills += 1;
        workers[victim].restart();
        if kills == 4 && !outage {
            clickhouse.kill();
            tokio::time::sleep(Duration::from_secs(3)).await;
            clickhouse.restart();
            outage = true;
        }
    }
    let accepted = ingest.await.unwrap();
    println!(
        "fault test: {accepted} events stored, {kills} SIGKILLs, one clickhouse-server outage"
    );
    assert!(accepted >= BATCHES * PER_BATCH * 9 / 10);

    // The truth, recomputed from the stream alone.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut truth = Totals::new();
    let mut in_stream = 0u64;
    while in_stream < accepted as u64 {
        let mut messages = consumer
            .fetch()
            .max_messages(10_000)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(message)) = messages.next().await {
            let e: Value = serde_json::from_slice(&message.payload).unwrap();
            let key = (
                e["tenant"].as_str().unwrap().to_owned(),
                e["post_id"].as_str().unwrap().to_owned(),
            );
            let totals = truth.entry(key).or_default();
            let slot = match e["type"].as_str().unwrap() {
                "like" => Some((0, 1)),
                "unlike" => Some((0, -1)),
                "share" => Some((1, 1)),
                "comment" => Some((2, 1)),
                "view" => Some((3, e["payload"]["count"].as_i64().unwrap())),
                "click" => Some((4, 1)),
                _ => None,
            };
            if let Some((index, amount)) = slot {
                totals[index] += amount;
                totals[5] += 1;
            }
            message.ack().await.unwrap();
            in_stream += 1;
        }
    }
    truth.retain(|_, t| t[5] > 0);
    assert_eq!(
        in_stream, accepted as u64,
        "the stream holds exactly the accepted events"
    );

    // Caught up means: the shared consumer has nothing left to deliver and
    // nothing awaiting an ack (a worker acks only after all its writes; a
    // batch a killed worker left half-written comes back after ack_wait).
    let ch = tally_shared::store::client(&config.clickhouse);
    let started = Instant::now();
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("projector").await.unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(240) {
            let logs: Vec<String> = (0..2)
                .map(|i| {
                    let log =
                        std::fs::read_to_string(log_dir.path().join(format!("worker-{i}.log")))
                            .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    format!(
                        "worker {i} running={}:\n{}",
                        workers[i].is_running(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!(
                "projection stuck: {} pending, {} awaiting ack\n{}",
                info.num_pending,
                info.num_ack_pending,
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let projected = ch
        .query("SELECT toUInt64(count()) AS n FROM (SELECT seq FROM events FINAL)")
        .fetch_one::<Count>()
        .await
        .unwrap()
        .n;
    assert_eq!(projected, in_stream, "every event in the events table once");
    let rows: Vec<PostRow> = ch
        .query(
            "SELECT tenant, post_id, toInt64(sum(likes)) AS likes, toInt64(sum(shares)) AS shares,
                    toInt64(sum(comments)) AS comments, toInt64(sum(views)) AS views,
                    toInt64(sum(clicks)) AS clicks, toInt64(count()) AS events
             FROM post_metrics FINAL GROUP BY tenant, post_id",
        )
        .fetch_all()
        .await
        .unwrap();
    let found: Totals = rows
        .into_iter()
        .map(|r| {
            (
                (r.tenant, r.post_id),
                [r.likes, r.shares, r.comments, r.views, r.clicks, r.events],
            )
        })
        .collect();
    let differences: Vec<String> = truth
        .keys()
        .chain(found.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| truth.get(*key) != found.get(*key))
        .take(20)
        .map(|key| {
            format!(
                "{key:?}: expected {:?}, found {:?}",
                truth.get(key),
                found.get(key)
            )
        })
        .collect();
    if !differences.is_empty() {
        let missing: Vec<Count> = ch
            .query(
                "SELECT seq AS n FROM events FINAL
                 WHERE type IN ('like','unlike','share','comment','view','click')
                   AND seq NOT IN (SELECT seq FROM post_metrics) ORDER BY seq LIMIT 50",
            )
            .fetch_all()
            .await
            .unwrap();
        let missing: Vec<u64> = missing.into_iter().map(|c| c.n).collect();
        panic!(
            "post_metrics differs from the stream:\n{}\nseqs in events but not in post_metrics: {missing:?}",
            differences.join("\n")
        );
    }
    println!(
        "fault test: {} posts exact, {in_stream} events projected once each, caught up {:?} after ingest",
        truth.len(),
        started.elapsed()
    );
}

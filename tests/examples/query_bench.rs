//! Query API benchmark at a stated data size: cache-hit latency, ClickHouse-
//! backed latency of post metrics, rankings and the reports on one
//! influencer or campaign, and accept-to-visible
//! latency (command API 202 → query API shows the event) under load.
//!
//! ```text
//! cargo run --release -p tally-tests --example query_bench -- [posts] [events] [load/s]
//! ./dev bench-query [posts] [events] [load/s]
//! ```
//!
//! Defaults: 100,000 posts, 1,000,000 events, 2,000 events/s of load. It
//! starts its own nats-server and clickhouse-server (the test harness's),
//! and the three services in this process. The dataset is published
//! straight to JetStream (with `Nats-Msg-Id`, as the command API does) and
//! projected by the projector, so every read model holds it.
//! With `QUERY_BENCH_HOLD=1` it stops after loading and prints where its
//! ClickHouse is, to look at queries by hand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_shared::store::models::Models;
use tally_shared::store::rollups::{self, Roller};
use tally_tests::bench::{dataset, publish, summary, Rng};
use tally_tests::{read, Stack, TokenScope as Scope};

const TENANT: &str = "bench";

/// A report's path for the i-th request.
type PathOf<'a> = Box<dyn Fn(u64) -> String + 'a>;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(default)
}

async fn timed_get(stack: &Stack, token: &str, path: &str) -> (Duration, u16, bool) {
    tally_tests::bench::timed_get(&stack.http, &format!("{}{path}", stack.query.url()), token).await
}

#[tokio::main]
async fn main() {
    let posts = arg(1, 100_000);
    let events = arg(2, 1_000_000);
    let load_per_second = arg(3, 2_000);
    let stack = Stack::start_with("query_bench", |config| {
        config.rate_limit.enabled = false;
        config.query.rate_limit.enabled = false;
        config.clickhouse.timeout_ms = 120_000;
        config.log.filter = "error".into();
        // The projector as shipped (the harness shortens its fetch wait).
        config.projector.fetch_wait_ms = tally_shared::Config::defaults().projector.fetch_wait_ms;
    })
    .await;
    let reader = stack.token(TENANT, &[Scope::ReportsRead]);
    let writer = stack.token(TENANT, &[Scope::EventsWrite]);

    println!("generating {posts} posts and {events} events…");
    let data = dataset(TENANT, posts, events);
    let started = Instant::now();
    let last = publish(&stack.nats.url(), &data).await;
    println!(
        "published {} events in {:.1} s; projecting…",
        data.len(),
        started.elapsed().as_secs_f64()
    );
    drop(data);
    let models = Models::connect(&stack.config.clickhouse);
    let started = Instant::now();
    loop {
        let positions = models.positions().await.unwrap_or_default();
        if !positions.is_empty() && positions.iter().all(|p| p.position >= last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "projected in {:.1} s (stream at {last})",
        started.elapsed().as_secs_f64()
    );

    // Rankings read the rollups: measured once rolling has reached the
    // stream's end (the quiet stream's last, short range included) and
    // has nothing left to join. A base rewritten during the measures
    // (about nine times the history's length in all, so now and then)
    // holds ClickHouse for a second or so; a query beside it waits.
    let range = stack.config.projector.rollup_range;
    let started = Instant::now();
    let roller = Roller::connect(&stack.config.clickhouse);
    loop {
        let done = roller.done().await.unwrap_or_default();
        let idle = rollups::next(&done, last, range, true).is_none();
        if range == 0 || (rollups::cover(&done, u64::MAX).0 >= last && idle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "rolled up to {last} in {:.1} s more",
        started.elapsed().as_secs_f64()
    );

    // Measure the steady state, not the load's background merges.
    let settling = Instant::now();
    tally_tests::bench::merges_done(&stack.config.clickhouse.url, Duration::from_secs(300)).await;
    println!(
        "ClickHouse merges settled in {:.1} s",
        settling.elapsed().as_secs_f64()
    );

    if std::env::var_os("QUERY_BENCH_HOLD").is_some() {
        println!(
            "holding: ClickHouse {} database {}",
            stack.config.clickhouse.url, stack.config.clickhouse.database
        );
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    // 1. Cache hits: one post, asked again and again (only hits counted).
    let mut hits = Vec::new();
    for _ in 0..3_000 {
        let (took, status, hit) = timed_get(&stack, &reader, "/v1/posts/post-1/metrics").await;
        assert_eq!(status, 200);
        if hit {
            hits.push(took);
        }
    }
    // 2. Post metrics from ClickHouse: distinct posts, every one a miss.
    let mut rng = Rng(42);
    let mut post_misses = Vec::new();
    for _ in 0..500 {
        let path = format!("/v1/posts/post-{}/metrics", rng.below(posts));
        let (took, status, hit) = timed_get(&stack, &reader, &path).await;
        if status == 200 && !hit {
            post_misses.push(took);
        }
    }
    // 3. Rankings from ClickHouse: metric, period and page size varied so
    // that no two requests share an answer.
    let metrics = [
        "likes",
        "views",
        "comments",
        "shares",
        "clicks",
        "engagements",
    ];
    let mut rankings = Vec::new();
    for i in 0..60 {
        let path = format!(
            "/v1/influencers/rankings?metric={}&period={}&limit={}",
            metrics[i % metrics.len()],
            ["24h", "7d", "30d"][i % 3],
            10 + i
        );
        let (took, status, hit) = timed_get(&stack, &reader, &path).await;
        assert_eq!(status, 200, "{path}");
        if !hit {
            rankings.push(took);
        }
    }

    // 4. Reports on one influencer or campaign from ClickHouse (their
    // facts narrowed, then attributed): distinct paths, every one a miss.
    let influencers = |i: u64| format!("inf-{}", i * 97 % 2_000);
    let reports: [(&str, PathOf<'_>); 4] = [
        (
            "influencer engagement (minute)",
            Box::new(|i| {
                format!(
                    "/v1/influencers/{}/engagement?granularity=minute",
                    influencers(i)
                )
            }),
        ),
        (
            "campaign aggregates",
            Box::new(|i| format!("/v1/campaigns/camp-{}/aggregates?period=24h", i % 50)),
        ),
        (
            "trends (influencer, 1h windows)",
            Box::new(|i| {
                format!(
                    "/v1/trends?entity=influencer:{}&metric=views&window=1h&step=10m",
                    influencers(i)
                )
            }),
        ),
        (
            "anomalies (influencer)",
            Box::new(|i| format!("/v1/anomalies?influencer_id={}", influencers(i))),
        ),
    ];
    let mut report_misses = Vec::new();
    for (name, path) in &reports {
        let mut misses = Vec::new();
        for i in 0..20 {
            let path = path(i);
            let (took, status, hit) = timed_get(&stack, &reader, &path).await;
            assert_eq!(status, 200, "{path}");
            if !hit {
                misses.push(took);
            }
        }
        report_misses.push((*name, misses));
    }

    // 5. Accept-to-visible under load: batches of 100 at the load rate,
    // and probes (a like on a fresh post, then polling its metrics).
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (http, url, token, running) = (
            stack.http.clone(),
            format!("{}/v1/events/batch", stack.command.url()),
            writer.clone(),
            running.clone(),
        );
        tokio::spawn(async move {
            let every = Duration::from_secs_f64(100.0 / load_per_second.max(1) as f64);
            let mut tick = tokio::time::interval(every);
            let mut n = 0u64;
            let mut sent = 0u64;
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                let batch: Vec<Value> = (0..100)
                    .map(|_| {
                        n += 1;
                        json!({"event_id": format!("load-{n}"), "type": "view",
                               "occurred_at": tally_tests::rfc3339_ago(1),
                               "post_id": format!("post-{}", n % 1000)})
                    })
                    .collect();
                if let Ok(r) = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch)
                    .send()
                    .await
                {
                    if r.status() == 202 {
                        sent += 100;
                    }
                }
            }
            sent
        })
    };
    let mut visible = Vec::new();
    let load_started = Instant::now();
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let post = format!("probe-{i}");
        let (status, body) = stack
            .post_event(
                &writer,
                &json!({"event_id": format!("probe-{i}"), "type": "like",
                        "occurred_at": tally_tests::rfc3339_ago(1), "post_id": post, "user_id": "p"}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let accepted = Instant::now();
        loop {
            let response = stack
                .http
                .get(format!("{}/v1/posts/{post}/metrics", stack.query.url()))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            let (status, body) = read(response).await;
            if status == 200 && body["likes"] == 1 {
                visible.push(accepted.elapsed());
                break;
            }
            assert!(
                accepted.elapsed() < Duration::from_secs(30),
                "probe {i} never visible"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    running.store(false, Ordering::Relaxed);
    let sent = load.await.unwrap();
    let load_rate = sent as f64 / load_started.elapsed().as_secs_f64();

    println!(
        "\nquery benchmark: {posts} posts, {} events ({} catalogue), tenant '{TENANT}'; one client, sequential requests",
        posts + events,
        posts
    );
    println!("{:<44} {}", "cache hit, post metrics", summary(&hits));
    println!(
        "{:<44} {}",
        "ClickHouse, post metrics (distinct posts)",
        summary(&post_misses)
    );
    println!(
        "{:<44} {}",
        "ClickHouse, rankings (varied)",
        summary(&rankings)
    );
    for (name, misses) in &report_misses {
        println!("{:<44} {}", format!("ClickHouse, {name}"), summary(misses));
    }
    println!(
        "{:<44} {}",
        format!("accept-to-visible, load {load_rate:.0} events/s"),
        summary(&visible)
    );
}

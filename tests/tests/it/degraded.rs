//! The query API when ClickHouse goes away: answers it holds are served
//! marked stale (`Tally-Cache: hit`, `Tally-Stale: true`), everything else
//! is a prompt 503 with `Retry-After`, and no request hangs. ClickHouse is
//! "lost" by closing a TCP forwarder between one query API and the run's
//! shared clickhouse-server, which other tests keep using.

use std::time::{Duration, Instant};

use serde_json::json;
use tally_tests::{eventually, read, start_service, Kind, Stack, TokenScope as Scope};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards every connection on a loopback port to `target` until dropped
/// (dropping it closes the listener and every forwarded connection).
struct Forwarder {
    url: String,
    /// Aborted, with every forwarded connection, when dropped.
    _tasks: JoinSet<()>,
}

impl Forwarder {
    async fn start(target: String) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { url, _tasks: tasks }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_lost_cached_answers_are_stale_the_rest_503() {
    let stack = Stack::start("degraded").await;
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    let (status, body) = stack
        .post_event(
            &writer,
            &json!({"event_id": "d1", "type": "like", "occurred_at": tally_tests::rfc3339_ago(5),
                    "post_id": "p1", "user_id": "u1"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually("the like projected", Duration::from_secs(30), || async {
        match stack.post_metrics(&reader, "p1").await {
            (200, body) if body["likes"] == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A second query API, reaching ClickHouse through the forwarder.
    let target = stack
        .config
        .clickhouse
        .url
        .trim_start_matches("http://")
        .to_owned();
    let forwarder = Forwarder::start(target).await;
    let mut config = stack.config.clone();
    config.clickhouse.url = forwarder.url.clone();
    config.clickhouse.timeout_ms = 2_000;
    let query = start_service(Kind::Query, config).await;
    let get = |path: &str| {
        stack
            .http
            .get(format!("{}{path}", query.url()))
            .bearer_auth(&reader)
            .send()
    };
    let response = get("/v1/posts/p1/metrics").await.unwrap();
    assert_eq!(response.headers()["tally-cache"], "miss");
    let (status, body) = read(response).await;
    assert_eq!((status, &body["likes"]), (200, &json!(1)), "{body}");

    drop(forwarder);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let response = get("/v1/posts/p1/metrics").await.unwrap();
    let headers = response.headers().clone();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["likes"], 1);
    assert_eq!(
        (
            &headers["tally-cache"],
            &headers["tally-stale"],
            &body["freshness"]["stale"]
        ),
        (
            &"hit".parse().unwrap(),
            &"true".parse().unwrap(),
            &json!(true)
        ),
        "{body}"
    );

    let response = get("/v1/posts/p2/metrics").await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers stay bounded in time: {:?}",
        started.elapsed()
    );
    query.stop().await;
}

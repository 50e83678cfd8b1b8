//! A three-node NATS cluster with the event stream replicated (R3) on
//! loopback: steady ingest while one node is SIGKILLed and later restarted.
//! Clients may see 503s (and retry with the same event id); no event
//! answered 202 is lost or stored twice, and the read models end exact.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tally_tests::{
    config_for_url, eventually, rfc3339_ago, start_service, Kind, NatsCluster, TokenScope as Scope,
};

use crate::durability::stored_once_and_projected_exactly;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_node_loses_no_acknowledged_event() {
    let mut cluster = NatsCluster::start(3);
    let mut config = config_for_url("cluster", &cluster.url());
    config.nats.stream_replicas = 3;
    config.nats.publish_timeout_ms = 3000;
    let projector = start_service(Kind::Projector, config.clone()).await;
    let command = start_service(Kind::Command, config.clone()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    eventually(
        "the command API ready (R3 stream applied)",
        Duration::from_secs(90),
        || async {
            match http.get(format!("{}/readyz", command.url())).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let token = tally_shared::auth::mint_token(
        &config.auth,
        "cluster",
        "acme",
        &[Scope::EventsWrite],
        3600,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|client| {
            let (http, url, token, stop) = (
                http.clone(),
                format!("{}/v1/events", command.url()),
                token.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let (mut accepted, mut unavailable) = (Vec::new(), 0u64);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("c{client}-{n}");
                    let event = json!({"event_id": id, "type": "like",
                                       "occurred_at": rfc3339_ago(1),
                                       "post_id": format!("p{}", n % 7), "user_id": &id});
                    // Retried with the same id until stored (a retry of a
                    // stored event is a duplicate, stored once).
                    let started = Instant::now();
                    loop {
                        let response = http
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&event)
                            .send()
                            .await;
                        match response.map(|r| r.status().as_u16()) {
                            Ok(202) => {
                                accepted.push(id.clone());
                                break;
                            }
                            Ok(503) => unavailable += 1,
                            // Over the token's rate limit: waited out.
                            Ok(429) => {}
                            other => panic!("{id}: {other:?}"),
                        }
                        assert!(
                            started.elapsed() < Duration::from_secs(60),
                            "{id} never stored"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    n += 1;
                }
                (accepted, unavailable)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.nodes[0].kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.nodes[0].restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = HashSet::new();
    let mut unavailable = 0;
    for client in clients {
        let (ids, errors) = client.await.unwrap();
        accepted.extend(ids);
        unavailable += errors;
    }
    assert!(accepted.len() > 50, "steady ingest: {}", accepted.len());

    // Every acknowledged event is on the stream, once; the read models end
    // exact.
    let stored = stored_once_and_projected_exactly(&config, &accepted).await;
    let env = tally_replay::Env::connect(config.clone()).await.unwrap();
    assert_eq!(env.events.cached_info().config.num_replicas, 3);
    println!(
        "cluster failover: {} events acknowledged, {stored} stored, {unavailable} 503s seen, 0 lost, 0 doubled, read models exact",
        accepted.len()
    );
    command.stop().await;
    projector.stop().await;
}

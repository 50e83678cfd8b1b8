use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tally_tests::{rfc3339_ago, Stack, TokenScope as Scope};

/// Steady ingest from four clients while nats-server is killed and
/// restarted. Clients retry 503s with the same event_id, as told. Every
/// request ends within a bounded time; every event that got a 2xx is in the
/// stream exactly once; no event is in it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_during_ingest_loses_and_doubles_nothing() {
    let mut stack = Stack::start_with("outage_nats_restart", |config| {
        config.nats.publish_timeout_ms = 1000;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let url = format!("{}/v1/events", stack.command.url());
    // event_id -> (2xx answers, 503 answers)
    let outcomes: Arc<Mutex<HashMap<String, (u32, u32)>>> = Arc::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));

    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 150;
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (http, url, token) = (stack.http.clone(), url.clone(), token.clone());
        let (outcomes, slowest) = (outcomes.clone(), slowest.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                let id = format!("steady-{client}-{i}");
                let event = json!({"event_id": id, "type": "view", "occurred_at": rfc3339_ago(1), "post_id": "p"});
                // Retry with the same id until stored (bounded: 60 tries).
                for _ in 0..60 {
                    let started = Instant::now();
                    let status = match http.post(&url).bearer_auth(&token).json(&event).send().await {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 0,
                    };
                    let took = started.elapsed();
                    {
                        let mut slowest = slowest.lock().unwrap();
                        *slowest = (*slowest).max(took);
                    }
                    let stored = {
                        let mut outcomes = outcomes.lock().unwrap();
                        let entry = outcomes.entry(id.clone()).or_default();
                        match status {
                            200..=299 => {
                                entry.0 += 1;
                                true
                            }
                            503 => {
                                entry.1 += 1;
                                false
                            }
                            other => panic!("{id}: unexpected status {other}"),
                        }
                    };
                    if stored {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.nats.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.nats.restart();
    for client in clients {
        client.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let unavailable: u32 = outcomes.values().map(|o| o.1).sum();
    assert!(
        unavailable > 0,
        "the outage must have been seen by some request"
    );
    for (id, (ok, _)) in &outcomes {
        assert_eq!(*ok, 1, "{id} got {ok} 2xx answers");
    }
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_secs(15),
        "a request took {slowest:?}: requests must not hang"
    );

    // Every event in the stream, by event_id.
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut stored: HashMap<String, u32> = HashMap::new();
    let mut messages = consumer
        .fetch()
        .max_messages(5000)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(message)) = messages.next().await {
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        *stored
            .entry(event["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (id, copies) in &stored {
        assert_eq!(*copies, 1, "{id} is stored {copies} times");
    }
    for id in outcomes.keys() {
        assert!(
            stored.contains_key(id),
            "{id} got a 2xx but is not in the stream"
        );
    }
    assert_eq!(stored.len(), CLIENTS * PER_CLIENT);
    println!(
        "outage: {} events, {unavailable} answers were 503 during the restart, slowest request {slowest:?}",
        CLIENTS * PER_CLIENT
    );
}

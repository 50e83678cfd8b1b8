use serde_json::json;
use tally_tests::{rfc3339_ago, Stack, TokenScope as Scope};

/// 202 comes only after the PubAck: the event is in the stream, once, under
/// the tenant's subject, even when retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_event_is_in_the_stream_once() {
    let stack = Stack::start("ingest_in_stream_once").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let event = json!({
        "event_id": "0b6f8a1e-7a5e-4c3b-9d2f-1f1f1f1f1f1f",
        "type": "comment",
        "occurred_at": rfc3339_ago(5),
        "post_id": "p1",
        "payload": {"text": "hello"},
    });
    let (status, first) = stack.post_event(&token, &event).await;
    assert_eq!(status, 202, "{first}");
    for _ in 0..3 {
        let (status, again) = stack.post_event(&token, &event).await;
        assert_eq!(
            (status, &again["status"]),
            (202, &json!("duplicate")),
            "{again}"
        );
        assert_eq!(again["seq"], first["seq"]);
    }

    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1, "one message after four posts");
    let seq = first["seq"].as_u64().unwrap();
    let message = stream.get_raw_message(seq).await.unwrap();
    assert_eq!(message.subject.as_str(), "tally.events.acme.comment");
    let stored: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(stored["tenant"], "acme", "the tenant comes from the token");
    assert_eq!(stored["schema_version"], 2);
    assert_eq!(stored["source"], "api");
    assert_eq!(stored["payload"]["text"], "hello");
}

/// The same event_id from two tenants is two events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_is_per_tenant() {
    let stack = Stack::start("ingest_dedup_per_tenant").await;
    let event =
        json!({"event_id": "same", "type": "like", "occurred_at": rfc3339_ago(1), "post_id": "p"});
    let (_, a) = stack
        .post_event(&stack.token("acme", &[Scope::EventsWrite]), &event)
        .await;
    let (_, b) = stack
        .post_event(&stack.token("globex", &[Scope::EventsWrite]), &event)
        .await;
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("accepted"), &json!("accepted"))
    );
    assert_ne!(a["seq"], b["seq"]);
}

/// With nats-server gone the command API answers 503 with Retry-After within
/// the publish timeout; after a restart the same request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_down_is_503_and_recovers() {
    let mut stack = Stack::start("ingest_jetstream_down").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let event = json!({"event_id": "e-down", "type": "share", "occurred_at": rfc3339_ago(1), "post_id": "p"});
    stack.nats.kill();
    let response = stack
        .http
        .post(format!("{}/v1/events", stack.command.url()))
        .bearer_auth(&token)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // The client retries with the same event_id. A 503 promises nothing
    // either way: the publish may still have reached the stream, so the
    // retry may be `accepted` or `duplicate`, but the stream holds one copy.
    stack.nats.restart();
    let answer = tally_tests::eventually(
        "the command API to accept again",
        std::time::Duration::from_secs(30),
        || async {
            let (status, body) = stack.post_event(&token, &event).await;
            if status == 202 {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    assert!(
        answer["status"] == "accepted" || answer["status"] == "duplicate",
        "{answer}"
    );
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "stored exactly once"
    );
}

/// The dedup horizon outlives the server: after nats-server restarts, a
/// retried event_id is still answered `duplicate` and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_survives_a_nats_restart() {
    let mut stack = Stack::start("ingest_dedup_restart").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let event =
        json!({"event_id": "kept", "type": "view", "occurred_at": rfc3339_ago(3), "post_id": "p"});
    let (_, first) = stack.post_event(&token, &event).await;
    assert_eq!(first["status"], "accepted", "{first}");

    stack.nats.restart();
    let again = tally_tests::eventually(
        "an answer after the restart",
        std::time::Duration::from_secs(30),
        || async {
            match stack.post_event(&token, &event).await {
                (202, body) => Ok(body),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    assert_eq!(
        (&again["status"], &again["seq"]),
        (&json!("duplicate"), &first["seq"]),
        "{again}"
    );

    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("TALLY_EVENTS")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    assert_eq!(
        info.config.duplicate_window,
        std::time::Duration::from_secs(24 * 3600)
    );
}

/// A client that stalls mid-upload gets 408 when the request deadline
/// passes: it cannot hold a connection (or a shutdown) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_gets_408() {
    use std::io::{Read, Write};
    let stack = Stack::start_with("ingest_stalled_upload", |config| {
        config.command.request_timeout_ms = 500;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let addr = stack.command.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event_id\":"
        );
        socket.write_all(head.as_bytes()).unwrap();
        // ...and never send the rest.
        let mut answer = vec![0; 4096];
        let n = socket.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

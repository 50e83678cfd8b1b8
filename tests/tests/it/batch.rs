use serde_json::{json, Value};
use tally_tests::{read, rfc3339_ago, Stack, TokenScope as Scope};

fn like(id: &str) -> Value {
    json!({"event_id": id, "type": "like", "occurred_at": rfc3339_ago(10), "post_id": "p1", "user_id": id})
}

async fn post_batch(stack: &Stack, token: &str, content_type: &str, body: String) -> (u16, Value) {
    let response = stack
        .http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /v1/events/batch");
    read(response).await
}

/// A JSON-array batch mixing valid, invalid and repeated events: one result
/// per item in input order; the valid ones are stored once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batches_store_the_valid_items_and_say_why_not_the_rest() {
    let stack = Stack::start("batch_mixed").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let mut invalid = like("b-bad");
    invalid["type"] = json!("poke");
    let items = vec![
        like("b-1"),
        invalid,
        like("b-2"),
        like("b-1"),
        json!("not an event"),
    ];
    let (status, body) = post_batch(
        &stack,
        &token,
        "application/json",
        Value::Array(items).to_string(),
    )
    .await;
    assert_eq!(status, 207, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    // Items 0 and 3 share an event_id: whichever JetStream saw first is
    // accepted, the other is its duplicate.
    let mut repeated = [statuses[0], statuses[3]];
    repeated.sort();
    assert_eq!(repeated, ["accepted", "duplicate"], "{body}");
    assert_eq!(
        [statuses[1], statuses[2], statuses[4]],
        ["invalid", "accepted", "invalid"],
        "{body}"
    );
    assert_eq!(body["results"][1]["errors"][0]["field"], "type", "{body}");
    assert_eq!(
        body["results"][0]["seq"], body["results"][3]["seq"],
        "{body}"
    );
    for (i, r) in body["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["index"], i, "results come in input order: {body}");
    }
    assert_eq!(
        (&body["accepted"], &body["duplicates"], &body["invalid"]),
        (&json!(2), &json!(1), &json!(2))
    );
    assert_eq!(stack.stored_events().await, 2);

    // The same batch again stores nothing new.
    let (status, again) = post_batch(
        &stack,
        &token,
        "application/json",
        json!([like("b-1"), like("b-2")]).to_string(),
    )
    .await;
    assert_eq!((status, &again["duplicates"]), (202, &json!(2)), "{again}");
    assert_eq!(stack.stored_events().await, 2);
}

/// NDJSON: a malformed line fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_batches_fail_line_by_line() {
    let stack = Stack::start("batch_ndjson").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let body = format!("{}\n{{\"event_id\": \n\n{}\n", like("n-1"), like("n-2"));
    let (status, body) = post_batch(&stack, &token, "application/x-ndjson", body).await;
    assert_eq!(status, 207, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "invalid", "accepted"], "{body}");
    assert!(body["results"][1]["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    assert_eq!(stack.stored_events().await, 2);

    let all_good = format!("{}\n{}", like("n-3"), like("n-4"));
    let (status, body) = post_batch(&stack, &token, "application/x-ndjson", all_good).await;
    assert_eq!((status, &body["accepted"]), (202, &json!(2)), "{body}");
}

/// Limits: more than 1,000 events is 413; other content types are 415; each
/// as problem+json, and nothing is stored. Exactly 1,000 is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_mistyped_batches_are_refused_whole() {
    let stack = Stack::start("batch_limits").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let many: Vec<Value> = (0..1001).map(|i| like(&format!("m-{i}"))).collect();
    let (status, body) = post_batch(
        &stack,
        &token,
        "application/json",
        Value::Array(many).to_string(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1000"), "{body}");

    // Bodies over 1 MiB: see hostile.rs, which sends them without racing
    // the server's early 413 against the upload.

    let (status, body) = post_batch(&stack, &token, "text/csv", "a,b".into()).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(stack.stored_events().await, 0);

    let exactly: Vec<Value> = (0..1000).map(|i| like(&format!("e-{i}"))).collect();
    let (status, body) = post_batch(
        &stack,
        &token,
        "application/json",
        Value::Array(exactly).to_string(),
    )
    .await;
    assert_eq!(
        (status, &body["accepted"]),
        (202, &json!(1000)),
        "{}",
        body["failed"]
    );
    assert_eq!(stack.stored_events().await, 1000);
}

/// Concurrent batches that together hold more events than the JetStream
/// context lets await their acks at once (5,000) are all stored: a batch
/// waits for its acks while it is still sending, so no batch waits for
/// permits that others hold until they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_beyond_the_ack_window_are_all_stored() {
    let stack = Stack::start_with("batch_concurrent", |config| {
        config.rate_limit.enabled = false;
        config.nats.publish_timeout_ms = 5_000;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let batches = 12;
    let requests = (0..batches).map(|b| {
        let items: Vec<Value> = (0..1_000).map(|i| like(&format!("c-{b}-{i}"))).collect();
        post_batch(
            &stack,
            &token,
            "application/json",
            Value::Array(items).to_string(),
        )
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(stack.stored_events().await, batches * 1_000);
}

/// Past the command API's room for request bytes, a batch waits for room
/// and, finding none in time, gets 503 with `Retry-After` having stored
/// nothing; retried, every batch is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_the_admission_room_get_503_and_lose_nothing_when_retried() {
    let stack = Stack::start_with("batch_admission", |config| {
        config.rate_limit.enabled = false;
        // Room for about nine of these batches at once, and no waiting.
        config.command.max_bytes_in_flight = config.command.max_batch_bytes;
        config.command.admission_wait_ms = 0;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let bodies: Vec<String> = (0..48)
        .map(|b| {
            let items: Vec<Value> = (0..1_000).map(|i| like(&format!("a-{b}-{i}"))).collect();
            Value::Array(items).to_string()
        })
        .collect();
    let first = futures::future::join_all(
        bodies
            .iter()
            .map(|body| post_batch(&stack, &token, "application/json", body.clone())),
    )
    .await;
    let mut refused = Vec::new();
    for (b, (status, body)) in first.iter().enumerate() {
        match status {
            202 => {}
            503 => {
                assert_eq!(body["type"], "urn:tally:problem:overloaded", "{body}");
                refused.push(b);
            }
            other => panic!("batch {b}: {other} {body}"),
        }
    }
    assert!(!refused.is_empty(), "48 batches at once fit the room");
    assert!(refused.len() < bodies.len(), "no batch was admitted");
    // Nothing of a refused batch was stored.
    let accepted = (bodies.len() - refused.len()) as u64;
    assert_eq!(stack.stored_events().await, accepted * 1_000);

    // One at a time, the refused batches fit.
    for b in refused {
        let (status, body) =
            post_batch(&stack, &token, "application/json", bodies[b].clone()).await;
        assert_eq!(status, 202, "batch {b} retried: {body}");
        assert_eq!(body["accepted"], 1_000, "{body}");
    }
    assert_eq!(stack.stored_events().await, 48_000);
}

use serde_json::json;
use tally_tests::{rfc3339_ago, Stack, TokenScope as Scope};

/// After accepted, duplicate, rejected and rate-limited requests, the
/// command API's /metrics shows each kind with its labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_metrics_count_what_happened() {
    let stack = Stack::start_with("metrics_command", |config| {
        config.command.max_batch_events = 3;
        config.rate_limit.token_per_second = 1;
        config.rate_limit.token_burst = 3;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let event =
        json!({"event_id": "m-1", "type": "like", "occurred_at": rfc3339_ago(1), "post_id": "p"});
    assert_eq!(stack.post_event(&token, &event).await.0, 202);
    assert_eq!(stack.post_event(&token, &event).await.0, 202, "a duplicate");
    let mut invalid = event.clone();
    invalid["type"] = json!("poke");
    assert_eq!(stack.post_event(&token, &invalid).await.0, 422);
    assert_eq!(
        stack.post_event(&token, &event).await.0,
        429,
        "the token's bucket of 3 is spent"
    );

    let text = stack.metrics_text(&stack.command).await;
    for expected in [
        "tally_events_accepted_total{source=\"api\"}",
        "tally_events_duplicate_total{source=\"api\"}",
        "tally_events_rejected_total{reason=\"invalid\"}",
        "tally_events_rejected_total{reason=\"rate_limited\"}",
        "tally_rate_limited_total{limit=\"token\"}",
        "tally_publish_seconds_bucket{outcome=\"ok\",le=\"0.005\"}",
        "tally_publish_seconds_count{outcome=\"ok\"}",
    ] {
        assert!(
            text.contains(expected),
            "/metrics lacks {expected}:\n{text}"
        );
    }
}

/// Every request gets a request id (the client's, if sane) on its response
/// and log lines; its `traceparent` travels with the event it stores into
/// the NATS message headers; and every service counts and times requests
/// per route, method and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_identified_traced_and_counted_per_route() {
    let stack = Stack::start("metrics_requests").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = stack
        .http
        .post(format!("{}/v1/events", stack.command.url()))
        .bearer_auth(&token)
        .header("x-request-id", "req-42")
        .header("traceparent", traceparent)
        .json(
            &json!({"event_id": "t-1", "type": "like", "occurred_at": rfc3339_ago(1),
                      "post_id": "p1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let (_, body) = tally_tests::read(response).await;
    let seq = body["seq"].as_u64().unwrap();

    // The stored message carries the trace context.
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("TALLY_EVENTS")
        .await
        .unwrap();
    let message = stream.get_raw_message(seq).await.unwrap();
    assert_eq!(
        message.headers.get("traceparent").map(|v| v.as_str()),
        Some(traceparent)
    );

    // Without an id of its own, a request gets a fresh one.
    let response = stack
        .http
        .get(format!("{}/v1/posts/p1/metrics", stack.query.url()))
        .header("x-request-id", "not sane")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");

    // Answers by source: computed once, then from the hot tier.
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    tally_tests::eventually(
        "the like projected",
        std::time::Duration::from_secs(30),
        || async {
            match stack.post_metrics(&reader, "p1").await {
                (200, body) if body["likes"] == 1 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (status, _) = stack.post_metrics(&reader, "p1").await;
    assert_eq!(status, 200);

    let command = stack.metrics_text(&stack.command).await;
    let query = stack.metrics_text(&stack.query).await;
    let projector = stack.metrics_text(&stack.projector).await;
    for line in [
        "tally_events_projected_total ",
        "tally_batches_written_total ",
    ] {
        assert!(
            projector.contains(line),
            "{line} missing from:\n{projector}"
        );
    }
    for source in ["store", "cache"] {
        let line = format!("tally_query_answers_total{{source=\"{source}\"}}");
        assert!(query.contains(&line), "{line} missing from:\n{query}");
    }
    for (text, expected) in [
        (
            &command,
            "tally_http_requests_total{service=\"command\",route=\"/v1/events\",method=\"POST\",status=\"202\"}",
        ),
        (
            &command,
            "tally_http_request_seconds_bucket{service=\"command\",route=\"/v1/events\",method=\"POST\",status=\"202\"",
        ),
        (
            &query,
            "tally_http_requests_total{service=\"query\",route=\"/v1/posts/{post_id}/metrics\",method=\"GET\",status=\"401\"}",
        ),
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

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

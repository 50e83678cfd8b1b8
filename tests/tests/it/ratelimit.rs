use serde_json::{json, Value};
use tally_tests::{rfc3339_ago, Stack, TokenScope as Scope};

fn view(id: &str) -> Value {
    json!({"event_id": id, "type": "view", "occurred_at": rfc3339_ago(1), "post_id": "p"})
}

/// Tenant buckets of 5 events (refilled at 1/s): single events and batches
/// spend them one unit per event; then 429 with Retry-After, and nothing of
/// the refused request is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_spend_per_event_and_answer_429() {
    let stack = Stack::start_with("ratelimit_tenant", |config| {
        config.command.max_batch_events = 5;
        config.rate_limit.tenant_per_second = 1;
        config.rate_limit.tenant_burst = 5;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);

    let response = stack
        .http
        .post(format!("{}/v1/events", stack.command.url()))
        .bearer_auth(&token)
        .json(&view("r-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let policy = response.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("\"tenant\";q=1;w=1;burst=5"), "{policy}");
    assert!(response.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .contains("r=4"));

    // A batch of 3 spends 3 units: 1 left.
    let batch = Value::Array(vec![view("r-2"), view("r-3"), view("r-4")]);
    let response = stack
        .http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(response.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"tenant\";r="));

    // A batch of 3 more does not fit: refused whole.
    let batch = Value::Array(vec![view("r-5"), view("r-6"), view("r-7")]);
    let response = stack
        .http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");

    // Another tenant is not affected.
    let other = stack.token("globex", &[Scope::EventsWrite]);
    let (status, _) = stack.post_event(&other, &view("g-1")).await;
    assert_eq!(status, 202);

    assert_eq!(stack.stored_events().await, 5, "4 for acme, 1 for globex");

    // After the refill the tenant may send again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let (status, body) = stack.post_event(&token, &view("r-8")).await;
    assert_eq!(status, 202, "{body}");
}

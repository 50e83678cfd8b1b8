//! Handler tests through `Router::oneshot`, no socket. NATS is pointed at a
//! closed port: every rejection below happens before anything is published,
//! and a valid event with JetStream unreachable must be a bounded 503.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tally_shared::auth::{mint_token, Scope};
use tally_shared::config::Config;
use tower::ServiceExt;

use crate::{router, AppState};

async fn app() -> (Router, Config) {
    let mut config = Config::development();
    config.nats.url = "nats://127.0.0.1:1".into();
    config.nats.publish_timeout_ms = 300;
    config.command.max_body_bytes = 4096;
    let client = tally_shared::nats::connect(&config.nats, "test")
        .await
        .unwrap();
    let state = AppState::new(&config, client).unwrap();
    (router(state, &config.command), config)
}

fn token(config: &Config, scopes: &[Scope]) -> String {
    mint_token(&config.auth, "test", "acme", scopes, 60)
}

fn event() -> Value {
    json!({
        "event_id": "e1",
        "type": "like",
        "occurred_at": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339).unwrap(),
        "post_id": "p1",
    })
}

struct Sent {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

async fn send(app: Router, token: Option<&str>, content_type: &str, body: impl Into<Body>) -> Sent {
    let mut request = Request::post("/v1/events").header("content-type", content_type);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Sent {
        status,
        content_type,
        retry_after,
        body,
    }
}

fn assert_problem(sent: &Sent, status: StatusCode) {
    assert_eq!(sent.status, status, "body: {}", sent.body);
    assert_eq!(sent.content_type, "application/problem+json");
    assert_eq!(sent.body["status"], status.as_u16(), "body: {}", sent.body);
    assert!(sent.body["type"].is_string() && sent.body["title"].is_string());
}

#[tokio::test]
async fn missing_and_bad_tokens_are_401() {
    let (app, config) = app().await;
    let sent = send(app.clone(), None, "application/json", event().to_string()).await;
    assert_problem(&sent, StatusCode::UNAUTHORIZED);
    let sent = send(
        app.clone(),
        Some("garbage"),
        "application/json",
        event().to_string(),
    )
    .await;
    assert_problem(&sent, StatusCode::UNAUTHORIZED);
    let mut other = config.auth.clone();
    other.hs256_secret = "not-the-secret".to_owned().into();
    let forged = mint_token(&other, "x", "acme", &[Scope::EventsWrite], 60);
    let sent = send(app, Some(&forged), "application/json", event().to_string()).await;
    assert_problem(&sent, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_without_events_write_is_403() {
    let (app, config) = app().await;
    let token = token(&config, &[Scope::ReportsRead]);
    let sent = send(app, Some(&token), "application/json", event().to_string()).await;
    assert_problem(&sent, StatusCode::FORBIDDEN);
    assert!(sent.body["detail"]
        .as_str()
        .unwrap()
        .contains("events:write"));
}

#[tokio::test]
async fn bodies_that_are_not_json_events() {
    let (app, config) = app().await;
    let token = token(&config, &[Scope::EventsWrite]);
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "text/plain",
            event().to_string().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/json",
            b"{\"event_id\": ".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            b"\xff\xfe{}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            "[".repeat(100).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            vec![b' '; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "application/json",
            b"[]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (content_type, body, status) in cases {
        let sent = send(app.clone(), Some(&token), content_type, body.clone()).await;
        assert_problem(&sent, status);
    }
}

#[tokio::test]
async fn invalid_events_are_422_naming_each_field() {
    let (app, config) = app().await;
    let token = token(&config, &[Scope::EventsWrite]);
    let mut bad = event();
    bad["type"] = json!("poke");
    bad["post_id"] = json!("tally.events.>");
    let sent = send(app, Some(&token), "application/json", bad.to_string()).await;
    assert_problem(&sent, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = sent.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["type", "post_id"], "body: {}", sent.body);
}

#[tokio::test]
async fn jetstream_unreachable_is_a_bounded_503_with_retry_after() {
    let (app, config) = app().await;
    let token = token(&config, &[Scope::EventsWrite]);
    let started = std::time::Instant::now();
    let sent = send(app, Some(&token), "application/json", event().to_string()).await;
    assert_problem(&sent, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sent.retry_after.as_deref(), Some("1"));
    // Bounded by the configured publish timeout (300 ms), with slack.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        !sent.body["detail"].as_str().unwrap().contains("nats://"),
        "no internals leak"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (app, _) = app().await;
    let response = app
        .clone()
        .oneshot(Request::get("/v2/nothing").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = app
        .oneshot(Request::get("/v1/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

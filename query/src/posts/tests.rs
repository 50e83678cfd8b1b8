//! Handler tests through `Router::oneshot`: everything decided before
//! ClickHouse is asked, and a bounded 503 when it cannot be reached.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tally_shared::auth::{mint_token, Scope};
use tally_shared::config::Config;
use tower::ServiceExt;

use crate::{router, AppState};

fn app() -> (Router, Config) {
    let mut config = Config::development();
    // Nothing listens on port 1: every query fails fast.
    config.clickhouse.url = "http://127.0.0.1:1".into();
    config.clickhouse.timeout_ms = 2000;
    (
        router(AppState::new(&config).unwrap(), &config.query),
        config,
    )
}

async fn get(app: Router, uri: &str, token: Option<String>) -> (StatusCode, String, Value) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn auth_is_checked_first() {
    let (app, config) = app();
    let (status, content_type, _) = get(app.clone(), "/v1/posts/p1/metrics", None).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::UNAUTHORIZED, "application/problem+json")
    );
    let writer = mint_token(&config.auth, "x", "acme", &[Scope::EventsWrite], 60);
    let (status, _, body) = get(app, "/v1/posts/p1/metrics", Some(writer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn malformed_post_ids_are_400() {
    let (app, config) = app();
    let reader = mint_token(&config.auth, "x", "acme", &[Scope::ReportsRead], 60);
    let (status, _, body) = get(app, "/v1/posts/a%2Ab/metrics", Some(reader)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn clickhouse_down_is_a_503() {
    let (app, config) = app();
    let reader = mint_token(&config.auth, "x", "acme", &[Scope::ReportsRead], 60);
    let (status, content_type, body) = get(app, "/v1/posts/p1/metrics", Some(reader)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(content_type, "application/problem+json");
}

#[tokio::test]
async fn requests_spend_the_rate_limit_before_anything_else() {
    let mut config = Config::development();
    config.clickhouse.url = "http://127.0.0.1:1".into();
    config.clickhouse.timeout_ms = 2000;
    config.query.rate_limit.token_per_second = 1;
    config.query.rate_limit.token_burst = 2;
    let app = router(AppState::new(&config).unwrap(), &config.query);
    let reader = mint_token(&config.auth, "x", "acme", &[Scope::ReportsRead], 60);
    for _ in 0..2 {
        // Spent, then answered (503: nothing listens for ClickHouse).
        let (status, _, _) = get(app.clone(), "/v1/posts/p1/metrics", Some(reader.clone())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, content_type, body) = get(
        app.clone(),
        "/v1/influencers/rankings",
        Some(reader.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(content_type, "application/problem+json");
    // Another tenant's token has its own bucket.
    let other = mint_token(&config.auth, "x", "globex", &[Scope::ReportsRead], 60);
    let (status, _, _) = get(app, "/v1/posts/p1/metrics?limit=x", Some(other)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

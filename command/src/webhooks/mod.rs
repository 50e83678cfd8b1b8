//! `POST /v1/webhooks/{platform}?tenant=<tenant>`: platform webhooks,
//! verified with the tenant's secret over the raw body, normalised into v1
//! events and stored like a batch (validated, deduplicated).
//!
//! - `instagram`, `facebook`: Meta's format, `X-Hub-Signature-256:
//!   sha256=<hex HMAC-SHA256(app secret, body)>`. `GET` answers Meta's
//!   callback verification (`hub.mode`, `hub.verify_token`, `hub.challenge`).
//! - `generic`: a v1 event or an array of them, `X-Tally-Timestamp: <unix
//!   seconds>` and `X-Tally-Signature: sha256=<hex HMAC-SHA256(secret,
//!   "<timestamp>.<body>")>`; the timestamp bounds replays.
//!
//! A missing or wrong signature is 401; a store failure is 503 so the
//! platform retries (redeliveries are duplicates, stored once).

mod meta;
pub mod signature;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tally_shared::event::{is_valid_tenant, Source};
use tally_shared::http::{body_rejection, parse_json, ApiError};

use crate::ingest::{store_items, BatchResult};
use crate::AppState;

pub use meta::{normalise, Normalised};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Instagram,
    Facebook,
    Generic,
}

impl Platform {
    fn parse(name: &str) -> Result<Platform, ApiError> {
        match name {
            "instagram" => Ok(Platform::Instagram),
            "facebook" => Ok(Platform::Facebook),
            "generic" => Ok(Platform::Generic),
            _ => Err(ApiError::NotFound(format!(
                "no webhook for {name:?}; use instagram, facebook or generic"
            ))),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookResult {
    /// Changes Tally does not count.
    pub ignored: usize,
    #[serde(flatten)]
    pub stored: BatchResult,
}

fn tenant_of(query: &HashMap<String, String>) -> Result<&str, ApiError> {
    match query.get("tenant") {
        Some(tenant) if is_valid_tenant(tenant) => Ok(tenant),
        _ => Err(ApiError::Malformed(
            "the webhook URL needs ?tenant=<tenant> (1-64 of A-Z, a-z, 0-9, '_', '-')".into(),
        )),
    }
}

/// The secret `pick` chooses for `tenant`; unknown tenants look the same as
/// tenants without that secret (401), so the endpoint reveals no tenants.
fn secret<'a>(
    state: &'a AppState,
    tenant: &str,
    pick: impl Fn(&'a tally_shared::config::WebhookSecrets) -> Option<&'a SecretString>,
) -> Result<&'a SecretString, ApiError> {
    state
        .inner
        .webhooks
        .tenants
        .get(tenant)
        .and_then(pick)
        .ok_or_else(|| {
            ApiError::BadSignature(
                "no webhook secret is configured for this tenant and platform".into(),
            )
        })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadSignature(format!("missing {name} header")))
}

/// A platform's webhook delivery, verified by its signature.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{platform}",
    tag = "webhooks",
    params(
        ("platform" = String, Path, pattern = "^(instagram|facebook|generic)$", description = "`instagram`, `facebook` or `generic`"),
        ("tenant" = String, Query, description = "The tenant the delivery is for"),
    ),
    request_body(content = Object, description = "The platform's payload, or for `generic` a v1 event or an array of them"),
    responses(
        (status = 200, description = "Verified and stored", body = WebhookResult),
        (status = 400, description = "A missing tenant or an unreadable payload"),
        (status = 401, description = "A missing or wrong signature"),
        (status = 404, description = "No such platform"),
        (status = 413, description = "Too large, or too many events"),
        (status = 429, description = "The tenant's rate limit is spent"),
        (status = 503, description = "Not every event was acknowledged, or the API was at capacity: the platform should retry"),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    platform: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let answer = match (platform, query) {
        (Ok(Path(platform)), Ok(Query(query))) => {
            verify_and_store(state, &platform, &query, &headers, body).await
        }
        (Err(e), _) => Err(ApiError::Malformed(format!("bad webhook path: {e}"))),
        (_, Err(e)) => Err(ApiError::Malformed(format!("bad query string: {e}"))),
    };
    if let Err(e) = &answer {
        crate::metrics::rejected(e, 1);
    }
    answer
}

async fn verify_and_store(
    state: AppState,
    platform: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let platform = Platform::parse(platform)?;
    let tenant = tenant_of(query)?;
    let body = body.map_err(body_rejection)?;
    match platform {
        Platform::Instagram | Platform::Facebook => {
            let secret = secret(&state, tenant, |s| s.meta_app_secret.as_ref())?;
            let signature = header(headers, "x-hub-signature-256")?;
            if !signature::verify(secret.expose_secret().as_bytes(), &[&body], signature) {
                return Err(ApiError::BadSignature(
                    "X-Hub-Signature-256 does not match the body".into(),
                ));
            }
        }
        Platform::Generic => {
            let secret = secret(&state, tenant, |s| s.generic_secret.as_ref())?;
            let timestamp = header(headers, "x-tally-timestamp")?;
            let signature = header(headers, "x-tally-signature")?;
            let sent: i64 = timestamp.parse().map_err(|_| {
                ApiError::BadSignature("X-Tally-Timestamp is not unix seconds".into())
            })?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            if now.abs_diff(sent) > state.inner.webhooks.timestamp_tolerance_secs {
                return Err(ApiError::BadSignature(
                    "X-Tally-Timestamp is too old or too new".into(),
                ));
            }
            let message: [&[u8]; 3] = [timestamp.as_bytes(), b".", &body];
            if !signature::verify(secret.expose_secret().as_bytes(), &message, signature) {
                return Err(ApiError::BadSignature(
                    "X-Tally-Signature does not match".into(),
                ));
            }
        }
    }

    let payload = parse_json(&body)?;
    let (items, ignored) = match platform {
        Platform::Generic => match payload {
            Value::Array(items) => (items.into_iter().map(Ok).collect::<Vec<_>>(), 0),
            event @ Value::Object(_) => (vec![Ok(event)], 0),
            _ => {
                return Err(ApiError::Malformed(
                    "a generic webhook carries an event or an array of events".into(),
                ))
            }
        },
        Platform::Instagram | Platform::Facebook => {
            let name = if platform == Platform::Instagram {
                "instagram"
            } else {
                "facebook"
            };
            let changes = normalise(name, &payload).map_err(ApiError::Malformed)?;
            let mut items = Vec::new();
            let mut ignored = 0;
            for change in changes {
                match change {
                    Normalised::Event(event) => items.push(Ok(event)),
                    Normalised::Ignored(why) => {
                        tracing::debug!(%why, "webhook change ignored");
                        ignored += 1;
                    }
                }
            }
            (items, ignored)
        }
    };
    if items.len() > state.inner.max_batch_events {
        return Err(ApiError::TooManyItems {
            limit: state.inner.max_batch_events,
        });
    }
    let stored = if items.is_empty() {
        BatchResult::empty()
    } else {
        let webhook_key = format!("webhook:{tenant}:{platform:?}");
        state
            .inner
            .rate_limits
            .spend(tenant, &webhook_key, items.len())?;
        store_items(&state, tenant, Source::Webhook, items).await
    };
    if stored.failed > 0 {
        // The platform retries the whole delivery; what was stored is then a duplicate.
        return Err(ApiError::Unavailable(format!(
            "{} webhook events not acknowledged",
            stored.failed
        )));
    }
    Ok((StatusCode::OK, Json(WebhookResult { ignored, stored })).into_response())
}

/// `GET /v1/webhooks/{platform}`: Meta's callback verification.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{platform}",
    tag = "webhooks",
    params(
        ("platform" = String, Path, pattern = "^(instagram|facebook)$", description = "`instagram` or `facebook`"),
        ("tenant" = String, Query, description = "The tenant the subscription is for"),
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "The tenant's verify token"),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back when the token matches"),
    ),
    responses(
        (status = 200, description = "`hub.challenge`, echoed", body = String, content_type = "text/plain"),
        (status = 400, description = "A missing tenant or a malformed query"),
        (status = 401, description = "The verify token does not match"),
        (status = 404, description = "No such platform"),
        (status = 405, description = "`generic` has no verification"),
    )
)]
pub async fn verify_subscription(
    State(state): State<AppState>,
    platform: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<String, ApiError> {
    let Path(platform) =
        platform.map_err(|e| ApiError::Malformed(format!("bad webhook path: {e}")))?;
    let Query(query) = query.map_err(|e| ApiError::Malformed(format!("bad query string: {e}")))?;
    if Platform::parse(&platform)? == Platform::Generic {
        return Err(ApiError::MethodNotAllowed);
    }
    let tenant = tenant_of(&query)?;
    let expected = secret(&state, tenant, |s| s.meta_verify_token.as_ref())?;
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query.get("hub.verify_token").map(String::as_str);
    match (mode, token, query.get("hub.challenge")) {
        (Some("subscribe"), Some(token), Some(challenge))
            if bool::from(token.as_bytes().ct_eq(expected.expose_secret().as_bytes())) =>
        {
            Ok(challenge.clone())
        }
        _ => Err(ApiError::BadSignature(
            "hub.verify_token does not match".into(),
        )),
    }
}

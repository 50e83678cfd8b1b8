//! `POST /v1/events`: authenticate, validate, append, answer only after the
//! PubAck.

pub(crate) mod batch;
mod publish;
#[cfg(test)]
mod tests;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use serde::Serialize;
use tally_shared::auth::{Principal, Scope};
use tally_shared::event::{validate, Source, StoredEvent};
use tally_shared::http::{json_body, ApiError};
use time::OffsetDateTime;

pub use batch::{store_items, BatchResult};
pub use publish::{AppendError, Publisher};

use crate::AppState;
use tally_shared::http::ratelimit::bearer_token;
use tally_shared::http::ratelimit::RateHeaders;

/// The answer for one stored event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub event_id: String,
    pub status: Outcome,
    /// Stream sequence of the event: a consistency token for read-your-writes.
    pub seq: u64,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Newly stored.
    Accepted,
    /// Stored before under the same event_id; stored once.
    Duplicate,
    /// Not valid; see the item's errors. Not stored.
    Invalid,
    /// Valid, but JetStream did not acknowledge it: retry with the same event_id.
    Failed,
}

impl Outcome {
    pub fn from_duplicate(duplicate: bool) -> Outcome {
        if duplicate {
            Outcome::Duplicate
        } else {
            Outcome::Accepted
        }
    }
}

/// Stores one event. `202` only once JetStream has acknowledged it.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "ingest",
    security(("bearer" = [])),
    request_body(content = tally_shared::event::Event, description = "One event (`events:write`)"),
    responses(
        (status = 202, description = "Stored (or stored before: `duplicate`)", body = Accepted),
        (status = 400, description = "The body is not JSON"),
        (status = 413, description = "The body is larger than allowed"),
        (status = 415, description = "The body is not `application/json`"),
        (status = 422, description = "The event is invalid; `errors` names every field"),
        (status = 503, description = "JetStream did not acknowledge it, or the API was at capacity: retry with the same `event_id` (`Retry-After`)"),
    )
)]
pub async fn post_event(
    state: State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, RateHeaders, Json<Accepted>), ApiError> {
    let answer = accept_one(state, admitted, headers, body).await;
    if let Err(e) = &answer {
        crate::metrics::rejected(e, 1);
    }
    answer
}

async fn accept_one(
    State(state): State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, RateHeaders, Json<Accepted>), ApiError> {
    let principal = state.caller(admitted, &headers)?;
    principal.require(Scope::EventsWrite)?;
    let rate = state
        .inner
        .rate_limits
        .spend(&principal.tenant, bearer_token(&headers), 1)?;
    let input = json_body(&headers, body)?;
    let now = OffsetDateTime::now_utc();
    let event = validate(&input, now, &state.inner.limits).map_err(ApiError::Invalid)?;
    let stored = StoredEvent::new(&principal.tenant, Source::Api, event, now);
    let appended = state.inner.publisher.append(&stored).await?;
    Ok((
        StatusCode::ACCEPTED,
        rate,
        Json(Accepted {
            event_id: stored.event.event_id,
            status: Outcome::from_duplicate(appended.duplicate),
            seq: appended.seq,
        }),
    ))
}

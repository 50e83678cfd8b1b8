//! `POST /v1/events`: authenticate, validate, append, answer only after the
//! PubAck.

mod publish;
#[cfg(test)]
mod tests;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use tally_shared::auth::Scope;
use tally_shared::event::{validate, Source, StoredEvent};
use tally_shared::http::{json_body, ApiError};
use time::OffsetDateTime;

pub use publish::Publisher;

use crate::AppState;

/// The answer for one stored event.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub event_id: String,
    pub status: AcceptStatus,
    /// Stream sequence of the event: a consistency token for read-your-writes.
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptStatus {
    /// Newly stored.
    Accepted,
    /// Stored before under the same event_id; stored once.
    Duplicate,
}

pub async fn post_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let principal = state.inner.auth.authenticate(&headers)?;
    principal.require(Scope::EventsWrite)?;
    let input = json_body(&headers, body)?;
    let now = OffsetDateTime::now_utc();
    let event = validate(&input, now, &state.inner.limits).map_err(ApiError::Invalid)?;
    let stored = StoredEvent::new(&principal.tenant, Source::Api, event, now);
    let appended = state.inner.publisher.append(&stored).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: stored.event.event_id,
            status: if appended.duplicate {
                AcceptStatus::Duplicate
            } else {
                AcceptStatus::Accepted
            },
            seq: appended.seq,
        }),
    ))
}

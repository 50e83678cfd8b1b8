//! The like aggregate: `PUT` / `DELETE /v1/posts/{post_id}/likes/{user_id}`
//! and `GET` for the current state.
//!
//! Each (tenant, post, user) pair is one aggregate whose history is the
//! like/unlike events on its own subject,
//! `tally.events.<tenant>.likes.<post>.<user>`. A change is appended with
//! `Nats-Expected-Last-Subject-Sequence` set to the sequence the decision was
//! based on, so two racing requests — in one process or in several command
//! API replicas — cannot both append: the loser re-reads and re-decides.

mod decide;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Serialize;
use tally_shared::auth::{Principal, Scope};
use tally_shared::event::{is_valid_id, like_subject, Event, EventKind, Source, StoredEvent};
use tally_shared::http::ApiError;
use time::OffsetDateTime;

pub use decide::{decide, Decision, LikeState};

use crate::ingest::AppendError;
use crate::AppState;
use tally_shared::http::ratelimit::bearer_token;
use tally_shared::http::ratelimit::RateHeaders;

/// How often a conflicting append is retried before answering 409.
pub const MAX_ATTEMPTS: u32 = 8;

/// The aggregate's state after the request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LikeAnswer {
    pub post_id: String,
    pub user_id: String,
    pub liked: bool,
    /// Whether this request changed the state (appended an event).
    pub changed: bool,
    /// Stream sequence of the event the state rests on (`null`: never liked).
    /// A consistency token for read-your-writes, like ingest's `seq`.
    pub seq: Option<u64>,
}

/// The path's ids; a segment that is not UTF-8 once decoded is a problem
/// like any other malformed id, not axum's plain-text rejection.
type Ids = Result<Path<(String, String)>, PathRejection>;

/// The path's ids, as documented (read as [`Ids`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct LikeIds {
    /// 1-128 of A-Z, a-z, 0-9, `_`, `:`, `-`.
    post_id: String,
    /// 1-128 of A-Z, a-z, 0-9, `_`, `:`, `-`.
    user_id: String,
}

/// What the like endpoints answer, as documented.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum LikeResponses {
    /// The like state after the request.
    #[response(status = 200)]
    State(#[to_schema] LikeAnswer),
    /// A malformed id.
    #[response(status = 400)]
    Malformed,
    /// Concurrent changes kept winning; retry.
    #[response(status = 409)]
    Conflict,
    /// JetStream is unavailable, or the API is at capacity; retry.
    #[response(status = 503)]
    Unavailable,
}

/// Whether the user likes the post now.
#[utoipa::path(get, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "likes",
    security(("bearer" = [])), params(LikeIds), responses(LikeResponses))]
pub async fn get_like(
    State(state): State<AppState>,
    headers: HeaderMap,
    ids: Ids,
) -> Result<Json<LikeAnswer>, ApiError> {
    let principal = state.inner.auth.authenticate(&headers)?;
    principal.require(Scope::EventsWrite)?;
    let (post_id, user_id) = check_ids(ids)?;
    let subject = like_subject(&principal.tenant, &post_id, &user_id);
    let (current, seq) = read_state(&state, &subject).await?;
    Ok(Json(LikeAnswer {
        post_id,
        user_id,
        liked: current == LikeState::Liked,
        changed: false,
        seq,
    }))
}

/// Likes the post for the user (idempotent).
#[utoipa::path(put, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "likes",
    security(("bearer" = [])), params(LikeIds), responses(LikeResponses))]
pub async fn put_like(
    state: State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    ids: Ids,
) -> Result<(RateHeaders, Json<LikeAnswer>), ApiError> {
    set(state, admitted, headers, ids, LikeState::Liked).await
}

/// Takes the user's like back (idempotent).
#[utoipa::path(delete, path = "/v1/posts/{post_id}/likes/{user_id}", tag = "likes",
    security(("bearer" = [])), params(LikeIds), responses(LikeResponses))]
pub async fn delete_like(
    state: State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    ids: Ids,
) -> Result<(RateHeaders, Json<LikeAnswer>), ApiError> {
    set(state, admitted, headers, ids, LikeState::NotLiked).await
}

async fn set(
    State(state): State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    ids: Ids,
    desired: LikeState,
) -> Result<(RateHeaders, Json<LikeAnswer>), ApiError> {
    let principal = state.caller(admitted, &headers)?;
    principal.require(Scope::EventsWrite)?;
    let (post_id, user_id) = check_ids(ids)?;
    let rate = state
        .inner
        .rate_limits
        .spend(&principal.tenant, bearer_token(&headers), 1)?;
    let subject = like_subject(&principal.tenant, &post_id, &user_id);
    // The like button knows only the post and the user; the catalogue
    // attributes the event (unknown posts are accepted unattributed).
    let known = state
        .inner
        .catalogue
        .lookup(&principal.tenant, &post_id)
        .await;
    for attempt in 1..=MAX_ATTEMPTS {
        let (current, seq) = read_state(&state, &subject).await?;
        let kind = match decide(current, desired) {
            Decision::Unchanged => {
                return Ok((
                    rate,
                    Json(LikeAnswer {
                        post_id,
                        user_id,
                        liked: current == LikeState::Liked,
                        changed: false,
                        seq,
                    }),
                ))
            }
            Decision::Append(kind) => kind,
        };
        let now = OffsetDateTime::now_utc();
        let event = Event {
            event_id: like_event_id(&subject, seq.unwrap_or(0), kind),
            kind,
            occurred_at: now,
            platform: known.as_ref().and_then(|p| p.platform),
            influencer_id: known.as_ref().and_then(|p| p.influencer_id.clone()),
            post_id: Some(post_id.clone()),
            campaign_id: known.as_ref().and_then(|p| p.campaign_id.clone()),
            user_id: Some(user_id.clone()),
            payload: Default::default(),
        };
        let stored = StoredEvent::new(&principal.tenant, Source::LikeButton, event, now);
        match state
            .inner
            .publisher
            .append_to(subject.clone(), &stored, Some(seq.unwrap_or(0)))
            .await
        {
            Ok(appended) => {
                crate::metrics::like_changed(attempt);
                return Ok((
                    rate,
                    Json(LikeAnswer {
                        post_id,
                        user_id,
                        liked: desired == LikeState::Liked,
                        changed: !appended.duplicate,
                        seq: Some(appended.seq),
                    }),
                ));
            }
            Err(AppendError::Conflict) => {
                crate::metrics::like_conflict();
                tracing::debug!(%subject, attempt, "like aggregate changed under us; re-reading");
            }
            Err(AppendError::Unavailable(cause)) => return Err(ApiError::Unavailable(cause)),
        }
    }
    Err(ApiError::Conflict(format!(
        "the like state of this post and user kept changing; gave up after {MAX_ATTEMPTS} attempts"
    )))
}

fn check_ids(ids: Ids) -> Result<(String, String), ApiError> {
    let Path((post_id, user_id)) = ids.map_err(|rejection| {
        if rejection.status().is_server_error() {
            ApiError::Internal(rejection.body_text())
        } else {
            ApiError::Malformed(rejection.body_text())
        }
    })?;
    let errors: Vec<_> = [("post_id", &post_id), ("user_id", &user_id)]
        .into_iter()
        .filter(|(_, id)| !is_valid_id(id))
        .map(|(field, _)| {
            tally_shared::event::FieldError::new(
                field,
                "must be 1-128 characters of A-Z, a-z, 0-9, '_', ':' or '-'",
            )
        })
        .collect();
    match errors.first() {
        None => Ok((post_id, user_id)),
        Some(error) => Err(ApiError::Malformed(format!(
            "{} {}",
            error.field, error.message
        ))),
    }
}

/// The aggregate's state and the sequence it rests on, from the last event
/// on its subject.
async fn read_state(state: &AppState, subject: &str) -> Result<(LikeState, Option<u64>), ApiError> {
    match state.inner.publisher.last_on_subject(subject).await? {
        None => Ok((LikeState::NotLiked, None)),
        Some((seq, event)) => Ok((LikeState::after(event.event.kind), Some(seq))),
    }
}

/// The id of the change `kind` decided from the aggregate at position
/// `seq`: `lk-` and 32 hex digits of a SHA-256 over both.
///
/// Deterministic on purpose. Every request that decides from the same
/// position makes the same decision, so racing appends carry the same id and
/// JetStream's duplicate check lets exactly one through — even on a
/// replicated stream of nats-server 2.9 before 2.9.21, which does not
/// enforce `Nats-Expected-Last-Subject-Sequence` under concurrency. The
/// sequence check still catches a decision made from a stale position.
fn like_event_id(subject: &str, seq: u64, kind: EventKind) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(subject.as_bytes())
        .chain_update(seq.to_be_bytes())
        .chain_update(kind.as_str().as_bytes())
        .finalize();
    format!("lk-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_event_ids_are_deterministic_valid_and_distinct() {
        let a = like_event_id("tally.events.t.likes.p.u", 7, EventKind::Liked);
        assert_eq!(
            a,
            like_event_id("tally.events.t.likes.p.u", 7, EventKind::Liked)
        );
        assert!(is_valid_id(&a) && a.len() == 35, "{a}");
        assert_ne!(
            a,
            like_event_id("tally.events.t.likes.p.u", 8, EventKind::Liked)
        );
        assert_ne!(
            a,
            like_event_id("tally.events.t.likes.p.u", 7, EventKind::Unliked)
        );
        assert_ne!(
            a,
            like_event_id("tally.events.t.likes.p.v", 7, EventKind::Liked)
        );
        // Stable across builds and replicas: a fixed vector.
        assert_eq!(
            like_event_id("tally.events.acme.likes.p1.u1", 0, EventKind::Liked),
            "lk-6cf2900d45f98be77881fbc356e747b8"
        );
    }
}

//! `GET /v1/posts/{id}/live`: Server-Sent Events with a post's counters,
//! one `counters` event at once and another whenever they change.
//!
//! One poller per live post (not per client) reads the read model every
//! [`POLL`] and publishes changes on a `watch` channel that every client of
//! the post follows. A client that disconnects drops its receiver; the
//! poller ends once a post has none left, so idle posts cost nothing.
//! `EventSource` cannot send headers, so the token may also come as the
//! `access_token` query parameter.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header::AUTHORIZATION, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::Value;

use tally_shared::http::ApiError;
use tokio::sync::watch;

use crate::params::{path_id, Params};
use crate::{AppState, Ask};

/// How often a live post's counters are read.
const POLL: Duration = Duration::from_millis(500);
/// Most posts one tenant may follow live at once (per replica): each costs
/// a read every [`POLL`], whatever its number of clients.
const LIVE_POSTS_PER_TENANT: usize = 100;

type Key = (String, String);

/// The live posts and their channels.
#[derive(Default)]
pub struct Hub {
    posts: Mutex<HashMap<Key, watch::Sender<Arc<Value>>>>,
}

impl Hub {
    /// Follows `key`, starting its poller with `first` if nobody did; 429
    /// if its tenant already follows [`LIVE_POSTS_PER_TENANT`] posts.
    fn follow(
        &self,
        state: &AppState,
        key: Key,
        first: Value,
    ) -> Result<watch::Receiver<Arc<Value>>, ApiError> {
        // Under the lock the poller also takes to leave: a post is either
        // followed through its running poller or gets a new one.
        let mut posts = self.posts.lock().expect("not poisoned");
        if let Some(sender) = posts.get(&key) {
            return Ok(sender.subscribe());
        }
        if posts.keys().filter(|(tenant, _)| *tenant == key.0).count() >= LIVE_POSTS_PER_TENANT {
            return Err(ApiError::RateLimited {
                limit: "live_posts",
                retry_after_secs: 5,
            });
        }
        let (sender, receiver) = watch::channel(Arc::new(first));
        posts.insert(key.clone(), sender.clone());
        tokio::spawn(poll(state.clone(), key, sender));
        Ok(receiver)
    }
}

/// Reads the post every [`POLL`] and publishes changes, until no client
/// follows it.
async fn poll(state: AppState, key: Key, sender: watch::Sender<Arc<Value>>) {
    let (tenant, post_id) = &key;
    loop {
        tokio::time::sleep(POLL).await;
        {
            let mut posts = state.inner.live.posts.lock().expect("not poisoned");
            if sender.receiver_count() == 0 {
                posts.remove(&key);
                return;
            }
        }
        match crate::posts::load(&state, tenant, post_id).await {
            Ok(metrics) => {
                let value = serde_json::to_value(metrics).expect("metrics serialise");
                sender.send_if_modified(|current| {
                    let changed = **current != value;
                    if changed {
                        *current = Arc::new(value);
                    }
                    changed
                });
            }
            Err(e) => tracing::debug!(error = %e, post_id, "live read failed; retrying"),
        }
    }
}

/// The post's metrics as Server-Sent Events: the current metrics first,
/// then every change (event `counters`), within a second.
#[utoipa::path(
    get,
    path = "/v1/posts/{post_id}/live",
    tag = "live",
    security(("bearer" = [])),
    params(
        ("post_id" = String, Path),
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients (`EventSource`) that cannot set headers"),
    ),
    responses(
        (status = 200, description = "A stream of `PostMetrics` as JSON in `data`", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed id, or a token given twice"),
        (status = 404, description = "The tenant has no such post"),
        (status = 429, description = "A rate limit is spent, or the tenant follows too many posts live"),
        (status = 503, description = "ClickHouse is unavailable"),
    )
)]
pub async fn live(
    State(state): State<AppState>,
    mut headers: HeaderMap,
    Path(post_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &["access_token"])?;
    if let Some(token) = params.get("access_token") {
        if headers.contains_key(AUTHORIZATION) {
            return Err(ApiError::Malformed(
                "give the token in the Authorization header or as access_token, not both".into(),
            ));
        }
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::Malformed("access_token is not a token".into()))?;
        headers.insert(AUTHORIZATION, value);
    }
    // The same start as every report: authentication, scope, rate limit.
    let ask = Ask::new(&state, &headers, query.as_deref(), &["access_token"])?;
    path_id("post_id", &post_id)?;
    let first = crate::posts::load(&state, &ask.tenant, &post_id).await?;
    let first = serde_json::to_value(first).expect("metrics serialise");
    let receiver = state
        .inner
        .live
        .follow(&state, (ask.tenant, post_id), first)?;
    let stream =
        Sse::new(events(receiver)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok((ask.rate, stream).into_response())
}

/// The current counters, then every change.
fn events(receiver: watch::Receiver<Arc<Value>>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((receiver, true), |(mut receiver, first)| async move {
        if !first && receiver.changed().await.is_err() {
            return None;
        }
        let data = receiver.borrow_and_update().to_string();
        let event = Event::default().event("counters").data(data);
        Some((Ok(event), (receiver, false)))
    })
}

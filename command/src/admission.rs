//! Admission control for the write endpoints: a bound on the request bytes
//! held at once.
//!
//! Without it, concurrent batches each hold their parsed events and share
//! the same JetStream acknowledgements, so each one progresses slowly:
//! latency and memory grow with the number of clients until requests time
//! out in JetStream after their work was done. Here a request waits for
//! room before its body is read, in arrival order; what is admitted runs
//! at full speed, and a request that finds no room within
//! `command.admission_wait_ms` gets 503 with `Retry-After`, having done
//! nothing (its body is read and dropped so that the client sees the
//! answer).
//!
//! 512 clients sending batches of 500 events (74 KB), `./dev bench-ingest
//! 512 10 batch` on 2 cores: with the room unbounded, 94,214 events/s,
//! p99 4.0 s, 358 MiB resident; with the default 2 MiB, 100,348 events/s,
//! p99 2.3 s, 145 MiB, and 17% of the requests told to retry.

use std::sync::Arc;
use std::time::Duration;

use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tally_shared::config::CommandConfig;
use tally_shared::http::ApiError;
use tokio::sync::Semaphore;

/// Room for request bytes: one permit a byte.
#[derive(Clone)]
pub struct Admission {
    room: Arc<Semaphore>,
    capacity: u32,
    /// What a body of unknown length counts as: the largest allowed.
    unknown: u32,
    wait: Duration,
}

impl Admission {
    pub fn new(config: &CommandConfig) -> Admission {
        let capacity = u32::try_from(config.max_bytes_in_flight)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Admission {
            room: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            unknown: u32::try_from(config.max_body_bytes.max(config.max_batch_bytes))
                .unwrap_or(u32::MAX),
            wait: Duration::from_millis(config.admission_wait_ms),
        }
    }

    /// The bytes a request whose body is at most `content_length` holds
    /// (`None`: unknown, chunked): at least 1 (an empty request still costs
    /// work), at most the whole room (a larger body is refused with 413 as
    /// soon as it is read).
    fn cost(&self, content_length: Option<u64>) -> u32 {
        let length = content_length.map_or(self.unknown, |n| u32::try_from(n).unwrap_or(u32::MAX));
        length.clamp(1, self.capacity)
    }
}

/// The middleware: waits for room for the request's bytes, runs it, then
/// frees the room.
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    // Exact for a Content-Length and for no body at all (a PUT or DELETE
    // of the like button); unbounded for a chunked body.
    let cost = admission.cost(request.body().size_hint().upper());
    let room = admission.room.clone().acquire_many_owned(cost);
    let Ok(Ok(_held)) = tokio::time::timeout(admission.wait, room).await else {
        let error = ApiError::Overloaded;
        crate::metrics::rejected(&error, 1);
        discard_body(request, admission.unknown as usize).await;
        return error.into_response();
    };
    next.run(request).await
}

/// Reads and drops the body, up to `limit` bytes, a chunk at a time: a
/// client still sending it would otherwise find the connection closed
/// under it and never read the 503.
async fn discard_body(request: Request, limit: usize) {
    use futures::StreamExt as _;
    let mut body = request.into_body().into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = body.next().await {
        read += chunk.len();
        if read > limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header::CONTENT_LENGTH;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt as _;

    fn admission(capacity: usize, wait_ms: u64) -> Admission {
        let mut config = tally_shared::Config::defaults().command;
        config.max_bytes_in_flight = capacity;
        config.max_body_bytes = 100;
        config.max_batch_bytes = 300;
        config.admission_wait_ms = wait_ms;
        Admission::new(&config)
    }

    #[test]
    fn a_request_costs_its_length_within_the_room() {
        let a = admission(1_000, 0);
        assert_eq!(a.cost(Some(250)), 250);
        assert_eq!(a.cost(Some(0)), 1, "an empty body still costs");
        assert_eq!(a.cost(None), 300, "unknown: the largest body allowed");
        assert_eq!(a.cost(Some(5_000)), 1_000, "never more than the room");
        assert_eq!(a.cost(Some(u64::MAX)), 1_000);
    }

    #[tokio::test]
    async fn a_request_without_a_body_costs_one_byte_and_a_chunked_one_the_most() {
        let a = admission(1_000, 0);
        let empty = Request::put("/").body(Body::empty()).unwrap();
        assert_eq!(a.cost(empty.body().size_hint().upper()), 1);
        let sized = request(250);
        assert_eq!(a.cost(sized.body().size_hint().upper()), 250);
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
        let chunked = Request::post("/").body(Body::from_stream(chunks)).unwrap();
        assert_eq!(a.cost(chunked.body().size_hint().upper()), 300);
    }

    /// A route that holds its room until `release` is notified.
    fn app(admission: Admission, release: Arc<tokio::sync::Notify>) -> Router {
        Router::new()
            .route(
                "/",
                post(move || {
                    let release = release.clone();
                    async move {
                        release.notified().await;
                        StatusCode::ACCEPTED
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(admission, admit))
    }

    fn request(length: usize) -> Request {
        Request::post("/")
            .header(CONTENT_LENGTH, length)
            .body(Body::from(vec![b' '; length]))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_without_room_waits_then_gets_503_having_done_nothing() {
        let release = Arc::new(tokio::sync::Notify::new());
        let app = app(admission(1_000, 50), release.clone());
        let first = tokio::spawn(app.clone().oneshot(request(800)));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // 800 of 1,000 bytes held: 300 more do not fit.
        let refused = app.clone().oneshot(request(300)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            refused.headers()["content-type"],
            tally_shared::http::PROBLEM_JSON
        );
        let body = axum::body::to_bytes(refused.into_body(), 10_000)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "urn:tally:problem:overloaded");
        // 200 still fit beside it.
        let small = tokio::spawn(app.clone().oneshot(request(200)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
        assert_eq!(small.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn a_waiting_request_runs_once_room_is_freed() {
        let release = Arc::new(tokio::sync::Notify::new());
        let app = app(admission(1_000, 5_000), release.clone());
        let first = tokio::spawn(app.clone().oneshot(request(1_000)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiting = tokio::spawn(app.clone().oneshot(request(1_000)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room until the first is done");
        release.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
        // The second is admitted now, and waits for its own release.
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.notify_waiters();
        assert_eq!(
            waiting.await.unwrap().unwrap().status(),
            StatusCode::ACCEPTED
        );
    }
}

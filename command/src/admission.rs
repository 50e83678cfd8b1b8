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
use axum::http::header::EXPECT;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tally_shared::auth::Authenticator;
use tally_shared::config::CommandConfig;
use tally_shared::http::ApiError;
use tokio::sync::Semaphore;

/// Room for request bytes (one permit a byte), as one route takes it.
#[derive(Clone)]
pub struct Admission {
    room: Arc<Semaphore>,
    capacity: u32,
    /// The route's largest body: what a body of unknown length counts as,
    /// and above which a declared length is refused (413) at once.
    limit: u32,
    wait: Duration,
    /// Bearer-token routes: a request must carry a valid token before it
    /// may take room, so that no stranger can hold it.
    gate: Option<Arc<Authenticator>>,
}

impl Admission {
    /// The room every write route shares (its `limit` the largest body
    /// any route allows, until [`Admission::route`] narrows it).
    pub fn new(config: &CommandConfig) -> Admission {
        let capacity = u32::try_from(config.max_bytes_in_flight)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Admission {
            room: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            limit: u32::try_from(config.max_body_bytes.max(config.max_batch_bytes))
                .unwrap_or(u32::MAX),
            wait: Duration::from_millis(config.admission_wait_ms),
            gate: None,
        }
    }

    /// The same room for a route whose bodies are at most `limit` bytes,
    /// checking bearer tokens with `gate` first (`None`: the route
    /// authenticates otherwise, e.g. webhook signatures over the body).
    pub fn route(&self, limit: usize, gate: Option<Arc<Authenticator>>) -> Admission {
        Admission {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            gate,
            ..self.clone()
        }
    }

    /// The bytes a request whose body is at most `length` holds (`None`:
    /// unknown, chunked): at least 1 (an empty request still costs work),
    /// at most the route's largest body and the whole room; `Err` for a
    /// declared length over the route's limit.
    fn cost(&self, length: Option<u64>) -> Result<u32, ApiError> {
        let length = match length {
            Some(n) if n > u64::from(self.limit) => return Err(ApiError::PayloadTooLarge),
            Some(n) => n as u32,
            None => self.limit,
        };
        Ok(length.clamp(1, self.limit.min(self.capacity)))
    }
}

/// The middleware: waits for room for the request's bytes, runs it, then
/// frees the room.
pub async fn admit(
    State(admission): State<Admission>,
    mut request: Request,
    next: Next,
) -> Response {
    // Reads hold no request bytes: they pass.
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let refuse = |error: ApiError| {
        crate::metrics::rejected(&error, 1);
        error.into_response()
    };
    if let Some(gate) = &admission.gate {
        match gate.authenticate(request.headers()) {
            // The handler takes the caller from here: one verification.
            Ok(principal) => {
                request.extensions_mut().insert(principal);
            }
            Err(e) => return refuse(e.into()),
        }
    }
    // Exact for a Content-Length and for no body at all (a PUT or DELETE
    // of the like button); unknown for a chunked body.
    let cost = match admission.cost(request.body().size_hint().upper()) {
        Ok(cost) => cost,
        Err(e) => return refuse(e),
    };
    let room = admission.room.clone().acquire_many_owned(cost);
    let Ok(Ok(_held)) = tokio::time::timeout(admission.wait, room).await else {
        // A client that waits for `100 Continue` has not sent the body:
        // reading it would ask for the upload only to drop it.
        if !request.headers().contains_key(EXPECT) {
            discard_body(request, admission.limit as usize).await;
        }
        return refuse(ApiError::Overloaded);
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

    /// A room of `capacity` bytes; routes of bodies up to 1,000 bytes
    /// (300 as the service-wide default).
    fn admission(capacity: usize, wait_ms: u64) -> Admission {
        let mut config = tally_shared::Config::defaults().command;
        config.max_bytes_in_flight = capacity;
        config.max_body_bytes = 100;
        config.max_batch_bytes = 300;
        config.admission_wait_ms = wait_ms;
        Admission::new(&config)
    }

    #[test]
    fn a_request_costs_its_length_within_its_route_limit_and_the_room() {
        let a = admission(1_000, 0);
        assert_eq!(a.cost(Some(250)).unwrap(), 250);
        assert_eq!(a.cost(Some(0)).unwrap(), 1, "an empty body still costs");
        assert_eq!(
            a.cost(None).unwrap(),
            300,
            "unknown: the largest body allowed"
        );
        assert!(matches!(a.cost(Some(301)), Err(ApiError::PayloadTooLarge)));
        assert!(matches!(
            a.cost(Some(u64::MAX)),
            Err(ApiError::PayloadTooLarge)
        ));
        let route = a.route(5_000, None);
        assert_eq!(route.cost(None).unwrap(), 1_000, "never more than the room");
        assert_eq!(route.cost(Some(4_000)).unwrap(), 1_000);
    }

    #[tokio::test]
    async fn a_request_without_a_body_costs_one_byte_and_a_chunked_one_the_most() {
        let a = admission(1_000, 0);
        let empty = Request::put("/").body(Body::empty()).unwrap();
        assert_eq!(a.cost(empty.body().size_hint().upper()).unwrap(), 1);
        let sized = request(250);
        assert_eq!(a.cost(sized.body().size_hint().upper()).unwrap(), 250);
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
        let chunked = Request::post("/").body(Body::from_stream(chunks)).unwrap();
        assert_eq!(a.cost(chunked.body().size_hint().upper()).unwrap(), 300);
    }

    /// A route that counts its runs and holds its room until `release` is
    /// notified.
    fn app(
        admission: Admission,
        release: Arc<tokio::sync::Notify>,
        runs: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Router {
        let handler = move || {
            let (release, runs) = (release.clone(), runs.clone());
            async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                release.notified().await;
                StatusCode::ACCEPTED
            }
        };
        Router::new()
            .route("/", post(handler.clone()).get(handler))
            .layer(axum::middleware::from_fn_with_state(admission, admit))
    }

    fn request(length: usize) -> Request {
        Request::post("/")
            .header(CONTENT_LENGTH, length)
            .body(Body::from(vec![b' '; length]))
            .unwrap()
    }

    fn runs() -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::new(std::sync::atomic::AtomicUsize::new(0))
    }

    /// A route with bodies up to 1,000 bytes and a room of 1,000 bytes,
    /// waiting up to `wait_ms`; its release and its run count.
    fn setup(
        wait_ms: u64,
    ) -> (
        Router,
        Arc<tokio::sync::Notify>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (release, runs) = (Arc::new(tokio::sync::Notify::new()), runs());
        let app = app(
            admission(1_000, wait_ms).route(1_000, None),
            release.clone(),
            runs.clone(),
        );
        (app, release, runs)
    }

    async fn problem(response: Response) -> serde_json::Value {
        assert_eq!(
            response.headers()["content-type"],
            tally_shared::http::PROBLEM_JSON
        );
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_request_without_room_waits_then_gets_503_having_done_nothing() {
        let (app, release, runs) = setup(50);
        let first = tokio::spawn(app.clone().oneshot(request(800)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // 800 of 1,000 bytes held: 300 more do not fit.
        let refused = app.clone().oneshot(request(300)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            problem(refused).await["type"],
            "urn:tally:problem:overloaded"
        );
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "only the first ran"
        );
        // 200 still fit beside it, and reads pass without room.
        let small = tokio::spawn(app.clone().oneshot(request(200)));
        let read = tokio::spawn(
            app.clone()
                .oneshot(Request::get("/").body(Body::empty()).unwrap()),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
        assert_eq!(small.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
        assert_eq!(read.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn a_waiting_request_runs_once_room_is_freed() {
        let (app, release, _) = setup(5_000);
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

    /// Neither a stranger nor a declared oversized body takes room: a
    /// stranger's slow upload cannot hold it for everyone.
    #[tokio::test]
    async fn strangers_and_oversized_bodies_are_refused_before_taking_room() {
        let config = tally_shared::Config::development();
        let auth = Arc::new(Authenticator::from_config(&config.auth).unwrap());
        let (release, runs) = (Arc::new(tokio::sync::Notify::new()), runs());
        let admission = admission(1_000, 0).route(1_000, Some(auth));
        let room = admission.room.clone();
        let app = app(admission, release, runs.clone());
        let stranger = app.clone().oneshot(request(1_000)).await.unwrap();
        assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            problem(stranger).await["type"],
            "urn:tally:problem:unauthorized"
        );
        let token = tally_shared::auth::mint_token(
            &config.auth,
            "test",
            "acme",
            &[tally_shared::auth::Scope::EventsWrite],
            60,
        );
        let mut oversized = request(1_000_001);
        oversized
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let oversized = app.clone().oneshot(oversized).await.unwrap();
        assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(room.available_permits(), 1_000, "no room was taken");
    }
}

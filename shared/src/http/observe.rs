//! What every request leaves behind: a request id (the client's
//! `X-Request-Id` if it is sane, else a new one) on every log line written
//! while it is served and on the response; the W3C `traceparent` it came
//! with, passed on to what it publishes; and the request rate and latency
//! per route, method and status.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use metrics::{counter, histogram, Counter, Histogram};
use tracing::Instrument;

use crate::metrics as names;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A request's W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(pub String);

tokio::task_local! {
    /// The trace context of the request being served on this task, for what
    /// it publishes (the command API puts it in the NATS message headers).
    static TRACE: Option<TraceParent>;
}

/// The trace context of the request this task serves, if it came with one.
pub fn current_trace() -> Option<TraceParent> {
    TRACE.try_with(Clone::clone).ok().flatten()
}

/// A client's request id is kept if it is 1-128 visible ASCII characters.
fn sane_id(value: &HeaderValue) -> Option<String> {
    let id = value.to_str().ok()?;
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| id.to_owned())
}

/// A `traceparent` of the form `00-<32 hex>-<16 hex>-<2 hex>`, not all zero.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    valid.then(|| TraceParent(value.trim().to_ascii_lowercase()))
}

/// The middleware; its state is the service's name (a metrics label).
pub async fn observe(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(sane_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let trace = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        trace_id = trace.as_ref().map_or("", |t| &t.0[3..35]),
    );
    if let Some(trace) = &trace {
        crate::telemetry::continue_trace(&span, &trace.0);
    }
    let mut response = TRACE.scope(trace, next.run(request).instrument(span)).await;
    record(
        service,
        route,
        &method,
        response.status(),
        started.elapsed(),
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The request metrics of one label set, registered once.
struct Recorded {
    service: &'static str,
    method: Method,
    status: StatusCode,
    requests: Counter,
    seconds: Histogram,
}

/// Most label sets whose handles are kept (routes are a fixed list, but a
/// client chooses the method): past it, requests record the slow way.
const MAX_RECORDED: usize = 1024;

/// Handles by route, then by service, method and status: a request records
/// through two handles instead of building two keys (eight label strings)
/// and looking them up in the registry.
type Handles = RwLock<(usize, HashMap<String, Vec<Recorded>>)>;

/// Counts one request and records its latency.
fn record(service: &'static str, route: &str, method: &Method, status: StatusCode, took: Duration) {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        // Handles taken before the recorder is installed would record nothing.
        names::handle();
        RwLock::default()
    });
    let seconds = took.as_secs_f64();
    let same = |r: &&Recorded| r.service == service && r.method == method && r.status == status;
    {
        let known = handles.read().unwrap_or_else(|e| e.into_inner());
        if let Some(recorded) = known.1.get(route).and_then(|sets| sets.iter().find(same)) {
            recorded.requests.increment(1);
            recorded.seconds.record(seconds);
            return;
        }
    }
    let labels = [
        ("service", service.to_owned()),
        ("route", route.to_owned()),
        ("method", method.as_str().to_owned()),
        ("status", status.as_str().to_owned()),
    ];
    let recorded = Recorded {
        service,
        method: method.clone(),
        status,
        requests: counter!(names::HTTP_REQUESTS, &labels),
        seconds: histogram!(names::HTTP_REQUEST_SECONDS, &labels),
    };
    recorded.requests.increment(1);
    recorded.seconds.record(seconds);
    let mut known = handles.write().unwrap_or_else(|e| e.into_inner());
    let (count, by_route) = &mut *known;
    if *count < MAX_RECORDED {
        let sets = by_route.entry(route.to_owned()).or_default();
        if !sets.iter().any(|r| same(&r)) {
            sets.push(recorded);
            *count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_clients_are_kept_only_when_sane() {
        assert_eq!(
            sane_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(sane_id(&HeaderValue::from_static("")), None);
        assert_eq!(sane_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(
            sane_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()),
            None
        );
    }

    #[test]
    fn traceparents_are_checked() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(good), Some(TraceParent(good.into())));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}

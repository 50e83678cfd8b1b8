//! HTTP plumbing both APIs share: the error type that becomes an RFC 9457
//! `application/problem+json` response, JSON body reading, and the routes
//! every service has (`/healthz`, unknown paths, wrong methods).

pub mod observe;
pub mod openapi;
mod problem;
pub mod ratelimit;

pub use problem::{ApiError, PROBLEM_JSON};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use serde_json::Value;

/// The accept queue asked for; Linux caps it at `net.core.somaxconn`
/// (4,096 by default on current kernels).
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` for a service, with an accept queue as long as the kernel
/// allows rather than tokio's 1,024: a burst of new connections (a load
/// balancer's pool refilling, clients reconnecting after a restart) beyond
/// the queue has its SYNs dropped, and each retries only after a second.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted service can bind again
    // while the last one's connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Deepest JSON nesting accepted in a request body (serde_json's own limit is
/// 128; this keeps hostile bodies cheaper still).
pub const MAX_JSON_DEPTH: usize = 32;

/// Reads a JSON request body: checks the content type (415), maps a body over
/// the limit to 413, and parses the JSON (400).
pub fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    require_json_content_type(headers)?;
    let body = body.map_err(body_rejection)?;
    parse_json(&body)
}

/// 415 unless the request says its body is JSON.
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            expected: "application/json",
        })
    }
}

/// Maps axum's body rejection: over the size limit is 413, anything else 400.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::Malformed(format!("could not read the request body: {rejection}"))
    }
}

/// Parses JSON, refusing invalid UTF-8, nesting deeper than
/// [`MAX_JSON_DEPTH`] and objects that repeat a key.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if nesting_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::Malformed(format!(
            "JSON nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_slice::<UniqueKeys>(body)
        .map(|parsed| parsed.0)
        .map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))
}

/// A JSON value whose objects never repeat a key. serde_json keeps the last
/// of repeated keys silently; other readers keep the first, so a repeated
/// key could mean one thing to a proxy or signer and another to Tally.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                // Not echoed: a hostile key may be long.
                return Err(serde::de::Error::custom("an object repeats a key"));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The deepest nesting of brackets outside strings (a cheap pre-scan).
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Middleware bounding a whole request, its body upload included: a slow
/// or stalled client gets 408 and frees its connection and memory (and
/// cannot hold up a graceful shutdown).
pub async fn deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(limit).into_response(),
    }
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// Fallback for known paths called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `/healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "The process is alive", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    #[test]
    fn content_types() {
        assert!(require_json_content_type(&json_headers("application/json")).is_ok());
        assert!(
            require_json_content_type(&json_headers("Application/JSON; charset=utf-8")).is_ok()
        );
        for bad in ["text/plain", "application/jsonx", "application/x-ndjson"] {
            assert!(
                matches!(
                    require_json_content_type(&json_headers(bad)),
                    Err(ApiError::UnsupportedMediaType { .. })
                ),
                "{bad}"
            );
        }
        assert!(require_json_content_type(&HeaderMap::new()).is_err());
    }

    #[test]
    fn json_parsing() {
        assert!(parse_json(br#"{"a":[1,{"b":"[[[["}]}"#).is_ok());
        for bad in [&b"{"[..], b"", b"{\"a\":1,}", b"\xff\xfe", b"nul"] {
            assert!(
                matches!(parse_json(bad), Err(ApiError::Malformed(_))),
                "{bad:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(
            matches!(parse_json(deep.as_bytes()), Err(ApiError::Malformed(m)) if m.contains("nested"))
        );
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parse_json(ok.as_bytes()).is_ok());
        assert_eq!(nesting_depth(br#"{"k":"\"[[[[[["}"#), 1);
        for repeated in [&br#"{"a":1,"a":1}"#[..], br#"[{"b":{"a":1,"a":2}}]"#] {
            assert!(
                matches!(parse_json(repeated), Err(ApiError::Malformed(m)) if m.contains("repeats")),
                "{repeated:?}"
            );
        }
    }

    /// A limit of this process or machine from `/proc`, if readable.
    fn proc_limit(path: &str, line: Option<&str>) -> Option<usize> {
        let text = std::fs::read_to_string(path).ok()?;
        match line {
            None => text.trim().parse().ok(),
            Some(name) => text
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok(),
        }
    }

    #[tokio::test]
    async fn a_service_listener_queues_more_connections_than_tokios_default() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Nothing is accepted: every connection waits in the accept queue,
        // which tokio's own `bind` limits to 1,024.
        let room = proc_limit("/proc/sys/net/core/somaxconn", None).unwrap_or(0);
        let files = proc_limit("/proc/self/limits", Some("Max open files")).unwrap_or(0);
        let wanted = 1_500.min(room).min(files.saturating_sub(200));
        if wanted <= 1_100 {
            eprintln!("skipped: somaxconn {room}, open files {files}");
            return;
        }
        let mut queued = Vec::with_capacity(wanted);
        for i in 0..wanted {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
                Ok(Ok(stream)) => queued.push(stream),
                other => panic!("connection {i} of {wanted} not queued: {other:?}"),
            }
        }
        // And a queued connection is served once accepted.
        let (mut served, _) = listener.accept().await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        served.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        queued[0].read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        drop(listener);
        // The address is free again at once for a restarted service.
        drop(queued);
        bind(addr).unwrap();
    }
}

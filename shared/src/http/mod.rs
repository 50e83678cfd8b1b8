//! HTTP plumbing both APIs share: the error type that becomes an RFC 9457
//! `application/problem+json` response, JSON body reading, and the routes
//! every service has (`/healthz`, unknown paths, wrong methods).

mod problem;

pub use problem::{ApiError, PROBLEM_JSON};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use serde_json::Value;

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

/// Parses JSON, refusing invalid UTF-8 and nesting deeper than [`MAX_JSON_DEPTH`].
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if nesting_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::Malformed(format!(
            "JSON nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))
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

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// Fallback for known paths called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `/healthz`: the process is alive.
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
    }
}

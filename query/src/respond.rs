//! Every report answer: the data with its freshness in the body and in
//! headers, an `ETag` over the data (so a client polling unchanged numbers
//! gets `304 Not Modified`), and `Cache-Control`.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::freshness::Freshness;

pub const POSITION: HeaderName = HeaderName::from_static("tally-position");
pub const WATERMARK: HeaderName = HeaderName::from_static("tally-watermark");
pub const LAG_EVENTS: HeaderName = HeaderName::from_static("tally-lag-events");
pub const LAG_SECONDS: HeaderName = HeaderName::from_static("tally-lag-seconds");
pub const CACHE: HeaderName = HeaderName::from_static("tally-cache");
pub const STALE: HeaderName = HeaderName::from_static("tally-stale");

/// Answers are per tenant (never shared caches) and change within seconds.
const CACHE_POLICY: &str = "private, max-age=1";

/// The answer: `data` (a JSON object, serialised) with `freshness` added,
/// headers, and `304` when the request's `If-None-Match` names `etag`. The
/// hot tier serialises and tags an answer once, not once per request.
pub fn tagged(request: &HeaderMap, data: &[u8], etag: &str, freshness: Freshness) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        ETAG,
        HeaderValue::from_str(etag).expect("hex is a header value"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_POLICY));
    let number = |n: u64| HeaderValue::from(n);
    headers.insert(POSITION, number(freshness.position));
    headers.insert(LAG_EVENTS, number(freshness.lag_events));
    headers.insert(LAG_SECONDS, number(freshness.lag_seconds));
    if let Ok(watermark) = HeaderValue::from_str(&freshness.watermark) {
        headers.insert(WATERMARK, watermark);
    }
    let flag = |on: bool, yes: &'static str, no: &'static str| {
        HeaderValue::from_static(if on { yes } else { no })
    };
    headers.insert(CACHE, flag(freshness.cached, "hit", "miss"));
    headers.insert(STALE, flag(freshness.stale, "true", "false"));
    if matches_any(request, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (headers, with_freshness(data, &freshness)).into_response()
}

/// `data` (a serialised JSON object) with a `freshness` member added, as
/// [`Report`] serialises it.
fn with_freshness(data: &[u8], freshness: &Freshness) -> Vec<u8> {
    let freshness = serde_json::to_vec(freshness).expect("freshness serialises");
    let open = data
        .strip_suffix(b"}")
        .expect("report data is a JSON object");
    let mut body = Vec::with_capacity(data.len() + freshness.len() + 16);
    body.extend_from_slice(open);
    if open.iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        body.push(b',');
    }
    body.extend_from_slice(b"\"freshness\":");
    body.extend_from_slice(&freshness);
    body.push(b'}');
    body
}

/// A report answer: the data's fields, and how fresh they are.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Report<T> {
    #[serde(flatten)]
    pub data: T,
    pub freshness: Freshness,
}

/// A strong entity tag over the data (not the freshness, which moves even
/// when the numbers do not).
/// The entity tag of serialised data.
pub fn etag_of(json: &[u8]) -> String {
    let digest = Sha256::digest(json);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

fn matches_any(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report<T: Serialize>(request: &HeaderMap, data: &T, freshness: Freshness) -> Response {
        let body = serde_json::to_vec(data).unwrap();
        tagged(request, &body, &etag_of(&body), freshness)
    }

    #[test]
    fn the_body_is_what_report_serialises() {
        for data in [
            json!({"likes": 3, "by": {"a": [1, 2]}}),
            json!({}),
            json!({"post_id": "p}"}),
        ] {
            let spliced: serde_json::Value = serde_json::from_slice(&with_freshness(
                &serde_json::to_vec(&data).unwrap(),
                &freshness(),
            ))
            .unwrap();
            let reported = serde_json::to_value(Report {
                data: data.clone(),
                freshness: freshness(),
            })
            .unwrap();
            assert_eq!(spliced, reported, "{data}");
        }
    }
    use crate::freshness::Snapshot;
    use serde_json::json;

    fn freshness() -> Freshness {
        Freshness::of(
            Snapshot {
                position: 7,
                stream_last: 9,
                watermark: 1_795_381_200,
                recorded_ms: 1_795_381_200_000,
            },
            time::OffsetDateTime::from_unix_timestamp(1_795_381_205).unwrap(),
            false,
            false,
        )
    }

    #[test]
    fn the_answer_carries_freshness_and_an_entity_tag() {
        let response = report(&HeaderMap::new(), &json!({"likes": 3}), freshness());
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[POSITION], "7");
        assert_eq!(headers[LAG_EVENTS], "2");
        assert_eq!(headers[LAG_SECONDS], "5");
        assert_eq!(headers[CACHE], "miss");
        assert_eq!(headers[STALE], "false");
        assert_eq!(headers[CACHE_CONTROL], CACHE_POLICY);
        assert!(headers[ETAG].to_str().unwrap().starts_with('"'));
    }

    #[test]
    fn unchanged_data_is_not_modified_whatever_the_freshness() {
        let first = report(&HeaderMap::new(), &json!({"likes": 3}), freshness());
        let etag = first.headers()[ETAG].clone();
        let mut request = HeaderMap::new();
        request.insert(IF_NONE_MATCH, etag.clone());
        let mut later = freshness();
        later.position = 8;
        let again = report(&request, &json!({"likes": 3}), later.clone());
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[POSITION], "8");
        let changed = report(&request, &json!({"likes": 4}), later);
        assert_eq!(changed.status(), StatusCode::OK);
        let mut list = HeaderMap::new();
        list.insert(
            IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{}", etag.to_str().unwrap())).unwrap(),
        );
        assert!(matches_any(&list, etag.to_str().unwrap()));
    }
}

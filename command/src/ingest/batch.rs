//! `POST /v1/events/batch`: up to `max_batch_events` events as a JSON array
//! (`application/json`) or NDJSON (`application/x-ndjson`). Every item is
//! validated on its own and gets one result, in input order; valid items are
//! stored even when others are not.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use tally_shared::auth::{Principal, Scope};
use tally_shared::event::{validate, FieldError, Source, StoredEvent};
use tally_shared::http::{body_rejection, parse_json, ApiError};
use time::OffsetDateTime;

use super::Outcome;
use crate::AppState;
use tally_shared::http::ratelimit::bearer_token;

/// How the batch is encoded, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonArray,
    Ndjson,
}

impl Format {
    pub fn from_headers(headers: &HeaderMap) -> Result<Format, ApiError> {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(Format::JsonArray),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Ok(Format::Ndjson)
            }
            _ => Err(ApiError::UnsupportedMediaType {
                expected: "application/json (an array) or application/x-ndjson",
            }),
        }
    }
}

/// Splits a batch body into items: each is parsed JSON, or why its NDJSON
/// line is not JSON. A body that is not a batch at all is 400; more items
/// than `max_items` is 413.
pub fn split_items(
    format: Format,
    body: &[u8],
    max_items: usize,
) -> Result<Vec<Result<Value, String>>, ApiError> {
    let items: Vec<Result<Value, String>> = match format {
        Format::JsonArray => match parse_json(body)? {
            Value::Array(items) => items.into_iter().map(Ok).collect(),
            _ => {
                return Err(ApiError::Malformed(
                    "a JSON batch must be an array of events".into(),
                ))
            }
        },
        Format::Ndjson => body
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| parse_json(line).map_err(|e| e.to_string()))
            .collect(),
    };
    if items.is_empty() {
        return Err(ApiError::Malformed("the batch holds no events".into()));
    }
    if items.len() > max_items {
        return Err(ApiError::TooManyItems { limit: max_items });
    }
    Ok(items)
}

/// One item's result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemResult {
    /// Position in the input, from 0.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub status: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// The whole answer: counts, then one result per item in input order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub accepted: usize,
    pub duplicates: usize,
    pub invalid: usize,
    /// Valid items JetStream did not acknowledge: retry them.
    pub failed: usize,
    pub results: Vec<ItemResult>,
}

impl BatchResult {
    pub fn empty() -> BatchResult {
        BatchResult::from_results(vec![])
    }

    fn from_results(results: Vec<ItemResult>) -> BatchResult {
        let count = |o: Outcome| results.iter().filter(|r| r.status == o).count();
        BatchResult {
            accepted: count(Outcome::Accepted),
            duplicates: count(Outcome::Duplicate),
            invalid: count(Outcome::Invalid),
            failed: count(Outcome::Failed),
            results,
        }
    }
}

/// Stores up to `max_batch_events` events, each validated on its own.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    tag = "ingest",
    security(("bearer" = [])),
    request_body(
        description = "A JSON array of events, or NDJSON (one event a line)",
        content(
            (Vec<tally_shared::event::Event> = "application/json"),
            (String = "application/x-ndjson"),
        )
    ),
    responses(
        (status = 202, description = "Every item stored", body = BatchResult),
        (status = 207, description = "Some items invalid (not stored); the valid ones stored", body = BatchResult),
        (status = 400, description = "The body is not a JSON array or NDJSON, or holds no events"),
        (status = 413, description = "The body or the number of events is over the limit"),
        (status = 415, description = "Neither JSON nor NDJSON"),
        (status = 503, description = "JetStream did not acknowledge every valid item, or the API was at capacity and stored nothing: retry the batch (`Retry-After`)"),
    )
)]
pub async fn post_batch(
    state: State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let answer = accept_batch(state, admitted, headers, body).await;
    if let Err(e) = &answer {
        crate::metrics::rejected(e, 1);
    }
    answer
}

async fn accept_batch(
    State(state): State<AppState>,
    admitted: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = state.caller(admitted, &headers)?;
    principal.require(Scope::EventsWrite)?;
    let format = Format::from_headers(&headers)?;
    let body = body.map_err(body_rejection)?;
    let items = split_items(format, &body, state.inner.max_batch_events)?;
    let rate =
        state
            .inner
            .rate_limits
            .spend(&principal.tenant, bearer_token(&headers), items.len())?;
    let batch = store_items(&state, &principal.tenant, Source::Batch, items).await;
    if batch.invalid > 0 {
        crate::metrics::rejected(&ApiError::Invalid(vec![]), batch.invalid as u64);
    }
    if batch.failed > 0 {
        // A 2xx must mean stored: retry the whole batch (what was stored is
        // then a duplicate, stored once).
        return Err(ApiError::Unavailable(format!(
            "JetStream acknowledged {} of {} valid items",
            batch.accepted + batch.duplicates,
            batch.accepted + batch.duplicates + batch.failed
        )));
    }
    let status = if batch.invalid == 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, rate, Json(batch)).into_response())
}

/// Validates every item, publishes the valid ones at once (each waits for
/// its own PubAck) and reports one result per item, in order. Shared by
/// batches, webhooks and imports.
pub async fn store_items(
    state: &AppState,
    tenant: &str,
    source: Source,
    items: Vec<Result<Value, String>>,
) -> BatchResult {
    let now = OffsetDateTime::now_utc();
    let mut results: Vec<ItemResult> = Vec::with_capacity(items.len());
    // Valid items, and where each one's result is.
    let mut to_store: Vec<StoredEvent> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let checked = item
            .map_err(|message| vec![FieldError::new("", message)])
            .and_then(|value| validate(&value, now, &state.inner.limits));
        let (status, errors) = match checked {
            Ok(event) => {
                to_store.push(StoredEvent::new(tenant, source, event, now));
                positions.push(index);
                (Outcome::Failed, vec![])
            }
            Err(errors) => (Outcome::Invalid, errors),
        };
        results.push(ItemResult {
            index,
            event_id: None,
            status,
            seq: None,
            errors,
        });
    }

    let appended = state.inner.publisher.append_all(&to_store).await;
    for ((index, event), appended) in positions.into_iter().zip(to_store).zip(appended) {
        let result = &mut results[index];
        result.event_id = Some(event.event.event_id);
        match appended {
            Ok(appended) => {
                result.status = Outcome::from_duplicate(appended.duplicate);
                result.seq = Some(appended.seq);
            }
            Err(e) => {
                tracing::warn!(error = ?e, "batch item not stored");
                result.status = Outcome::Failed;
            }
        }
    }
    BatchResult::from_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(format: Format, body: &str) -> Result<Vec<Result<Value, String>>, ApiError> {
        split_items(format, body.as_bytes(), 3)
    }

    #[test]
    fn json_arrays() {
        assert_eq!(split(Format::JsonArray, r#"[{"a":1},2]"#).unwrap().len(), 2);
        assert!(matches!(
            split(Format::JsonArray, r#"{"a":1}"#),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            split(Format::JsonArray, "[]"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            split(Format::JsonArray, "[1,"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            split(Format::JsonArray, "[1,2,3,4]"),
            Err(ApiError::TooManyItems { limit: 3 })
        ));
    }

    #[test]
    fn ndjson_lines_fail_one_by_one() {
        let items = split(Format::Ndjson, "{\"a\":1}\r\n\n  \nnot json\n{\"b\":2}").unwrap();
        assert_eq!(items.len(), 3, "blank lines are skipped");
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
        assert!(matches!(
            split(Format::Ndjson, "\n\n"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            split(Format::Ndjson, "1\n2\n3\n4"),
            Err(ApiError::TooManyItems { limit: 3 })
        ));
    }

    #[test]
    fn formats_come_from_the_content_type() {
        let format = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, ct.parse().unwrap());
            Format::from_headers(&headers)
        };
        assert_eq!(
            format("application/json; charset=utf-8").unwrap(),
            Format::JsonArray
        );
        assert_eq!(format("application/x-ndjson").unwrap(), Format::Ndjson);
        assert!(matches!(
            format("text/csv"),
            Err(ApiError::UnsupportedMediaType { .. })
        ));
    }
}

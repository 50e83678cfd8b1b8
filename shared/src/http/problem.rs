//! The one place where errors become HTTP responses.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use crate::auth::AuthError;
use crate::event::FieldError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every way a request can fail. Each variant names its status in
/// [`ApiError::status`]; the body is RFC 9457 problem+json. Internal details
/// (`Unavailable`, `Internal`) are logged, never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body or a parameter cannot be read.
    #[error("{0}")]
    Malformed(String),
    /// 401 or 403, by the kind of auth failure.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 401 for a webhook whose signature does not verify.
    #[error("{0}")]
    BadSignature(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request (its upload included) took longer than allowed.
    #[error("the request took longer than {0:?}")]
    RequestTimeout(std::time::Duration),
    /// 409: a conflicting concurrent change won, repeatedly.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 413: a batch with more items than allowed.
    #[error("a batch may hold at most {limit} events")]
    TooManyItems { limit: usize },
    /// 415.
    #[error("unsupported media type; expected {expected}")]
    UnsupportedMediaType { expected: &'static str },
    /// 429 with `Retry-After`: a rate limit is spent.
    #[error("rate limit '{limit}' exceeded; retry in {retry_after_secs} s")]
    RateLimited {
        limit: &'static str,
        retry_after_secs: u64,
    },
    /// 422: the request is well-formed but invalid, field by field.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// 503 with `Retry-After`: a dependency (JetStream, ClickHouse) is down or slow.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: the service holds as much work as it takes
    /// at once and could not start this request in time. Nothing of it was
    /// done.
    #[error("the service is at capacity; retry shortly")]
    Overloaded,
    /// 500: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 1;

/// An RFC 9457 problem: what every error response carries.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem<'a> {
    /// A stable identifier of the problem, `urn:tally:problem:<name>`.
    #[serde(rename = "type")]
    kind: &'a str,
    /// The status's reason phrase.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for people.
    detail: String,
    /// For `422`: every offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Auth(AuthError::MissingScope(_)) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge | ApiError::TooManyItems { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable identifier of the problem type.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "urn:tally:problem:malformed",
            ApiError::Auth(AuthError::MissingScope(_)) => "urn:tally:problem:forbidden",
            ApiError::Auth(_) => "urn:tally:problem:unauthorized",
            ApiError::BadSignature(_) => "urn:tally:problem:bad-signature",
            ApiError::NotFound(_) => "urn:tally:problem:not-found",
            ApiError::MethodNotAllowed => "urn:tally:problem:method-not-allowed",
            ApiError::Conflict(_) => "urn:tally:problem:conflict",
            ApiError::RequestTimeout(_) => "urn:tally:problem:request-timeout",
            ApiError::PayloadTooLarge | ApiError::TooManyItems { .. } => {
                "urn:tally:problem:too-large"
            }
            ApiError::UnsupportedMediaType { .. } => "urn:tally:problem:unsupported-media-type",
            ApiError::Invalid(_) => "urn:tally:problem:invalid",
            ApiError::RateLimited { .. } => "urn:tally:problem:rate-limited",
            ApiError::Unavailable(_) => "urn:tally:problem:unavailable",
            ApiError::Overloaded => "urn:tally:problem:overloaded",
            ApiError::Internal(_) => "urn:tally:problem:internal",
        }
    }

    /// What the client is told.
    fn detail(&self) -> String {
        match self {
            ApiError::Unavailable(_) => {
                "a dependency is unavailable; retry later (an ingest retry reuses its event_id)"
                    .into()
            }
            ApiError::Internal(_) => "an internal error occurred".into(),
            ApiError::Invalid(errors) => format!("{} field(s) are invalid", errors.len()),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "answering 503"),
            ApiError::Internal(cause) => tracing::error!(%cause, "answering 500"),
            _ => tracing::debug!(error = %self, status = status.as_u16(), "rejected request"),
        }
        let body = Problem {
            kind: self.kind(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            errors: match &self {
                ApiError::Invalid(errors) => Some(errors),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Auth(AuthError::MissingScope(_)) => {}
            ApiError::Auth(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::BadSignature(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Signature realm=\"tally-webhooks\""),
                );
            }
            ApiError::Unavailable(_) | ApiError::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

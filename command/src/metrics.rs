//! The command side's metrics (names live in `tally_shared::metrics`).

use std::time::Duration;

use metrics::{counter, histogram};
use tally_shared::event::Source;
use tally_shared::http::ApiError;
use tally_shared::metrics as names;

fn source_label(source: Source) -> &'static str {
    match source {
        Source::Api => "api",
        Source::Batch => "batch",
        Source::LikeButton => "like_button",
        Source::Webhook => "webhook",
        Source::Import => "import",
    }
}

pub fn stored(source: Source, duplicate: bool) {
    let name = if duplicate {
        names::EVENTS_DUPLICATE
    } else {
        names::EVENTS_ACCEPTED
    };
    counter!(name, "source" => source_label(source)).increment(1);
}

pub fn published(took: Duration, ok: bool) {
    histogram!(names::PUBLISH_SECONDS, "outcome" => if ok { "ok" } else { "error" })
        .record(took.as_secs_f64());
    if !ok {
        metrics::counter!(names::NATS_ERRORS, "op" => "publish").increment(1);
    }
}

/// Counts `n` refused events, labelled by why.
pub fn rejected(error: &ApiError, n: u64) {
    let reason = match error {
        ApiError::Invalid(_) => "invalid",
        ApiError::Malformed(_) => "malformed",
        ApiError::Auth(tally_shared::auth::AuthError::MissingScope(_)) => "forbidden",
        ApiError::Auth(_) | ApiError::BadSignature(_) => "unauthorized",
        ApiError::PayloadTooLarge | ApiError::TooManyItems { .. } => "too_large",
        ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
        ApiError::RateLimited { .. } => "rate_limited",
        ApiError::Unavailable(_) => "unavailable",
        ApiError::Conflict(_) => "conflict",
        ApiError::RequestTimeout(_) => "timeout",
        ApiError::NotFound(_) | ApiError::MethodNotAllowed | ApiError::Internal(_) => "other",
    };
    counter!(names::EVENTS_REJECTED, "reason" => reason).increment(n);
}

pub fn like_changed(attempts: u32) {
    counter!(names::LIKE_CHANGES, "attempts" => attempts.to_string()).increment(1);
}

pub fn like_conflict() {
    counter!(names::LIKE_CONFLICTS).increment(1);
}

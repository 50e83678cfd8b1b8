//! The command side's metrics (names live in `tally_shared::metrics`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, histogram, Counter, Histogram};
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

const SOURCES: [Source; 5] = [
    Source::Api,
    Source::Batch,
    Source::LikeButton,
    Source::Webhook,
    Source::Import,
];

/// The handle in `cell`, registered on first use: every later event records
/// through it instead of building a key and looking it up.
fn once<T>(cell: &'static OnceLock<T>, register: impl FnOnce() -> T) -> &'static T {
    cell.get_or_init(|| {
        // Handles taken before the recorder is installed would record nothing.
        names::handle();
        register()
    })
}

pub fn stored(source: Source, duplicate: bool) {
    /// Per source (in `SOURCES` order): accepted, duplicate.
    static STORED: [[OnceLock<Counter>; 2]; 5] = [const { [const { OnceLock::new() }; 2] }; 5];
    let i = SOURCES.iter().position(|s| *s == source).unwrap_or(0);
    let name = if duplicate {
        names::EVENTS_DUPLICATE
    } else {
        names::EVENTS_ACCEPTED
    };
    once(
        &STORED[i][usize::from(duplicate)],
        || counter!(name, "source" => source_label(source)),
    )
    .increment(1);
}

pub fn published(took: Duration, ok: bool) {
    static OK: OnceLock<Histogram> = OnceLock::new();
    static ERROR: OnceLock<Histogram> = OnceLock::new();
    let outcome = if ok { "ok" } else { "error" };
    once(
        if ok { &OK } else { &ERROR },
        || histogram!(names::PUBLISH_SECONDS, "outcome" => outcome),
    )
    .record(took.as_secs_f64());
    if !ok {
        counter!(names::NATS_ERRORS, "op" => "publish").increment(1);
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
        ApiError::Overloaded => "overloaded",
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

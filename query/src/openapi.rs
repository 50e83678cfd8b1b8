//! The query API's part of the OpenAPI document: the parameter groups the
//! reports share, and what every report answer carries (freshness headers,
//! an entity tag, `304`), added once here rather than on each handler.
//!
//! The parameter groups only describe: [`crate::params::Params`] reads the
//! raw query string itself, so that every problem becomes a problem+json
//! `400` naming the parameter.
#![allow(dead_code)] // The parameter structs are descriptions, never built.

use axum::http::header::{CACHE_CONTROL, ETAG};
use tally_shared::event::Platform;
use tally_shared::http::openapi::{ensure_response, integer_header, operations_mut, string_header};
use tally_shared::store::models::{Granularity, Metric};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::IntoParams;

use crate::respond;

/// Every report: read-your-writes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Fresh {
    /// The `seq` the command API returned for an event the answer must
    /// reflect. The answer waits for it (a bounded time), else it is
    /// marked stale.
    #[param(minimum = 0)]
    min_seq: Option<u64>,
}

/// A time range: `period` ending now, or `from`/`to`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Range {
    /// `1h`, `24h`, `7d` or `30d`, ending now; not together with `from`/`to`.
    #[param(pattern = "^(1h|24h|7d|30d)$")]
    period: Option<String>,
    /// Start (RFC 3339), inclusive. At most 400 days before `to`.
    from: Option<time::OffsetDateTime>,
    /// End (RFC 3339), exclusive; now when absent.
    to: Option<time::OffsetDateTime>,
}

/// A page of a list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items on a page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`, with the same other parameters.
    cursor: Option<String>,
}

/// Filters on the facts counted.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filters {
    platform: Option<Platform>,
    campaign_id: Option<String>,
    content_type: Option<String>,
    /// 1-64 characters.
    tag: Option<String>,
}

/// Bucket size of a series.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Buckets {
    /// Default `hour`.
    granularity: Option<Granularity>,
}

/// What a ranking or trend counts.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Measure {
    /// Default `engagements` (likes + shares + comments; also accepted as
    /// `engagement`); `follows` is also accepted as `follower_growth`.
    metric: Option<Metric>,
}

/// The headers of every report answer, `304` included.
fn report_headers(response: &mut utoipa::openapi::Response) {
    let headers = [
        (
            ETAG,
            string_header("Entity tag of the data (not of its freshness)"),
        ),
        (CACHE_CONTROL, string_header("`private, max-age=1`")),
        (
            respond::POSITION,
            integer_header("Stream position the answer reflects"),
        ),
        (
            respond::LAG_EVENTS,
            integer_header("Events on the stream not yet reflected"),
        ),
        (
            respond::LAG_SECONDS,
            integer_header("Seconds between the watermark and now"),
        ),
        (
            respond::WATERMARK,
            string_header("Event-time watermark (RFC 3339)"),
        ),
        (respond::CACHE, string_header("`hit` or `miss`")),
        (
            respond::STALE,
            string_header("`true` when older than asked for"),
        ),
    ];
    for (name, header) in headers {
        response.headers.insert(name.as_str().to_owned(), header);
    }
}

/// Adds to every operation tagged `reports`: freshness headers on `200`,
/// `304` for a matching `If-None-Match`, `400` for bad parameters and `503`
/// when ClickHouse is unavailable and nothing is cached.
pub fn report_conventions(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let is_report = operation
                .tags
                .as_ref()
                .is_some_and(|tags| tags.iter().any(|t| t == "reports"));
            if !is_report {
                continue;
            }
            ensure_response(
                operation,
                304,
                "Not modified: the data still has the entity tag in `If-None-Match`",
            );
            ensure_response(operation, 400, "A parameter is invalid (named in `detail`)");
            ensure_response(
                operation,
                503,
                "ClickHouse is unavailable or slow and nothing is cached",
            );
            for status in ["200", "304"] {
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) {
                    report_headers(response);
                }
            }
        }
    }
}

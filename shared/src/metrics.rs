//! Prometheus metrics: every metric name Tally exports is defined here, and
//! one process-wide recorder renders them at each service's `/metrics`.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events stored by the command side; label `source` (api, batch, …).
pub const EVENTS_ACCEPTED: &str = "tally_events_accepted_total";
/// Events answered `duplicate`; label `source`.
pub const EVENTS_DUPLICATE: &str = "tally_events_duplicate_total";
/// Events refused; label `reason` (invalid, unauthorized, forbidden,
/// too_large, unsupported_media_type, malformed, rate_limited, unavailable).
pub const EVENTS_REJECTED: &str = "tally_events_rejected_total";
/// Seconds from publish to PubAck; label `outcome` (ok, error).
pub const PUBLISH_SECONDS: &str = "tally_publish_seconds";
/// Requests refused by a rate limit; label `limit` (tenant, token).
pub const RATE_LIMITED: &str = "tally_rate_limited_total";
/// Like-aggregate changes appended; label `attempts` (1, 2, … tries needed).
pub const LIKE_CHANGES: &str = "tally_like_changes_total";
/// Like-aggregate appends that lost a race and were retried.
pub const LIKE_CONFLICTS: &str = "tally_like_conflicts_total";

/// HTTP requests answered; labels `service`, `route` (the route's pattern,
/// or `unmatched`), `method`, `status`.
pub const HTTP_REQUESTS: &str = "tally_http_requests_total";
/// Seconds from a request's arrival to its response; same labels.
pub const HTTP_REQUEST_SECONDS: &str = "tally_http_request_seconds";

/// Report answers of the query API by where they came from; label
/// `source`: `cache` (the hot tier), `store` (computed from ClickHouse),
/// `fallback` (the hot tier while ClickHouse failed). The cache hit ratio
/// is `cache / (cache + store)`.
pub const QUERY_ANSWERS: &str = "tally_query_answers_total";
/// Failed NATS operations (each retried or answered 503); label `op`
/// (`publish`, `fetch`).
pub const NATS_ERRORS: &str = "tally_nats_errors_total";

/// Events the projector moved to the dead-letter stream.
pub const DEAD_LETTERS: &str = "tally_dead_letters_total";
/// Events the projector wrote to ClickHouse.
pub const EVENTS_PROJECTED: &str = "tally_events_projected_total";
/// Batches the projector wrote to ClickHouse: each is one insert per table
/// it has rows for (ClickHouse wants few, large inserts).
pub const BATCHES_WRITTEN: &str = "tally_batches_written_total";
/// Failed ClickHouse writes of the projector (each retried).
pub const CLICKHOUSE_ERRORS: &str = "tally_clickhouse_errors_total";
/// Events projected past their bucket's grace period (counted, and listed in
/// `late_events`).
pub const LATE_EVENTS: &str = "tally_late_events_total";
/// Stream sequence every read model reflects (all events at or below it are
/// projected); label `model`.
pub const PROJECTION_POSITION: &str = "tally_projection_position";
/// Events in the stream not yet reflected; label `model`.
pub const PROJECTION_LAG_EVENTS: &str = "tally_projection_lag_events";
/// Age of the oldest unprojected event, 0 when caught up; label `model`.
pub const PROJECTION_LAG_SECONDS: &str = "tally_projection_lag_seconds";
/// Rollup ranges rolled; label `level`.
pub const ROLLUPS: &str = "tally_rollups_total";
/// Rollup attempts retired; label `why`: `superseded` (by newer joins) or
/// `unrecorded` (rows written, never recorded done: a crashed roll).
pub const ROLLUPS_RETIRED: &str = "tally_rollups_retired_total";
/// Failed rollup attempts (retried at the next interval).
pub const ROLLUP_ERRORS: &str = "tally_rollup_errors_total";
/// The stream sequence the rollups reach from the start (rankings read the
/// facts only beyond it).
pub const ROLLUP_POSITION: &str = "tally_rollup_position";
/// 1 while rolling waits for the projection to catch up
/// (`projector.rollup_defer_lag`), else 0.
pub const ROLLUP_DEFERRED: &str = "tally_rollup_deferred";
/// Times rolling began to wait for the projection to catch up.
pub const ROLLUP_DEFERRALS: &str = "tally_rollup_deferrals_total";
/// Event-time watermark (seconds since the epoch): buckets ending more than
/// the grace period before it are complete.
pub const WATERMARK: &str = "tally_watermark_seconds";

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The recorder, installed on first use (tests run several services in
/// one process: they share it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        // Histogram samples wait in the recorder until they are folded
        // into their buckets: by a scrape, or by this. Without it, memory
        // would grow with every request until the next scrape, forever
        // where nothing scrapes.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .expect("starting the metrics upkeep thread");
        handle
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /metrics` in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus metrics, text format 0.0.4", body = String, content_type = "text/plain"))
)]
pub async fn endpoint() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
}

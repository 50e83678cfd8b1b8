//! Influencer reports: engagement series, followers, rankings.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use tally_shared::http::ApiError;
use tally_shared::store::models::{is_complete, Counters, Granularity, Metric};

use crate::cursor::Page;
use crate::params::{check_points, path_id};
use crate::respond::Report;
use crate::{unavailable, AppState, Ask};

#[derive(Serialize, utoipa::ToSchema)]
struct Engagement {
    influencer_id: String,
    granularity: Granularity,
    from: u32,
    to: u32,
    buckets: Vec<Bucket>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Bucket {
    /// Bucket start, seconds since the epoch.
    start: u32,
    #[serde(flatten)]
    counters: Counters,
    engagement_rate: f64,
    /// Events counted here that arrived after the bucket closed.
    late: u64,
    /// The bucket's end plus the grace period is behind the watermark:
    /// only late events can still change it.
    complete: bool,
}

/// `GET /v1/influencers/{id}/engagement?granularity&period|from&to`.
#[utoipa::path(
    get,
    path = "/v1/influencers/{influencer_id}/engagement",
    tag = "reports",
    security(("bearer" = [])),
    params(
        ("influencer_id" = String, Path),
        crate::openapi::Buckets,
        crate::openapi::Range,
        crate::openapi::Fresh,
    ),
    responses(
        (status = 200, description = "Engagement per bucket (default: the last 24 hours)", body = Report<Engagement>),
        (status = 404, description = "The tenant has no such influencer"),
    )
)]
pub async fn engagement(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(influencer_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let allowed = ["granularity", "period", "from", "to"];
    let mut ask = Ask::new(&state, &headers, query.as_deref(), &allowed)?;
    let granularity = ask.params.granularity(Granularity::Hour)?;
    let (from, to) = ask.params.range(ask.now(), 86_400)?;
    check_points((from, to), granularity.seconds())?;
    path_id("influencer_id", &influencer_id)?;
    ask.settle(&state).await?;
    let listing = format!("influencers/{influencer_id}/engagement");
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        known(state, ask, &influencer_id).await?;
        let series = state
            .inner
            .models
            .influencer_series(&ask.tenant, &influencer_id, granularity, from, to)
            .await
            .map_err(unavailable)?;
        let grace = state.inner.grace_seconds;
        let buckets = series
            .into_iter()
            .map(|b| Bucket {
                complete: is_complete(b.start, granularity, grace, ask.snapshot.watermark),
                engagement_rate: b.counters.engagement_rate(),
                start: b.start,
                counters: b.counters,
                late: b.late,
            })
            .collect();
        let answer = Engagement {
            influencer_id,
            granularity,
            from,
            to,
            buckets,
        };
        Ok(answer)
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
struct Followers {
    influencer_id: String,
    count: i64,
    growth_rate: Option<f64>,
    /// Followers at the end of each day in the range.
    series: Vec<Day>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Day {
    start: u32,
    followers: i64,
}

/// `GET /v1/influencers/{id}/followers?period|from&to`.
#[utoipa::path(
    get,
    path = "/v1/influencers/{influencer_id}/followers",
    tag = "reports",
    security(("bearer" = [])),
    params(("influencer_id" = String, Path), crate::openapi::Range, crate::openapi::Fresh),
    responses(
        (status = 200, description = "Followers now, growth and a daily series (default: 30 days)", body = Report<Followers>),
        (status = 404, description = "The tenant has no such influencer"),
    )
)]
pub async fn followers(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(influencer_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut ask = Ask::new(
        &state,
        &headers,
        query.as_deref(),
        &["period", "from", "to"],
    )?;
    let (from, to) = ask.params.range(ask.now(), 30 * 86_400)?;
    path_id("influencer_id", &influencer_id)?;
    ask.settle(&state).await?;
    let listing = format!("influencers/{influencer_id}/followers");
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        known(state, ask, &influencer_id).await?;
        let followers = state
            .inner
            .models
            .followers(&ask.tenant, &influencer_id, from, to)
            .await
            .map_err(unavailable)?;
        let answer = Followers {
            influencer_id,
            count: followers.count,
            growth_rate: followers.growth_rate,
            series: followers
                .series
                .into_iter()
                .map(|(start, followers)| Day { start, followers })
                .collect(),
        };
        Ok(answer)
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ranking {
    metric: Metric,
    from: u32,
    to: u32,
    items: Vec<Ranked>,
    /// Pass as `cursor` (with the same parameters) for the next page;
    /// absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ranked {
    rank: u64,
    influencer_id: String,
    /// A count; for `engagement_rate`, a ratio.
    #[schema(value_type = f64)]
    value: Value,
}

/// A count, or for `engagement_rate` a ratio.
#[derive(Serialize)]
#[serde(untagged)]
enum Value {
    Count(i64),
    Ratio(f64),
}

impl Value {
    fn of(metric: Metric, raw: i64) -> Value {
        match metric.scale() {
            1 => Value::Count(raw),
            scale => Value::Ratio(raw as f64 / scale as f64),
        }
    }
}

/// `GET /v1/influencers/rankings?metric&period|from&to&limit&cursor` and
/// the filters `platform`, `campaign_id`, `content_type`, `tag`.
#[utoipa::path(
    get,
    path = "/v1/influencers/rankings",
    tag = "reports",
    security(("bearer" = [])),
    params(
        crate::openapi::Measure,
        crate::openapi::Range,
        crate::openapi::Filters,
        crate::openapi::Paging,
        crate::openapi::Fresh,
    ),
    responses(
        (status = 200, description = "Influencers ranked, highest first (default: 7 days); pages pinned to the first page's position", body = Report<Ranking>),
    )
)]
pub async fn rankings(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let allowed = [
        "metric",
        "period",
        "from",
        "to",
        "limit",
        "cursor",
        "platform",
        "campaign_id",
        "content_type",
        "tag",
    ];
    let mut ask = Ask::new(&state, &headers, query.as_deref(), &allowed)?;
    let metric = ask.params.metric(Metric::Engagements)?;
    let limit = ask.params.limit()?;
    let filters = ask.params.filters()?;
    // A relative period is fixed by the first page: later pages carry it.
    let scope = scope(&ask, "rankings", &allowed);
    let continued = ask
        .params
        .get("cursor")
        .map(|cursor| state.inner.cursors.check(&scope, cursor))
        .transpose()?;
    let mut first_range = ask.params.range(ask.now(), 7 * 86_400)?;
    if ask.params.get("from").is_none() && ask.params.get("to").is_none() {
        // A relative period ends at the next whole minute: its rankings are
        // then read from the rollups alone once they reach the position
        // (ADR 0006).
        let (from, to) = first_range;
        let end = to.div_ceil(60).saturating_mul(60);
        first_range = (from + (end - to), end);
    }
    ask.settle(&state).await?;
    let listing = "influencers/rankings".to_owned();
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        let (page, (from, to)) = match continued {
            Some(page) => (page, page_range(&page)),
            None => {
                let page = Page {
                    position: ask.snapshot.position,
                    after: 0,
                    range: Some(first_range),
                };
                (page, first_range)
            }
        };
        let offset =
            u32::try_from(page.after).map_err(|_| ApiError::Malformed("invalid cursor".into()))?;
        let rows = state
            .inner
            .models
            .ranking_page(
                &ask.tenant,
                metric,
                (from, to),
                &filters,
                page.position,
                offset,
                limit,
            )
            .await
            .map_err(unavailable)?;
        let next_cursor = (rows.len() == limit as usize).then(|| {
            state.inner.cursors.issue(
                &scope,
                Page {
                    after: page.after + u64::from(limit),
                    ..page
                },
            )
        });
        let items = rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| Ranked {
                rank: page.after + i as u64 + 1,
                influencer_id: r.influencer_id,
                value: Value::of(metric, r.value),
            })
            .collect();
        let answer = Ranking {
            metric,
            from,
            to,
            items,
            next_cursor,
        };
        Ok(answer)
    })
    .await
}

/// The range a cursor's listing was pinned to.
fn page_range(page: &Page) -> (u32, u32) {
    page.range.unwrap_or((0, u32::MAX))
}

/// What a cursor belongs to: the tenant, the listing and every parameter
/// but the cursor, the page size and `min_seq`.
pub fn scope(ask: &Ask, listing: &str, allowed: &[&str]) -> String {
    let mut scope = format!("{}\n{listing}", ask.tenant);
    for name in allowed {
        if matches!(*name, "cursor" | "limit") {
            continue;
        }
        if let Some(value) = ask.params.get(name) {
            scope.push_str(&format!("\n{name}={value}"));
        }
    }
    scope
}

/// 404 unless the tenant knows the influencer (another tenant's included).
async fn known(state: &AppState, ask: &Ask, influencer_id: &str) -> Result<(), ApiError> {
    let not_found = || ApiError::NotFound(format!("no influencer {influencer_id}"));
    let known = state
        .inner
        .models
        .influencer_known(&ask.tenant, influencer_id)
        .await
        .map_err(unavailable)?;
    if known {
        Ok(())
    } else {
        Err(not_found())
    }
}

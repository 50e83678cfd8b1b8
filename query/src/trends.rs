//! `GET /v1/trends?entity&metric&window&step&period|from&to`: sliding
//! windows (a `window` stepped every `step`) or tumbling ones (`window` =
//! `step`) of a metric of a post, influencer or campaign.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use tally_shared::http::ApiError;
use tally_shared::store::models::{sliding, Entity, Metric, TrendPoint};

use crate::params::check_points;
use crate::respond::Report;
use crate::{unavailable, AppState, Ask};

/// Most steps one window spans.
const MAX_STEPS_PER_WINDOW: u32 = 1_440;

#[derive(Serialize, utoipa::ToSchema)]
struct Trend {
    entity: String,
    metric: Metric,
    window: u32,
    step: u32,
    from: u32,
    to: u32,
    /// A point starting at `start` sums `[start, start + window)` within
    /// the range.
    points: Vec<TrendPoint>,
}

/// Sliding or tumbling windows of a metric.
#[utoipa::path(
    get,
    path = "/v1/trends",
    tag = "reports",
    security(("bearer" = [])),
    params(
        ("entity" = String, Query, pattern = "^(post|influencer|campaign):[A-Za-z0-9_:-]{1,128}$", description = "`post:{id}`, `influencer:{id}` or `campaign:{id}`"),
        crate::openapi::Measure,
        ("window" = Option<String>, Query, pattern = "^[1-9][0-9]{0,6}[smhd]$", description = "Window length such as `1m` (default: `step`); a multiple of `step`, at most 1440 steps"),
        ("step" = Option<String>, Query, pattern = "^[1-9][0-9]{0,6}[smhd]$", description = "Step between windows such as `10s`, `1m`, `1h`, `1d` (default `1m`)"),
        crate::openapi::Range,
        crate::openapi::Fresh,
    ),
    responses(
        (status = 200, description = "One point per step (default: the last hour)", body = Report<Trend>),
        (status = 404, description = "The tenant has no such post, influencer or campaign"),
    )
)]
pub async fn trends(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let allowed = ["entity", "metric", "window", "step", "period", "from", "to"];
    let mut ask = Ask::new(&state, &headers, query.as_deref(), &allowed)?;
    let entity = ask.params.entity()?;
    let metric = ask.params.metric(Metric::Engagements)?;
    if !metric.is_additive() {
        return Err(ApiError::Malformed(format!(
            "{} is a ratio and does not add up over windows; trend a count metric",
            metric.as_str()
        )));
    }
    let step = ask.params.duration("step", 60)?;
    let window = ask.params.duration("window", step)?;
    if window % step != 0 || window / step > MAX_STEPS_PER_WINDOW {
        return Err(ApiError::Malformed(format!(
            "window must be a multiple of step, at most {MAX_STEPS_PER_WINDOW} steps"
        )));
    }
    let (from, to) = ask.params.range(ask.now(), 3_600)?;
    // Windows start on multiples of the step.
    let from = from - from % step;
    check_points((from, to), step)?;
    ask.settle(&state).await?;
    let listing = "trends".to_owned();
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        let steps = state
            .inner
            .models
            .trend_steps(
                &ask.tenant,
                &entity,
                metric,
                (from, to),
                step,
                ask.snapshot.position,
            )
            .await
            .map_err(unavailable)?;
        if steps.is_empty() && !known(state, &ask.tenant, &entity).await? {
            return Err(ApiError::NotFound(format!("no {}", describe(&entity))));
        }
        let answer = Trend {
            entity: describe(&entity),
            metric,
            window,
            step,
            from,
            to,
            points: sliding(&steps, from, to, step, window),
        };
        Ok(answer)
    })
    .await
}

fn describe(entity: &Entity) -> String {
    match entity {
        Entity::Post(id) => format!("post:{id}"),
        Entity::Influencer(id) => format!("influencer:{id}"),
        Entity::Campaign(id) => format!("campaign:{id}"),
    }
}

/// Whether the tenant knows the entity at all (an empty trend of a known
/// entity is zeros; of an unknown one, 404).
async fn known(state: &AppState, tenant: &str, entity: &Entity) -> Result<bool, ApiError> {
    let models = &state.inner.models;
    let known = match entity {
        Entity::Post(id) => models.post(tenant, id).await.map(|p| p.is_some()),
        Entity::Influencer(id) => models.influencer_known(tenant, id).await,
        Entity::Campaign(id) => models
            .campaign(tenant, id, (0, u32::MAX))
            .await
            .map(|c| c.is_some()),
    };
    known.map_err(unavailable)
}

//! `GET /v1/campaigns/{id}/aggregates`.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use tally_shared::http::ApiError;
use tally_shared::store::models::{Breakdown, Counters};

use crate::params::path_id;
use crate::respond::Report;
use crate::{unavailable, AppState, Ask};

#[derive(Serialize, utoipa::ToSchema)]
struct Aggregates {
    campaign_id: String,
    name: String,
    currency: String,
    /// Budget in `currency`; null when unknown.
    budget: Option<f64>,
    #[serde(flatten)]
    counters: Counters,
    /// Conversion value in `currency`.
    conversion_value: f64,
    ctr: f64,
    conversion_rate: f64,
    engagement_rate: f64,
    /// Conversion value / budget; null without a budget.
    roi: Option<f64>,
    by_influencer: Vec<Line>,
    by_platform: Vec<Line>,
    /// The range covered; all time unless `period` or `from`/`to` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Line {
    key: String,
    #[serde(flatten)]
    counters: Counters,
    conversion_value: f64,
    ctr: f64,
    conversion_rate: f64,
}

impl From<Breakdown> for Line {
    fn from(b: Breakdown) -> Line {
        Line {
            ctr: b.counters.ctr(),
            conversion_rate: b.counters.conversion_rate(),
            conversion_value: b.value_e4 as f64 / 10_000.0,
            key: b.key,
            counters: b.counters,
        }
    }
}

/// A campaign's totals and rates, by influencer and by platform.
#[utoipa::path(
    get,
    path = "/v1/campaigns/{campaign_id}/aggregates",
    tag = "reports",
    security(("bearer" = [])),
    params(("campaign_id" = String, Path), crate::openapi::Range, crate::openapi::Fresh),
    responses(
        (status = 200, description = "The campaign's aggregates (all time unless a range is given)", body = Report<Aggregates>),
        (status = 404, description = "The tenant has no such campaign"),
    )
)]
pub async fn aggregates(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(campaign_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut ask = Ask::new(
        &state,
        &headers,
        query.as_deref(),
        &["period", "from", "to"],
    )?;
    path_id("campaign_id", &campaign_id)?;
    let ranged = ["period", "from", "to"]
        .iter()
        .any(|name| ask.params.get(name).is_some());
    let range = if ranged {
        ask.params.range(ask.now(), 86_400)?
    } else {
        (0, u32::MAX)
    };
    ask.settle(&state).await?;
    let listing = format!("campaigns/{campaign_id}/aggregates");
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        let Some(campaign) = state
            .inner
            .models
            .campaign(&ask.tenant, &campaign_id, range)
            .await
            .map_err(unavailable)?
        else {
            return Err(ApiError::NotFound(format!("no campaign {campaign_id}")));
        };
        let answer = Aggregates {
            campaign_id,
            name: campaign.name,
            currency: campaign.currency,
            budget: (campaign.budget_e4 > 0).then(|| campaign.budget_e4 as f64 / 10_000.0),
            conversion_value: campaign.value_e4 as f64 / 10_000.0,
            ctr: campaign.ctr,
            conversion_rate: campaign.conversion_rate,
            engagement_rate: campaign.counters.engagement_rate(),
            roi: campaign.roi,
            counters: campaign.counters,
            by_influencer: campaign.by_influencer.into_iter().map(Line::from).collect(),
            by_platform: campaign.by_platform.into_iter().map(Line::from).collect(),
            from: ranged.then_some(range.0),
            to: ranged.then_some(range.1),
        };
        Ok(answer)
    })
    .await
}

//! `GET /v1/posts/{post_id}/metrics`.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use tally_shared::http::ApiError;

use crate::params::path_id;
use crate::respond::Report;
use crate::{unavailable, AppState, Ask};

/// A post's read model as the API shows it. `likes` is net of unlikes.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PostMetrics {
    pub post_id: String,
    pub likes: i64,
    pub shares: u64,
    pub comments: u64,
    pub views: u64,
    pub clicks: u64,
    pub conversions: u64,
    /// Conversion value per currency (ISO 4217 code to amount).
    pub conversion_value: BTreeMap<String, f64>,
    /// (likes + shares + comments) / views.
    pub engagement_rate: f64,
    /// Mean comment sentiment from -1 to 1, null without comments.
    pub sentiment: Option<f64>,
    pub influencer_id: String,
    pub campaign_id: String,
    pub platform: String,
    pub content_type: String,
    pub tags: Vec<String>,
    /// Events projected for the post.
    pub events: u64,
}

/// A post's counters, rates and attribution.
#[utoipa::path(
    get,
    path = "/v1/posts/{post_id}/metrics",
    tag = "reports",
    security(("bearer" = [])),
    params(("post_id" = String, Path), crate::openapi::Fresh),
    responses(
        (status = 200, description = "The post's metrics", body = Report<PostMetrics>),
        (status = 404, description = "The tenant has no such post"),
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(post_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut ask = Ask::new(&state, &headers, query.as_deref(), &[])?;
    path_id("post_id", &post_id)?;
    ask.settle(&state).await?;
    let listing = format!("posts/{post_id}/metrics");
    ask.answer(&state, &headers, &listing, || {
        load(&state, &ask.tenant, &post_id)
    })
    .await
}

/// A post's metrics from the read model; 404 for a post the tenant does
/// not have.
pub async fn load(state: &AppState, tenant: &str, post_id: &str) -> Result<PostMetrics, ApiError> {
    let post = state
        .inner
        .models
        .post(tenant, post_id)
        .await
        .map_err(unavailable)?;
    // Another tenant's post and an unknown post look the same: not found.
    let Some(post) = post else {
        return Err(ApiError::NotFound(format!("no post {post_id}")));
    };
    let counters = &post.counters;
    let metrics = PostMetrics {
        likes: counters.likes,
        shares: counters.shares,
        comments: counters.comments,
        views: counters.views,
        clicks: counters.clicks,
        conversions: counters.conversions,
        conversion_value: post
            .conversion_value_e4
            .iter()
            .map(|(currency, e4)| (currency.clone(), *e4 as f64 / 10_000.0))
            .collect(),
        engagement_rate: counters.engagement_rate(),
        sentiment: counters.sentiment(),
        events: counters.events,
        post_id: post.post_id,
        influencer_id: post.influencer_id,
        campaign_id: post.campaign_id,
        platform: post.platform,
        content_type: post.content_type,
        tags: post.tags,
    };
    Ok(metrics)
}

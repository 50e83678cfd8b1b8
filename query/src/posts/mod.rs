//! `GET /v1/posts/{post_id}/metrics`.

#[cfg(test)]
mod tests;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_shared::auth::Scope;
use tally_shared::event::is_valid_id;
use tally_shared::http::ApiError;
use tally_shared::store;

use crate::AppState;

/// A post's totals. `likes` is net of unlikes.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PostMetrics {
    pub post_id: String,
    pub likes: i64,
    pub shares: u64,
    pub comments: u64,
    pub views: u64,
    pub clicks: u64,
    /// Events projected for the post.
    pub events: u64,
}

#[derive(Row, Deserialize)]
struct Totals {
    likes: i64,
    shares: u64,
    comments: u64,
    views: u64,
    clicks: u64,
    events: u64,
}

const TOTALS: &str = "SELECT
        toInt64(sum(likes)) AS likes,
        toUInt64(sum(shares)) AS shares,
        toUInt64(sum(comments)) AS comments,
        toUInt64(sum(views)) AS views,
        toUInt64(sum(clicks)) AS clicks,
        toUInt64(count()) AS events
    FROM post_metrics FINAL
    WHERE tenant = ? AND post_id = ?";

pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(post_id): Path<String>,
) -> Result<Json<PostMetrics>, ApiError> {
    let principal = state.inner.auth.authenticate(&headers)?;
    principal.require(Scope::ReportsRead)?;
    if !is_valid_id(&post_id) {
        return Err(ApiError::Malformed(
            "post_id must be 1-128 characters of A-Z, a-z, 0-9, '_', ':' or '-'".into(),
        ));
    }
    let query = state
        .inner
        .clickhouse
        .query(TOTALS)
        .bind(principal.tenant.as_str())
        .bind(post_id.as_str());
    let totals: Totals = store::timed(&state.inner.clickhouse_config, query.fetch_one())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    // Another tenant's post and an unknown post look the same: not found.
    if totals.events == 0 {
        return Err(ApiError::NotFound(format!("no post {post_id}")));
    }
    Ok(Json(PostMetrics {
        post_id,
        likes: totals.likes,
        shares: totals.shares,
        comments: totals.comments,
        views: totals.views,
        clicks: totals.clicks,
        events: totals.events,
    }))
}

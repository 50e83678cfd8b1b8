//! Listings: late events (paged) and anomalies (spikes and bursts).

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use tally_shared::http::ApiError;
use tally_shared::store::models::{Burst, Granularity, LateEvent, Spike};

use crate::cursor::Page;
use crate::influencers::scope;
use crate::params::check_points;
use crate::respond::Report;
use crate::{unavailable, AppState, Ask};

#[derive(Serialize, utoipa::ToSchema)]
struct LateEvents {
    /// Late events of the tenant at the listing's position.
    total: u64,
    items: Vec<LateEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/late-events?limit&cursor`: newest first.
#[utoipa::path(
    get,
    path = "/v1/late-events",
    tag = "reports",
    security(("bearer" = [])),
    params(crate::openapi::Paging, crate::openapi::Fresh),
    responses(
        (status = 200, description = "Late events, newest first; pages pinned to the first page's position", body = Report<LateEvents>),
    )
)]
pub async fn late_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let allowed = ["limit", "cursor"];
    let mut ask = Ask::new(&state, &headers, query.as_deref(), &allowed)?;
    let limit = ask.params.limit()?;
    let scope = scope(&ask, "late-events", &allowed);
    let continued = ask
        .params
        .get("cursor")
        .map(|cursor| state.inner.cursors.check(&scope, cursor))
        .transpose()?;
    ask.settle(&state).await?;
    let listing = "late-events".to_owned();
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        let page = match continued {
            Some(page) => page,
            None => Page {
                position: ask.snapshot.position,
                after: u64::MAX,
                range: None,
            },
        };
        let (total, items) = state
            .inner
            .models
            .late_events_page(&ask.tenant, page.position, page.after, limit)
            .await
            .map_err(unavailable)?;
        let next_cursor = match items.last() {
            Some(last) if items.len() == limit as usize => Some(state.inner.cursors.issue(
                &scope,
                Page {
                    after: last.seq,
                    ..page
                },
            )),
            _ => None,
        };
        let answer = LateEvents {
            total,
            items,
            next_cursor,
        };
        Ok(answer)
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
struct Anomalies {
    from: u32,
    to: u32,
    /// Buckets where the influencer's engagements stand out against its own
    /// baseline (only with `influencer_id`).
    spikes: Vec<Spike>,
    /// One user acting on one post more than `burst_threshold` times in a
    /// minute.
    bursts: Vec<Burst>,
}

/// `GET /v1/anomalies?influencer_id&granularity&burst_threshold&period|from&to`.
#[utoipa::path(
    get,
    path = "/v1/anomalies",
    tag = "reports",
    security(("bearer" = [])),
    params(
        ("influencer_id" = Option<String>, Query, description = "Spikes are looked for only with an influencer"),
        crate::openapi::Buckets,
        ("burst_threshold" = Option<u64>, Query, minimum = 1, maximum = 1000000, description = "Events by one user on one post in a minute above which it is a burst (default 10)"),
        crate::openapi::Range,
        crate::openapi::Fresh,
    ),
    responses(
        (status = 200, description = "Spikes and bursts (default: the last 24 hours)", body = Report<Anomalies>),
    )
)]
pub async fn anomalies(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let allowed = [
        "influencer_id",
        "granularity",
        "burst_threshold",
        "period",
        "from",
        "to",
    ];
    let mut ask = Ask::new(&state, &headers, query.as_deref(), &allowed)?;
    let (from, to) = ask.params.range(ask.now(), 86_400)?;
    let granularity = ask.params.granularity(Granularity::Hour)?;
    check_points((from, to), granularity.seconds())?;
    let threshold = match ask.params.get("burst_threshold") {
        None => 10,
        Some(value) => value
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                ApiError::Malformed("burst_threshold must be an integer from 1 to 1000000".into())
            })?,
    };
    let influencer = ask.params.id("influencer_id")?;
    ask.settle(&state).await?;
    let listing = "anomalies".to_owned();
    let (ask, state) = (&ask, &state);
    ask.answer(state, &headers, &listing, || async move {
        let models = &state.inner.models;
        let spikes = match influencer {
            Some(influencer) => models
                .spikes(&ask.tenant, &influencer, granularity, from, to)
                .await
                .map_err(unavailable)?,
            None => Vec::new(),
        };
        let bursts = models
            .bursts(&ask.tenant, from, to, threshold)
            .await
            .map_err(unavailable)?;
        let answer = Anomalies {
            from,
            to,
            spikes,
            bursts,
        };
        Ok(answer)
    })
    .await
}

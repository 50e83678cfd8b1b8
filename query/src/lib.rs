//! The query API: reports read from the ClickHouse read models. It never
//! publishes to NATS and never writes to ClickHouse.
//!
//! Entry points: [`run`] binds the configured address; [`serve`] takes a
//! listener (tests bind `127.0.0.1:0`).

mod campaigns;
mod cursor;
mod dashboard;
mod freshness;
mod hot;
mod influencers;
mod lists;
mod live;
mod openapi;
mod params;
mod posts;
mod respond;
mod trends;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tally_shared::http::ratelimit::{bearer_token, forget_idle_buckets, RateHeaders, RateLimits};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use tally_shared::auth::{Authenticator, KeyError};
use tally_shared::config::{ClickHouseConfig, Config};
use tally_shared::http as api;
use tally_shared::store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Auth(#[from] tally_shared::auth::KeyError),
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Authenticator,
    models: store::models::Models,
    clickhouse_config: ClickHouseConfig,
    tracker: freshness::Tracker,
    hot: hot::Hot,
    rate_limits: RateLimits,
    live: live::Hub,
    cursors: cursor::Cursors,
    min_seq_wait: Duration,
    grace_seconds: u32,
    /// The dashboard and the like demo page.
    pages: dashboard::Pages,
}

impl AppState {
    pub fn new(config: &Config) -> Result<AppState, KeyError> {
        Ok(AppState {
            inner: Arc::new(Inner {
                auth: Authenticator::from_config(&config.auth)?,
                models: store::models::Models::connect(&config.clickhouse),
                clickhouse_config: config.clickhouse.clone(),
                tracker: freshness::Tracker::new(store::models::Models::connect(
                    &config.clickhouse,
                )),
                hot: hot::Hot::new(
                    config.query.cache_max_bytes,
                    Duration::from_millis(config.query.cache_fresh_ms),
                    Duration::from_millis(config.query.cache_stale_ms),
                ),
                live: live::Hub::default(),
                rate_limits: RateLimits::new(&config.query.rate_limit, 1),
                cursors: cursor::Cursors::new(config.query.cursor_secret.expose_secret()),
                min_seq_wait: Duration::from_millis(config.query.min_seq_wait_ms),
                grace_seconds: config.windows.grace_seconds,
                pages: dashboard::Pages::new(config),
            }),
        })
    }
}

/// The routes and their description, from one list: a route cannot be
/// added without its `#[utoipa::path]`.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(posts::metrics))
        .routes(routes!(live::live))
        .routes(routes!(influencers::engagement))
        .routes(routes!(influencers::followers))
        .routes(routes!(influencers::rankings))
        .routes(routes!(campaigns::aggregates))
        .routes(routes!(trends::trends))
        .routes(routes!(lists::late_events))
        .routes(routes!(lists::anomalies))
        .routes(routes!(api::healthz))
        .routes(routes!(tally_shared::metrics::endpoint))
        .routes(routes!(readyz))
        .routes(routes!(api::openapi::document))
}

/// The query API's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    openapi::report_conventions(&mut doc);
    doc
}

pub fn router(state: AppState, config: &tally_shared::config::QueryConfig) -> Router {
    let (router, _) = routes().split_for_parts();
    // The web pages are not API operations: routed beside, not described.
    router
        .merge(dashboard::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            std::time::Duration::from_millis(config.request_timeout_ms),
            api::deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            "query",
            api::observe::observe,
        ))
        .with_state(state)
}

/// What every report handler starts from: the caller (authenticated, with
/// `reports:read`) and its parameters; then, once the handler has validated
/// them, the read models' position (after waiting for `min_seq` when asked)
/// from [`Ask::settle`]. Bad input is answered before ClickHouse is asked.
struct Ask {
    tenant: String,
    rate: RateHeaders,
    params: params::Params,
    snapshot: freshness::Snapshot,
    stale: bool,
}

impl Ask {
    fn new(
        state: &AppState,
        headers: &axum::http::HeaderMap,
        query: Option<&str>,
        allowed: &[&str],
    ) -> Result<Ask, api::ApiError> {
        let principal = state.inner.auth.authenticate(headers)?;
        principal.require(tally_shared::auth::Scope::ReportsRead)?;
        let rate = state
            .inner
            .rate_limits
            .spend(&principal.tenant, bearer_token(headers), 1)?;
        let mut names = allowed.to_vec();
        names.push("min_seq");
        let params = params::Params::parse(query, &names)?;
        params.min_seq()?;
        Ok(Ask {
            tenant: principal.tenant,
            rate,
            params,
            snapshot: freshness::Snapshot::default(),
            stale: false,
        })
    }

    /// Reads the read models' position, waiting for `min_seq` if asked.
    async fn settle(&mut self, state: &AppState) -> Result<(), api::ApiError> {
        let (snapshot, stale) = state
            .inner
            .tracker
            .at_least(self.params.min_seq()?, state.inner.min_seq_wait)
            .await?;
        self.snapshot = snapshot;
        self.stale = stale;
        Ok(())
    }

    /// The answer `compute` gives, through the hot tier (keyed by tenant,
    /// `listing` and every parameter but `min_seq`), with this request's
    /// freshness.
    async fn answer<T, F, Fut>(
        &self,
        state: &AppState,
        headers: &axum::http::HeaderMap,
        listing: &str,
        compute: F,
    ) -> Result<axum::response::Response, api::ApiError>
    where
        T: serde::Serialize,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, api::ApiError>>,
    {
        let key = format!("{}\n{listing}\n{}", self.tenant, self.params.canonical());
        let (entry, source) = state
            .inner
            .hot
            .get(key, self.snapshot.position, || async {
                let data = compute().await?;
                Ok(serde_json::to_vec(&data)
                    .expect("report data serialises")
                    .into())
            })
            .await?;
        metrics::counter!(tally_shared::metrics::QUERY_ANSWERS, "source" => source.label())
            .increment(1);
        let freshness = freshness::Freshness::of(
            self.snapshot,
            time::OffsetDateTime::now_utc(),
            source != hot::Source::Store,
            self.stale || source == hot::Source::Fallback,
        );
        let response = respond::tagged(headers, &entry.json, &entry.etag, freshness);
        Ok(axum::response::IntoResponse::into_response((
            self.rate.clone(),
            response,
        )))
    }

    /// Now, in seconds since the epoch.
    fn now(&self) -> u32 {
        u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(u32::MAX)
    }
}

/// A read model query failed: the store is unavailable (503).
fn unavailable(e: store::StoreError) -> api::ApiError {
    api::ApiError::Unavailable(e.to_string())
}

/// `/readyz`: ClickHouse answers and its schema is current.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "Ready to serve", body = String, content_type = "text/plain"),
        (status = 503, description = "ClickHouse is unavailable or its schema is not current", body = String, content_type = "text/plain"),
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match store::pending_migrations(&state.inner.clickhouse_config).await {
        Ok(pending) if pending.is_empty() => (StatusCode::OK, "ready".into()),
        Ok(pending) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("migrations pending: {pending:?}"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ClickHouse unavailable".into(),
            )
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let addr = config.query.listen;
    let listener = tally_shared::http::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    tally_shared::metrics::handle();
    let state = AppState::new(&config)?;
    {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            forget_idle_buckets(&state.inner.rate_limits, shutdown).await;
        });
    }
    let app = router(state, &config.query);
    tracing::info!(addr = %listener.local_addr().map_err(Error::Serve)?, "query API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

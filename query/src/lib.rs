//! The query API: reports read from the ClickHouse read models. It never
//! publishes to NATS and never writes to ClickHouse.
//!
//! Entry points: [`run`] binds the configured address; [`serve`] takes a
//! listener (tests bind `127.0.0.1:0`).

mod posts;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tally_shared::auth::{Authenticator, KeyError};
use tally_shared::config::{ClickHouseConfig, Config};
use tally_shared::http as api;
use tally_shared::store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
}

impl AppState {
    pub fn new(config: &Config) -> Result<AppState, KeyError> {
        Ok(AppState {
            inner: Arc::new(Inner {
                auth: Authenticator::from_config(&config.auth)?,
                models: store::models::Models::connect(&config.clickhouse),
                clickhouse_config: config.clickhouse.clone(),
            }),
        })
    }
}

pub fn router(state: AppState, config: &tally_shared::config::QueryConfig) -> Router {
    Router::new()
        .route("/v1/posts/{post_id}/metrics", get(posts::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(readyz))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            std::time::Duration::from_millis(config.request_timeout_ms),
            api::deadline,
        ))
        .with_state(state)
}

/// `/readyz`: ClickHouse answers and its schema is current.
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
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let app = router(AppState::new(&config)?, &config.query);
    tracing::info!(addr = %listener.local_addr().map_err(Error::Serve)?, "query API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

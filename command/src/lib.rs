//! The command API: validates engagement events, deduplicates them and
//! appends them to JetStream. It never reads ClickHouse.
//!
//! Entry points: [`run`] binds the configured address; [`serve`] takes a
//! listener (tests bind `127.0.0.1:0`).

mod catalogue;
mod ingest;
mod likes;
mod metrics;
pub mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::Router;
use tally_shared::auth::{Authenticator, KeyError};
use tally_shared::config::{CommandConfig, Config};
use tally_shared::event::Limits;
use tally_shared::http as api;
use tally_shared::http::ratelimit::forget_idle_buckets;
use tally_shared::nats;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use ingest::{AppendError, Publisher};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Auth(#[from] tally_shared::auth::KeyError),
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Authenticator,
    publisher: Publisher,
    limits: Limits,
    max_batch_events: usize,
    rate_limits: tally_shared::http::ratelimit::RateLimits,
    catalogue: Arc<catalogue::Catalogue>,
    webhooks: tally_shared::config::WebhookConfig,
    /// The event stream exists (applied at start-up).
    stream_ready: AtomicBool,
    nats: async_nats::Client,
}

impl AppState {
    pub fn new(config: &Config, nats: async_nats::Client) -> Result<AppState, KeyError> {
        let js = nats::jetstream(nats.clone(), &config.nats);
        Ok(AppState {
            inner: Arc::new(Inner {
                auth: Authenticator::from_config(&config.auth)?,
                publisher: Publisher::new(
                    js,
                    nats::events_stream_config(&config.nats).name,
                    Duration::from_millis(config.nats.publish_timeout_ms),
                ),
                limits: Limits::from_config(&config.command),
                max_batch_events: config.command.max_batch_events,
                webhooks: config.webhooks.clone(),
                catalogue: Arc::new(catalogue::Catalogue::new(
                    config.command.catalogue_cache_entries,
                )),
                rate_limits: tally_shared::http::ratelimit::RateLimits::new(
                    &config.rate_limit,
                    u32::try_from(config.command.max_batch_events).unwrap_or(u32::MAX),
                ),
                stream_ready: AtomicBool::new(false),
                nats,
            }),
        })
    }
}

/// The routes and their description, from one list: a route cannot be
/// added without its `#[utoipa::path]`.
fn routes(config: &CommandConfig) -> OpenApiRouter<AppState> {
    let body_limit = DefaultBodyLimit::max(config.max_body_bytes);
    let batch_limit = DefaultBodyLimit::max(config.max_batch_bytes);
    OpenApiRouter::new()
        .routes(routes!(ingest::post_event).layer(body_limit))
        .routes(routes!(ingest::batch::post_batch).layer(batch_limit))
        .routes(routes!(
            likes::get_like,
            likes::put_like,
            likes::delete_like
        ))
        .routes(routes!(webhooks::receive, webhooks::verify_subscription).layer(batch_limit))
        .routes(routes!(api::healthz))
        .routes(routes!(tally_shared::metrics::endpoint))
        .routes(routes!(readyz))
        .routes(routes!(api::openapi::document))
}

/// The HTTP routes.
pub fn router(state: AppState, config: &CommandConfig) -> Router {
    let (router, _) = routes(config).split_for_parts();
    router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Duration::from_millis(config.request_timeout_ms),
            api::deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            "command",
            api::observe::observe,
        ))
        .with_state(state)
}

/// The command API's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(&Config::defaults().command).into_openapi()
}

/// `/readyz`: NATS connected and the event stream applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "Ready to serve", body = String, content_type = "text/plain"),
        (status = 503, description = "A dependency is not ready", body = String, content_type = "text/plain"),
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let connected = state.inner.nats.connection_state() == async_nats::connection::State::Connected;
    if connected && state.inner.stream_ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds the configured address and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let addr = config.command.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

/// Serves on `listener` until `shutdown`; in-flight requests finish first.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    tally_shared::metrics::handle();
    let client = nats::connect(&config.nats, "tally-command").await?;
    let state = AppState::new(&config, client)?;
    tokio::spawn(apply_stream(
        state.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            forget_idle_buckets(&state.inner.rate_limits, shutdown).await;
        });
    }
    tokio::spawn(catalogue::follow(
        state.inner.catalogue.clone(),
        nats::jetstream(state.inner.nats.clone(), &config.nats),
        config.nats.clone(),
        shutdown.clone(),
    ));
    let app = router(state, &config.command);
    tracing::info!(addr = %listener.local_addr().map_err(Error::Serve)?, "command API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

/// Applies the stream definition, retrying until NATS answers.
async fn apply_stream(state: AppState, config: Config, shutdown: CancellationToken) {
    let js = nats::jetstream(state.inner.nats.clone(), &config.nats);
    let mut backoff = Duration::from_millis(100);
    loop {
        match nats::ensure_events_stream(&js, &config.nats).await {
            Ok(_) => {
                state.inner.stream_ready.store(true, Ordering::Release);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "event stream not applied yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

//! The command API: validates engagement events, deduplicates them and
//! appends them to JetStream. It never reads ClickHouse.
//!
//! Entry points: [`run`] binds the configured address; [`serve`] takes a
//! listener (tests bind `127.0.0.1:0`).

mod admission;
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
use tally_shared::auth::{Authenticator, KeyError, Principal};
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
    auth: Arc<Authenticator>,
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
                auth: Arc::new(Authenticator::from_config(&config.auth)?),
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

impl AppState {
    /// The caller: as admission authenticated it, or from the bearer token.
    fn caller(
        &self,
        admitted: Option<axum::Extension<Principal>>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, api::ApiError> {
        match admitted {
            Some(axum::Extension(principal)) => Ok(principal),
            None => Ok(self.inner.auth.authenticate(headers)?),
        }
    }
}

/// The routes and their description, from one list: a route cannot be
/// added without its `#[utoipa::path]`. `gate` checks bearer tokens before
/// a write takes room (see [`admission`]); `None` for the description only.
fn routes(config: &CommandConfig, gate: Option<Arc<Authenticator>>) -> OpenApiRouter<AppState> {
    let body_limit = DefaultBodyLimit::max(config.max_body_bytes);
    let batch_limit = DefaultBodyLimit::max(config.max_batch_bytes);
    // One room shared by every write route, each with its own body limit.
    let room = admission::Admission::new(config);
    let admit = |limit: usize, gate: Option<Arc<Authenticator>>| {
        axum::middleware::from_fn_with_state(room.route(limit, gate), admission::admit)
    };
    OpenApiRouter::new()
        .routes(
            routes!(ingest::post_event)
                .layer(body_limit)
                .layer(admit(config.max_body_bytes, gate.clone())),
        )
        .routes(
            routes!(ingest::batch::post_batch)
                .layer(batch_limit)
                .layer(admit(config.max_batch_bytes, gate.clone())),
        )
        .routes(
            routes!(likes::get_like, likes::put_like, likes::delete_like)
                .layer(admit(config.max_body_bytes, gate)),
        )
        // Signed over the body: no token to check before taking room.
        .routes(
            routes!(webhooks::receive, webhooks::verify_subscription)
                .layer(batch_limit)
                .layer(admit(config.max_batch_bytes, None)),
        )
        .routes(routes!(api::healthz))
        .routes(routes!(tally_shared::metrics::endpoint))
        .routes(routes!(readyz))
        .routes(routes!(api::openapi::document))
}

/// The HTTP routes.
pub fn router(state: AppState, config: &CommandConfig) -> Router {
    let (router, _) = routes(config, Some(state.inner.auth.clone())).split_for_parts();
    let router = router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);
    // Inside the observer, so preflights are logged and counted too.
    let router = match cors(config) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
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

/// CORS for the pages of `command.cors_allowed_origins` (the like demo the
/// query service serves): the like endpoints and ingest with a bearer
/// token, preflights answered here. `None` when no origin is allowed.
fn cors(config: &CommandConfig) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::PUT, Method::DELETE, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                api::observe::REQUEST_ID,
                api::observe::TRACEPARENT,
            ])
            .expose_headers([
                header::RETRY_AFTER,
                name("ratelimit"),
                name("ratelimit-policy"),
                api::observe::REQUEST_ID,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The command API's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(&Config::defaults().command, None).into_openapi()
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
    let listener = tally_shared::http::bind(addr).map_err(|source| Error::Bind { addr, source })?;
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

#[cfg(test)]
mod cors_tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::put;
    use axum::Router;
    use tally_shared::config::Config;
    use tower::ServiceExt;

    /// A route behind the layer [`super::cors`] makes of `origins`.
    fn app(origins: &[&str]) -> Router {
        let mut config = Config::defaults().command;
        config.cors_allowed_origins = origins.iter().map(|o| o.to_string()).collect();
        let app = Router::new().route(
            "/v1/posts/{p}/likes/{u}",
            put(|| async { "ok" }).delete(|| async { "ok" }),
        );
        match super::cors(&config) {
            Some(cors) => app.layer(cors),
            None => app,
        }
    }

    async fn preflight(
        app: Router,
        origin: &str,
        method: &str,
    ) -> (StatusCode, Vec<(String, String)>) {
        let request = Request::options("/v1/posts/p1/likes/u1")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("access-control-"))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        (response.status(), headers)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn an_allowed_origin_may_put_and_delete_with_a_token() {
        for method in ["PUT", "DELETE"] {
            let (status, headers) = preflight(
                app(&["http://127.0.0.1:8471"]),
                "http://127.0.0.1:8471",
                method,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{headers:?}");
            assert_eq!(
                header(&headers, "access-control-allow-origin"),
                Some("http://127.0.0.1:8471")
            );
            let methods = header(&headers, "access-control-allow-methods").unwrap();
            assert!(methods.contains(method), "{methods}");
            let allowed = header(&headers, "access-control-allow-headers").unwrap();
            assert!(allowed.contains("authorization"), "{allowed}");
        }
    }

    #[tokio::test]
    async fn other_origins_get_no_cors_headers() {
        let (_, headers) = preflight(
            app(&["http://127.0.0.1:8471"]),
            "http://evil.example",
            "PUT",
        )
        .await;
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            None,
            "{headers:?}"
        );
        // The default: no origin allowed, no layer at all.
        let (_, headers) = preflight(app(&[]), "http://127.0.0.1:8471", "PUT").await;
        assert!(headers.is_empty(), "{headers:?}");
    }
}

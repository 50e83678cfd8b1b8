//! The projector: folds the event stream into the ClickHouse read models.
//!
//! Several workers (processes) share one durable pull consumer; adding one
//! needs no configuration change. Or one worker has a consumer to itself
//! (`projector.exclusive`) and acknowledges each batch with one cumulative
//! ack. A worker acknowledges a message only after its rows are committed in
//! ClickHouse. The projector never publishes events.
//!
//! Entry points: [`run`] binds the configured health address; [`serve`] takes
//! a listener (tests bind `127.0.0.1:0`).

pub mod deadletter;
pub mod fold;
pub mod positions;
pub mod rollup;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tally_shared::config::Config;
use tally_shared::http as api;
use tally_shared::{nats, store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use worker::{Acks, Ended, Halted, Progress, Worker};

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
    Halted(#[from] Halted),
}

/// Binds the configured health address and projects until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let addr = config.projector.listen;
    let listener = tally_shared::http::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

/// Serves health endpoints on `listener` and runs one worker until
/// `shutdown`; the worker finishes or abandons its batch before returning.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    tally_shared::metrics::handle();
    let progress = Arc::new(Progress::default());
    let health = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(tally_shared::metrics::endpoint))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            "projector",
            api::observe::observe,
        ))
        .with_state(progress.clone());
    tracing::info!(addr = %listener.local_addr().map_err(Error::Serve)?, "projector health listening");
    let http =
        axum::serve(listener, health).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let http = tokio::spawn(async move { http.await });

    let client = nats::connect(&config.nats, "tally-projector").await?;
    let mut outcome = Ok(());
    let mut first = true;
    loop {
        let worker = match start(&config, client.clone(), &progress, &shutdown, first).await {
            Ok(Some(worker)) => worker,
            Ok(None) => break,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        first = false;
        match worker.run(shutdown.clone()).await {
            Ok(Ended::Restart) => continue,
            Ok(Ended::Shutdown) => break,
            Err(e) => {
                outcome = Err(e.into());
                break;
            }
        }
    }
    shutdown.cancel();
    match http.await {
        Ok(result) => result.map_err(Error::Serve)?,
        Err(e) => return Err(Error::Serve(std::io::Error::other(e))),
    }
    outcome
}

/// Migrates ClickHouse and binds the consumer, retrying until both answer;
/// the `first` time, also starts the position and rollup tasks (later, a
/// worker that ended with [`Ended::Restart`] only binds the consumer again).
/// `Ok(None)` if shutdown came first; an error no retry mends is returned.
async fn start(
    config: &Config,
    client: async_nats::Client,
    progress: &Arc<Progress>,
    shutdown: &CancellationToken,
    first: bool,
) -> Result<Option<Worker>, Error> {
    let js = nats::jetstream(client, &config.nats);
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            if first {
                store::migrate(&config.clickhouse)
                    .await
                    .map_err(|e| Err(e.to_string()))?;
            }
            let stream = nats::ensure_events_stream(&js, &config.nats)
                .await
                .map_err(|e| Err(e.to_string()))?;
            nats::ensure_dead_letters_stream(&js, &config.nats)
                .await
                .map_err(|e| Err(e.to_string()))?;
            let consumer = nats::ensure_projector_consumer(
                &stream,
                &config.projector.consumer,
                config.projector.exclusive,
                progress.position.load(Ordering::Relaxed),
            )
            .await
            .map_err(|e| match e {
                fatal @ nats::NatsError::AckPolicy { .. } => Ok(fatal),
                e => Err(e.to_string()),
            })?;
            Ok::<_, Result<nats::NatsError, String>>((stream, consumer))
        };
        match attempt.await {
            Ok((_, consumer)) if !first => {
                return Ok(Some(worker(config, &js, consumer, progress.clone())));
            }
            Ok((stream, consumer)) => {
                progress.ready.store(true, Ordering::Release);
                tracing::info!(consumer = %config.projector.consumer, "projector ready");
                tokio::spawn(positions::run(
                    stream,
                    consumer.clone(),
                    config.clickhouse.clone(),
                    Duration::from_millis(config.projector.position_interval_ms),
                    progress.clone(),
                    shutdown.clone(),
                ));
                if let Some(settings) = rollup::Settings::of(&config.projector) {
                    rollup::spawn(config.clickhouse.clone(), settings, shutdown.clone());
                }
                return Ok(Some(worker(config, &js, consumer, progress.clone())));
            }
            Err(Ok(fatal)) => return Err(fatal.into()),
            Err(Err(e)) => tracing::warn!(error = %e, "projector not ready yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn worker(
    config: &Config,
    js: &async_nats::jetstream::Context,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    progress: Arc<Progress>,
) -> Worker {
    let fold_options = fold::FoldOptions {
        grace_seconds: config.windows.grace_seconds,
    };
    Worker::new(
        consumer,
        deadletter::DeadLetters::new(js.clone()),
        &config.clickhouse,
        &config.projector,
        fold_options,
        progress,
    )
}

/// `/readyz`: schema migrated and consumer bound; reports progress.
async fn readyz(State(progress): State<Arc<Progress>>) -> (StatusCode, Json<serde_json::Value>) {
    let ready = progress.ready.load(Ordering::Acquire);
    let body = json!({
        "ready": ready,
        "last_seq": progress.last_seq.load(Ordering::Relaxed),
        "projected": progress.projected.load(Ordering::Relaxed),
        "position": progress.position.load(Ordering::Relaxed),
        "watermark": progress.watermark.load(Ordering::Relaxed),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

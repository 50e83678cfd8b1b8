//! The worker loop: fetch a batch from the durable pull consumer, fold it,
//! write the rows to ClickHouse, and only then acknowledge the messages.
//!
//! A crash anywhere before the acks means redelivery; the rows are keyed by
//! stream sequence, so writing them again changes nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use tally_shared::config::{ClickHouseConfig, ProjectorConfig};
use tally_shared::event::StoredEvent;
use tally_shared::store::{self, StoreError};
use tokio_util::sync::CancellationToken;

use crate::fold::{fold, EventRow, PostMetricRow, Rows};

/// What the worker reports to the health endpoint.
#[derive(Default)]
pub struct Progress {
    /// The consumer is bound and the schema is migrated.
    pub ready: AtomicBool,
    /// Highest stream sequence written and acknowledged.
    pub last_seq: AtomicU64,
    /// Events projected since start.
    pub projected: AtomicU64,
}

pub struct Worker {
    consumer: PullConsumer,
    clickhouse: clickhouse::Client,
    clickhouse_config: ClickHouseConfig,
    batch_size: usize,
    fetch_wait: Duration,
    progress: Arc<Progress>,
}

impl Worker {
    pub fn new(
        consumer: PullConsumer,
        clickhouse_config: &ClickHouseConfig,
        config: &ProjectorConfig,
        progress: Arc<Progress>,
    ) -> Worker {
        Worker {
            consumer,
            clickhouse: store::client(clickhouse_config),
            clickhouse_config: clickhouse_config.clone(),
            batch_size: config.batch_size.max(1),
            fetch_wait: Duration::from_millis(config.fetch_wait_ms.max(10)),
            progress,
        }
    }

    /// Runs until `shutdown`. A batch in flight when it fires is finished if
    /// its write succeeds, or abandoned unacknowledged (to be redelivered).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            let batch = match self.fetch().await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "fetching from JetStream failed; retrying");
                    backoff.wait(&shutdown).await;
                    continue;
                }
            };
            backoff.reset();
            if batch.is_empty() {
                continue;
            }
            self.project(batch, &shutdown).await;
        }
        tracing::info!("projector worker stopped");
    }

    /// One batch: at most `batch_size` messages, waiting at most `fetch_wait`.
    async fn fetch(&self) -> Result<Vec<Message>, async_nats::Error> {
        let mut messages = self
            .consumer
            .fetch()
            .max_messages(self.batch_size)
            .expires(self.fetch_wait)
            .messages()
            .await?;
        let mut batch = Vec::with_capacity(self.batch_size);
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => batch.push(message),
                // A status such as a server timeout ends the batch early;
                // what was fetched so far is still good.
                Err(e) => {
                    tracing::debug!(error = %e, "fetch ended early");
                    break;
                }
            }
        }
        Ok(batch)
    }

    async fn project(&self, batch: Vec<Message>, shutdown: &CancellationToken) {
        let mut events = Vec::with_capacity(batch.len());
        let mut unreadable = Vec::new();
        for message in &batch {
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    tracing::error!(error = %e, "message without JetStream metadata");
                    continue;
                }
            };
            match StoredEvent::decode(&message.payload) {
                Ok(event) => events.push((seq, event)),
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable event; it cannot be projected");
                    unreadable.push(message);
                }
            }
        }
        let rows = fold(events.iter().map(|(seq, event)| (*seq, event)));
        let mut backoff = Backoff::new();
        loop {
            match self.write(&rows).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, events = rows.events.len(), "writing to ClickHouse failed; retrying");
                    // Keep the batch ours while we retry.
                    for message in &batch {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    if shutdown.is_cancelled() {
                        tracing::info!("abandoning an unwritten batch; it will be redelivered");
                        return;
                    }
                    backoff.wait(shutdown).await;
                }
            }
        }
        for message in &unreadable {
            // Never blocks the events behind it. The dead-letter stream
            // replaces this termination in a later version.
            let _ = message.ack_with(AckKind::Term).await;
        }
        let max_seq = events.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        for message in batch {
            if let Err(e) = message.ack().await {
                // The rows are written; a redelivery rewrites identical rows.
                tracing::warn!(error = %e, "ack failed; the event will be redelivered harmlessly");
            }
        }
        self.progress.last_seq.fetch_max(max_seq, Ordering::Relaxed);
        self.progress
            .projected
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        tracing::debug!(events = events.len(), max_seq, "projected batch");
    }

    async fn write(&self, rows: &Rows) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let config = &self.clickhouse_config;
        let mut insert = store::timed(config, self.clickhouse.insert::<EventRow>("events")).await?;
        for row in &rows.events {
            insert.write(row).await?;
        }
        store::timed(config, insert.end()).await?;
        let mut insert = store::timed(
            config,
            self.clickhouse.insert::<PostMetricRow>("post_metrics"),
        )
        .await?;
        for row in &rows.post_metrics {
            insert.write(row).await?;
        }
        store::timed(config, insert.end()).await
    }
}

/// Exponential backoff from 100 ms to 5 s, cut short by shutdown.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }

    async fn wait(&mut self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

//! The worker loop: fetch a batch from the durable pull consumer, fold it,
//! write the rows to ClickHouse, and only then acknowledge the messages.
//!
//! A crash anywhere before the acks means redelivery; the rows are keyed by
//! stream sequence, so writing them again changes nothing. An event that is
//! unreadable (the input's fault) is retried with a delay and moved to the
//! dead-letter stream on its last attempt, without holding up the rest;
//! a ClickHouse failure (the world's fault) is retried until it passes.

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

use crate::deadletter::DeadLetters;
use crate::fold::{fold, FoldOptions, Rows};
use metrics::counter;
use tally_shared::metrics as names;

/// How long after a pull request's expiry its messages may still arrive.
const FETCH_GRACE: Duration = Duration::from_millis(200);

/// What the worker reports to the health endpoint.
#[derive(Default)]
pub struct Progress {
    /// The consumer is bound and the schema is migrated.
    pub ready: AtomicBool,
    /// Highest stream sequence written and acknowledged.
    pub last_seq: AtomicU64,
    /// Events projected since start.
    pub projected: AtomicU64,
    /// Stream position every read model reflects (the consumer's ack floor).
    pub position: AtomicU64,
    /// Event-time watermark, seconds since the epoch.
    pub watermark: AtomicU64,
}

pub struct Worker {
    consumer: PullConsumer,
    clickhouse: clickhouse::Client,
    clickhouse_config: ClickHouseConfig,
    batch_size: usize,
    fetch_wait: Duration,
    max_attempts: i64,
    retry_delay: Duration,
    fold_options: FoldOptions,
    dead_letters: DeadLetters,
    progress: Arc<Progress>,
}

impl Worker {
    pub fn new(
        consumer: PullConsumer,
        dead_letters: DeadLetters,
        clickhouse_config: &ClickHouseConfig,
        config: &ProjectorConfig,
        fold_options: FoldOptions,
        progress: Arc<Progress>,
    ) -> Worker {
        Worker {
            consumer,
            clickhouse: store::client(clickhouse_config),
            clickhouse_config: clickhouse_config.clone(),
            batch_size: config.batch_size.max(1),
            fetch_wait: Duration::from_millis(config.fetch_wait_ms.max(10)),
            max_attempts: config.max_attempts.max(1),
            retry_delay: Duration::from_millis(config.retry_delay_ms),
            fold_options,
            dead_letters,
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
    /// The server stops serving a pull request when it expires, but
    /// nats-server 2.9 sends no end-of-request status after a partial
    /// delivery, and the client would then wait 5 s more. Our own deadline
    /// ends the batch shortly after the expiry instead (what was received is
    /// kept and acked normally). Found by the fault test: redeliveries came
    /// a few per pull, and each pull then idled for 5 s.
    async fn fetch(&self) -> Result<Vec<Message>, async_nats::Error> {
        let mut batch = Vec::with_capacity(self.batch_size);
        let collect = async {
            let mut messages = self
                .consumer
                .fetch()
                .max_messages(self.batch_size)
                .expires(self.fetch_wait)
                .messages()
                .await?;
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
            Ok::<(), async_nats::Error>(())
        };
        let deadline = self.fetch_wait + FETCH_GRACE;
        match tokio::time::timeout(deadline, collect).await {
            Ok(result) => result?,
            Err(_) => tracing::trace!(received = batch.len(), "pull request expired"),
        }
        Ok(batch)
    }

    async fn project(&self, batch: Vec<Message>, shutdown: &CancellationToken) {
        let mut events = Vec::with_capacity(batch.len());
        // Messages that are the input's fault, with their sequence, delivery
        // count and error.
        let mut poison: Vec<(usize, u64, i64, String)> = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            let info = match message.info() {
                Ok(info) => (info.stream_sequence, info.delivered),
                Err(e) => {
                    tracing::error!(error = %e, "message without JetStream metadata");
                    continue;
                }
            };
            match StoredEvent::decode(&message.payload) {
                Ok(event) => events.push((info.0, event)),
                Err(e) => poison.push((index, info.0, info.1, e.to_string())),
            }
        }
        let rows = fold(
            events.iter().map(|(seq, event)| (*seq, event)),
            self.fold_options,
        );
        let mut backoff = Backoff::new();
        loop {
            match self.write(&rows).await {
                Ok(()) => break,
                Err(e) => {
                    counter!(names::CLICKHOUSE_ERRORS).increment(1);
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
        let mut settled = vec![false; batch.len()];
        for (index, seq, attempts, error) in &poison {
            let message = &batch[*index];
            settled[*index] = true;
            if *attempts < self.max_attempts {
                tracing::warn!(seq, attempts, %error, "event cannot be projected; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(self.retry_delay))).await;
                continue;
            }
            match self
                .dead_letters
                .send(message, *seq, *attempts, error)
                .await
            {
                Ok(()) => {
                    tracing::error!(seq, attempts, %error, "event moved to the dead-letter stream");
                    let _ = message.ack().await;
                }
                // Not acked: it comes back and is dead-lettered then.
                Err(e) => tracing::warn!(seq, error = %e, "dead-lettering failed; will retry"),
            }
        }
        let max_seq = events.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        for (message, settled) in batch.iter().zip(settled) {
            if settled {
                continue;
            }
            if let Err(e) = message.ack().await {
                // The rows are written; a redelivery rewrites identical rows.
                tracing::warn!(error = %e, "ack failed; the event will be redelivered harmlessly");
            }
        }
        self.progress.last_seq.fetch_max(max_seq, Ordering::Relaxed);
        self.progress
            .projected
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        counter!(names::EVENTS_PROJECTED).increment(events.len() as u64);
        counter!(names::LATE_EVENTS).increment(rows.late.len() as u64);
        tracing::debug!(events = events.len(), max_seq, "projected batch");
    }

    /// Writes a batch's rows, all of it under one deadline: every await
    /// inside (each row's write can wait on the request body's backpressure)
    /// is bounded, so a wedged connection cannot stall the worker.
    async fn write(&self, rows: &Rows) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let limit = Duration::from_millis(self.clickhouse_config.timeout_ms);
        match tokio::time::timeout(limit, crate::fold::write(&self.clickhouse, rows)).await {
            Ok(result) => result,
            // Dropping the inserts aborts their requests.
            Err(_) => Err(StoreError::Timeout(limit)),
        }
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

//! The worker loop: fetch a batch from the durable pull consumer, fold it,
//! write the rows to ClickHouse, and only then acknowledge the messages.
//! Fetching and folding the next batch overlaps the current batch's write.
//!
//! A crash anywhere before the acks means redelivery; the rows are keyed by
//! stream sequence, so writing them again changes nothing. An event that is
//! unreadable (the input's fault) is retried with a delay and moved to the
//! dead-letter stream on its last attempt, without holding up the rest;
//! a ClickHouse failure (the world's fault) is retried until it passes.
//!
//! Acknowledging ([`Acks`]): workers sharing the consumer ack each event.
//! A worker alone on its consumer (`projector.exclusive`) acks each batch
//! once, cumulatively, which is only right because batches are settled in
//! the order they were fetched and no batch is ever skipped: a batch that
//! cannot be settled stops the settling of every batch after it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use tally_shared::config::{ClickHouseConfig, ProjectorConfig};
use tally_shared::store::{self, StoreError};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

mod fetch;

use crate::deadletter::DeadLetters;
use crate::fold::{FoldOptions, Quarantine, Rows};
use fetch::Fetcher;
use metrics::counter;
use tally_shared::metrics as names;
use tracing::Instrument;

/// Batches a worker holds unacknowledged at most: one per pipeline stage.
const IN_FLIGHT: usize = 3;

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
    /// Told after each batch acked: the position may have moved.
    pub acked: tokio::sync::Notify,
}

pub struct Worker {
    fetcher: Fetcher,
    writer: Writer,
    /// The consumer sequence of the next delivery (cumulative acks check
    /// that none is missed).
    next_delivery: u64,
}

/// How [`Worker::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown.
    Shutdown,
    /// A delivery never reached the worker (a pull request's last messages
    /// can arrive after the worker stopped waiting for them), so no later
    /// cumulative ack is safe: bind the consumer again (which starts it
    /// again after its ack floor) and run a new worker.
    Restart,
}

/// Whether a batch's deliveries continue, without a gap, from the one
/// expected next: `first` and `last` are the batch's first and last consumer
/// sequences, and a pull request delivers in consumer-sequence order, one
/// sequence per message.
pub(crate) fn continues(expected: u64, first: u64, last: u64, len: usize) -> bool {
    first == expected && last.checked_sub(first).map(|d| d + 1) == Some(len as u64)
}

/// Why a worker stopped settling batches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Left {
    /// Shutdown came before a batch was settled: the rest are nak'ed.
    Shutdown,
    /// A delivery was missed: the rest are nak'ed, and the worker binds its
    /// consumer again.
    Gap,
    /// The consumer was re-created under the worker (a second worker bound
    /// it): nothing more goes to it, and the worker stops.
    Replaced(String),
}

/// How a worker acknowledges what it has written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// One ack per event: workers share the consumer (ack policy explicit).
    Each,
    /// One ack per batch, of its highest stream sequence, which acks every
    /// event delivered up to it (ack policy all): the worker is the
    /// consumer's only one. An unreadable event cannot be retried with a
    /// delay (a nak that the next cumulative ack would cancel): it goes to
    /// the dead-letter stream on its first delivery.
    Cumulative,
}

/// The worker could not go on without acknowledging an event it has not
/// written (an exclusive consumer's batch was lost); it stopped instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Halted(pub String);

/// Writes folded batches to ClickHouse and only then acknowledges them
/// (the I/O half of the pipeline).
struct Writer {
    acks: Acks,
    /// Why a batch was left unsettled, once one was: every later batch is
    /// left too (with cumulative acks, settling one would acknowledge the
    /// one left).
    left: Option<Left>,
    /// The consumer as bound, and when it was created: with cumulative
    /// acks, checked before each ack.
    consumer: PullConsumer,
    clickhouse: clickhouse::Client,
    clickhouse_config: ClickHouseConfig,
    max_attempts: i64,
    retry_delay: Duration,
    dead_letters: DeadLetters,
    progress: Arc<Progress>,
}

/// A fetched batch, folded: its messages (to acknowledge), their rows, and
/// the messages that are the input's fault.
struct Folded {
    /// Held until the batch is settled: bounds the batches in flight.
    _slot: OwnedSemaphorePermit,
    batch: Vec<Message>,
    rows: Rows,
    /// Stream sequences of the decoded events.
    seqs: Vec<u64>,
    /// Index in `batch`, stream sequence, delivery count and error.
    poison: Vec<(usize, u64, i64, String)>,
    /// Index in `batch` of the message with the highest stream sequence:
    /// the one a cumulative ack acknowledges.
    highest: Option<usize>,
    /// The batch's deliveries follow the previous batch's without a gap
    /// (always true with acks per event, where a gap does no harm).
    continuous: bool,
}

/// Most trace ids a batch's span names.
const TRACES_PER_SPAN: usize = 16;

/// The W3C trace contexts the batch's events came with (the command API's
/// `traceparent` header), distinct by trace, at most [`TRACES_PER_SPAN`]:
/// the batch's span names (and, when spans are exported, links) the
/// requests it projects.
fn traces_of(batch: &[Message]) -> Vec<String> {
    let mut traces: Vec<String> = Vec::new();
    for message in batch {
        let Some(trace) = message
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .and_then(|v| tally_shared::http::observe::parse_traceparent(v.as_str()))
        else {
            continue;
        };
        if !traces.iter().any(|t| t[3..35] == trace.0[3..35]) {
            traces.push(trace.0);
            if traces.len() == TRACES_PER_SPAN {
                break;
            }
        }
    }
    traces
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
        let next_delivery = consumer.cached_info().delivered.consumer_sequence + 1;
        Worker {
            next_delivery,
            fetcher: Fetcher {
                consumer: consumer.clone(),
                batch_size: config.batch_size.max(1),
                batch_bytes: config.batch_bytes.max(1),
                fetch_wait: Duration::from_millis(config.fetch_wait_ms.max(10)),
                linger: Duration::from_millis(config.linger_ms),
                fold_options,
                quarantine: Quarantine::new(&config.quarantine),
                exclusive: config.exclusive,
            },
            writer: Writer {
                acks: if config.exclusive {
                    Acks::Cumulative
                } else {
                    Acks::Each
                },
                left: None,
                consumer,
                clickhouse: store::client(clickhouse_config),
                clickhouse_config: clickhouse_config.clone(),
                max_attempts: config.max_attempts.max(1),
                retry_delay: Duration::from_millis(config.retry_delay_ms),
                dead_letters,
                progress,
            },
        }
    }

    /// Runs until `shutdown`, as a three-stage pipeline: while one batch is
    /// written to ClickHouse, the next is folded and the one after fetched.
    /// At most [`IN_FLIGHT`] batches are unacknowledged at once, which bounds
    /// memory and what a killed worker leaves to be redelivered after the
    /// consumer's `ack_wait`. A batch in flight when shutdown fires
    /// is finished if its write succeeds, or abandoned unacknowledged (to be
    /// redelivered), and so is every batch after it.
    ///
    /// With cumulative acks, a batch that cannot be folded at all (a panic
    /// outside the per-event recovery) stops the worker: `Err(Halted)`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Ended, Halted> {
        let Worker {
            fetcher,
            mut writer,
            mut next_delivery,
        } = self;
        let acks = writer.acks;
        // Cancelled at shutdown, or when the folding stage halts.
        let stop = shutdown.child_token();
        let fetcher = Arc::new(fetcher);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let (fetched_tx, mut fetched_rx) =
            mpsc::channel::<(OwnedSemaphorePermit, Vec<Message>, bool)>(IN_FLIGHT);
        let (folded_tx, mut folded_rx) = mpsc::channel::<Folded>(IN_FLIGHT);
        let writing = {
            let shutdown = shutdown.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while let Some(folded) = folded_rx.recv().await {
                    let traces = traces_of(&folded.batch);
                    let ids: Vec<&str> = traces.iter().map(|t| &t[3..35]).collect();
                    let span = tracing::info_span!(
                        "project_batch",
                        events = folded.batch.len(),
                        traces = ?ids,
                    );
                    for trace in &traces {
                        tally_shared::telemetry::link_trace(&span, trace);
                    }
                    writer.project(folded, &shutdown).instrument(span).await;
                    if matches!(writer.left, Some(Left::Gap | Left::Replaced(_))) {
                        stop.cancel();
                    }
                }
                writer.left
            })
        };
        let folding = {
            let fetcher = fetcher.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while let Some((slot, batch, continuous)) = fetched_rx.recv().await {
                    // Decoding and folding is CPU work: off the async threads.
                    let (events, started) = (batch.len(), Instant::now());
                    let fetcher = fetcher.clone();
                    let folded = match tokio::task::spawn_blocking(move || {
                        fetcher.fold(slot, batch, continuous)
                    })
                    .await
                    {
                        Ok(folded) => folded,
                        Err(e) if acks == Acks::Each => {
                            tracing::error!(error = %e, "folding a batch panicked; it will be redelivered");
                            continue;
                        }
                        Err(e) => {
                            // The next batch's cumulative ack would cover
                            // this one's events: nothing after it is settled.
                            stop.cancel();
                            return Err(Halted(format!(
                                "folding a batch panicked ({e}); with an exclusive consumer \
                                 the worker stops rather than acknowledge it unwritten"
                            )));
                        }
                    };
                    let fold_ms = started.elapsed().as_millis() as u64;
                    tracing::debug!(events, fold_ms, "folded batch");
                    if folded_tx.send(folded).await.is_err() {
                        break;
                    }
                }
                Ok(())
            })
        };
        let mut backoff = Backoff::new();
        while !stop.is_cancelled() {
            // Waiting for a slot (the writer is behind) ends at shutdown:
            // no new batch is fetched after it.
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            // Not cut short by shutdown: a fetch ends within `fetch_wait`
            // and `linger` (and the grace after each pull request),
            // and what it received is then written like any batch.
            let batch = match fetcher.fetch().await {
                Ok(batch) => batch,
                Err(e) => {
                    counter!(names::NATS_ERRORS, "op" => "fetch").increment(1);
                    tracing::warn!(error = %e, "fetching from JetStream failed; retrying");
                    backoff.wait(&stop).await;
                    continue;
                }
            };
            backoff.reset();
            if batch.is_empty() {
                continue;
            }
            let delivery =
                |m: Option<&Message>| m.and_then(|m| m.info().ok()).map(|i| i.consumer_sequence);
            let continuous = match (acks, delivery(batch.first()), delivery(batch.last())) {
                (Acks::Each, _, _) => true,
                (Acks::Cumulative, Some(first), Some(last)) => {
                    let continuous = continues(next_delivery, first, last, batch.len());
                    next_delivery = last + 1;
                    continuous
                }
                (Acks::Cumulative, _, _) => false,
            };
            if fetched_tx.send((slot, batch, continuous)).await.is_err() {
                break;
            }
        }
        drop(fetched_tx);
        let folded = folding
            .await
            .unwrap_or_else(|e| Err(Halted(format!("the folding stage stopped abnormally: {e}"))));
        let written = match writing.await {
            Ok(Some(Left::Replaced(why))) => Err(Halted(why)),
            Ok(left) => Ok(left == Some(Left::Gap)),
            Err(e) => Err(Halted(format!("the writing stage stopped abnormally: {e}"))),
        };
        match folded.and(written) {
            Ok(true) => {
                tracing::warn!("a delivery was missed; binding the consumer again");
                Ok(Ended::Restart)
            }
            Ok(false) => {
                tracing::info!("projector worker stopped");
                Ok(Ended::Shutdown)
            }
            Err(e) => {
                tracing::error!(error = %e, "projector worker halted");
                Err(e)
            }
        }
    }
}

impl Writer {
    async fn project(&mut self, folded: Folded, shutdown: &CancellationToken) {
        let Folded {
            _slot,
            batch,
            rows,
            seqs,
            poison,
            highest,
            continuous,
        } = folded;
        if !continuous && self.left.is_none() {
            tracing::warn!(
                events = batch.len(),
                "a delivery never arrived: nothing from here on is acknowledged"
            );
            self.left = Some(Left::Gap);
        }
        if self.left.is_some() {
            self.leave(&batch).await;
            return;
        }
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            match self.write(&rows).await {
                Ok(()) => break,
                Err(e) => {
                    counter!(names::CLICKHOUSE_ERRORS).increment(1);
                    tracing::warn!(error = %e, events = rows.len(), "writing to ClickHouse failed; retrying");
                    // Keep the batch ours while we retry.
                    for message in &batch {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    if shutdown.is_cancelled() {
                        tracing::info!("abandoning an unwritten batch; it will be redelivered");
                        self.left = Some(Left::Shutdown);
                        self.leave(&batch).await;
                        return;
                    }
                    backoff.wait(shutdown).await;
                }
            }
        }
        let written = started.elapsed();
        match self.acks {
            Acks::Each => self.ack_each(&batch, &poison).await,
            Acks::Cumulative => {
                let settled = self
                    .ack_cumulative(&batch, &poison, highest, shutdown)
                    .await;
                if settled != Ok(true) {
                    self.left = Some(settled.map_or_else(Left::Replaced, |_| Left::Shutdown));
                    self.leave(&batch).await;
                    return;
                }
            }
        }
        let max_seq = seqs.iter().copied().max().unwrap_or(0);
        self.progress.last_seq.fetch_max(max_seq, Ordering::Relaxed);
        self.progress.acked.notify_one();
        self.progress
            .projected
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        counter!(names::EVENTS_PROJECTED).increment(seqs.len() as u64);
        if !seqs.is_empty() {
            counter!(names::BATCHES_WRITTEN).increment(1);
        }
        counter!(names::LATE_EVENTS).increment(rows.late.len() as u64);
        tracing::debug!(
            events = seqs.len(),
            max_seq,
            write_ms = written.as_millis() as u64,
            ack_ms = (started.elapsed() - written).as_millis() as u64,
            "projected batch"
        );
    }

    /// One ack per event, once the rows are written; an unreadable event is
    /// retried with a delay, and dead-lettered on its last attempt.
    async fn ack_each(&self, batch: &[Message], poison: &[(usize, u64, i64, String)]) {
        let mut settled = vec![false; batch.len()];
        for (index, seq, attempts, error) in poison {
            let message = &batch[*index];
            settled[*index] = true;
            if *attempts < self.max_attempts {
                tracing::warn!(seq, attempts, %error, "event cannot be projected; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(self.retry_delay))).await;
                continue;
            }
            // Not acked when it fails: it comes back and is dead-lettered then.
            if self.dead_letter(message, *seq, *attempts, error).await {
                let _ = message.ack().await;
            }
        }
        for (message, settled) in batch.iter().zip(settled) {
            if settled {
                continue;
            }
            if let Err(e) = message.ack().await {
                // The rows are written; a redelivery rewrites identical rows.
                tracing::warn!(error = %e, "ack failed; the event will be redelivered harmlessly");
            }
        }
    }

    /// Leaves a batch unsettled: nak'ed, to be redelivered at once, unless
    /// the consumer is no longer the one bound (nothing goes to that one).
    async fn leave(&self, batch: &[Message]) {
        if matches!(self.left, Some(Left::Replaced(_))) {
            return;
        }
        for message in batch {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }

    /// Copies an event to the dead-letter stream; whether it is there.
    async fn dead_letter(&self, message: &Message, seq: u64, attempts: i64, error: &str) -> bool {
        match self.dead_letters.send(message, seq, attempts, error).await {
            Ok(()) => {
                tracing::error!(seq, attempts, %error, "event moved to the dead-letter stream");
                true
            }
            Err(e) => {
                tracing::warn!(seq, error = %e, "dead-lettering failed; will retry");
                false
            }
        }
    }

    /// Cumulative acks, once the rows are written: every unreadable event
    /// goes to the dead-letter stream now (retried until it is there), then
    /// one ack of the batch's highest sequence covers the batch. `Ok(false)`:
    /// shutdown came while an event could not be dead-lettered; `Err`: the
    /// consumer is no longer the one bound. Nothing is acknowledged then.
    async fn ack_cumulative(
        &self,
        batch: &[Message],
        poison: &[(usize, u64, i64, String)],
        highest: Option<usize>,
        shutdown: &CancellationToken,
    ) -> Result<bool, String> {
        for (index, seq, attempts, error) in poison {
            let message = &batch[*index];
            let mut backoff = Backoff::new();
            while !self.dead_letter(message, *seq, *attempts, error).await {
                if shutdown.is_cancelled() {
                    return Ok(false);
                }
                for message in batch {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                backoff.wait(shutdown).await;
            }
        }
        // A second worker binding the consumer re-creates it under the same
        // name, and this worker's acks would land on the new one: never ack
        // a consumer other than the one bound. (Skipping an ack is safe:
        // the next one covers it.)
        let bound = self.consumer.cached_info().created;
        match self.consumer.clone().info().await.map(|i| i.created) {
            Ok(created) if created == bound => {}
            Ok(_) => {
                return Err(format!(
                    "consumer {} was re-created under this worker (another worker bound it); \
                     an exclusive consumer serves one worker: stopping",
                    self.consumer.cached_info().name
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the consumer; this batch's ack waits for the next");
                return Ok(true);
            }
        }
        if let Some(message) = highest.map(|index| &batch[index]) {
            if let Err(e) = message.ack().await {
                // The next batch's ack covers this one; or, if none comes,
                // the batch is redelivered and its identical rows rewritten.
                tracing::warn!(error = %e, "cumulative ack failed; the next one covers it");
            }
        }
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::continues;

    #[test]
    fn a_batch_continues_only_from_the_delivery_expected_without_a_gap() {
        assert!(continues(1, 1, 500, 500));
        assert!(continues(501, 501, 501, 1));
        // Its first delivery is not the one expected: one went missing
        // between batches (or the batch repeats one).
        assert!(!continues(501, 502, 1000, 499));
        assert!(!continues(501, 500, 999, 500));
        // A delivery missing inside the batch.
        assert!(!continues(1, 1, 500, 499));
        // Nonsense from the server is no continuation either.
        assert!(!continues(10, 10, 9, 0));
    }
}

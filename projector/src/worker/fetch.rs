//! The CPU half of a worker's pipeline: pulling batches from the consumer
//! and folding them into rows.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Message;
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::Folded;
use crate::fold::{fold_recorded, FoldOptions, Quarantine};

/// How long after a pull request's expiry its messages may still arrive.
const FETCH_GRACE: Duration = Duration::from_millis(200);

/// The shortest expiry of a pull request (nats-server refuses shorter).
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Pulls batches and folds them (the CPU half of the pipeline).
pub(super) struct Fetcher {
    pub(super) consumer: PullConsumer,
    pub(super) batch_size: usize,
    pub(super) batch_bytes: usize,
    pub(super) fetch_wait: Duration,
    pub(super) linger: Duration,
    pub(super) fold_options: FoldOptions,
    pub(super) quarantine: Quarantine,
}

impl Fetcher {
    /// One batch: at most `batch_size` messages and about `batch_bytes`
    /// bytes. A pull request returns as soon as any message is there
    /// (waiting at most `fetch_wait` for one); a batch that is not full then
    /// waits `linger` and takes what came meanwhile, so that under a slow
    /// trickle ClickHouse gets a few larger inserts rather than dozens of
    /// small ones a second (each insert is a part to merge).
    pub(super) async fn fetch(&self) -> Result<Vec<Message>, async_nats::Error> {
        let started = Instant::now();
        let mut batch = Vec::with_capacity(self.batch_size.min(4096));
        let mut bytes = self
            .pull(&mut batch, self.batch_bytes, self.fetch_wait)
            .await?;
        if !batch.is_empty() && !self.linger.is_zero() {
            let until = tokio::time::Instant::now() + self.linger;
            while batch.len() < self.batch_size && bytes < self.batch_bytes {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                // Waits for the next message at most until the linger ends.
                // An empty answer is the linger's end, or a status (the
                // next message would pass the byte budget, say): done. A
                // failure keeps what was received.
                let had = batch.len();
                match self
                    .pull(&mut batch, self.batch_bytes - bytes, left.max(MIN_WAIT))
                    .await
                {
                    Ok(_) if batch.len() == had => break,
                    Ok(taken) => bytes += taken,
                    Err(e) => {
                        tracing::debug!(error = %e, "lingering for more events failed");
                        break;
                    }
                }
            }
        }
        if !batch.is_empty() {
            let fetch_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(events = batch.len(), fetch_ms, "fetched batch");
        }
        Ok(batch)
    }

    /// One pull request, its messages appended to `batch` (up to
    /// `batch_size` in all and about `max_bytes` more); the bytes taken.
    /// The server stops serving a pull request when it expires, but
    /// nats-server 2.9 sends no end-of-request status after a partial
    /// delivery, and the client would then wait 5 s more. Our own deadline
    /// ends the request shortly after the expiry instead (what was received
    /// is kept and acked normally). Found by the fault test: redeliveries
    /// came a few per pull, and each pull then idled for 5 s.
    async fn pull(
        &self,
        batch: &mut Vec<Message>,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<usize, async_nats::Error> {
        let mut bytes = 0;
        let collect = async {
            let mut messages = self
                .consumer
                .fetch()
                .max_messages(self.batch_size - batch.len())
                .max_bytes(max_bytes.max(1))
                .expires(wait)
                .messages()
                .await?;
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        bytes += message.length;
                        batch.push(message);
                    }
                    // A status (server timeout, batch bytes reached) ends the
                    // batch early; what was fetched so far is still good.
                    Err(e) => {
                        tracing::debug!(error = %e, "fetch ended early");
                        break;
                    }
                }
            }
            Ok::<(), async_nats::Error>(())
        };
        match tokio::time::timeout(wait + FETCH_GRACE, collect).await {
            Ok(result) => result?,
            Err(_) => tracing::trace!(received = batch.len(), "pull request expired"),
        }
        Ok(bytes)
    }

    /// Decodes and folds a batch; what cannot be projected becomes poison:
    /// retried, then dead-lettered (at once when quarantined).
    pub(super) fn fold(
        &self,
        slot: OwnedSemaphorePermit,
        batch: Vec<Message>,
        continuous: bool,
    ) -> Folded {
        let mut recorded = Vec::with_capacity(batch.len());
        let mut places = Vec::with_capacity(batch.len());
        let mut highest: Option<(u64, usize)> = None;
        for (index, message) in batch.iter().enumerate() {
            match message.info() {
                Ok(info) => {
                    recorded.push((info.stream_sequence, &message.payload[..]));
                    places.push((index, info.delivered));
                    if highest.is_none_or(|(seq, _)| info.stream_sequence > seq) {
                        highest = Some((info.stream_sequence, index));
                    }
                }
                Err(e) => tracing::error!(error = %e, "message without JetStream metadata"),
            }
        }
        let folded = fold_recorded(recorded, self.fold_options, &self.quarantine);
        let poison = folded
            .poison
            .into_iter()
            .map(|p| {
                let (index, delivered) = places[p.index];
                let attempts = if p.quarantined { i64::MAX } else { delivered };
                (index, p.seq, attempts, p.error)
            })
            .collect();
        Folded {
            _slot: slot,
            batch,
            rows: folded.rows,
            seqs: folded.seqs,
            poison,
            highest: highest.map(|(_, index)| index),
            continuous,
        }
    }
}

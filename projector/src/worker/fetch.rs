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

/// How often a lingering batch asks whether more events came.
const POLL: Duration = Duration::from_millis(5);

/// The expiry of a pull request for events already pending on an
/// exclusive consumer: they are all this worker's, so the request ends
/// when the last of them arrives, however slowly nats-server sends them.
/// With `fetch_wait` as expiry, a server short of CPU (ClickHouse merging
/// and rolling on the same cores) let such requests expire half served,
/// sent no end-of-request status, and the worker waited out its own
/// deadline: in one benchmark run, each of the 10 fetches (of 893) that
/// took over 368 ms (460–1,115 ms) had one or two requests ended that way.
const PENDING_WAIT: Duration = Duration::from_secs(2);

/// Pulls batches and folds them (the CPU half of the pipeline).
pub(super) struct Fetcher {
    pub(super) consumer: PullConsumer,
    pub(super) batch_size: usize,
    pub(super) batch_bytes: usize,
    pub(super) fetch_wait: Duration,
    pub(super) linger: Duration,
    pub(super) fold_options: FoldOptions,
    pub(super) quarantine: Quarantine,
    /// The worker is alone on its consumer (`projector.exclusive`): what
    /// the consumer says is pending is this worker's to take.
    pub(super) exclusive: bool,
}

impl Fetcher {
    /// One batch: at most `batch_size` messages and about `batch_bytes`
    /// bytes. It waits at most `fetch_wait` for a first event, then takes
    /// the events the consumer held at that moment (those that reach
    /// another worker on a shared consumer count as taken), and while the
    /// batch is not full it takes what arrives until `linger` after its
    /// first event, so that under a slow trickle ClickHouse gets a few
    /// larger inserts rather than dozens of small ones a second (each
    /// insert is a part to merge). After the linger it takes no event
    /// that arrived after the batch began: following a steady stream until
    /// the batch was full delayed every event in it by as long as filling
    /// took (a second and more under the benchmark's batch load).
    ///
    /// Every pull request asks for a number of messages that is there to
    /// get (one, or at most as many as the last message said were still
    /// pending; unless another worker takes some first), so it ends when
    /// the last of them arrives. nats-server 2.9 does not
    /// reliably end a request that asked for more than there was: under
    /// load its end-of-request status came up to 200 ms after the request
    /// expired, or never, and the worker then waited out its own deadline
    /// (a third of the fetch time under the benchmark's batch load). While
    /// lingering it asks again every `POLL` without an expiry: with nothing
    /// pending the server answers "no messages" at once.
    pub(super) async fn fetch(&self) -> Result<Vec<Message>, async_nats::Error> {
        let started = Instant::now();
        let mut batch = Vec::with_capacity(self.batch_size.min(4096));
        // Pull requests made, and those our deadline ended (for the log:
        // a slow fetch tells a server that stopped answering from one
        // that answered slowly).
        let (mut pulls, mut expired) = (1, 0);
        let (mut bytes, ended) = self
            .pull(&mut batch, 1, self.batch_bytes, Some(self.fetch_wait))
            .await?;
        expired += usize::from(ended);
        if batch.is_empty() {
            return Ok(batch);
        }
        // What the consumer held now is its next `held` deliveries (to this
        // worker or another): up to consumer sequence `held_until`.
        let (first, held) = delivery(&batch);
        let held_until = first + held;
        let until = tokio::time::Instant::now() + self.linger;
        while bytes < self.batch_bytes {
            let (last, pending) = delivery(&batch);
            let held_left = held_until.saturating_sub(last);
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let step = next(batch.len(), held_left, pending, self.batch_size, left);
            let (count, expires) = match step {
                Next::Done => break,
                // In the stream already: they come at once (unless another
                // worker on the consumer takes them first).
                Next::Take(count) => (count, Some(take_wait(self.exclusive, self.fetch_wait))),
                Next::Poll(wait) => {
                    tokio::time::sleep(wait).await;
                    (1, None)
                }
            };
            // A failure keeps what was received; a status (the next
            // message would pass the byte budget, say) ends the batch.
            let had = batch.len();
            pulls += 1;
            match self
                .pull(&mut batch, count, self.batch_bytes - bytes, expires)
                .await
            {
                Ok((taken, ended)) => {
                    expired += usize::from(ended);
                    if batch.len() == had && pending > 0 {
                        break;
                    }
                    bytes += taken;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "taking more events failed");
                    break;
                }
            }
        }
        let fetch_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(
            events = batch.len(),
            held,
            fetch_ms,
            pulls,
            expired,
            "fetched batch"
        );
        Ok(batch)
    }

    /// One pull request for `count` messages, appended to `batch`, and
    /// about `max_bytes` bytes; the bytes taken, and whether our deadline
    /// ended the request. Without `expires` the
    /// server answers at once when nothing is pending. nats-server 2.9
    /// may send no end-of-request status after a partial delivery, and the
    /// client would then wait 5 s more: our own deadline ends the request
    /// shortly after its expiry instead (what was received is kept and
    /// acked normally). Found by the fault test: redeliveries came a few
    /// per pull, and each pull then idled for 5 s.
    async fn pull(
        &self,
        batch: &mut Vec<Message>,
        count: usize,
        max_bytes: usize,
        expires: Option<Duration>,
    ) -> Result<(usize, bool), async_nats::Error> {
        let mut bytes = 0;
        let collect = async {
            let request = self
                .consumer
                .fetch()
                .max_messages(count.max(1))
                .max_bytes(max_bytes.max(1));
            let request = match expires {
                Some(wait) => request.expires(wait.max(MIN_WAIT)),
                None => request,
            };
            let mut messages = request.messages().await?;
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        bytes += message.length;
                        batch.push(message);
                    }
                    // A status (server timeout, batch bytes reached) ends the
                    // request early; what was fetched so far is still good.
                    Err(e) => {
                        tracing::debug!(error = %e, "fetch ended early");
                        break;
                    }
                }
            }
            Ok::<(), async_nats::Error>(())
        };
        let deadline = expires.map_or(Duration::ZERO, |wait| wait.max(MIN_WAIT)) + FETCH_GRACE;
        let ended = match tokio::time::timeout(deadline, collect).await {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => {
                tracing::trace!(received = batch.len(), "pull request expired");
                true
            }
        };
        Ok((bytes, ended))
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

/// The consumer sequence of the batch's last message (counting the
/// deliveries to every worker on the consumer) and the messages the
/// consumer held beyond it when it was delivered; zeros without JetStream
/// metadata.
fn delivery(batch: &[Message]) -> (u64, u64) {
    batch
        .last()
        .and_then(|message| message.info().ok())
        .map_or((0, 0), |info| (info.consumer_sequence, info.pending))
}

/// The expiry of a pull request for pending events: on a shared consumer
/// another worker may take some of them, and nats-server 2.9 may then never
/// end the request, so it expires after `fetch_wait`.
fn take_wait(exclusive: bool, fetch_wait: Duration) -> Duration {
    if exclusive {
        PENDING_WAIT.max(fetch_wait)
    } else {
        fetch_wait
    }
}

/// A batch's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The batch is complete.
    Done,
    /// Pull this many messages, pending already.
    Take(usize),
    /// Nothing pending: wait this long, then ask for one.
    Poll(Duration),
}

/// What a batch of `taken` messages, at most `size`, does next.
/// `held_left`: of the messages the consumer held when the batch began,
/// those not delivered yet (to this worker or another); `pending`: the
/// messages pending after the batch's last; `left`: what is left of the
/// linger. Within the linger it takes whatever is pending; after it, only
/// the held ones.
fn next(taken: usize, held_left: u64, pending: u64, size: usize, left: Duration) -> Next {
    let room = size.saturating_sub(taken);
    let take = |n: u64| Next::Take(usize::try_from(n).unwrap_or(usize::MAX).min(room));
    if room == 0 || (pending == 0 && left.is_zero()) {
        Next::Done
    } else if pending == 0 {
        Next::Poll(left.min(POLL))
    } else if !left.is_zero() {
        take(pending)
    } else if held_left > 0 {
        take(pending.min(held_left))
    } else {
        Next::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEFT: Duration = Duration::from_millis(60);

    #[test]
    fn what_the_consumer_held_is_taken_whatever_the_time() {
        // A backlog of 1 + 50,000, 20,000 at most per batch.
        assert_eq!(next(1, 50_000, 50_000, 20_000, LEFT), Next::Take(19_999));
        let late = Duration::ZERO;
        assert_eq!(next(1, 50_000, 50_000, 20_000, late), Next::Take(19_999));
        assert_eq!(
            next(12_000, 38_000, 38_000, 20_000, late),
            Next::Take(8_000)
        );
        assert_eq!(next(20_000, 30_000, 30_000, 20_000, LEFT), Next::Done);
    }

    #[test]
    fn what_arrives_later_is_taken_only_within_the_linger() {
        // The 300 held are taken; more keep arriving.
        assert_eq!(next(300, 0, 120, 20_000, LEFT), Next::Take(120));
        assert_eq!(next(300, 0, 120, 20_000, Duration::ZERO), Next::Done);
        // After the linger, of 900 pending only the 290 still held.
        assert_eq!(next(10, 290, 900, 20_000, Duration::ZERO), Next::Take(290));
        // Another worker on the consumer took the held ones: done.
        assert_eq!(next(10, 0, 900, 20_000, Duration::ZERO), Next::Done);
        assert_eq!(next(10, 0, 0, 20_000, Duration::ZERO), Next::Done);
    }

    #[test]
    fn pending_events_are_waited_for_longer_only_on_an_exclusive_consumer() {
        let wait = Duration::from_millis(250);
        assert_eq!(take_wait(true, wait), PENDING_WAIT);
        assert_eq!(take_wait(false, wait), wait);
        let long = Duration::from_secs(5);
        assert_eq!(take_wait(true, long), long);
    }

    #[test]
    fn with_nothing_pending_it_polls_until_the_linger_ends() {
        assert_eq!(next(1, 0, 0, 20_000, LEFT), Next::Poll(POLL));
        let two = Duration::from_millis(2);
        assert_eq!(next(1, 0, 0, 20_000, two), Next::Poll(two));
        assert_eq!(next(1, 0, 0, 20_000, Duration::ZERO), Next::Done);
        // No linger at all: the held ones only.
        assert_eq!(next(1, 4, 4, 20_000, Duration::ZERO), Next::Take(4));
        assert_eq!(next(1, 4, 9, 20_000, Duration::ZERO), Next::Take(4));
    }
}

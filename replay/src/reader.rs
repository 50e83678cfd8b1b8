//! Reading a stream in order, in batches, through an ephemeral pull
//! consumer without acknowledgements (it delivers each message once, in
//! order, and the server removes it ten minutes after the read ends).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use time::OffsetDateTime;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    /// At this stream sequence.
    Seq(u64),
    /// At the first event the stream received at or after this time.
    Time(OffsetDateTime),
}

/// A recorded event: its stream sequence, headers and payload.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub seq: u64,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: Bytes,
}

/// Reads the events matching `subject` from `start`, as many as the stream
/// held when the read began (events appended later are left to a later
/// read), optionally stopping after sequence `until`.
///
/// Every event is handed out once and in order, even if the client drops
/// messages: a NATS client that has no room left for a subscription's
/// messages drops them (a "slow consumer"), and the server, which counts
/// them as delivered, never sends them again to that consumer. The reader
/// sees the gap in the consumer's delivery sequence (consecutive for a
/// consumer without acks), or, once the stream is quiet, that the server
/// delivered more than it got, and reads again, through a new consumer,
/// from the event after the last one it handed out.
pub struct Reader {
    stream: async_nats::jetstream::stream::Stream,
    subject: String,
    start: Start,
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    messages: pull::Stream,
    /// The current consumer's delivery sequence of the last message taken.
    delivered: u64,
    /// The stream sequence of the last event handed out.
    last: Option<u64>,
    remaining: u64,
    until: u64,
    resumed: u64,
}

/// How long a read waits for the next message before asking the server
/// whether any is still pending.
const IDLE: Duration = Duration::from_secs(1);
/// How long a read waits in all for a pending message before it fails.
const STALLED: Duration = Duration::from_secs(120);
/// Messages and bytes one pull request asks for. The client asks for the
/// next batch when half of one is left, so it mostly holds at most one and
/// a half batches, which should fit in the room the client keeps for a
/// subscription (`nats::SUBSCRIPTION_CAPACITY`) or it drops messages. It can
/// hold more: async-nats also asks when half of the bytes are left, and it
/// asks again after 35 s without a request, counting what it holds as
/// nothing; the gap check then makes the read start again from the gap.
/// Larger pulls read faster: in `./dev bench-rebuild`, 50,000 read 10–23%
/// more events a second than 10,000.
const PULL_MESSAGES: usize = 40_000;
const PULL_BYTES: usize = 32 * 1024 * 1024;
const _: () = assert!(PULL_MESSAGES * 3 / 2 < tally_shared::nats::SUBSCRIPTION_CAPACITY);

/// A pull consumer without acks on `subject` from `start`, and its messages.
async fn subscribe(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    start: Start,
) -> anyhow::Result<(
    async_nats::jetstream::consumer::Consumer<pull::Config>,
    pull::Stream,
)> {
    let deliver_policy = match start {
        Start::Beginning | Start::Seq(0) => DeliverPolicy::All,
        Start::Seq(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        Start::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
    };
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .context("creating a reading consumer")?;
    let messages = consumer
        .clone()
        .stream()
        .max_messages_per_batch(PULL_MESSAGES)
        .max_bytes_per_batch(PULL_BYTES)
        .messages()
        .await
        .context("reading the stream")?;
    Ok((consumer, messages))
}

impl Reader {
    pub async fn open(
        stream: &async_nats::jetstream::stream::Stream,
        subject: &str,
        start: Start,
        until: Option<u64>,
    ) -> anyhow::Result<Reader> {
        let (consumer, messages) = subscribe(stream, subject, start).await?;
        let remaining = consumer.cached_info().num_pending;
        Ok(Reader {
            stream: stream.clone(),
            subject: subject.to_owned(),
            start,
            consumer,
            messages,
            delivered: 0,
            last: None,
            remaining,
            until: until.unwrap_or(u64::MAX),
            resumed: 0,
        })
    }

    /// Events still to read (as counted when the read began).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// How many times the read started again after the client dropped
    /// messages.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Reads again, through a new consumer, from the event after the last
    /// one handed out: the client dropped messages of the current one.
    async fn resume(&mut self) -> anyhow::Result<()> {
        let start = self.last.map_or(self.start, |seq| Start::Seq(seq + 1));
        let (consumer, messages) = subscribe(&self.stream, &self.subject, start).await?;
        let old = std::mem::replace(&mut self.consumer, consumer);
        // Dropping the old messages unsubscribes; the old consumer would go
        // on its own once inactive, but need not wait for that.
        self.messages = messages;
        let _ = self.stream.delete_consumer(&old.cached_info().name).await;
        self.delivered = 0;
        self.resumed += 1;
        tracing::warn!(
            after = ?self.last,
            "the NATS client dropped messages it had no room for; reading again after the last event read"
        );
        Ok(())
    }

    /// The next batch of at most `max` events, in stream order; `None` when
    /// the read is done.
    pub async fn next_batch(&mut self, max: usize) -> anyhow::Result<Option<Vec<Recorded>>> {
        let expected = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        let mut batch = Vec::with_capacity(max.min(expected));
        let mut waited = Duration::ZERO;
        while self.remaining > 0 && batch.len() < max {
            let message = match tokio::time::timeout(IDLE, self.messages.next()).await {
                Ok(Some(message)) => message.context("reading the stream")?,
                Ok(None) => anyhow::bail!("the stream's consumer went away mid-read"),
                Err(_) => {
                    // Quiet: done only if the server has nothing pending
                    // and delivered nothing the client dropped (fewer than
                    // counted: the stream's limits removed some); a slow
                    // server is waited for, up to a bound.
                    let info = self
                        .consumer
                        .info()
                        .await
                        .context("asking the server what is pending")?;
                    let (pending, delivered) = (info.num_pending, info.delivered.consumer_sequence);
                    if delivered > self.delivered {
                        self.resume().await?;
                        continue;
                    }
                    if pending == 0 {
                        self.remaining = 0;
                        break;
                    }
                    waited += IDLE;
                    anyhow::ensure!(
                        waited < STALLED,
                        "the stream delivered nothing for {waited:?} with {pending} messages pending"
                    );
                    continue;
                }
            };
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("a message without stream metadata: {e}"))?;
            let (seq, delivered) = (info.stream_sequence, info.consumer_sequence);
            if delivered != self.delivered + 1 {
                self.resume().await?;
                continue;
            }
            self.delivered = delivered;
            if seq > self.until {
                self.remaining = 0;
                break;
            }
            self.remaining -= 1;
            self.last = Some(seq);
            // Taken apart rather than copied: the reply subject and the
            // rest are dropped.
            let async_nats::Message {
                headers, payload, ..
            } = message.message;
            batch.push(Recorded {
                seq,
                headers,
                payload,
            });
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// The stream sequence of the first event received at or after `at`, or
/// `None` if there is none yet.
pub async fn first_seq_at(
    stream: &async_nats::jetstream::stream::Stream,
    at: OffsetDateTime,
) -> anyhow::Result<Option<u64>> {
    let mut reader = Reader::open(stream, "", Start::Time(at), None).await?;
    Ok(reader.next_batch(1).await?.map(|batch| batch[0].seq))
}

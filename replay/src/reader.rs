//! Reading a stream in order, in batches, through an ephemeral pull
//! consumer without acknowledgements (it delivers each message once, in
//! order, and the server removes it a minute after the read ends).

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
pub struct Reader {
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    messages: pull::Stream,
    remaining: u64,
    until: u64,
}

/// How long a read waits for the next message before asking the server
/// whether any is still pending.
const IDLE: Duration = Duration::from_secs(5);
/// How long a read waits in all for a pending message before it fails.
const STALLED: Duration = Duration::from_secs(120);
/// Messages and bytes one pull request asks for.
const PULL_MESSAGES: usize = 10_000;
const PULL_BYTES: usize = 8 * 1024 * 1024;

impl Reader {
    pub async fn open(
        stream: &async_nats::jetstream::stream::Stream,
        subject: &str,
        start: Start,
        until: Option<u64>,
    ) -> anyhow::Result<Reader> {
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
        let remaining = consumer.cached_info().num_pending;
        let messages = consumer
            .clone()
            .stream()
            .max_messages_per_batch(PULL_MESSAGES)
            .max_bytes_per_batch(PULL_BYTES)
            .messages()
            .await
            .context("reading the stream")?;
        Ok(Reader {
            consumer,
            messages,
            remaining,
            until: until.unwrap_or(u64::MAX),
        })
    }

    /// Events still to read (as counted when the read began).
    pub fn remaining(&self) -> u64 {
        self.remaining
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
                    // (fewer than counted: the stream's limits removed
                    // some); a slow server is waited for, up to a bound.
                    let pending = self
                        .consumer
                        .info()
                        .await
                        .context("asking the server what is pending")?
                        .num_pending;
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
            let seq = message
                .info()
                .map_err(|e| anyhow::anyhow!("a message without stream metadata: {e}"))?
                .stream_sequence;
            if seq > self.until {
                self.remaining = 0;
                break;
            }
            self.remaining -= 1;
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

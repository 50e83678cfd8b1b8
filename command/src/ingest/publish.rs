//! Appending to JetStream, with the tenant-scoped event id as `Nats-Msg-Id`
//! so the server drops retries inside its duplicate window (the dedup
//! horizon), and reading an aggregate's last event back.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use tally_shared::event::StoredEvent;
use tally_shared::http::ApiError;

use crate::metrics;

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    stream: String,
    timeout: Duration,
}

/// Where JetStream put an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Stream sequence (of the original, for a duplicate).
    pub seq: u64,
    pub duplicate: bool,
}

/// Why an append did not happen.
#[derive(Debug)]
pub enum AppendError {
    /// The subject moved past the expected sequence: re-read and re-decide.
    Conflict,
    /// JetStream failed or did not acknowledge in time: 503, retry.
    Unavailable(String),
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> ApiError {
        match e {
            AppendError::Conflict => ApiError::Conflict("a concurrent change won".into()),
            AppendError::Unavailable(cause) => ApiError::Unavailable(cause),
        }
    }
}

/// `Nats-Msg-Id` is the tenant-scoped event id: the dedup key. The
/// request's W3C `traceparent`, if it came with one, goes along.
fn headers_for(event: &StoredEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.msg_id().as_str());
    let incoming = tally_shared::http::observe::current_trace();
    if let Some(trace) =
        tally_shared::telemetry::outgoing_traceparent(incoming.as_ref().map(|t| t.0.as_str()))
    {
        headers.insert("traceparent", trace.as_str());
    }
    headers
}

/// What a PubAck (or its failure) means for the caller.
fn outcome(
    result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<Appended, AppendError> {
    match result {
        // A clustered server can answer a duplicate of a message still being
        // replicated with sequence 0: no usable consistency token yet, so
        // the client retries.
        Ok(ack) if ack.duplicate && ack.sequence == 0 => Err(AppendError::Unavailable(
            "duplicate of an event still being replicated".into(),
        )),
        Ok(ack) => Ok(Appended {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        }),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(AppendError::Conflict),
        Err(e) => Err(AppendError::Unavailable(format!(
            "JetStream publish failed: {e}"
        ))),
    }
}

/// Metrics for one append.
fn record(event: &StoredEvent, started: Instant, result: &Result<Appended, AppendError>) {
    metrics::published(
        started.elapsed(),
        !matches!(result, Err(AppendError::Unavailable(_))),
    );
    if let Ok(appended) = result {
        metrics::stored(event.source, appended.duplicate);
    }
}

impl Publisher {
    pub fn new(js: jetstream::Context, stream: String, timeout: Duration) -> Publisher {
        Publisher {
            js,
            stream,
            timeout,
        }
    }

    /// Appends `event` under its own subject and waits for the PubAck. Any
    /// failure, including no answer within the timeout, is `Unavailable`
    /// (503): the client retries with the same event_id and the stream keeps
    /// one copy.
    pub async fn append(&self, event: &StoredEvent) -> Result<Appended, ApiError> {
        Ok(self.append_to(event.subject(), event, None).await?)
    }

    /// Appends `event` under `subject`; with `expected_last`, only if the
    /// subject's last sequence is still that (0: the subject is empty).
    pub async fn append_to(
        &self,
        subject: String,
        event: &StoredEvent,
        expected_last: Option<u64>,
    ) -> Result<Appended, AppendError> {
        let mut headers = headers_for(event);
        if let Some(seq) = expected_last {
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                seq.to_string().as_str(),
            );
        }
        let started = Instant::now();
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject, headers, event.encode().into())
                .await?;
            ack.await
        };
        let result = match tokio::time::timeout(self.timeout, publish).await {
            Ok(result) => outcome(result),
            Err(_) => Err(self.timed_out()),
        };
        record(event, started, &result);
        result
    }

    /// Appends `events` in their order (the stream keeps it), waiting for
    /// their PubAcks while the later ones are still being sent; one result
    /// per event, within one timeout.
    ///
    /// Waiting for acks only after sending the last event would deadlock
    /// concurrent batches: each in-flight publish holds one of the
    /// context's ack permits until its ack is awaited, so batches that
    /// together want more permits than there are would each wait for the
    /// others' (until the timeout, for all of them).
    pub async fn append_all(&self, events: &[StoredEvent]) -> Vec<Result<Appended, AppendError>> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
        let send = async move {
            for (index, event) in events.iter().enumerate() {
                // Past the deadline nothing more is sent: what is left is
                // answered as timed out (503, retry).
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                let publish = self.js.publish_with_headers(
                    event.subject(),
                    headers_for(event),
                    event.encode().into(),
                );
                let sent = match tokio::time::timeout_at(deadline, publish).await {
                    Ok(Ok(ack)) => Ok(ack),
                    Ok(Err(e)) => Err(AppendError::Unavailable(format!(
                        "JetStream publish failed: {e}"
                    ))),
                    Err(_) => Err(self.timed_out()),
                };
                if sent_tx.send((index, sent)).is_err() {
                    return;
                }
            }
        };
        let collect = async move {
            let mut results: Vec<Option<Result<Appended, AppendError>>> =
                events.iter().map(|_| None).collect();
            let mut acks = futures::stream::FuturesUnordered::new();
            let mut sending = true;
            loop {
                tokio::select! {
                    sent = sent_rx.recv(), if sending => match sent {
                        Some((index, Ok(ack))) => acks.push(async move {
                            let result = match tokio::time::timeout_at(deadline, ack).await {
                                Ok(result) => outcome(result),
                                Err(_) => Err(self.timed_out()),
                            };
                            (index, result)
                        }),
                        Some((index, Err(e))) => results[index] = Some(Err(e)),
                        None => sending = false,
                    },
                    Some((index, result)) = futures::StreamExt::next(&mut acks), if !acks.is_empty() => {
                        results[index] = Some(result);
                    }
                    else => break,
                }
            }
            results
        };
        let ((), results) = futures::join!(send, collect);
        let results: Vec<Result<Appended, AppendError>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(self.timed_out())))
            .collect();
        for (event, result) in events.iter().zip(&results) {
            record(event, started, result);
        }
        results
    }

    fn timed_out(&self) -> AppendError {
        AppendError::Unavailable(format!(
            "no PubAck from JetStream within {:?}",
            self.timeout
        ))
    }

    /// The last event on `subject` and its sequence, if any.
    pub async fn last_on_subject(
        &self,
        subject: &str,
    ) -> Result<Option<(u64, StoredEvent)>, ApiError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let get = async {
            let stream = self
                .js
                .get_stream_no_info(&self.stream)
                .await
                .map_err(|e| e.to_string())?;
            match stream.get_last_raw_message_by_subject(subject).await {
                Ok(message) => Ok(Some(message)),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        };
        let message = match tokio::time::timeout(self.timeout, get).await {
            Ok(Ok(message)) => message,
            Ok(Err(cause)) => {
                return Err(ApiError::Unavailable(format!("reading {subject}: {cause}")))
            }
            Err(_) => {
                return Err(ApiError::Unavailable(format!(
                    "reading {subject} timed out"
                )))
            }
        };
        match message {
            None => Ok(None),
            Some(message) => {
                let event = StoredEvent::decode(&message.payload).map_err(|e| {
                    ApiError::Internal(format!("unreadable event at {}: {e}", message.sequence))
                })?;
                Ok(Some((message.sequence, event)))
            }
        }
    }
}

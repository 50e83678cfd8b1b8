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
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.msg_id().as_str());
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
            Ok(Ok(ack)) => Ok(Appended {
                seq: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(AppendError::Conflict)
            }
            Ok(Err(e)) => Err(AppendError::Unavailable(format!(
                "JetStream publish failed: {e}"
            ))),
            Err(_) => Err(AppendError::Unavailable(format!(
                "no PubAck from JetStream within {:?}",
                self.timeout
            ))),
        };
        metrics::published(
            started.elapsed(),
            !matches!(result, Err(AppendError::Unavailable(_))),
        );
        if let Ok(appended) = &result {
            metrics::stored(event.source, appended.duplicate);
        }
        result
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

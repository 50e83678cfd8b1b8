//! Appending to JetStream, with the tenant-scoped event id as `Nats-Msg-Id`
//! so the server drops retries inside its duplicate window.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use tally_shared::event::StoredEvent;
use tally_shared::http::ApiError;

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    timeout: Duration,
}

/// Where JetStream put an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Stream sequence (of the original, for a duplicate).
    pub seq: u64,
    pub duplicate: bool,
}

impl Publisher {
    pub fn new(js: jetstream::Context, timeout: Duration) -> Publisher {
        Publisher { js, timeout }
    }

    /// Appends `event` and waits for the PubAck. Any failure, including no
    /// answer within the timeout, is `Unavailable` (503): the client retries
    /// with the same event_id and the stream keeps one copy.
    pub async fn append(&self, event: &StoredEvent) -> Result<Appended, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.msg_id().as_str());
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(event.subject(), headers, event.encode().into())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(ack)) => Ok(Appended {
                seq: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Ok(Err(cause)) => Err(ApiError::Unavailable(format!(
                "JetStream publish failed: {cause}"
            ))),
            Err(_) => Err(ApiError::Unavailable(format!(
                "no PubAck from JetStream within {:?}",
                self.timeout
            ))),
        }
    }
}

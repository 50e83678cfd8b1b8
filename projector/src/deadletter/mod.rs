//! The dead-letter stream: events that failed to project after the allowed
//! attempts, kept with their error so an operator can inspect and redrive
//! them. Failures that are the input's fault end here; failures of the world
//! (ClickHouse down) are retried and never dead-lettered.

use async_nats::jetstream::{self, Message};
use async_nats::HeaderMap;
use metrics::counter;
use tally_shared::metrics as names;

pub const ERROR_HEADER: &str = "Tally-Error";
pub const ATTEMPTS_HEADER: &str = "Tally-Attempts";
pub const SUBJECT_HEADER: &str = "Tally-Original-Subject";
pub const SEQ_HEADER: &str = "Tally-Original-Seq";

/// Prefix of dead-letter subjects: `tally.dead.<tenant>.<original seq>`.
pub const SUBJECT_PREFIX: &str = "tally.dead";

#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context) -> DeadLetters {
        DeadLetters { js }
    }

    /// Copies `message` (stream sequence `seq`) with its error to the
    /// dead-letter stream. Idempotent: a second copy of the same sequence
    /// within ten minutes is dropped by JetStream.
    pub async fn send(
        &self,
        message: &Message,
        seq: u64,
        attempts: i64,
        error: &str,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("dead:{seq}").as_str());
        headers.insert(ERROR_HEADER, one_line(error).as_str());
        headers.insert(ATTEMPTS_HEADER, attempts.to_string().as_str());
        headers.insert(SUBJECT_HEADER, message.subject.as_str());
        headers.insert(SEQ_HEADER, seq.to_string().as_str());
        let subject = format!(
            "{SUBJECT_PREFIX}.{}.{seq}",
            tenant_of(message.subject.as_str())
        );
        self.js
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        counter!(names::DEAD_LETTERS).increment(1);
        Ok(())
    }
}

/// The tenant token of an event subject (`tally.events.<tenant>.…`).
fn tenant_of(subject: &str) -> &str {
    subject
        .split('.')
        .nth(2)
        .filter(|t| !t.is_empty())
        .unwrap_or("unknown")
}

/// Header values are one line.
fn one_line(error: &str) -> String {
    error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_headers() {
        assert_eq!(tenant_of("tally.events.acme.like"), "acme");
        assert_eq!(tenant_of("tally.events.acme.likes.p.u"), "acme");
        assert_eq!(tenant_of("elsewhere"), "unknown");
        assert_eq!(one_line("bad\nline\r"), "bad line ");
    }
}

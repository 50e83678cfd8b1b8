//! Dead letters: events the projector gave up on (unreadable, a fold that
//! panicked, quarantined), kept in `TALLY_DEAD_LETTERS` with their error.
//! After a fix they are redriven: folded by this build and written to the
//! live read models, then removed from the dead-letter stream. Rows are
//! keyed by the original stream sequence, so a redrive is idempotent.

use anyhow::Context as _;
use serde::Serialize;
use tally_projector::deadletter::{ATTEMPTS_HEADER, ERROR_HEADER, SEQ_HEADER, SUBJECT_HEADER};
use tally_projector::fold::{fold_recorded, write};
use tally_shared::nats;

use crate::reader::{Reader, Start};
use crate::Env;

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub dead_seq: u64,
    /// The event's sequence in the event stream.
    pub seq: u64,
    pub subject: String,
    pub attempts: String,
    pub error: String,
    /// The event as recorded (JSON when it is JSON).
    pub payload: String,
}

async fn stream(env: &Env) -> anyhow::Result<async_nats::jetstream::stream::Stream> {
    let name = nats::dead_letters_stream_config(&env.config.nats).name;
    env.js
        .get_stream(&name)
        .await
        .with_context(|| format!("opening the dead-letter stream {name}"))
}

/// Every dead letter, oldest first (of `tenant` only, if given).
pub async fn list(env: &Env, tenant: Option<&str>) -> anyhow::Result<Vec<DeadLetter>> {
    if let Some(tenant) = tenant {
        crate::check_tenant(tenant)?;
    }
    let stream = stream(env).await?;
    let subject = tenant.map_or(String::new(), |t| format!("tally.dead.{t}.>"));
    let mut reader = Reader::open(&stream, &subject, Start::Beginning, None).await?;
    let mut letters = Vec::new();
    while let Some(batch) = reader.next_batch(1_000).await? {
        for recorded in batch {
            let header = |name: &str| {
                recorded
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            letters.push(DeadLetter {
                dead_seq: recorded.seq,
                seq: header(SEQ_HEADER).parse().unwrap_or(0),
                subject: header(SUBJECT_HEADER),
                attempts: header(ATTEMPTS_HEADER),
                error: header(ERROR_HEADER),
                payload: String::from_utf8_lossy(&recorded.payload).into_owned(),
            });
        }
    }
    Ok(letters)
}

/// The dead letter of the event at stream sequence `seq`.
pub async fn inspect(env: &Env, seq: u64) -> anyhow::Result<DeadLetter> {
    list(env, None)
        .await?
        .into_iter()
        .find(|letter| letter.seq == seq)
        .ok_or_else(|| anyhow::anyhow!("no dead letter for stream sequence {seq}"))
}

/// What a redrive did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Redriven {
    /// Projected and removed from the dead-letter stream.
    Projected { seq: u64 },
    /// Still cannot be projected; left where it is.
    Failed { seq: u64, error: String },
}

/// Redrives the dead letter of `seq`, or every one when `seq` is `None`.
pub async fn redrive(env: &Env, seq: Option<u64>) -> anyhow::Result<Vec<Redriven>> {
    let letters: Vec<DeadLetter> = list(env, None)
        .await?
        .into_iter()
        .filter(|letter| seq.is_none_or(|s| s == letter.seq))
        .collect();
    if let (Some(seq), true) = (seq, letters.is_empty()) {
        anyhow::bail!("no dead letter for stream sequence {seq}");
    }
    let stream = stream(env).await?;
    let client = env.client(env.live());
    let (options, quarantine) = (env.fold_options(), env.quarantine());
    let mut outcomes = Vec::new();
    for letter in letters {
        let folded = fold_recorded(
            [(letter.seq, letter.payload.as_bytes())],
            options,
            &quarantine,
        );
        if let Some(poison) = folded.poison.first() {
            outcomes.push(Redriven::Failed {
                seq: letter.seq,
                error: poison.error.clone(),
            });
            continue;
        }
        write(&client, &folded.rows)
            .await
            .context("writing the redriven event's rows")?;
        stream
            .delete_message(letter.dead_seq)
            .await
            .context("removing the redriven dead letter")?;
        outcomes.push(Redriven::Projected { seq: letter.seq });
    }
    Ok(outcomes)
}

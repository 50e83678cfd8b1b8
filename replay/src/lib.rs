//! Replay tooling: everything that reprocesses the event history.
//!
//! - [`rebuild`]: fold the stream again into fresh tables while the live
//!   ones keep serving, catch up, and switch; resumable.
//! - [`verify`]: fold the stream and compare with the live read models,
//!   row by row.
//! - [`snapshot`]: the read models as of a past sequence or time, in a
//!   database of their own that a query API can be pointed at.
//! - [`deadletters`]: list, inspect and redrive dead-lettered events.
//! - [`history`]: a tenant's events out to NDJSON, and NDJSON in through
//!   the same validation and deduplication as live ingest.
//!
//! The arithmetic is the projector's own ([`tally_projector::fold`]); this
//! crate only reads the stream and moves rows.

pub mod deadletters;
pub mod history;
pub mod progress;
pub mod reader;
pub mod rebuild;
pub mod snapshot;
pub mod tables;
pub mod verify;

use anyhow::Context as _;
use async_nats::jetstream;
use tally_projector::fold::{FoldOptions, Quarantine};
use tally_shared::config::{ClickHouseConfig, Config};
use tally_shared::{nats, store};

/// What every command works with: the configuration, JetStream and the
/// event stream.
pub struct Env {
    pub config: Config,
    pub js: jetstream::Context,
    pub events: jetstream::stream::Stream,
}

impl Env {
    pub async fn connect(config: Config) -> anyhow::Result<Env> {
        let client = nats::connect(&config.nats, "tally-replay")
            .await
            .context("connecting to NATS")?;
        let js = nats::jetstream(client, &config.nats);
        let name = nats::events_stream_config(&config.nats).name;
        let events = js
            .get_stream(&name)
            .await
            .with_context(|| format!("opening the event stream {name}"))?;
        Ok(Env { config, js, events })
    }

    /// The event stream's last sequence now.
    pub async fn stream_last(&mut self) -> anyhow::Result<u64> {
        Ok(self
            .events
            .info()
            .await
            .context("reading the event stream's state")?
            .state
            .last_sequence)
    }

    pub fn fold_options(&self) -> FoldOptions {
        FoldOptions {
            grace_seconds: self.config.windows.grace_seconds,
        }
    }

    pub fn quarantine(&self) -> Quarantine {
        Quarantine::new(&self.config.projector.quarantine)
    }

    /// The live read models' database.
    pub fn live(&self) -> &ClickHouseConfig {
        &self.config.clickhouse
    }

    /// Another database on the same ClickHouse server.
    pub fn database(&self, name: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            database: name.to_owned(),
            ..self.config.clickhouse.clone()
        }
    }

    pub fn client(&self, config: &ClickHouseConfig) -> clickhouse::Client {
        store::client(config)
    }
}

/// Refuses a tenant name that is not one (it becomes a subject token).
pub fn check_tenant(tenant: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        tally_shared::event::is_valid_tenant(tenant),
        "{tenant:?} is not a tenant name (1-64 of A-Z, a-z, 0-9, '_', '-')"
    );
    Ok(())
}

/// What projecting a stretch of the stream did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Projected {
    /// Events folded into rows.
    pub events: u64,
    /// Events the projector would not project either: unreadable or
    /// quarantined (they are in the dead-letter stream).
    pub skipped: u64,
    /// The last stream sequence read, if any.
    pub last_seq: Option<u64>,
}

/// Events per batch a replay folds and writes at once. Larger than the
/// projector's: one insert of 100,000 events' rows costs ClickHouse less
/// per row than five of 20,000, and a rebuild wrote 159,000-188,000
/// events/s in batches of 100,000 against 147,000-156,000 in batches of
/// 50,000 (peak resident about 290 and 145 MB above the start).
pub const BATCH: usize = 100_000;

/// Reads `reader` to its end, folds each batch as the projector does and
/// writes the rows of the `wanted` tables through `client`; after each
/// batch is written, `done(last sequence)` may record the progress.
///
/// A three-stage pipeline: while one batch is written, the next is folded
/// (on a blocking thread) and the one after is read.
pub async fn project<F, Fut>(
    env: &Env,
    reader: &mut reader::Reader,
    client: &clickhouse::Client,
    wanted: &[tables::Model],
    batch_size: usize,
    bar: &indicatif::ProgressBar,
    mut done: F,
) -> anyhow::Result<Projected>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use tally_projector::fold::{fold_recorded, write_only, FoldedBatch};

    let options = env.fold_options();
    let quarantine = std::sync::Arc::new(env.quarantine());
    let batch_size = batch_size.max(1);
    let fold = |batch: Vec<reader::Recorded>| {
        let quarantine = quarantine.clone();
        tokio::task::spawn_blocking(move || {
            let folded = fold_recorded(
                batch.iter().map(|r| (r.seq, &r.payload[..])),
                options,
                &quarantine,
            );
            (folded, batch.len() as u64, batch.last().map(|r| r.seq))
        })
    };
    let mut projected = Projected::default();
    let mut next = reader.next_batch(batch_size).await?;
    // The folded batch waiting to be written: rows, events read, last seq.
    let mut current: Option<(FoldedBatch, u64, Option<u64>)> = None;
    loop {
        let folding = next.take().map(fold);
        let more = folding.is_some();
        let write = async {
            match &current {
                Some((folded, _, _)) => {
                    write_only(client, &folded.rows, |table| {
                        wanted.iter().any(|m| m.table() == table)
                    })
                    .await
                }
                None => Ok(()),
            }
        };
        let read = async {
            if more {
                reader.next_batch(batch_size).await
            } else {
                Ok(None)
            }
        };
        let folded = async {
            match folding {
                Some(task) => Some(task.await),
                None => None,
            }
        };
        let (written, read, folded) = tokio::join!(write, read, folded);
        written.context("writing rows to ClickHouse")?;
        if let Some((folded, read, last)) = current.take() {
            projected.events += folded.seqs.len() as u64;
            projected.skipped += folded.poison.len() as u64;
            projected.last_seq = last.or(projected.last_seq);
            if let Some(last) = last {
                done(last).await?;
            }
            bar.inc(read);
        }
        current = folded.transpose().context("folding a batch")?;
        next = read?;
        if current.is_none() {
            break;
        }
    }
    Ok(projected)
}

//! Time travel: the read models as they stood at a past stream sequence
//! (or time), folded from the stream into a database of their own,
//! `<db>__snap_<name>`. A query API pointed at that database
//! (`TALLY_CLICKHOUSE__DATABASE=<db>__snap_<name>`) answers every report
//! as of then, its freshness saying the position.

use anyhow::Context as _;
use tally_projector::positions::PositionRow;
use tally_shared::event::StoredEvent;
use tally_shared::store::rollups::Roller;
use tally_shared::store::READ_MODELS;
use time::OffsetDateTime;

use crate::reader::{first_seq_at, Reader, Start};
use crate::tables::{self, Model};
use crate::{progress, project, Env, Projected, BATCH};

/// As of what a snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Every event up to and including this sequence.
    Seq(u64),
    /// Every event received before this time.
    Time(OffsetDateTime),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub database: String,
    pub position: u64,
    pub projected: Projected,
}

pub fn database(live: &str, name: &str) -> String {
    format!("{live}__snap_{name}")
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "a snapshot name is 1-64 of A-Z, a-z, 0-9 and '_'"
    );
    Ok(())
}

/// Builds snapshot `name` (replacing one of that name).
pub async fn create(env: &mut Env, name: &str, as_of: AsOf) -> anyhow::Result<Snapshot> {
    check_name(name)?;
    let last = env.stream_last().await?;
    let position = match as_of {
        AsOf::Seq(seq) => seq.min(last),
        AsOf::Time(at) => match first_seq_at(&env.events, at).await? {
            Some(first_after) => first_after - 1,
            None => last,
        },
    };
    let db = database(&env.live().database, name);
    let config = env.database(&db);
    let admin = env.client(env.live());
    tables::drop_database(&admin, &db).await?;
    tables::create_database(&config).await?;
    let client = env.client(&config);
    let mut reader = Reader::open(&env.events, "", Start::Beginning, Some(position)).await?;
    let bar = progress::events("snapshot", reader.remaining().min(position));
    let projected = project(
        env,
        &mut reader,
        &client,
        &Model::ALL,
        BATCH,
        &bar,
        |_| async { Ok(()) },
    )
    .await?;
    bar.finish_and_clear();
    record_position(env, &client, position).await?;
    // Every event up to the position is in: roll it, so that rankings over
    // the snapshot read the rollups (ADR 0006).
    let size = env.config.projector.rollup_range;
    if size > 0 {
        let roller = Roller::connect(&config);
        while roller
            .step(size, true)
            .await
            .context("rolling the snapshot")?
            .is_some()
        {}
    }
    Ok(Snapshot {
        name: name.to_owned(),
        database: db,
        position,
        projected,
    })
}

/// Records the snapshot's position for the query API's freshness: the
/// position, and as the watermark the time the event at it was received.
async fn record_position(
    env: &Env,
    client: &clickhouse::Client,
    position: u64,
) -> anyhow::Result<()> {
    let received = match position {
        0 => 0,
        seq => env
            .events
            .get_raw_message(seq)
            .await
            .ok()
            .and_then(|m| StoredEvent::decode(&m.payload).ok())
            .map_or(0, |e| {
                u32::try_from(e.received_at.unix_timestamp()).unwrap_or(0)
            }),
    };
    let updated_ms =
        u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut insert = client.insert::<PositionRow>("projection_positions").await?;
    for model in READ_MODELS {
        insert
            .write(&PositionRow {
                model: (*model).to_owned(),
                position,
                stream_last: position,
                watermark: received,
                updated_ms,
            })
            .await?;
    }
    insert
        .end()
        .await
        .context("recording the snapshot's position")
}

/// The snapshots there are, by name.
pub async fn list(env: &Env) -> anyhow::Result<Vec<String>> {
    let prefix = database(&env.live().database, "");
    let names: Vec<String> = env
        .client(env.live())
        .query("SELECT name FROM system.databases WHERE startsWith(name, ?) ORDER BY name")
        .bind(&prefix)
        .fetch_all()
        .await
        .context("listing snapshots")?;
    Ok(names
        .into_iter()
        .map(|db| db[prefix.len()..].to_owned())
        .collect())
}

pub async fn drop(env: &Env, name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let db = database(&env.live().database, name);
    tables::drop_database(&env.client(env.live()), &db).await
}

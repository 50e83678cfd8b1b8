//! Rebuilding read models from the stream without downtime.
//!
//! 1. A work database (`<db>__rebuild`) gets the read models' schema. With
//!    a start other than the beginning, the live rows before the start are
//!    copied in (once the projectors have written all of them).
//! 2. The stream is folded into it from the start, batch by batch; after
//!    each batch the sequence reached is recorded there (`rebuild_state`),
//!    so a rebuild that is interrupted continues where it stopped when run
//!    again. The live tables keep serving and the projector workers keep
//!    writing to them all along.
//! 3. Catch-up passes follow until the rebuild is within [`SWITCH_LAG`]
//!    events of the stream's end, then one more pass to the end.
//! 4. The switch, recorded before and after: one `RENAME TABLE` statement
//!    moves the live tables to `<db>__replaced_<time>` and the rebuilt ones
//!    in. The workers' next inserts go to the rebuilt tables. (ClickHouse
//!    may execute a multi-table rename partly; a rebuild interrupted there
//!    finishes the renames table by table when run again.)
//! 5. A last pass folds from the sequence reached to the stream's end into
//!    the live (rebuilt) tables: the events the workers wrote to the old
//!    tables while the switch happened. Until it is done (well under a
//!    second after a pass that ended moments before), those few events are
//!    missing from the answers. The old tables' rows are not copied over,
//!    because a fold change that moves a row to another post or month
//!    would leave both rows counted.

use anyhow::Context as _;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_shared::store::models::Models;
use tally_shared::store::rollups::Roller;
use time::OffsetDateTime;

use crate::reader::{first_seq_at, Reader, Start};
use crate::tables::{self, Model};
use crate::{progress, project, Env, Projected};

/// The rebuild makes its last pass before the switch once it is this close
/// to the stream's end.
pub const SWITCH_LAG: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct Options {
    pub models: Vec<Model>,
    pub start: Start,
    /// Discard an interrupted rebuild instead of resuming it.
    pub restart: bool,
    /// Keep the replaced tables (in `<db>__replaced_<time>`).
    pub keep_old: bool,
    /// Events folded and written at once; progress is recorded after each.
    pub batch: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub models: Vec<Model>,
    /// The first sequence folded.
    pub from_seq: u64,
    /// Whether an interrupted rebuild was resumed.
    pub resumed: bool,
    pub projected: Projected,
    /// Where the replaced tables were kept, if asked to.
    pub kept: Option<String>,
}

/// Where a rebuild is.
const FOLDING: &str = "folding";
const SWITCHING: &str = "switching";
const SWITCHED: &str = "switched";

/// The recorded progress of a rebuild.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct State {
    models: String,
    from_seq: u64,
    reached: u64,
    phase: String,
    /// The database the replaced tables go to.
    retired: String,
    updated_ms: u64,
}

const STATE_TABLE: &str = "rebuild_state";

fn models_key(models: &[Model]) -> String {
    let mut names: Vec<&str> = models.iter().map(|m| m.table()).collect();
    names.sort_unstable();
    names.join(",")
}

pub fn work_database(live: &str) -> String {
    format!("{live}__rebuild")
}

async fn table_exists(client: &clickhouse::Client, db: &str, table: &str) -> anyhow::Result<bool> {
    let count: u64 = client
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
        .bind(db)
        .bind(table)
        .fetch_one()
        .await
        .context("listing tables")?;
    Ok(count > 0)
}

async fn read_state(client: &clickhouse::Client, work: &str) -> anyhow::Result<Option<State>> {
    if !table_exists(client, work, STATE_TABLE).await? {
        return Ok(None);
    }
    // A rebuild only moves forward: through the phases, and within one to
    // higher sequences.
    let sql = format!(
        "SELECT ?fields FROM {}
         ORDER BY multiIf(phase = '{SWITCHED}', 2, phase = '{SWITCHING}', 1, 0) DESC,
                  reached DESC, updated_ms DESC
         LIMIT 1",
        tables::qualified(work, STATE_TABLE)
    );
    Ok(client.query(&sql).fetch_optional::<State>().await?)
}

/// Records `state` through `work`, a client of the work database.
async fn record(work: &clickhouse::Client, state: &State) -> anyhow::Result<()> {
    let mut insert = work.insert::<State>(STATE_TABLE).await?;
    insert
        .write(&State {
            updated_ms: now_ms(),
            ..state.clone()
        })
        .await?;
    insert
        .end()
        .await
        .context("recording the rebuild's progress")
}

fn now_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Finishes a switch that may have been interrupted: each model's table
/// that is still in the work database goes live, the live one (if any)
/// having moved to `retired` first.
async fn finish_switch(
    admin: &clickhouse::Client,
    models: &[Model],
    live: &str,
    work: &str,
    retired: &str,
) -> anyhow::Result<()> {
    tables::execute(admin, &format!("CREATE DATABASE IF NOT EXISTS `{retired}`")).await?;
    for table in tables::replaced_tables(models) {
        if !table_exists(admin, work, table).await? {
            continue;
        }
        if table_exists(admin, live, table).await? {
            tables::swap(admin, &[table], live, work, retired).await?;
        } else {
            let sql = format!(
                "RENAME TABLE {} TO {}",
                tables::qualified(work, table),
                tables::qualified(live, table)
            );
            tables::execute(admin, &sql).await?;
        }
    }
    Ok(())
}

pub async fn rebuild(env: &mut Env, options: Options) -> anyhow::Result<Report> {
    let live = env.live().database.clone();
    let work = work_database(&live);
    let work_config = env.database(&work);
    let admin = env.client(env.live());
    let models = if options.models.is_empty() {
        Model::ALL.to_vec()
    } else {
        options.models.clone()
    };
    let key = models_key(&models);

    let previous = if options.restart {
        None
    } else {
        read_state(&admin, &work).await?
    };
    if let Some(state) = &previous {
        anyhow::ensure!(
            state.models == key && options.start == Start::Beginning,
            "an interrupted rebuild of {} from sequence {} is in {work}: run `rebuild` \
             without --model/--from-* to continue it, or with --restart to discard it",
            state.models,
            state.from_seq
        );
    }
    let resumed = previous.is_some();
    let work_client = env.client(&work_config);
    let mut state = match previous {
        Some(state) => state,
        None => start(env, &options, &models, &key, &live, &work).await?,
    };

    if resumed && state.phase == FOLDING {
        // A rebuild begun by an earlier version lacks the tables of later
        // migrations: they are made now, with what it folded so far (the
        // migrations copy it, as they do in a live database).
        tables::create_database(&work_config).await?;
    }
    let mut projected = Projected::default();
    if state.phase == FOLDING {
        // Catch up until close enough, then one more pass to the end.
        let mut close = false;
        loop {
            let mut reader =
                Reader::open(&env.events, "", Start::Seq(state.reached + 1), None).await?;
            let bar = progress::events("rebuild", reader.remaining());
            let pass = project(
                env,
                &mut reader,
                &work_client,
                &models,
                options.batch,
                &bar,
                |seq| {
                    let (work_client, state) = (&work_client, &state);
                    async move {
                        let at = State {
                            reached: seq,
                            ..state.clone()
                        };
                        record(work_client, &at).await
                    }
                },
            )
            .await?;
            bar.finish_and_clear();
            add(&mut projected, pass);
            if let Some(last) = pass.last_seq {
                state.reached = last;
            }
            if close {
                break;
            }
            close = env.stream_last().await?.saturating_sub(state.reached) <= SWITCH_LAG;
        }
        state.phase = SWITCHING.into();
        state.retired = format!(
            "{live}__replaced_{}",
            OffsetDateTime::now_utc().unix_timestamp()
        );
        record(&work_client, &state).await?;
        tables::execute(
            &admin,
            &format!("CREATE DATABASE IF NOT EXISTS `{}`", state.retired),
        )
        .await?;
        tables::swap(
            &admin,
            &tables::replaced_tables(&models),
            &live,
            &work,
            &state.retired,
        )
        .await?;
        tracing::info!(?models, reached = state.reached, "rebuilt tables are live");
    }
    if state.phase == SWITCHING {
        finish_switch(&admin, &models, &live, &work, &state.retired).await?;
        state.phase = SWITCHED.into();
        record(&work_client, &state).await?;
    }

    // The last pass, into the live tables: what the workers wrote to the
    // old ones while the switch happened.
    let live_client = env.client(env.live());
    let mut reader = Reader::open(&env.events, "", Start::Seq(state.reached + 1), None).await?;
    let bar = progress::events("catch-up", reader.remaining());
    let pass = project(
        env,
        &mut reader,
        &live_client,
        &models,
        options.batch,
        &bar,
        |_| async { Ok(()) },
    )
    .await?;
    bar.finish_and_clear();
    add(&mut projected, pass);
    // Every event up to the workers' position is in the new tables now:
    // rolling may start on them.
    Roller::connect(env.live())
        .hold(false)
        .await
        .context("releasing the rollups")?;

    tables::drop_database(&admin, &work).await?;
    let kept = if options.keep_old {
        Some(state.retired.clone())
    } else {
        tables::drop_database(&admin, &state.retired).await?;
        None
    };
    Ok(Report {
        models,
        from_seq: state.from_seq,
        resumed,
        projected,
        kept,
    })
}

/// A new rebuild: the work database, the rows before the start, the first
/// recorded state.
async fn start(
    env: &mut Env,
    options: &Options,
    models: &[Model],
    key: &str,
    live: &str,
    work: &str,
) -> anyhow::Result<State> {
    let admin = env.client(env.live());
    let from_seq = match options.start {
        Start::Beginning => 1,
        Start::Seq(seq) => seq.max(1),
        Start::Time(at) => first_seq_at(&env.events, at)
            .await?
            .unwrap_or(env.stream_last().await? + 1),
    };
    if from_seq > 1 {
        // The rows before the start are copied as they are: every one of
        // them must be written.
        let positions = Models::connect(env.live())
            .positions()
            .await
            .context("reading the projection position")?;
        let position = positions.iter().map(|p| p.position).min().unwrap_or(0);
        anyhow::ensure!(
            position + 1 >= from_seq,
            "the projectors are at sequence {position}, before the start {from_seq}: \
             start at or before {} or wait for them",
            position + 1
        );
    }
    tables::drop_database(&admin, work).await?;
    tables::create_database(&env.database(work)).await?;
    // Nothing is rolled in the new tables until the switch's events are in
    // them too (released after the last pass).
    Roller::connect(&env.database(work))
        .hold(true)
        .await
        .context("holding the rollups")?;
    tables::execute(
        &admin,
        &format!(
            "CREATE TABLE {} (models String, from_seq UInt64, reached UInt64, phase String,
                              retired String, updated_ms UInt64)
             ENGINE = MergeTree() ORDER BY updated_ms",
            tables::qualified(work, STATE_TABLE)
        ),
    )
    .await?;
    if from_seq > 1 {
        for model in models {
            let condition = format!("seq < {from_seq}");
            tables::copy_rows(&admin, *model, live, work, &condition).await?;
        }
    }
    let state = State {
        models: key.to_owned(),
        from_seq,
        reached: from_seq - 1,
        phase: FOLDING.into(),
        retired: String::new(),
        updated_ms: 0,
    };
    record(&env.client(&env.database(work)), &state).await?;
    Ok(state)
}

fn add(total: &mut Projected, pass: Projected) {
    total.events += pass.events;
    total.skipped += pass.skipped;
    total.last_seq = pass.last_seq.or(total.last_seq);
}

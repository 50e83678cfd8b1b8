//! Rebuilding read models from the stream without downtime.
//!
//! 1. A work database (`<db>__rebuild`) gets the read models' schema. With
//!    a start other than the beginning, the live rows before the start are
//!    copied in.
//! 2. The stream is folded into it from the start, batch by batch; after
//!    each batch the sequence reached is recorded there (`rebuild_state`),
//!    so a rebuild that is interrupted continues where it stopped when run
//!    again. The live tables keep serving and the projector workers keep
//!    writing to them all along.
//! 3. Catch-up passes follow until the rebuild is within [`SWITCH_LAG`]
//!    events of the stream's end.
//! 4. The switch: the rows the workers wrote beyond the sequence reached are
//!    copied in, then one `RENAME TABLE` puts the rebuilt tables live and
//!    the old ones into `<db>__replaced_<time>`; the workers' next inserts
//!    go to the rebuilt tables.
//! 5. A last pass folds from the sequence reached to the stream's end again,
//!    into the live (rebuilt) tables, so every row the rebuilt code makes
//!    replaces what the old code made in the meantime (rows are keyed by
//!    sequence, so this rewrites, never doubles).

use anyhow::Context as _;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::reader::{first_seq_at, Reader, Start};
use crate::tables::{self, Model};
use crate::{progress, project, Env, Projected};

/// The rebuild switches once it is this close to the stream's end.
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

/// The recorded progress of a rebuild.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct State {
    models: String,
    from_seq: u64,
    reached: u64,
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

async fn read_state(client: &clickhouse::Client, work: &str) -> anyhow::Result<Option<State>> {
    if !tables::database_exists(client, work).await? {
        return Ok(None);
    }
    let exists: u64 = client
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
        .bind(work)
        .bind(STATE_TABLE)
        .fetch_one()
        .await?;
    if exists == 0 {
        return Ok(None);
    }
    let sql = format!(
        "SELECT ?fields FROM {} ORDER BY updated_ms DESC, reached DESC LIMIT 1",
        tables::qualified(work, STATE_TABLE)
    );
    Ok(client.query(&sql).fetch_optional::<State>().await?)
}

/// Records progress through `work`, a client of the work database.
async fn record(
    work: &clickhouse::Client,
    models: &str,
    from_seq: u64,
    reached: u64,
) -> anyhow::Result<()> {
    let mut insert = work.insert::<State>(STATE_TABLE).await?;
    insert
        .write(&State {
            models: models.to_owned(),
            from_seq,
            reached,
            updated_ms: now_ms(),
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

    let state = if options.restart {
        None
    } else {
        read_state(&admin, &work).await?
    };
    if let Some(state) = &state {
        anyhow::ensure!(
            state.models == key,
            "an interrupted rebuild of {} is in {work}; run with --restart to discard it",
            state.models
        );
    }
    let resumed = state.is_some();
    let (from_seq, mut reached) = match state {
        Some(state) => (state.from_seq, state.reached),
        None => {
            let from_seq = match options.start {
                Start::Beginning => 1,
                Start::Seq(seq) => seq.max(1),
                Start::Time(at) => first_seq_at(&env.events, at)
                    .await?
                    .unwrap_or(env.stream_last().await? + 1),
            };
            tables::drop_database(&admin, &work).await?;
            tables::create_database(&work_config).await?;
            tables::execute(
                &admin,
                &format!(
                    "CREATE TABLE {} (models String, from_seq UInt64, reached UInt64,
                                      updated_ms UInt64)
                     ENGINE = MergeTree() ORDER BY updated_ms",
                    tables::qualified(&work, STATE_TABLE)
                ),
            )
            .await?;
            if from_seq > 1 {
                for model in &models {
                    let condition = format!("seq < {from_seq}");
                    tables::copy_rows(&admin, *model, &live, &work, &condition).await?;
                }
            }
            record(&env.client(&work_config), &key, from_seq, from_seq - 1).await?;
            (from_seq, from_seq - 1)
        }
    };

    let work_client = env.client(&work_config);
    let mut projected = Projected::default();
    // Catch up until close enough to switch.
    loop {
        let mut reader = Reader::open(&env.events, "", Start::Seq(reached + 1), None).await?;
        let bar = progress::events("rebuild", reader.remaining());
        let pass = project(
            env,
            &mut reader,
            &work_client,
            &models,
            options.batch,
            &bar,
            |seq| {
                let (work_client, key) = (&work_client, &key);
                async move { record(work_client, key, from_seq, seq).await }
            },
        )
        .await?;
        bar.finish_and_clear();
        add(&mut projected, pass);
        if let Some(last) = pass.last_seq {
            reached = last;
        }
        if env.stream_last().await?.saturating_sub(reached) <= SWITCH_LAG {
            break;
        }
    }

    // The switch.
    for model in &models {
        let condition = format!("seq > {reached}");
        tables::copy_rows(&admin, *model, &live, &work, &condition).await?;
    }
    let retired = format!(
        "{live}__replaced_{}",
        OffsetDateTime::now_utc().unix_timestamp()
    );
    tables::execute(
        &admin,
        &format!("CREATE DATABASE IF NOT EXISTS `{retired}`"),
    )
    .await?;
    tables::swap(&admin, &models, &live, &work, &retired).await?;
    tracing::info!(?models, reached, "rebuilt tables are live");

    // The last pass, into the live tables.
    let live_client = env.client(env.live());
    let mut reader = Reader::open(&env.events, "", Start::Seq(reached + 1), None).await?;
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

    tables::drop_database(&admin, &work).await?;
    let kept = if options.keep_old {
        Some(retired)
    } else {
        tables::drop_database(&admin, &retired).await?;
        None
    };
    Ok(Report {
        models,
        from_seq,
        resumed,
        projected,
        kept,
    })
}

fn add(total: &mut Projected, pass: Projected) {
    total.events += pass.events;
    total.skipped += pass.skipped;
    total.last_seq = pass.last_seq.or(total.last_seq);
}

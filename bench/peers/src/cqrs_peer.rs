//! Peer 2: cqrs-es with postgres-es. An aggregate per post; each op is a
//! command that loads the post, decides, and appends one event with the
//! next sequence number. Two workers appending to the same post at once
//! collide on the events table's primary key, which cqrs-es reports as
//! `AggregateConflict`: the command is then retried from the load.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use postgres_es::{PostgresCqrs, PostgresEventRepository};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use crate::drive::{drive, ApplyError, Peer};
use crate::ops::{self, Kind, Op};
use crate::post::{Post, PostCommand};
use crate::stats::{log_mismatches, Summary};

/// Past this many conflicts in a row an op is given up as an error.
pub const MAX_RETRIES: u32 = 1_000;

/// How postgres-es rebuilds an aggregate before each command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Replay every event of the post, every command (quadratic on a viral
    /// post: the unfair baseline).
    Events,
    /// Load the latest snapshot, replay the events after it; a snapshot is
    /// written every `--snapshot-every` events (the framework's answer to
    /// long streams).
    Snapshot,
    /// Load only the snapshot, rewritten on every command.
    Aggregate,
}

impl StoreKind {
    fn store(
        self,
        repo: PostgresEventRepository,
        snapshot_every: usize,
    ) -> PersistedEventStore<PostgresEventRepository, Post> {
        match self {
            StoreKind::Events => PersistedEventStore::new_event_store(repo),
            StoreKind::Snapshot => PersistedEventStore::new_snapshot_store(repo, snapshot_every),
            StoreKind::Aggregate => PersistedEventStore::new_aggregate_store(repo),
        }
    }

    fn describe(self, snapshot_every: usize) -> String {
        match self {
            StoreKind::Events => "no snapshots (full replay per command)".to_owned(),
            StoreKind::Snapshot => format!("snapshot every {snapshot_every} events"),
            StoreKind::Aggregate => "aggregate store (snapshot rewritten per command)".to_owned(),
        }
    }
}

/// Where and how to run the cqrs-es peer.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub store: StoreKind,
    pub snapshot_every: usize,
}

/// The cqrs-es peer: a framework over a shared connection pool.
pub struct CqrsPeer {
    cqrs: PostgresCqrs<Post>,
}

impl Peer for CqrsPeer {
    /// Workers share the pool; they hold nothing of their own.
    type Worker = ();

    async fn worker(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, _: &mut (), op: &Op) -> Result<u32, ApplyError> {
        let mut retries = 0;
        loop {
            let user = op.user.clone();
            let command = match op.op {
                Kind::Like => PostCommand::Like { user },
                Kind::Unlike => PostCommand::Unlike { user },
            };
            match self.cqrs.execute(&op.post, command).await {
                Ok(()) => return Ok(retries),
                // Immediately: the next load sees the winner's event, so
                // each round of a conflict lets at least one writer through.
                Err(AggregateError::AggregateConflict) if retries < MAX_RETRIES => retries += 1,
                Err(e) => {
                    return Err(ApplyError(format!(
                        "{:?} of {} by {} after {retries} retries: {e}",
                        op.op, op.post, op.user
                    )))
                }
            }
        }
    }
}

/// Runs the ops through cqrs-es into a fresh schema, checks every post's
/// final count, and drops the schema whatever happened.
pub async fn run(
    settings: &Settings,
    run_id: &str,
    ops: Arc<Vec<Op>>,
    parts: Vec<Vec<usize>>,
    rate: Option<f64>,
    expected: &BTreeMap<String, i64>,
) -> anyhow::Result<Summary> {
    let connections = parts.len() as u32 + 1;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&settings.url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", settings.url))?;
    let schema = format!("tally_peers_{run_id}");
    create_schema(&pool, &schema).await?;
    let result = run_in(settings, &pool, &schema, ops, parts, rate, expected).await;
    let dropped = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .with_context(|| format!("dropping schema {schema}"));
    let mut summary = result?;
    dropped?;
    summary.notes = format!(
        "cqrs-es 0.5 + postgres-es 0.5, {}; pool of {connections} connections shared by the \
         workers; on AggregateConflict the command is retried at once from a fresh load \
         (up to {MAX_RETRIES} times); tables in schema {schema}, dropped after the run; {}",
        settings.store.describe(settings.snapshot_every),
        summary.notes
    );
    pool.close().await;
    Ok(summary)
}

/// The tables postgres-es documents (its db/init.sql), in their own schema.
async fn create_schema(pool: &PgPool, schema: &str) -> anyhow::Result<()> {
    let ddl = [
        format!("CREATE SCHEMA {schema}"),
        format!(
            "CREATE TABLE {schema}.events (
                aggregate_type text NOT NULL,
                aggregate_id text NOT NULL,
                sequence bigint CHECK (sequence >= 0) NOT NULL,
                event_type text NOT NULL,
                event_version text NOT NULL,
                payload json NOT NULL,
                metadata json NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
        ),
        format!(
            "CREATE TABLE {schema}.snapshots (
                aggregate_type text NOT NULL,
                aggregate_id text NOT NULL,
                last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
                current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                payload json NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
        ),
    ];
    for statement in ddl {
        sqlx::query(&statement)
            .execute(pool)
            .await
            .with_context(|| format!("creating the event store: {statement}"))?;
    }
    Ok(())
}

async fn run_in(
    settings: &Settings,
    pool: &PgPool,
    schema: &str,
    ops: Arc<Vec<Op>>,
    parts: Vec<Vec<usize>>,
    rate: Option<f64>,
    expected: &BTreeMap<String, i64>,
) -> anyhow::Result<Summary> {
    let repo = || {
        PostgresEventRepository::new(pool.clone())
            .with_tables(&format!("{schema}.events"), &format!("{schema}.snapshots"))
    };
    let store = settings.store.store(repo(), settings.snapshot_every);
    let workers = parts.len();
    let peer = Arc::new(CqrsPeer {
        cqrs: CqrsFramework::new(store, vec![], ()),
    });
    let outcome = drive("cqrs-es", peer, ops, parts, rate).await?;

    // The count as the framework loads it (through the same store)…
    let reader = Arc::new(settings.store.store(repo(), settings.snapshot_every));
    let loaded = load_counts(reader, expected.keys().cloned().collect(), workers).await?;
    let mut bad = ops::mismatches(expected, &loaded);
    log_mismatches("cqrs-es (loaded aggregates)", &bad);
    // …and as the event log itself says, independently of the framework.
    let logged = logged_counts(pool, schema).await?;
    let bad_log = ops::mismatches(expected, &logged);
    log_mismatches("cqrs-es (event log)", &bad_log);
    bad.extend(bad_log);
    bad.sort();
    bad.dedup_by(|a, b| a.0 == b.0);
    let notes = format!(
        "counts checked by loading every aggregate and by summing the event log ({} events)",
        logged_events(pool, schema).await?
    );
    Ok(outcome.summarise(bad.len() as u64, expected.len() as u64, notes))
}

/// Every post's count as cqrs-es loads it, `workers` posts at a time.
async fn load_counts(
    store: Arc<PersistedEventStore<PostgresEventRepository, Post>>,
    posts: Vec<String>,
    workers: usize,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let chunk = posts.len().div_ceil(workers.max(1)).max(1);
    let tasks: Vec<_> = posts
        .chunks(chunk)
        .map(|posts| {
            let (store, posts) = (store.clone(), posts.to_vec());
            tokio::spawn(async move {
                let mut counts = Vec::with_capacity(posts.len());
                for post in posts {
                    let context = store
                        .load_aggregate(&post)
                        .await
                        .map_err(|e| anyhow::anyhow!("loading post {post}: {e}"))?;
                    let aggregate = context.aggregate;
                    anyhow::ensure!(
                        aggregate.count == aggregate.likers.len() as i64,
                        "post {post}: count {} but {} likers",
                        aggregate.count,
                        aggregate.likers.len()
                    );
                    counts.push((post, aggregate.count));
                }
                anyhow::Ok(counts)
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for task in tasks {
        counts.extend(task.await??);
    }
    Ok(counts)
}

/// Liked minus Unliked events per post, straight from the events table.
async fn logged_counts(pool: &PgPool, schema: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows = sqlx::query(&format!(
        "SELECT aggregate_id,
                SUM(CASE event_type WHEN 'Liked' THEN 1 WHEN 'Unliked' THEN -1 ELSE 0 END)::bigint
           FROM {schema}.events GROUP BY aggregate_id"
    ))
    .fetch_all(pool)
    .await
    .context("summing the event log")?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .context("reading the event log's sums")
}

async fn logged_events(pool: &PgPool, schema: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {schema}.events"))
        .fetch_one(pool)
        .await
        .context("counting the event log")
}

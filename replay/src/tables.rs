//! The read models' tables, and moving them between databases.
//!
//! The read models are fact tables keyed by stream sequence (ADR 0004):
//! every report is computed from them when read. A rebuild or a snapshot is
//! the same set of tables in a database of its own, made by the same
//! migrations, so the same queries and the same fold work on it unchanged.

use std::fmt;
use std::str::FromStr;

use anyhow::Context as _;
use tally_shared::config::ClickHouseConfig;
use tally_shared::store;

/// A read model's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    /// Interactions and audience events: post metrics, influencer series,
    /// followers, campaigns, rankings, trends, anomalies.
    Engagements,
    /// Influencers, posts and campaigns.
    Catalogue,
    /// Posts again, ordered for attribution lookups.
    PostCatalogue,
    /// Events received after their bucket closed.
    LateEvents,
}

/// `engagements`' facts again, sorted by sequence for the rollups.
pub const FACTS_BY_SEQ: &str = "facts_by_seq";

impl Model {
    pub const ALL: [Model; 4] = [
        Model::Engagements,
        Model::Catalogue,
        Model::PostCatalogue,
        Model::LateEvents,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Model::Engagements => "engagements",
            Model::Catalogue => "catalogue",
            Model::PostCatalogue => "post_catalogue",
            Model::LateEvents => "late_events",
        }
    }

    /// Every table that holds the model: `engagements`' facts are also in
    /// `facts_by_seq`, sorted by sequence for the rollups (ADR 0006).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Model::Engagements => &["engagements", FACTS_BY_SEQ],
            Model::Catalogue => &["catalogue"],
            Model::PostCatalogue => &["post_catalogue"],
            Model::LateEvents => &["late_events"],
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(name: &str) -> Result<Model, String> {
        Model::ALL
            .into_iter()
            .find(|m| m.table() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Model::ALL.iter().map(|m| m.table()).collect();
                format!("no read model {name:?}; one of {}", names.join(", "))
            })
    }
}

/// The rollups' tables (ADR 0006): sums of the fact tables, so a rebuild
/// of any fact they sum replaces them too, empty, and they are rolled again.
pub const ROLLUP_TABLES: [&str; 4] = ["rollups", "rollup_ranges", "rollup_hold", "rollup_retired"];

/// The tables a rebuild of `models` replaces, in the one order every
/// statement that reads several of them locks them in: the facts, the
/// catalogue, then the rollups (on ClickHouse 18.16 a `RENAME` that locked
/// them in another order than a concurrent query could deadlock with it).
pub fn replaced_tables(models: &[Model]) -> Vec<&'static str> {
    let mut models = models.to_vec();
    models.sort();
    let mut tables: Vec<&str> = models.iter().flat_map(|m| m.tables()).copied().collect();
    if models.iter().any(|m| *m != Model::LateEvents) {
        tables.extend(ROLLUP_TABLES);
    }
    tables
}

/// `db`.`table`, quoted.
pub fn qualified(database: &str, table: &str) -> String {
    format!("`{database}`.`{table}`")
}

pub async fn execute(client: &clickhouse::Client, sql: &str) -> anyhow::Result<()> {
    client
        .query(sql)
        .execute()
        .await
        .with_context(|| format!("ClickHouse: {sql}"))
}

pub async fn database_exists(client: &clickhouse::Client, name: &str) -> anyhow::Result<bool> {
    let count: u64 = client
        .query("SELECT count() FROM system.databases WHERE name = ?")
        .bind(name)
        .fetch_one()
        .await
        .context("listing databases")?;
    Ok(count > 0)
}

/// A database with the read models' schema (every migration applied).
pub async fn create_database(config: &ClickHouseConfig) -> anyhow::Result<()> {
    store::migrate(config)
        .await
        .with_context(|| format!("creating the read models in {}", config.database))?;
    Ok(())
}

pub async fn drop_database(client: &clickhouse::Client, name: &str) -> anyhow::Result<()> {
    execute(client, &format!("DROP DATABASE IF EXISTS `{name}`")).await
}

/// Copies `model`'s rows whose sequence satisfies `condition` (a constant
/// condition on `seq`) from one database to another, table by table.
pub async fn copy_rows(
    client: &clickhouse::Client,
    model: Model,
    from: &str,
    to: &str,
    condition: &str,
) -> anyhow::Result<()> {
    for table in model.tables() {
        let sql = format!(
            "INSERT INTO {} SELECT * FROM {} FINAL WHERE {condition}",
            qualified(to, table),
            qualified(from, table),
        );
        execute(client, &sql).await?;
    }
    Ok(())
}

/// Moves `tables`: `live` ones to `retired`, `fresh` ones into
/// `live`, in one statement (readers in between see the old or the new
/// table; a read that falls exactly between two renames fails once, and the
/// query API answers it from its cache marked stale).
pub async fn swap(
    client: &clickhouse::Client,
    tables: &[&str],
    live: &str,
    fresh: &str,
    retired: &str,
) -> anyhow::Result<()> {
    let renames: Vec<String> = tables
        .iter()
        .flat_map(|table| {
            [
                format!(
                    "{} TO {}",
                    qualified(live, table),
                    qualified(retired, table)
                ),
                format!("{} TO {}", qualified(fresh, table), qualified(live, table)),
            ]
        })
        .collect();
    execute(client, &format!("RENAME TABLE {}", renames.join(", "))).await
}

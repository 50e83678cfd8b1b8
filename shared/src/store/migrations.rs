//! Versioned schema migrations. Each is a file under `shared/migrations/`,
//! applied once, in order, and recorded in `schema_migrations`. Statements
//! are idempotent (`IF NOT EXISTS`) so two projectors starting together are
//! harmless.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{ensure_database, timed, StoreError};
use crate::config::ClickHouseConfig;

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Append only: never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events_and_post_metrics",
        sql: include_str!("../../migrations/0001_events_and_post_metrics.sql"),
    },
    Migration {
        version: 2,
        name: "read_models",
        sql: include_str!("../../migrations/0002_read_models.sql"),
    },
    Migration {
        version: 3,
        name: "drop_events_copy",
        sql: include_str!("../../migrations/0003_drop_events_copy.sql"),
    },
    Migration {
        version: 4,
        name: "post_catalogue",
        sql: include_str!("../../migrations/0004_post_catalogue.sql"),
    },
    Migration {
        version: 5,
        name: "rollups",
        sql: include_str!("../../migrations/0005_rollups.sql"),
    },
    Migration {
        version: 6,
        name: "facts_by_seq",
        sql: include_str!("../../migrations/0006_facts_by_seq.sql"),
    },
    Migration {
        version: 7,
        name: "rollup_retired",
        sql: include_str!("../../migrations/0007_rollup_retired.sql"),
    },
];

/// Longest one migration statement may run.
const MIGRATION_TIMEOUT_MS: u64 = 30 * 60 * 1000;

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version";

#[derive(Row, Serialize, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    applied_at: u32,
}

/// Creates the database if needed and applies the pending migrations.
/// Returns the versions it applied.
pub async fn migrate(config: &ClickHouseConfig) -> Result<Vec<u32>, StoreError> {
    ensure_database(config).await?;
    let client = super::client(config);
    timed(config, client.query(CREATE_LEDGER).execute()).await?;
    let mut applied = Vec::new();
    // A migration may copy a table (0004 backfills one): it gets longer
    // than an ordinary query before it counts as failed and is retried.
    let long = ClickHouseConfig {
        timeout_ms: config.timeout_ms.max(MIGRATION_TIMEOUT_MS),
        ..config.clone()
    };
    for migration in pending(config, &client).await? {
        for statement in statements(migration.sql) {
            timed(&long, client.query(&statement).execute()).await?;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let row = Applied {
            version: migration.version,
            name: migration.name.to_owned(),
            applied_at: u32::try_from(now).unwrap_or(u32::MAX),
        };
        timed(config, async {
            let mut insert = client.insert::<Applied>("schema_migrations").await?;
            insert.write(&row).await?;
            insert.end().await
        })
        .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Versions not yet applied (empty when the schema is current). An absent
/// database or ledger counts as nothing applied.
pub async fn pending_migrations(config: &ClickHouseConfig) -> Result<Vec<u32>, StoreError> {
    let exists: u8 = timed(
        config,
        super::server_client(config)
            .query("SELECT toUInt8(count()) FROM system.tables WHERE database = ? AND name = 'schema_migrations'")
            .bind(&config.database)
            .fetch_one(),
    )
    .await?;
    if exists == 0 {
        return Ok(MIGRATIONS.iter().map(|m| m.version).collect());
    }
    Ok(pending(config, &super::client(config))
        .await?
        .iter()
        .map(|m| m.version)
        .collect())
}

async fn pending(
    config: &ClickHouseConfig,
    client: &clickhouse::Client,
) -> Result<Vec<&'static Migration>, StoreError> {
    let done: Vec<u32> = timed(
        config,
        client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all(),
    )
    .await?;
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect())
}

/// Splits a migration file into statements, after dropping `--` comment lines.
fn statements(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn statements_split_and_skip_comments() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- trailing\n";
        assert_eq!(
            statements(sql),
            vec!["CREATE TABLE a (x UInt8) ENGINE = Memory"]
        );
    }

    #[test]
    fn every_migration_has_statements() {
        for m in MIGRATIONS {
            assert!(!statements(m.sql).is_empty(), "{}", m.name);
        }
    }
}

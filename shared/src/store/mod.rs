//! ClickHouse plumbing: the client, and the versioned schema migrations that
//! the projector applies at start-up (the query API only checks them).
//!
//! SQL here must run on ClickHouse 18.16 as well as current releases: no
//! `DateTime64`, no `LowCardinality`, no lightweight deletes.

mod migrations;
pub mod models;
pub mod rollups;

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::{ClickHouseConfig, Compression};

pub use migrations::{migrate, pending_migrations, MIGRATIONS};

/// The read models. All are folded from the same batches and share one
/// stream position (table `projection_positions`).
pub const READ_MODELS: &[&str] = &[
    "post_metrics",
    "influencer_engagement",
    "followers",
    "campaigns",
    "rankings",
    "sentiment",
    "anomalies",
    "late_events",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid database name {0:?}: use A-Z, a-z, 0-9 and '_'")]
    DatabaseName(String),
}

/// A client for the configured database. Validation is off because
/// ClickHouse 18.16 lacks `RowBinaryWithNamesAndTypes`; row types are
/// therefore written to match the column types exactly.
pub fn client(config: &ClickHouseConfig) -> clickhouse::Client {
    server_client(config).with_database(&config.database)
}

/// A client not bound to a database (to create it).
pub(crate) fn server_client(config: &ClickHouseConfig) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_password(config.password.expose_secret())
        .with_validation(false)
        .with_compression(match config.compression {
            Compression::None => clickhouse::Compression::None,
            Compression::Lz4 => clickhouse::Compression::Lz4,
        })
}

/// Runs `fut` under the configured timeout.
pub async fn timed<T>(
    config: &ClickHouseConfig,
    fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, StoreError> {
    let limit = Duration::from_millis(config.timeout_ms);
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}

/// Creates the configured database if it is missing.
pub async fn ensure_database(config: &ClickHouseConfig) -> Result<(), StoreError> {
    if config.database.is_empty()
        || !config
            .database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::DatabaseName(config.database.clone()));
    }
    let sql = format!("CREATE DATABASE IF NOT EXISTS {}", config.database);
    timed(config, server_client(config).query(&sql).execute()).await
}

/// Whether ClickHouse answers at all.
pub async fn ping(config: &ClickHouseConfig) -> Result<(), StoreError> {
    timed(config, server_client(config).query("SELECT 1").execute()).await
}

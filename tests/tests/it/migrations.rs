use tally_shared::store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_are_idempotent() {
    let mut config = tally_shared::Config::defaults().clickhouse;
    config.url = tally_tests::clickhouse().url();
    config.database = tally_tests::database_name("migrations_idempotent");

    let all: Vec<u32> = store::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(store::pending_migrations(&config).await.unwrap(), all);
    assert_eq!(store::migrate(&config).await.unwrap(), all);
    assert!(
        store::migrate(&config).await.unwrap().is_empty(),
        "second run applies nothing"
    );
    assert!(store::pending_migrations(&config).await.unwrap().is_empty());

    // Two projectors starting together: both succeed, the schema is current.
    let mut fresh = config.clone();
    fresh.database = tally_tests::database_name("migrations_concurrent");
    let (a, b) = tokio::join!(store::migrate(&fresh), store::migrate(&fresh));
    a.unwrap();
    b.unwrap();
    assert!(store::pending_migrations(&fresh).await.unwrap().is_empty());
}

/// Upgrading a database whose facts predate `facts_by_seq` (migration 6)
/// copies them there, so the rollups of their ranges still sum them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facts_of_an_upgraded_database_are_copied_by_sequence() {
    let mut config = tally_shared::Config::defaults().clickhouse;
    config.url = tally_tests::clickhouse().url();
    config.database = tally_tests::database_name("migrations_facts_by_seq");
    store::migrate(&config).await.unwrap();
    let client = store::client(&config);
    // The database as migration 5 left it, with facts in it.
    for sql in [
        "DROP TABLE facts_by_seq",
        "DROP TABLE late_events_by_seq",
        late_events_by_month(),
        "CREATE TABLE ledger_before AS schema_migrations",
        "INSERT INTO ledger_before SELECT * FROM schema_migrations WHERE version < 6",
        "DROP TABLE schema_migrations",
        "RENAME TABLE ledger_before TO schema_migrations",
        "INSERT INTO engagements (tenant, seq, post_id, views, likes)
         VALUES ('acme', 3, 'p1', 1, 0), ('acme', 9, 'p2', 0, 1), ('globex', 4, 'p1', 1, 0)",
    ] {
        client.query(sql).execute().await.unwrap();
    }
    assert_eq!(store::pending_migrations(&config).await.unwrap(), [6, 7, 8]);
    assert_eq!(store::migrate(&config).await.unwrap(), [6, 7, 8]);
    let copied: Vec<(String, u64, String, u64, i8)> = client
        .query("SELECT tenant, seq, post_id, views, likes FROM facts_by_seq ORDER BY seq")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        copied,
        [
            ("acme".to_owned(), 3, "p1".to_owned(), 1, 0),
            ("globex".to_owned(), 4, "p1".to_owned(), 1, 0),
            ("acme".to_owned(), 9, "p2".to_owned(), 0, 1),
        ]
    );
}

/// Upgrading a database whose late events are partitioned by month (before
/// migration 8) moves them to `late_events_by_seq`, a partition per million
/// sequences, and drops the old table, which nothing reads any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_late_events_of_an_upgraded_database_move_to_partitions_by_sequence() {
    let mut config = tally_shared::Config::defaults().clickhouse;
    config.url = tally_tests::clickhouse().url();
    config.database = tally_tests::database_name("migrations_late_by_seq");
    store::migrate(&config).await.unwrap();
    let client = store::client(&config);
    // The database as migration 7 left it, with late events in it.
    for sql in [
        "DROP TABLE late_events_by_seq",
        "CREATE TABLE ledger_before AS schema_migrations",
        "INSERT INTO ledger_before SELECT * FROM schema_migrations WHERE version < 8",
        "DROP TABLE schema_migrations",
        "RENAME TABLE ledger_before TO schema_migrations",
        late_events_by_month(),
        "INSERT INTO late_events (tenant, seq, event_id, post_id, lateness_s)
         VALUES ('acme', 5, 'e5', 'p1', 90), ('globex', 2000000, 'e2', 'p2', 600)",
    ] {
        client.query(sql).execute().await.unwrap();
    }
    assert_eq!(store::pending_migrations(&config).await.unwrap(), [8]);
    assert_eq!(store::migrate(&config).await.unwrap(), [8]);
    let moved: Vec<(String, u64, String, u32)> = client
        .query("SELECT tenant, seq, event_id, lateness_s FROM late_events_by_seq ORDER BY seq")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        moved,
        [
            ("acme".to_owned(), 5, "e5".to_owned(), 90),
            ("globex".to_owned(), 2_000_000, "e2".to_owned(), 600),
        ]
    );
    let partitions: Vec<String> = client
        .query(
            "SELECT DISTINCT partition FROM system.parts
             WHERE database = currentDatabase() AND table = 'late_events_by_seq' AND active
             ORDER BY partition",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(partitions, ["0", "1"]);
    let old: u64 = client
        .query(
            "SELECT count() FROM system.tables
             WHERE database = currentDatabase() AND name = 'late_events'",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(old, 0);
}

/// A runner whose statement fails because another runner applied the same
/// migration first (8 dropped the table its copy reads) takes the other's
/// record for it; without that record, the failure is its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_another_runner_applied_first_is_not_an_error() {
    let mut config = tally_shared::Config::defaults().clickhouse;
    config.url = tally_tests::clickhouse().url();
    config.database = tally_tests::database_name("migrations_raced");
    store::migrate(&config).await.unwrap();
    let client = store::client(&config);
    let forget_8 = [
        "CREATE TABLE ledger_before AS schema_migrations",
        "INSERT INTO ledger_before SELECT * FROM schema_migrations WHERE version < 8",
        "DROP TABLE schema_migrations",
        "RENAME TABLE ledger_before TO schema_migrations",
    ];
    for sql in forget_8 {
        client.query(sql).execute().await.unwrap();
    }
    // Nobody records it: the copy from the missing `late_events` fails.
    assert!(store::migrate(&config).await.is_err());
    assert_eq!(store::pending_migrations(&config).await.unwrap(), [8]);

    // Another runner records it while this one fails.
    let other = client.clone();
    let recorder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        other
            .query("INSERT INTO schema_migrations (version, name) VALUES (8, 'late_events_by_seq')")
            .execute()
            .await
            .unwrap();
    });
    assert_eq!(store::migrate(&config).await.unwrap(), Vec::<u32>::new());
    recorder.await.unwrap();
    assert!(store::pending_migrations(&config).await.unwrap().is_empty());
}

/// Migration 2's `late_events`, partitioned by month, which 8 replaces.
pub(crate) fn late_events_by_month() -> &'static str {
    store::MIGRATIONS[1]
        .sql
        .split(';')
        .find(|s| s.contains("CREATE TABLE IF NOT EXISTS late_events ("))
        .expect("migration 2 creates late_events")
}

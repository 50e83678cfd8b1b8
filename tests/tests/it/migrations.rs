use tally_shared::store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_are_idempotent() {
    let config = tally_tests::clickhouse_config("migrations_idempotent");

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
    let config = tally_tests::clickhouse_config("migrations_facts_by_seq");
    store::migrate(&config).await.unwrap();
    let client = store::client(&config);
    // The database as migration 5 left it, with facts in it.
    for sql in [
        "DROP TABLE facts_by_seq",
        "CREATE TABLE ledger_before AS schema_migrations",
        "INSERT INTO ledger_before SELECT * FROM schema_migrations WHERE version < 6",
        "DROP TABLE schema_migrations",
        "RENAME TABLE ledger_before TO schema_migrations",
        "INSERT INTO engagements (tenant, seq, post_id, views, likes)
         VALUES ('acme', 3, 'p1', 1, 0), ('acme', 9, 'p2', 0, 1), ('globex', 4, 'p1', 1, 0)",
    ] {
        client.query(sql).execute().await.unwrap();
    }
    assert_eq!(store::pending_migrations(&config).await.unwrap(), [6, 7]);
    assert_eq!(store::migrate(&config).await.unwrap(), [6, 7]);
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

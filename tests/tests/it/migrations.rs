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

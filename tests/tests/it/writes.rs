//! A batch's rows go to every table at once (one insert each): one insert
//! failing fails the batch's write, and writing the batch again, as a
//! worker does before it acks, leaves each row once.

use tally_projector::fold::{
    fold_recorded, write, CatalogueRow, EngagementRow, FoldOptions, LateRow, Quarantine,
};
use tally_shared::event::StoredEvent;
use tally_shared::store;

async fn all<T: clickhouse::RowOwned + clickhouse::RowRead>(
    client: &clickhouse::Client,
    table: &str,
) -> Vec<T> {
    client
        .query(&format!("SELECT ?fields FROM {table} FINAL ORDER BY seq"))
        .fetch_all()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_fails_the_write_and_writing_again_stores_each_row_once() {
    let config = tally_tests::clickhouse_config("writes_at_once");
    store::migrate(&config).await.unwrap();
    let client = store::client(&config);
    // Posts published, then interactions up to six hours old: late ones too.
    let payloads: Vec<Vec<u8>> = tally_tests::bench::dataset("acme", 20, 500)
        .iter()
        .map(StoredEvent::encode)
        .collect();
    let folded = fold_recorded(
        (1..).zip(payloads.iter().map(|p| &p[..])),
        FoldOptions { grace_seconds: 60 },
        &Quarantine::default(),
    );
    let rows = &folded.rows;
    assert!(folded.poison.is_empty(), "{:?}", folded.poison);
    assert_eq!(rows.catalogue.len(), 20);
    assert_eq!(rows.engagements.len(), 500);
    assert!(!rows.late.is_empty(), "the batch has late events");

    // Without `late_events`, that insert fails while the others succeed.
    let rename = |from: &str, to: &str| format!("RENAME TABLE {from} TO {to}");
    client
        .query(&rename("late_events", "late_events_away"))
        .execute()
        .await
        .unwrap();
    let failed = write(&client, rows).await;
    assert!(failed.is_err(), "a batch with an insert failed was written");
    assert!(all::<LateRow>(&client, "late_events_away").await.is_empty());
    client
        .query(&rename("late_events_away", "late_events"))
        .execute()
        .await
        .unwrap();

    write(&client, rows).await.unwrap();
    assert_eq!(
        all::<EngagementRow>(&client, "engagements").await,
        rows.engagements
    );
    assert_eq!(
        all::<CatalogueRow>(&client, "catalogue").await,
        rows.catalogue
    );
    assert_eq!(all::<LateRow>(&client, "late_events").await, rows.late);
    let posts: Vec<CatalogueRow> = all(&client, "post_catalogue").await;
    assert_eq!(posts.iter().collect::<Vec<_>>(), rows.posts());
    let facts: Vec<u64> = client
        .query("SELECT seq FROM facts_by_seq FINAL ORDER BY seq")
        .fetch_all()
        .await
        .unwrap();
    let seqs: Vec<u64> = rows.engagements.iter().map(|row| row.seq).collect();
    assert_eq!(facts, seqs);
}

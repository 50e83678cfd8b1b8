//! What the benchmark reads from ClickHouse, against the harness's own
//! ClickHouse: the SQL has to be one that ClickHouse accepts.

use tally_tests::bench::merges;

/// The part log names the table a merge worked on, with the rows its
/// inserts and its merges wrote (the benchmark's "merging" note).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_part_log_names_the_table_that_merged() {
    let config = tally_tests::clickhouse_config("bench_part_log");
    let http = reqwest::Client::new();
    let ask = |sql: String| {
        let (http, url) = (http.clone(), config.url.clone());
        async move {
            let answer = http.post(&url).body(sql).send().await.unwrap();
            let status = answer.status();
            let text = answer.text().await.unwrap();
            assert!(status.is_success(), "{status}: {text}");
            text
        }
    };
    let from: u64 = ask("SELECT toUnixTimestamp(now())".into())
        .await
        .trim()
        .parse()
        .unwrap();
    let db = &config.database;
    ask(format!("CREATE DATABASE IF NOT EXISTS {db}")).await;
    ask(format!(
        "CREATE TABLE {db}.parts (n UInt64) ENGINE = MergeTree() ORDER BY n"
    ))
    .await;
    // Two inserts, two parts; one merge of both, 3 rows.
    ask(format!("INSERT INTO {db}.parts VALUES (1), (2)")).await;
    ask(format!("INSERT INTO {db}.parts VALUES (3)")).await;
    ask(format!("OPTIMIZE TABLE {db}.parts FINAL")).await;
    ask("SYSTEM FLUSH LOGS".into()).await;

    let tables = merges::parse(&ask(merges::query(from)).await).expect("the part log's answer");
    let parts = tables
        .iter()
        .find(|t| t.table == format!("{db}.parts"))
        .unwrap_or_else(|| panic!("{db}.parts not in {tables:?}"));
    assert_eq!(
        (parts.merges, parts.merged_rows, parts.inserted_rows),
        (1, 3, 3)
    );
}

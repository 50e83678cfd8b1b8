//! Replay tooling against real servers: verify finds exactly the damage
//! done by hand and rebuild repairs it while a reader keeps getting
//! answers; an interrupted rebuild resumes; a snapshot matches what was
//! live at its sequence; a quarantined event is dead-lettered and redriven
//! after the fix; export then import into a fresh tenant reproduces the
//! read models, and a second import stores nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tally_projector::fold::EngagementRow;
use tally_replay::deadletters::{self, Redriven};
use tally_replay::reader::Start;
use tally_replay::{history, rebuild, snapshot, verify, Env};
use tally_shared::store;
use tally_shared::store::models::{Metric, Models};
use tally_shared::store::rollups::{self, Roller};
use tally_tests::{eventually, read, rfc3339_ago, start_service, Kind, Stack, TokenScope as Scope};

const POSTS: [&str; 3] = ["p1", "p2", "p3"];

/// A small known history for `tenant`: three posts, then `n` interactions
/// spread over them (one of them late), with `prefix`ed event ids.
async fn ingest(stack: &Stack, tenant: &str, prefix: &str, n: usize) -> u64 {
    let writer = stack.token(tenant, &[Scope::EventsWrite]);
    let mut events: Vec<Value> = POSTS
        .iter()
        .map(|post| {
            json!({"event_id": format!("{prefix}pub-{post}"), "type": "post_published",
                   "occurred_at": rfc3339_ago(3_600), "platform": "instagram",
                   "influencer_id": "i1", "post_id": post, "campaign_id": "c1",
                   "payload": {"content_type": "reel", "tags": ["launch"]}})
        })
        .collect();
    for i in 0..n {
        let post = POSTS[i % POSTS.len()];
        let (kind, payload) = match i % 4 {
            0 => ("like", json!({})),
            1 => ("view", json!({})),
            2 => ("comment", json!({"text": "great stuff"})),
            _ => ("share", json!({})),
        };
        // The first is late: ten minutes old, well past its minute's grace.
        let ago = if i == 0 { 600 } else { 5 };
        events.push(json!({"event_id": format!("{prefix}{i}"), "type": kind,
                           "occurred_at": rfc3339_ago(ago), "post_id": post,
                           "user_id": format!("u{i}"), "payload": payload}));
    }
    let mut last = 0;
    for chunk in events.chunks(100) {
        let response = stack
            .http
            .post(format!("{}/v1/events/batch", stack.command.url()))
            .bearer_auth(&writer)
            .json(&chunk)
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, 202, "{body}");
        for result in body["results"].as_array().unwrap() {
            last = last.max(result["seq"].as_u64().unwrap());
        }
    }
    last
}

/// Waits until the projectors' recorded position reaches `seq`.
async fn projected(stack: &Stack, seq: u64) {
    crate::durability::wait_projected(&stack.config, seq).await;
}

/// Every post's metrics without the freshness.
async fn metrics(stack: &Stack, tenant: &str) -> Vec<Value> {
    let reader = stack.token(tenant, &[Scope::ReportsRead]);
    let mut all = Vec::new();
    for post in POSTS {
        let (status, mut body) = stack.post_metrics(&reader, post).await;
        assert_eq!(status, 200, "{body}");
        body.as_object_mut().unwrap().remove("freshness");
        all.push(body);
    }
    all
}

/// Waits until the posts' metrics equal `expected` (the hot tier may hold
/// an answer for a quarter of a second).
async fn metrics_become(stack: &Stack, tenant: &str, expected: &[Value]) {
    eventually("the metrics", Duration::from_secs(10), || async {
        let now = metrics(stack, tenant).await;
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
}

fn options(batch: usize) -> rebuild::Options {
    rebuild::Options {
        models: vec![],
        start: Start::Beginning,
        restart: false,
        keep_old: false,
        batch,
    }
}

async fn engagement(client: &clickhouse::Client, seq: u64) -> EngagementRow {
    client
        .query("SELECT ?fields FROM engagements FINAL WHERE seq = ?")
        .bind(seq)
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_the_damage_and_rebuild_repairs_it_while_reads_go_on() {
    let stack = Stack::start_with("replay_rebuild", |config| {
        config.projector.rollup_range = 5;
        config.projector.rollup_interval_ms = 50;
    })
    .await;
    let last = ingest(&stack, "acme", "e", 40).await;
    ingest(&stack, "other", "o", 8).await;
    let last = last.max(stack.stored_events().await);
    projected(&stack, last).await;
    let before = metrics(&stack, "acme").await;
    let mut env = Env::connect(stack.config.clone()).await.unwrap();
    let clean = verify::verify(&mut env, None).await.unwrap();
    assert!(clean.differences.is_empty(), "{:?}", clean.differences);
    assert!(clean.events >= 54, "{}", clean.events);

    // Damage by hand: alter one row, delete another, add one where none
    // belongs (at the sequence of a catalogue event).
    let client = store::client(&stack.config.clickhouse);
    let seqs: Vec<u64> = client
        .query("SELECT seq FROM engagements FINAL WHERE tenant = 'acme' ORDER BY seq")
        .fetch_all()
        .await
        .unwrap();
    let (altered, deleted) = (seqs[3], seqs[7]);
    let catalogue_seq: u64 = client
        .query("SELECT min(seq) FROM catalogue WHERE tenant = 'acme'")
        .fetch_one()
        .await
        .unwrap();
    let mut row = engagement(&client, altered).await;
    row.views += 1_000;
    let mut bogus = row.clone();
    bogus.seq = catalogue_seq;
    let mut insert = client.insert::<EngagementRow>("engagements").await.unwrap();
    insert.write(&row).await.unwrap();
    insert.write(&bogus).await.unwrap();
    insert.end().await.unwrap();
    // The rollups' copy of the facts gets a fact that is none.
    client
        .query(
            "INSERT INTO facts_by_seq (tenant, seq, occurred_at, platform, influencer_id, post_id,
                                       campaign_id, likes, shares, comments, views, clicks,
                                       conversions, follows, sentiment)
             SELECT tenant, ?, occurred_at, platform, influencer_id, post_id, campaign_id, likes,
                    shares, comments, views, clicks, conversions, follows, sentiment
             FROM facts_by_seq WHERE seq = ?",
        )
        .bind(catalogue_seq)
        .bind(altered)
        .execute()
        .await
        .unwrap();
    // And a wrong row that a right one, written after it, would hide from
    // a read with `FINAL` (the table's key is the sequence alone).
    let shadowed = seqs[5];
    let cols = "tenant, seq, occurred_at, platform, influencer_id, post_id, campaign_id, likes,
                shares, comments, views, clicks, conversions, follows, sentiment";
    for sql in [
        format!(
            "INSERT INTO facts_by_seq ({cols})
             SELECT tenant, seq, occurred_at, platform, influencer_id, post_id, campaign_id,
                    likes, shares, comments, views + 1000, clicks, conversions, follows, sentiment
             FROM facts_by_seq WHERE seq = ?"
        ),
        format!(
            "INSERT INTO facts_by_seq ({cols})
             SELECT {cols} FROM facts_by_seq WHERE seq = ? ORDER BY views LIMIT 1"
        ),
    ] {
        client.query(&sql).bind(shadowed).execute().await.unwrap();
    }
    client
        .query("ALTER TABLE engagements DELETE WHERE seq = ?")
        .bind(deleted)
        .execute()
        .await
        .unwrap();
    eventually("the delete mutation", Duration::from_secs(30), || async {
        let count: u64 = client
            .query("SELECT count() FROM engagements WHERE seq = ?")
            .bind(deleted)
            .fetch_one()
            .await
            .map_err(|e| e.to_string())?;
        if count == 0 {
            Ok(())
        } else {
            Err(format!("{count} rows"))
        }
    })
    .await;

    let report = verify::verify(&mut env, None).await.unwrap();
    let mut found: Vec<(String, u64, bool, bool)> = report
        .differences
        .iter()
        .map(|d| {
            (
                d.model.clone(),
                d.seq,
                d.expected.is_some(),
                d.found.is_some(),
            )
        })
        .collect();
    found.sort();
    let mut damage = vec![
        ("engagements".to_owned(), altered, true, true),
        ("engagements".to_owned(), deleted, true, false),
        ("engagements".to_owned(), catalogue_seq, false, true),
        ("facts_by_seq".to_owned(), catalogue_seq, false, true),
        ("facts_by_seq".to_owned(), shadowed, false, true),
    ];
    damage.sort();
    assert_eq!(found, damage, "{:#?}", report.differences);
    let only_other = verify::verify(&mut env, Some("other")).await.unwrap();
    assert!(
        only_other.differences.is_empty(),
        "{:?}",
        only_other.differences
    );

    // Rebuild while a reader keeps asking, and events keep arriving (for
    // another tenant) and being projected.
    let writing = {
        let (http, url) = (stack.http.clone(), stack.command.url());
        let token = stack.token("busy", &[Scope::EventsWrite]);
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let event = json!({"event_id": format!("busy-{sent}"), "type": "view",
                                       "occurred_at": rfc3339_ago(2), "post_id": "p9"});
                    let response = http
                        .post(format!("{url}/v1/events"))
                        .bearer_auth(&token)
                        .json(&event)
                        .send()
                        .await
                        .unwrap();
                    // Paced under the rate limit; a 429 is waited out.
                    match response.status().as_u16() {
                        202 => sent += 1,
                        429 => {}
                        other => panic!("busy-{sent}: {other}"),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sent
            })
        };
        (stop, task)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, failures, reads) = (stop.clone(), failures.clone(), reads.clone());
        let (http, url) = (stack.http.clone(), stack.query.url());
        let token = stack.token("acme", &[Scope::ReportsRead]);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = http
                    .get(format!("{url}/v1/posts/p1/metrics"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                reads.fetch_add(1, Ordering::Relaxed);
                if !response.is_ok_and(|r| r.status() == 200) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let report = rebuild::rebuild(&mut env, options(10)).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    writing.0.store(true, Ordering::Relaxed);
    let busy = writing.1.await.unwrap();
    assert!(busy > 0, "events arrived during the rebuild");
    projected(&stack, stack.stored_events().await).await;
    assert!(!report.resumed);
    assert_eq!(report.from_seq, 1);
    assert!(report.projected.events >= 54, "{report:?}");
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a read failed during the rebuild"
    );

    let repaired = verify::verify(&mut env, None).await.unwrap();
    assert!(
        repaired.differences.is_empty(),
        "{:?}",
        repaired.differences
    );
    metrics_become(&stack, "acme", &before).await;

    // The projector writes to the rebuilt tables from then on.
    let more = ingest(&stack, "acme", "after", 4).await;
    projected(&stack, more).await;
    let after = verify::verify(&mut env, None).await.unwrap();
    assert!(after.differences.is_empty(), "{:?}", after.differences);
    assert!(after.events > repaired.events);

    // The rollups were replaced with the facts (the old ones summed the
    // damaged rows) and rolled again from the rebuilt ones once released.
    let roller = Roller::connect(&stack.config.clickhouse);
    assert!(!roller.held().await.unwrap());
    let position = roller.position().await.unwrap();
    eventually(
        "the rebuilt facts rolled",
        Duration::from_secs(30),
        || async {
            let done = roller.done().await.map_err(|e| e.to_string())?;
            let rolled = rollups::cover(&done, position).0;
            (rolled + 5 > position)
                .then_some(())
                .ok_or(format!("rolled to {rolled} of {position}"))
        },
    )
    .await;
    // The rebuilt tables' first hold is the rebuild's: every range with
    // rows in them was rolled after it. (A roll that raced the switch may
    // have recorded its range in them, with its rows in the old tables and
    // a time from before the hold if its thread stalled; readers ignore
    // that record, recorded before the release.)
    let held_at: u64 = client
        .query("SELECT min(at_ms) FROM rollup_hold")
        .fetch_one()
        .await
        .unwrap();
    let ranges: Vec<(u64, u64)> = client
        .query(
            "SELECT attempt, done_ms FROM rollup_ranges
             WHERE attempt IN (SELECT attempt FROM rollups)",
        )
        .fetch_all()
        .await
        .unwrap();
    assert!(
        !ranges.is_empty() && ranges.iter().all(|(_, done_ms)| *done_ms > held_at),
        "a rollup from before the rebuild (held at {held_at}): {ranges:?}"
    );
    let models = Models::connect(&stack.config.clickhouse);
    let period = (0, u32::MAX - 1);
    crate::rollups::acme_ranked_as_the_facts(
        &models,
        &[Metric::Engagements, Metric::Views],
        period,
        position,
        10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_continues_where_it_stopped() {
    let stack = Stack::start("replay_resume").await;
    let last = ingest(&stack, "acme", "e", 200).await;
    projected(&stack, last).await;
    let before = metrics(&stack, "acme").await;

    // Killed (the task dropped at an await) once some batches are in.
    let config = stack.config.clone();
    let task = tokio::spawn(async move {
        let mut env = Env::connect(config).await.unwrap();
        rebuild::rebuild(&mut env, options(5)).await
    });
    let client = store::client(&stack.config.clickhouse);
    let work = rebuild::work_database(&stack.config.clickhouse.database);
    eventually("some rebuild progress", Duration::from_secs(60), || async {
        let reached: u64 = client
            .query(&format!("SELECT max(reached) FROM `{work}`.rebuild_state"))
            .fetch_one()
            .await
            .map_err(|e| e.to_string())?;
        if reached >= 40 {
            Ok(())
        } else {
            Err(format!("at {reached}"))
        }
    })
    .await;
    task.abort();
    assert!(task.await.is_err(), "the rebuild was interrupted");
    // As if an earlier version had begun it: its work database has no
    // `facts_by_seq` (migration 6).
    for sql in [
        format!("DROP TABLE `{work}`.facts_by_seq"),
        format!("CREATE TABLE `{work}`.ledger_before AS `{work}`.schema_migrations"),
        format!(
            "INSERT INTO `{work}`.ledger_before
             SELECT * FROM `{work}`.schema_migrations WHERE version < 6"
        ),
        format!("DROP TABLE `{work}`.schema_migrations"),
        format!("RENAME TABLE `{work}`.ledger_before TO `{work}`.schema_migrations"),
    ] {
        client.query(&sql).execute().await.unwrap();
    }

    let mut env = Env::connect(stack.config.clone()).await.unwrap();
    let report = rebuild::rebuild(&mut env, options(1_000)).await.unwrap();
    assert!(report.resumed);
    assert!(
        report.projected.events < 203,
        "a resumed rebuild folds only what is left: {report:?}"
    );
    let check = verify::verify(&mut env, None).await.unwrap();
    assert!(check.differences.is_empty(), "{:?}", check.differences);
    metrics_become(&stack, "acme", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_answers_as_the_read_models_stood_at_its_sequence() {
    let stack = Stack::start("replay_snapshot").await;
    let then = ingest(&stack, "acme", "e", 12).await;
    projected(&stack, then).await;
    let at_then = metrics(&stack, "acme").await;
    let now = ingest(&stack, "acme", "later", 12).await;
    projected(&stack, now).await;
    // The hot tier may still hold the earlier answer for a moment.
    eventually(
        "the later events in the metrics",
        Duration::from_secs(10),
        || async {
            match metrics(&stack, "acme").await {
                now if now != at_then => Ok(()),
                now => Err(format!("{now:?}")),
            }
        },
    )
    .await;

    let mut env = Env::connect(stack.config.clone()).await.unwrap();
    let snap = snapshot::create(&mut env, "then", snapshot::AsOf::Seq(then))
        .await
        .unwrap();
    assert_eq!(snap.position, then);
    assert_eq!(snapshot::list(&env).await.unwrap(), vec!["then".to_owned()]);

    let mut config = stack.config.clone();
    config.clickhouse.database = snap.database.clone();
    let query = start_service(Kind::Query, config).await;
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    let mut answers = Vec::new();
    for post in POSTS {
        let response = stack
            .http
            .get(format!("{}/v1/posts/{post}/metrics", query.url()))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        let (status, mut body) = read(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["freshness"]["position"], then);
        body.as_object_mut().unwrap().remove("freshness");
        answers.push(body);
    }
    assert_eq!(answers, at_then);
    query.stop().await;
    snapshot::drop(&env, "then").await.unwrap();
    assert!(snapshot::list(&env).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_event_is_dead_lettered_and_redriven_after_the_fix() {
    let stack = Stack::start_with("replay_deadletters", |config| {
        config.projector.quarantine = vec!["acme:poison-1".into()];
    })
    .await;
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let like = |id: &str, user: &str| {
        json!({"event_id": id, "type": "like", "occurred_at": rfc3339_ago(5),
               "post_id": "p1", "user_id": user})
    };
    let (status, poison) = stack.post_event(&writer, &like("poison-1", "u1")).await;
    assert_eq!(status, 202);
    let (status, fine) = stack.post_event(&writer, &like("fine-1", "u2")).await;
    assert_eq!(status, 202);
    projected(&stack, fine["seq"].as_u64().unwrap()).await;
    let poison_seq = poison["seq"].as_u64().unwrap();

    let env = Env::connect(stack.config.clone()).await.unwrap();
    let letters = eventually("the dead letter", Duration::from_secs(30), || async {
        let letters = deadletters::list(&env, Some("acme"))
            .await
            .map_err(|e| e.to_string())?;
        if letters.is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(letters)
        }
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].seq, poison_seq);
    assert!(letters[0].error.contains("quarantined"), "{letters:?}");
    let inspected = deadletters::inspect(&env, poison_seq).await.unwrap();
    assert!(inspected.payload.contains("poison-1"));
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    assert_eq!(stack.post_metrics(&reader, "p1").await.1["likes"], 1);

    // Not fixed yet: the redrive leaves it where it is.
    let outcome = deadletters::redrive(&env, Some(poison_seq)).await.unwrap();
    assert!(matches!(outcome[0], Redriven::Failed { .. }), "{outcome:?}");
    assert_eq!(deadletters::list(&env, None).await.unwrap().len(), 1);

    // The fix: no longer quarantined.
    let mut fixed = stack.config.clone();
    fixed.projector.quarantine.clear();
    let env = Env::connect(fixed).await.unwrap();
    let outcome = deadletters::redrive(&env, None).await.unwrap();
    assert_eq!(outcome, vec![Redriven::Projected { seq: poison_seq }]);
    assert!(deadletters::list(&env, None).await.unwrap().is_empty());
    eventually(
        "the redriven like counted",
        Duration::from_secs(10),
        || async {
            match stack.post_metrics(&reader, "p1").await {
                (200, body) if body["likes"] == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_tenant_reproduces_the_read_models() {
    let stack = Stack::start("replay_history").await;
    let last = ingest(&stack, "acme", "e", 30).await;
    projected(&stack, last).await;
    let env = Env::connect(stack.config.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson.gz");
    let exported = history::export_to(&env, "acme", &file).await.unwrap();
    assert_eq!(exported.events, 33);
    assert_eq!(exported.unreadable, 0);

    let imported = history::import_from(&env, "fresh", &file).await.unwrap();
    assert_eq!(imported.accepted, 33, "{imported:?}");
    assert!(imported.invalid.is_empty(), "{imported:?}");
    let again = history::import_from(&env, "fresh", &file).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 33), "{again:?}");

    let last = stack.stored_events().await;
    projected(&stack, last).await;
    assert_eq!(
        metrics(&stack, "fresh").await,
        metrics(&stack, "acme").await
    );
    let late = |tenant: &str| {
        let token = stack.token(tenant, &[Scope::ReportsRead]);
        let (http, url) = (stack.http.clone(), stack.query.url());
        async move {
            let response = http
                .get(format!("{url}/v1/late-events"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            read(response).await.1["total"].clone()
        }
    };
    assert_eq!(late("fresh").await, late("acme").await);
    assert_eq!(late("acme").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_a_sequence_keeps_the_rows_before_it() {
    let stack = Stack::start("replay_from_seq").await;
    let last = ingest(&stack, "acme", "e", 20).await;
    projected(&stack, last).await;
    let client = store::client(&stack.config.clickhouse);
    let seqs: Vec<u64> = client
        .query("SELECT seq FROM engagements FINAL ORDER BY seq")
        .fetch_all()
        .await
        .unwrap();
    let (early, from, late) = (seqs[2], seqs[10], seqs[15]);
    let mut insert = client.insert::<EngagementRow>("engagements").await.unwrap();
    for seq in [early, late] {
        let mut row = engagement(&client, seq).await;
        row.views += 7;
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();

    let mut env = Env::connect(stack.config.clone()).await.unwrap();
    let report = rebuild::rebuild(
        &mut env,
        rebuild::Options {
            start: Start::Seq(from),
            ..options(1_000)
        },
    )
    .await
    .unwrap();
    assert_eq!(report.from_seq, from);
    // Rows before the start are kept as they were, damage included; the
    // rest is folded again.
    let check = verify::verify(&mut env, None).await.unwrap();
    let left: Vec<u64> = check.differences.iter().map(|d| d.seq).collect();
    assert_eq!(left, vec![early], "{:?}", check.differences);
}

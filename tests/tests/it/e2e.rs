use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tally_tests::{eventually, rfc3339_ago, Stack, TokenScope as Scope};

/// Expected totals per (tenant, post): likes, shares, comments, views, clicks.
type Totals = BTreeMap<(&'static str, &'static str), [i64; 5]>;

fn event(id: &str, kind: &str, post: &str, payload: Value) -> Value {
    json!({
        "event_id": id,
        "type": kind,
        "occurred_at": rfc3339_ago(60),
        "post_id": post,
        "platform": "instagram",
        "user_id": "u1",
        "payload": payload,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_two_tenants_are_counted_exactly_once() {
    let stack = Stack::start("e2e_exactly_once").await;
    let writers = [
        ("acme", stack.token("acme", &[Scope::EventsWrite])),
        ("globex", stack.token("globex", &[Scope::EventsWrite])),
    ];
    // The same post id in both tenants must stay two different posts.
    let plan: Vec<(usize, &str, &str, &str, Value)> = vec![
        (0, "a1", "like", "p1", json!({})),
        (0, "a2", "like", "p1", json!({})),
        (0, "a3", "unlike", "p1", json!({})),
        (0, "a4", "share", "p1", json!({})),
        (0, "a5", "comment", "p1", json!({"text": "great post"})),
        (0, "a6", "view", "p1", json!({"count": 1000})),
        (0, "a7", "view", "p1", json!({})),
        (
            0,
            "a8",
            "click",
            "p2",
            json!({"url": "https://shop.example/item"}),
        ),
        (0, "a9", "like", "p2", json!({})),
        (1, "a1", "like", "p1", json!({})),
        (1, "g2", "view", "p1", json!({"count": 5})),
    ];
    let mut expected = Totals::new();
    let mut seqs = BTreeMap::new();
    for (writer, id, kind, post, payload) in &plan {
        let (tenant, token) = &writers[*writer];
        let (status, body) = stack
            .post_event(token, &event(id, kind, post, payload.clone()))
            .await;
        assert_eq!(status, 202, "posting {id} for {tenant}: {body}");
        assert_eq!(body["status"], "accepted", "{body}");
        assert_eq!(body["event_id"], *id);
        seqs.insert((*tenant, *id), body["seq"].as_u64().unwrap());
        let totals = expected.entry((*tenant, *post)).or_default();
        match *kind {
            "like" => totals[0] += 1,
            "unlike" => totals[0] -= 1,
            "share" => totals[1] += 1,
            "comment" => totals[2] += 1,
            "view" => totals[3] += payload["count"].as_i64().unwrap_or(1),
            "click" => totals[4] += 1,
            other => unreachable!("{other}"),
        }
    }
    // Exact retries: stored once, answered as duplicates with the original seq.
    for (writer, id, kind, post, payload) in &plan[..4] {
        let (tenant, token) = &writers[*writer];
        let (status, body) = stack
            .post_event(token, &event(id, kind, post, payload.clone()))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "duplicate", "retrying {id}: {body}");
        assert_eq!(body["seq"].as_u64(), seqs.get(&(*tenant, *id)).copied());
    }

    let readers: BTreeMap<&str, String> = ["acme", "globex"]
        .into_iter()
        .map(|t| (t, stack.token(t, &[Scope::ReportsRead])))
        .collect();
    for ((tenant, post), want) in &expected {
        let token = &readers[tenant];
        let seen = eventually(
            &format!("{tenant}/{post} to show {want:?}"),
            Duration::from_secs(30),
            || async {
                let (status, body) = stack.post_metrics(token, post).await;
                let got = totals(&body);
                if status == 200 && got == *want {
                    Ok(body)
                } else {
                    Err(format!("status {status}, totals {got:?}, body {body}"))
                }
            },
        )
        .await;
        assert_eq!(seen["post_id"], *post);
    }
    // Nothing more arrives later: the retries were not counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for ((tenant, post), want) in &expected {
        let (status, body) = stack.post_metrics(&readers[tenant], post).await;
        assert_eq!(
            (status, totals(&body)),
            (200, *want),
            "{tenant}/{post}: {body}"
        );
    }

    // Tenant isolation: globex cannot see acme's p2; unknown posts are 404.
    let (status, body) = stack.post_metrics(&readers["globex"], "p2").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = stack.post_metrics(&readers["acme"], "never-seen").await;
    assert_eq!(status, 404);
}

fn totals(body: &Value) -> [i64; 5] {
    ["likes", "shares", "comments", "views", "clicks"].map(|k| body[k].as_i64().unwrap_or(i64::MIN))
}

//! The query API's reports over HTTP, on the read-models dataset (see
//! `read_models.rs`, which calls [`check`] once its projections are in):
//! the same hand-worked values through every endpoint, freshness in body
//! and headers, `min_seq`, `ETag`/`304`, cursors pinned to a position while
//! new events arrive, tenant isolation and validation.

use std::time::Duration;

use serde_json::{json, Value};
use tally_tests::{eventually, read, Stack, TokenScope as Scope};

use crate::read_models::{at, ingest};

/// What the dataset was built from.
pub struct Dataset {
    /// Two hours ago, on the hour: the dataset's interactions are at t0+300.
    pub t0: i64,
    /// The last sequence stored.
    pub last: u64,
    /// Late events of acme.
    pub late: u64,
}

async fn get(stack: &Stack, token: &str, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = stack
        .http
        .get(format!("{}{path}", stack.query.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    let (status, body) = read(response).await;
    (status, body, headers)
}

async fn ok(stack: &Stack, token: &str, path: &str) -> Value {
    let (status, body, _) = get(stack, token, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

pub async fn check(stack: &Stack, data: Dataset) {
    let acme = stack.token("acme", &[Scope::ReportsRead]);
    let globex = stack.token("globex", &[Scope::ReportsRead]);
    let (t0, last) = (data.t0, data.last);
    let range = format!("from={}&to={}", at(t0 - 3600), at(t0 + 3 * 3600));

    // Freshness, in the body and the headers.
    let (status, body, headers) = get(stack, &acme, "/v1/posts/p1/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["likes"], 2);
    assert_eq!(body["freshness"]["position"], last, "{body}");
    assert_eq!(body["freshness"]["lag_events"], 0);
    assert_eq!(body["freshness"]["stale"], false);
    assert_eq!(headers["tally-position"], last.to_string().as_str());
    assert_eq!(headers["tally-cache"], "miss");
    assert_eq!(headers["cache-control"], "private, max-age=1");

    // ETag: unchanged numbers are 304 Not Modified.
    let etag = headers["etag"].clone();
    let response = stack
        .http
        .get(format!("{}/v1/posts/p1/metrics", stack.query.url()))
        .bearer_auth(&acme)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);

    // min_seq beyond the stream: a bounded wait, then marked stale.
    let (status, body, headers) = get(
        stack,
        &acme,
        &format!("/v1/posts/p1/metrics?min_seq={}", last + 1_000),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["freshness"]["stale"], true);
    assert_eq!(headers["tally-stale"], "true");
    let body = ok(
        stack,
        &acme,
        &format!("/v1/posts/p1/metrics?min_seq={last}"),
    )
    .await;
    assert_eq!(body["freshness"]["stale"], false);

    // Influencer engagement: i1 owns p1 and (attributed late) p3.
    let body = ok(
        stack,
        &acme,
        &format!("/v1/influencers/i1/engagement?granularity=hour&{range}"),
    )
    .await;
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{body}");
    let b = &buckets[0];
    assert_eq!(
        (&b["likes"], &b["comments"], &b["views"], &b["late"]),
        (&json!(4), &json!(2), &json!(100), &json!(13))
    );
    assert_eq!(b["complete"], true);
    assert_eq!(b["start"], (t0 + 300) / 3600 * 3600);

    // Followers and a campaign.
    let body = ok(stack, &acme, "/v1/influencers/i1/followers?period=30d").await;
    assert_eq!(body["count"], 1002, "{body}");
    let body = ok(stack, &acme, "/v1/campaigns/c1/aggregates").await;
    assert_eq!((&body["views"], &body["clicks"]), (&json!(150), &json!(3)));
    assert_eq!(body["budget"], 1000.0);
    assert_eq!(body["conversion_value"], 50.0);
    assert!(
        (body["roi"].as_f64().unwrap() - 0.05).abs() < 1e-12,
        "{body}"
    );
    assert_eq!(body["by_platform"][1]["key"], "tiktok");

    // Tenant isolation: another tenant's ids are 404, never data.
    for path in [
        "/v1/influencers/i1/engagement",
        "/v1/influencers/i1/followers",
        "/v1/campaigns/c1/aggregates",
        "/v1/trends?entity=influencer:i1",
        "/v1/influencers/nobody/engagement",
    ] {
        let token = if path.contains("nobody") {
            &acme
        } else {
            &globex
        };
        let (status, body, _) = get(stack, token, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["status"], 404);
    }

    // Trends: i1's four likes at t0+300, in 10-minute windows every 5.
    let body = ok(
        stack,
        &acme,
        &format!(
            "/v1/trends?entity=influencer:i1&metric=likes&window=10m&step=5m&from={}&to={}",
            at(t0),
            at(t0 + 1800)
        ),
    )
    .await;
    let values: Vec<i64> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [4, 4, 0, 0, 0, 0], "{body}");

    // Anomalies: the bot's burst.
    let body = ok(stack, &acme, &format!("/v1/anomalies?{range}")).await;
    assert_eq!(body["bursts"][0]["user_id"], "bot", "{body}");

    // Late events, paged newest first.
    let page = ok(stack, &acme, "/v1/late-events?limit=20").await;
    assert_eq!(page["total"], data.late);
    let first: Vec<u64> = seqs(&page);
    assert_eq!(first.len(), 20);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = ok(
        stack,
        &acme,
        &format!("/v1/late-events?limit=20&cursor={cursor}"),
    )
    .await;
    let second = seqs(&page);
    assert!(!second.is_empty() && second[0] < *first.last().unwrap());
    assert_eq!((first.len() + second.len()) as u64, data.late.min(40));

    // Rankings, one line a page, pinned to the first page's position while
    // new likes for i2 arrive.
    let ranking = format!("/v1/influencers/rankings?metric=likes&{range}&limit=1");
    let page = ok(stack, &acme, &ranking).await;
    assert_eq!(
        page["items"],
        json!([{"rank": 1, "influencer_id": "i1", "value": 4}])
    );
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let likes: Vec<Value> = (0..5)
        .map(|i| {
            json!({"event_id": format!("more-{i}"), "type": "like", "occurred_at": at(t0 + 300),
                   "post_id": "p2", "user_id": format!("fan-{i}")})
        })
        .collect();
    let newest = ingest(stack, &writer, &likes).await;
    let fresh = eventually("the new likes ranked", Duration::from_secs(30), || async {
        let body = ok(stack, &acme, &format!("{ranking}&min_seq={newest}")).await;
        if body["items"][0]["influencer_id"] == "i2" {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(fresh["items"][0]["value"], 7);
    let page = ok(stack, &acme, &format!("{ranking}&cursor={cursor}")).await;
    assert_eq!(
        page["items"],
        json!([{"rank": 2, "influencer_id": "i2", "value": 2}]),
        "the second page is as the ranking stood when the first was read"
    );

    // A ratio ranks as a ratio: i1 has 6 engagements on 100 views.
    let rates = ok(
        stack,
        &acme,
        &format!("/v1/influencers/rankings?metric=engagement_rate&{range}"),
    )
    .await;
    let i1 = rates["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["influencer_id"] == "i1")
        .unwrap();
    assert_eq!(i1["value"], 0.06, "{rates}");
    assert_eq!(rates["metric"], "engagement_rate");

    // A post published but not interacted with yet: zeros, attributed.
    let quiet = json!({"event_id": "quiet", "type": "post_published", "occurred_at": at(t0),
                       "post_id": "p-quiet", "influencer_id": "i1", "platform": "instagram",
                       "payload": {"content_type": "story"}});
    let seq = ingest(stack, &writer, &[quiet]).await;
    let body = ok(
        stack,
        &acme,
        &format!("/v1/posts/p-quiet/metrics?min_seq={seq}"),
    )
    .await;
    assert_eq!(
        (
            &body["likes"],
            &body["influencer_id"],
            &body["content_type"]
        ),
        (&json!(0), &json!("i1"), &json!("story")),
        "{body}"
    );
    let (status, _, _) = get(stack, &globex, "/v1/posts/p-quiet/metrics").await;
    assert_eq!(status, 404);

    // Cursors: tampered, or for another query, are 400.
    let tampered = format!("{}x", &cursor[..cursor.len() - 1]);
    for path in [
        format!("{ranking}&cursor={tampered}"),
        format!("/v1/influencers/rankings?metric=views&{range}&limit=1&cursor={cursor}"),
        "/v1/late-events?cursor=garbage".to_owned(),
    ] {
        let (status, body, _) = get(stack, &acme, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _, _) = get(stack, &globex, &format!("{ranking}&cursor={cursor}")).await;
    assert_eq!(status, 400, "another tenant's cursor");

    // Validation: every bad parameter is a 400 problem naming it.
    for (path, names) in [
        (
            "/v1/influencers/rankings?metric=followers_of_doom",
            "metric",
        ),
        ("/v1/influencers/rankings?period=2w", "period"),
        ("/v1/influencers/rankings?limit=0", "limit"),
        ("/v1/influencers/rankings?platform=myspace", "platform"),
        (
            "/v1/influencers/i1/engagement?granularity=week",
            "granularity",
        ),
        (
            "/v1/influencers/i1/engagement?granularity=minute&period=30d",
            "buckets",
        ),
        ("/v1/trends?entity=user:u1", "entity"),
        ("/v1/trends?entity=post:p1&window=15s&step=10s", "window"),
        ("/v1/trends?entity=post:p1&metric=engagement_rate", "ratio"),
        ("/v1/posts/p1/metrics?min_seq=soon", "min_seq"),
        ("/v1/posts/p1/metrics?sql=DROP", "sql"),
        ("/v1/anomalies?burst_threshold=0", "burst_threshold"),
    ] {
        let (status, body, headers) = get(stack, &acme, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(
            body["detail"].as_str().unwrap_or("").contains(names),
            "{path}: {body}"
        );
    }
    // Another scope is 403.
    let (status, _, _) = get(stack, &writer, "/v1/influencers/rankings").await;
    assert_eq!(status, 403);
}

fn seqs(page: &Value) -> Vec<u64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["seq"].as_u64().unwrap())
        .collect()
}

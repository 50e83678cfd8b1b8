//! `GET /v1/posts/{id}/live`: the counters at once, then each change, over
//! Server-Sent Events; the token as a header or as `access_token`.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tally_tests::{eventually, Stack, TokenScope as Scope};

/// Reads SSE `data:` lines of `counters` events until `want` accepts one.
async fn next_counters(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if !event.contains("event: counters") {
                    continue;
                }
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a data line");
                let value: Value = serde_json::from_str(data).unwrap();
                if want(&value) {
                    return value;
                }
            }
            let chunk = body.next().await.expect("the stream stays open").unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a counters event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_counters_arrive_as_server_sent_events() {
    let stack = Stack::start("live").await;
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    let like = |id: &str, user: &str| {
        json!({"event_id": id, "type": "like", "occurred_at": tally_tests::rfc3339_ago(1),
               "post_id": "p1", "user_id": user})
    };
    assert_eq!(stack.post_event(&writer, &like("l1", "u1")).await.0, 202);
    eventually(
        "the first like projected",
        Duration::from_secs(30),
        || async {
            match stack.post_metrics(&reader, "p1").await {
                (200, body) if body["likes"] == 1 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let url = format!("{}/v1/posts/p1/live", stack.query.url());
    let response = stack
        .http
        .get(format!("{url}?access_token={reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let first = next_counters(&mut body, &mut buffer, |_| true).await;
    assert_eq!(first["likes"], 1, "{first}");

    // A second client, with the header, sees the same change.
    let other = stack
        .http
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let mut other_body = other.bytes_stream();
    let mut other_buffer = String::new();
    assert_eq!(stack.post_event(&writer, &like("l2", "u2")).await.0, 202);
    let changed = next_counters(&mut body, &mut buffer, |v| v["likes"] == 2).await;
    assert_eq!(changed["post_id"], "p1");
    next_counters(&mut other_body, &mut other_buffer, |v| v["likes"] == 2).await;

    // No token, another tenant's post, a bad id: answered before streaming.
    for (path, token, status) in [
        ("/v1/posts/p1/live".to_owned(), None, 401),
        (
            "/v1/posts/p1/live".to_owned(),
            Some(stack.token("globex", &[Scope::ReportsRead])),
            404,
        ),
        ("/v1/posts/a%2Ab/live".to_owned(), Some(reader.clone()), 400),
        (
            "/v1/posts/p1/live?access_token=nonsense".to_owned(),
            None,
            401,
        ),
    ] {
        let mut request = stack.http.get(format!("{}{path}", stack.query.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
}

/// Read your writes: the `seq` the command API answered, passed as
/// `min_seq`, gives an answer that holds the event, not marked stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_min_seq_sees_the_write() {
    let stack = Stack::start("min_seq").await;
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    for i in 1..=3 {
        let (status, body) = stack
            .post_event(
                &writer,
                &json!({"event_id": format!("w{i}"), "type": "like",
                        "occurred_at": tally_tests::rfc3339_ago(1),
                        "post_id": "rw", "user_id": format!("u{i}")}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let seq = body["seq"].as_u64().unwrap();
        let response = stack
            .http
            .get(format!(
                "{}/v1/posts/rw/metrics?min_seq={seq}",
                stack.query.url()
            ))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        let (status, body) = tally_tests::read(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["likes"], i, "{body}");
        assert_eq!(body["freshness"]["stale"], false, "{body}");
        assert!(body["freshness"]["position"].as_u64().unwrap() >= seq);
    }
}

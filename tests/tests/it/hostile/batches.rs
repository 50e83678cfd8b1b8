//! Hostile batches.

use super::events::*;
use super::*;

pub(super) fn batch(
    what: impl Into<String>,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
) -> Case {
    Case::post(what, "/v1/events/batch", body, Expect::Status(400)).content_type(Some(content_type))
}

pub(super) const JSON: &str = "application/json";
pub(super) const NDJSON: &str = "application/x-ndjson";

pub(super) fn likes(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| with("like", "event_id", json!(format!("b-{i}"))))
        .collect()
}

pub(super) fn ndjson(items: &[Value]) -> String {
    items
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn batch_cases() -> Vec<Case> {
    let valid = Value::Array(likes(2)).to_string();
    let mut huge = example("comment");
    huge["payload"]["text"] = json!("x".repeat(1 << 20));
    vec![
        batch("an empty array", JSON, "[]"),
        batch("an empty array with spaces", JSON, " [ \n ] "),
        batch("an empty JSON body", JSON, ""),
        batch("an empty NDJSON body", NDJSON, ""),
        batch("NDJSON of blank lines only", NDJSON, "\n\n \r\n\t\n  \n"),
        batch("an object, not an array", JSON, example("like").to_string()),
        batch("a bare string", JSON, "\"like\""),
        batch("null", JSON, "null"),
        batch("a truncated array", JSON, &valid[..valid.len() - 2]),
        batch("bytes that are not UTF-8", JSON, b"[\xff\xfe]".to_vec()),
        batch("33 nested arrays", JSON, nested(33, false)),
        batch("100,000 nested arrays", JSON, nested(100_000, false)),
        batch(
            "a duplicate key in one item",
            JSON,
            format!("[{}]", like_text_with("\"event_id\":\"dup\"")),
        ),
        batch("1,001 events", JSON, Value::Array(likes(1001)).to_string())
            .expect(Expect::Status(413)),
        batch("1,001 NDJSON lines", NDJSON, ndjson(&likes(1001))).expect(Expect::Status(413)),
        batch("1,001 lines of garbage", NDJSON, "x\n".repeat(1001)).expect(Expect::Status(413)),
        batch("over 1 MiB", JSON, json!([huge]).to_string())
            .expect(Expect::Status(413))
            .raw(),
        batch("over 1 MiB of NDJSON", NDJSON, huge.to_string())
            .expect(Expect::Status(413))
            .raw(),
        batch(
            "5 MB",
            JSON,
            json!([huge, huge, huge, huge, huge]).to_string(),
        )
        .expect(Expect::Status(413))
        .raw(),
        batch("text/plain", "text/plain", valid.clone()).expect(Expect::Status(415)),
        batch("text/csv", "text/csv", "a,b\n1,2").expect(Expect::Status(415)),
        batch("XML", "application/xml", "<events/>").expect(Expect::Status(415)),
        batch("no content type", JSON, valid.clone())
            .content_type(None)
            .expect(Expect::Status(415)),
    ]
}

/// Items that are each invalid on their own: a batch of them is a 207 in
/// which every one is `invalid`.
pub(super) fn invalid_items() -> Vec<Value> {
    let mut items = vec![
        json!("like"),
        json!(42),
        Value::Null,
        json!([]),
        json!({}),
        with("like", "event_id", json!("tally.events.>")),
        with("like", "post_id", json!("*")),
        with("like", "user_id", json!("a b")),
        with("like", "occurred_at", json!("9999-12-31T23:59:59Z")),
        with("like", "occurred_at", json!("0001-01-01T00:00:00Z")),
        with("like", "tenant", json!("other")),
        with("view", "payload.count", json!(0)),
        with("conversion", "payload.value", json!(1e13)),
        with("comment", "payload.text", json!("x".repeat(10_001))),
        with("like", "event_id", json!("a\u{0}b")),
        with("follower_snapshot", "payload.followers", json!(-5)),
    ];
    let mut long_key = example("like");
    long_key["k".repeat(10_000)] = json!(1);
    items.push(long_key);
    items
}

/// The batch endpoint: each case refused whole, then batches in which every
/// item is invalid are 207s that store nothing; then a valid batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batches_are_refused_and_never_stored() {
    let stack = Stack::start("hostile_batches").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let cases = batch_cases();
    check_all(&stack, &token, &cases).await;

    let items = invalid_items();
    let json_array = Value::Array(items.clone()).to_string().into_bytes();
    // NDJSON also carries lines that are not JSON at all.
    let mut lines: Vec<Vec<u8>> = items.iter().map(|i| i.to_string().into_bytes()).collect();
    lines.extend([
        b"{\"event_id\": ".to_vec(),
        b"\xff\xfe".to_vec(),
        b"[1,]".to_vec(),
        nested(33, true).into_bytes(),
        nested(100_000, false).into_bytes(),
        like_text_with("\"event_id\":\"dup\"").into_bytes(),
    ]);
    let ndjson_body = lines.join(&b'\n');
    let http = client();
    for (what, content_type, body, count) in [
        ("every item invalid (JSON)", JSON, json_array, items.len()),
        (
            "every line invalid (NDJSON)",
            NDJSON,
            ndjson_body,
            lines.len(),
        ),
    ] {
        let response = http
            .post(format!("{}/v1/events/batch", stack.command.url()))
            .bearer_auth(&token)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 207, "{what}: {body}");
        assert_eq!(
            (&body["invalid"], &body["accepted"], &body["failed"]),
            (&json!(count), &json!(0), &json!(0)),
            "{what}: {body}"
        );
        for (i, result) in body["results"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                (&result["index"], &result["status"]),
                (&json!(i), &json!("invalid")),
                "{what}: item {i}: {result}"
            );
            assert!(
                result["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{what}: item {i} says not why: {result}"
            );
        }
    }
    assert_eq!(
        stack.stored_events().await,
        0,
        "after {} hostile batches",
        cases.len() + 2
    );

    let response = http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(&token)
        .json(&likes(2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(stack.stored_events().await, 2);
}

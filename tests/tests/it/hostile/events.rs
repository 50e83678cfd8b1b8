//! Hostile single events.

use super::*;

/// A valid event of `kind`.
pub(super) fn example(kind: &str) -> Value {
    let (envelope, payload) = match kind {
        "like" => (json!({"post_id": "p1", "user_id": "u1"}), json!({})),
        "comment" => (json!({"post_id": "p1"}), json!({"text": "nice"})),
        "view" => (json!({"post_id": "p1"}), json!({"count": 3})),
        "click" => (
            json!({"post_id": "p1"}),
            json!({"url": "https://x.example/"}),
        ),
        "conversion" => (
            json!({"post_id": "p1", "campaign_id": "c1"}),
            json!({"value": 10, "currency": "EUR", "order_id": "o-1"}),
        ),
        "follower_snapshot" => (json!({"influencer_id": "i1"}), json!({"followers": 10})),
        "influencer_registered" => (
            json!({"influencer_id": "i1", "platform": "tiktok"}),
            json!({"handle": "@anna", "name": "Anna"}),
        ),
        "post_published" => (
            json!({"post_id": "p1", "influencer_id": "i1", "campaign_id": "c1"}),
            json!({"content_type": "reel", "published_at": rfc3339_ago(60)}),
        ),
        other => panic!("no example for {other}"),
    };
    let mut event = json!({
        "event_id": format!("h-{kind}"),
        "type": kind,
        "occurred_at": rfc3339_ago(10),
        "payload": payload,
    });
    for (key, value) in envelope.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

/// `example(kind)` with `path` (`event_id`, `payload.text`) set to `value`.
pub(super) fn with(kind: &str, path: &str, value: Value) -> Value {
    let mut event = example(kind);
    match path.strip_prefix("payload.") {
        Some(name) => event["payload"][name] = value,
        None => event[path] = value,
    }
    event
}

/// `POST /v1/events` with `event`; must be 422 naming `field`.
pub(super) fn invalid(what: impl Into<String>, event: Value, field: &str) -> Case {
    Case::post(
        what,
        "/v1/events",
        event.to_string(),
        Expect::Invalid(field.into()),
    )
}

/// `POST /v1/events` with raw `body`; must be `status`.
pub(super) fn single(what: impl Into<String>, body: impl Into<Vec<u8>>, status: u16) -> Case {
    Case::post(what, "/v1/events", body, Expect::Status(status))
}

/// `example(kind)` as JSON text with `from` replaced by `to`, byte for byte.
pub(super) fn replaced(kind: &str, from: &str, to: &[u8]) -> Vec<u8> {
    let text = example(kind).to_string();
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("{from} is not in {text}"));
    [
        &text.as_bytes()[..at],
        to,
        &text.as_bytes()[at + from.len()..],
    ]
    .concat()
}

/// The like example, as JSON text with `inner` spliced in before its end.
pub(super) fn like_text_with(inner: &str) -> String {
    let text = example("like").to_string();
    format!("{},{inner}}}", &text[..text.len() - 1])
}

/// `depth` nested arrays or objects around `1`.
pub(super) fn nested(depth: usize, object: bool) -> String {
    if object {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// Strings that must never become part of a subject.
pub(super) const SUBJECT_BREAKERS: [&str; 7] =
    ["*", ">", ".", "a.b", "tally.events.>", "a b", "a\tb"];
pub(super) const ID_FIELDS: [&str; 5] = [
    "event_id",
    "post_id",
    "user_id",
    "influencer_id",
    "campaign_id",
];

pub(super) fn single_event_cases() -> Vec<Case> {
    let valid = example("like").to_string();
    let mut cases = vec![
        // Malformed and truncated JSON.
        single("an empty body", "", 400),
        single("only whitespace", "  \r\n\t ", 400),
        single("a truncated object", "{\"event_id\": ", 400),
        single("a trailing comma", "{\"event_id\": \"e\",}", 400),
        single("single quotes", "{'event_id': 'e'}", 400),
        single("a bare word", "nul", 400),
        single("a comment", format!("/* hi */ {valid}"), 400),
        single("two documents", format!("{valid} {valid}"), 400),
        single("trailing garbage", format!("{valid}x"), 400),
        single("a byte-order mark", format!("\u{feff}{valid}"), 400),
        single(
            "NaN",
            replaced("view", "\"count\":3", b"\"count\":NaN"),
            400,
        ),
        single(
            "a number beyond f64",
            replaced("view", "\"count\":3", b"\"count\":1e400"),
            400,
        ),
        single(
            "an unterminated string",
            "{\"event_id\": \"e1, \"type\": \"like\"}",
            400,
        ),
        // Content types.
        single("text/plain", valid.clone(), 415).content_type(Some("text/plain")),
        single("no content type", valid.clone(), 415).content_type(None),
        single("a form", valid.clone(), 415)
            .content_type(Some("application/x-www-form-urlencoded")),
        single("multipart", valid.clone(), 415).content_type(Some("multipart/form-data")),
        single("NDJSON on the single endpoint", valid.clone(), 415)
            .content_type(Some("application/x-ndjson")),
        single("a look-alike type", valid.clone(), 415).content_type(Some("application/jsonx")),
        single("a JSON suffix type", valid.clone(), 415)
            .content_type(Some("application/problem+json")),
        // Over the 1 MiB limit.
        single("1 MiB + 1 of spaces", vec![b' '; (1 << 20) + 1], 413).raw(),
        single(
            "a 5 MB event_id",
            with("like", "event_id", json!("e".repeat(5_000_000))).to_string(),
            413,
        )
        .raw(),
        // Deep nesting.
        single("33 nested arrays", nested(33, false), 400),
        single("33 nested objects", nested(33, true), 400),
        single(
            "33 levels, arrays and objects",
            format!("{}1{}", "[{\"a\":".repeat(17), "}]".repeat(17)),
            400,
        ),
        single("100,000 nested arrays", nested(100_000, false), 400),
        single("100,000 nested objects", nested(100_000, true), 400),
        single("100,000 unclosed arrays", "[".repeat(100_000), 400),
        single(
            "41 levels, 39 of them inside a payload",
            replaced(
                "like",
                "\"payload\":{}",
                format!("\"payload\":{{\"x\":{}}}", nested(39, false)).as_bytes(),
            ),
            400,
        ),
        invalid(
            "32 levels (the limit) is read, then refused as an unknown field",
            with(
                "like",
                "payload.x",
                serde_json::from_str(&nested(30, false)).unwrap(),
            ),
            "payload.x",
        ),
        // Invalid UTF-8.
        single("bytes that are not UTF-8", b"\xff\xfe{}".to_vec(), 400),
        single(
            "a raw 0xFF inside a string",
            replaced("like", "h-like", b"h-\xfflike"),
            400,
        ),
        single(
            "an overlong encoding of '/' inside a string",
            replaced("like", "h-like", b"h-\xc0\xaflike"),
            400,
        ),
        single(
            "an encoded surrogate inside a string",
            replaced("like", "h-like", b"h-\xed\xa0\x80like"),
            400,
        ),
        single(
            "a lone escaped surrogate",
            replaced("like", "h-like", b"h-\\ud800like"),
            400,
        ),
        // Huge strings under the body limit.
        invalid(
            "a comment of 10,001 characters",
            with("comment", "payload.text", json!("é".repeat(10_001))),
            "payload.text",
        ),
        invalid(
            "a 100,000-character unknown key is named in 64 characters and an ellipsis",
            {
                let mut event = example("like");
                event["k".repeat(100_000)] = json!(1);
                event
            },
            &format!("{}…", "k".repeat(64)),
        ),
        invalid(
            "a 100,000-character unknown payload key",
            with(
                "like",
                &format!("payload.{}", "k".repeat(100_000)),
                json!(1),
            ),
            &format!("payload.{}…", "k".repeat(64)),
        ),
        // Numbers out of range.
        invalid(
            "a view count of 0",
            with("view", "payload.count", json!(0)),
            "payload.count",
        ),
        invalid(
            "a view count of -1",
            with("view", "payload.count", json!(-1)),
            "payload.count",
        ),
        invalid(
            "a view count of 1e300",
            with("view", "payload.count", json!(1e300)),
            "payload.count",
        ),
        Case::post(
            "a view count of 2^64",
            "/v1/events",
            replaced("view", "\"count\":3", b"\"count\":18446744073709551616"),
            Expect::Invalid("payload.count".into()),
        ),
        invalid(
            "a view count of 1.5",
            with("view", "payload.count", json!(1.5)),
            "payload.count",
        ),
        invalid(
            "a view count of \"3\"",
            with("view", "payload.count", json!("3")),
            "payload.count",
        ),
        invalid(
            "a view count over a billion",
            with("view", "payload.count", json!(1_000_000_001u64)),
            "payload.count",
        ),
        invalid(
            "a conversion value of -1",
            with("conversion", "payload.value", json!(-1)),
            "payload.value",
        ),
        invalid(
            "a conversion value of 1e13",
            with("conversion", "payload.value", json!(1e13)),
            "payload.value",
        ),
        invalid(
            "a conversion value of \"NaN\"",
            with("conversion", "payload.value", json!("NaN")),
            "payload.value",
        ),
        invalid(
            "a conversion value of \"Infinity\"",
            with("conversion", "payload.value", json!("Infinity")),
            "payload.value",
        ),
        invalid(
            "-5 followers",
            with("follower_snapshot", "payload.followers", json!(-5)),
            "payload.followers",
        ),
        invalid(
            "a schema_version of 2^63",
            with("like", "schema_version", json!(1u64 << 63)),
            "schema_version",
        ),
        // Duplicate keys: which one counts would depend on the parser.
        single(
            "a duplicate event_id, the first one hostile",
            like_text_with("\"event_id\":\"dup-1\"").replace("h-like", "a.b"),
            400,
        ),
        single(
            "a duplicate event_id, both valid",
            like_text_with("\"event_id\":\"dup-2\""),
            400,
        ),
        single("a duplicate type", like_text_with("\"type\":\"view\""), 400),
        single(
            "a duplicate key in the payload",
            replaced("view", "\"count\":3", b"\"count\":3,\"count\":-1"),
            400,
        ),
        // Bodies that are JSON but not an object.
        invalid("a bare string", json!("like"), ""),
        invalid("a bare number", json!(42), ""),
        invalid("null", Value::Null, ""),
        invalid("true", json!(true), ""),
        invalid("an empty array", json!([]), ""),
        invalid("an array holding an event", json!([example("like")]), ""),
        invalid("an empty object", json!({}), "event_id"),
        // The tenant comes from the token, never from the body.
        invalid(
            "a tenant in the body",
            with("like", "tenant", json!("other")),
            "tenant",
        ),
        invalid(
            "a source in the body",
            with("like", "source", json!("import")),
            "source",
        ),
        invalid(
            "a received_at in the body",
            with("like", "received_at", json!(rfc3339_ago(0))),
            "received_at",
        ),
    ];

    // Timestamps.
    let now_plus_an_hour = rfc3339_ago(-3600);
    let timestamps = [
        ("far in the future", json!("9999-12-31T23:59:59Z")),
        ("an hour ahead", json!(now_plus_an_hour)),
        ("the epoch", json!("1970-01-01T00:00:00Z")),
        ("year 1", json!("0001-01-01T00:00:00Z")),
        ("year 0 with an offset", json!("0000-01-01T00:00:00+23:59")),
        (
            "year 9999 with an offset",
            json!("9999-12-31T23:59:59-23:59"),
        ),
        ("month 13, day 45", json!("2026-13-45T99:99:99Z")),
        ("unix seconds", json!(1_763_800_000)),
        ("an empty string", json!("")),
        ("no zone", json!("2026-11-22 11:00:00")),
        ("a date only", json!("2026-11-22")),
    ];
    for (what, value) in timestamps {
        cases.push(invalid(
            format!("occurred_at {what}"),
            with("like", "occurred_at", value.clone()),
            "occurred_at",
        ));
    }
    cases.push(invalid(
        "published_at month 13",
        with(
            "post_published",
            "payload.published_at",
            json!("2026-13-45T99:99:99Z"),
        ),
        "payload.published_at",
    ));

    // Subject wildcards, separators and whitespace in every id field.
    for field in ID_FIELDS {
        for id in SUBJECT_BREAKERS {
            cases.push(invalid(
                format!("{field} {id:?}"),
                with("conversion", field, json!(id)),
                field,
            ));
        }
        cases.push(invalid(
            format!("{field} of 129 characters"),
            with("conversion", field, json!("x".repeat(129))),
            field,
        ));
        cases.push(invalid(
            format!("{field} non-ASCII"),
            with("conversion", field, json!("café")),
            field,
        ));
    }
    cases.push(invalid(
        "order_id \"o.1\"",
        with("conversion", "payload.order_id", json!("o.1")),
        "payload.order_id",
    ));
    cases.push(invalid(
        "a tag with a wildcard",
        with("influencer_registered", "payload.tags", json!(["ok", "a*"])),
        "payload.tags",
    ));

    // Control characters in ids and in text that forbids them.
    for (what, text) in [("NUL", "a\u{0}b"), ("BEL", "a\u{7}b"), ("CRLF", "a\r\nb")] {
        for field in ID_FIELDS {
            cases.push(invalid(
                format!("{what} in {field}"),
                with("conversion", field, json!(text)),
                field,
            ));
        }
        for (kind, path, prefix) in [
            ("influencer_registered", "payload.handle", ""),
            ("influencer_registered", "payload.name", ""),
            ("click", "payload.url", "https://x.example/"),
        ] {
            cases.push(invalid(
                format!("{what} in {path}"),
                with(kind, path, json!(format!("{prefix}{text}"))),
                path,
            ));
        }
    }
    // Comments may hold line breaks, never other control characters.
    for text in ["a\u{0}b", "bell\u{7}", "esc\u{1b}[31m"] {
        cases.push(invalid(
            format!("comment text {text:?}"),
            with("comment", "payload.text", json!(text)),
            "payload.text",
        ));
    }
    cases
}

/// Everything a client can get wrong in one event, answered as a problem,
/// and nothing stored; then one valid event is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_single_events_are_refused_and_never_stored() {
    let stack = Stack::start("hostile_events").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let cases = single_event_cases();
    check_all(&stack, &token, &cases).await;
    assert_eq!(
        stack.stored_events().await,
        0,
        "after {} hostile events",
        cases.len()
    );

    let (status, body) = stack.post_event(&token, &example("comment")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stack.stored_events().await, 1);
}

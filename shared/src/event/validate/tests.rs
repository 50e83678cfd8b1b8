//! The validator, case by case: one `check(input, expected fields)` helper.
use super::*;
use serde_json::json;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-22 12:00:00 UTC);

fn base(kind: &str) -> Value {
    json!({
        "event_id": "evt-1",
        "type": kind,
        "occurred_at": "2026-11-22T11:59:00Z",
        "post_id": "post-1",
    })
}

fn with(kind: &str, field: &str, value: Value) -> Value {
    let mut event = base(kind);
    event[field] = value;
    event
}

/// Validates `input`; `expected` lists the fields that must be reported,
/// in order (empty: the event is valid).
fn check(input: Value, expected: &[&str]) {
    let result = validate(&input, NOW, &Limits::default());
    let fields: Vec<String> = match &result {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(|e| e.field.clone()).collect(),
    };
    assert_eq!(fields, expected, "validating {input}: got {result:?}");
}

#[test]
fn valid_events() {
    for kind in ["like", "unlike", "share", "view", "click"] {
        check(base(kind), &[]);
    }
    check(with("comment", "payload", json!({"text": "love it"})), &[]);
    check(with("view", "payload", json!({"count": 250})), &[]);
    check(
        with("click", "payload", json!({"url": "https://shop.example/x"})),
        &[],
    );
    check(with("like", "platform", json!("instagram")), &[]);
    check(
        with(
            "like",
            "user_id",
            json!("0b6f8a1e-7a5e-4c3b-9d2f-1f1f1f1f1f1f"),
        ),
        &[],
    );
    check(
        with("like", "occurred_at", json!("2026-11-22T13:04:00+01:00")),
        &[],
    );
    check(with("like", "schema_version", json!(1)), &[]);
}

#[test]
fn the_envelope() {
    check(json!([]), &[""]);
    check(json!("like"), &[""]);
    check(json!({}), &["event_id", "type", "occurred_at"]);
    check(with("like", "event_id", json!("")), &["event_id"]);
    check(with("like", "event_id", json!("a.b")), &["event_id"]);
    check(with("like", "event_id", json!("tally.>")), &["event_id"]);
    check(with("like", "event_id", json!("a*")), &["event_id"]);
    check(
        with("like", "event_id", json!("x".repeat(129))),
        &["event_id"],
    );
    check(with("like", "event_id", json!(17)), &["event_id"]);
    check(base("poke"), &["type"]);
    check(with("like", "type", json!(3)), &["type"]);
    check(with("like", "platform", json!("myspace")), &["platform"]);
    check(with("like", "user_id", json!("u\n1")), &["user_id"]);
    check(with("like", "campaign_id", json!(["c"])), &["campaign_id"]);
    check(
        with("like", "influencer_id", json!("in fluencer")),
        &["influencer_id"],
    );
    check(with("like", "tenant", json!("other")), &["tenant"]);
    check(
        with("like", "schema_version", json!(3)),
        &["schema_version"],
    );
    check(with("like", "schema_version", json!(2)), &[]);
    check(with("like", "payload", json!("text")), &["payload"]);
    let mut no_post = base("like");
    no_post.as_object_mut().unwrap().remove("post_id");
    check(no_post, &["post_id"]);
}

#[test]
fn timestamps() {
    check(
        with("like", "occurred_at", json!("2026-11-22 11:00:00")),
        &["occurred_at"],
    );
    check(
        with("like", "occurred_at", json!("yesterday")),
        &["occurred_at"],
    );
    check(
        with("like", "occurred_at", json!(1763800000)),
        &["occurred_at"],
    );
    check(
        with("like", "occurred_at", json!("2026-11-22T12:04:59Z")),
        &[],
    );
    check(
        with("like", "occurred_at", json!("2026-11-22T12:05:01Z")),
        &["occurred_at"],
    );
    check(
        with("like", "occurred_at", json!("9999-12-31T23:59:59Z")),
        &["occurred_at"],
    );
    check(
        with("like", "occurred_at", json!("1970-01-01T00:00:00Z")),
        &["occurred_at"],
    );
}

#[test]
fn payloads() {
    check(base("comment"), &["payload.text"]);
    check(
        with("comment", "payload", json!({"text": 5})),
        &["payload.text"],
    );
    let long = "é".repeat(MAX_COMMENT_CHARS + 1);
    check(
        with("comment", "payload", json!({ "text": long })),
        &["payload.text"],
    );
    let longest = "é".repeat(MAX_COMMENT_CHARS);
    check(with("comment", "payload", json!({ "text": longest })), &[]);
    check(
        with("view", "payload", json!({"count": -1})),
        &["payload.count"],
    );
    check(
        with("view", "payload", json!({"count": 0})),
        &["payload.count"],
    );
    check(
        with("view", "payload", json!({"count": 1.5})),
        &["payload.count"],
    );
    check(
        with("view", "payload", json!({"count": 1e300})),
        &["payload.count"],
    );
    check(
        with("view", "payload", json!({"count": "3"})),
        &["payload.count"],
    );
    check(
        with("click", "payload", json!({"url": "javascript:alert(1)"})),
        &["payload.url"],
    );
    check(
        with("like", "payload", json!({"extra": true})),
        &["payload.extra"],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    check(
        json!({"event_id": "", "type": "like", "occurred_at": "now", "post_id": "a b", "bogus": 1}),
        &["bogus", "event_id", "occurred_at", "post_id"],
    );
}

#[test]
fn views_default_to_one() {
    let event = validate(&base("view"), NOW, &Limits::default()).unwrap();
    assert_eq!(event.payload.get("count"), Some(&json!(1)));
}

#[test]
fn hostile_field_names_are_not_echoed_whole() {
    let mut event = base("like");
    event[format!("{}\u{7}", "k".repeat(500))] = json!(1);
    let errors = validate(&event, NOW, &Limits::default()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].field.chars().count() <= 65, "{:?}", errors[0]);
    assert!(!errors[0].field.contains('\u{7}'));
}

/// A valid event of every kind.
fn example(kind: &str) -> Value {
    let mut event = json!({
        "event_id": format!("evt-{kind}"),
        "type": kind,
        "occurred_at": "2026-11-22T11:59:00Z",
    });
    let (envelope, payload) = match kind {
        "comment" => (
            json!({"post_id": "p1"}),
            json!({"text": "line one\nline two"}),
        ),
        "view" => (json!({"post_id": "p1"}), json!({"count": 3})),
        "click" => (
            json!({"post_id": "p1"}),
            json!({"url": "https://x.example/a?b=c"}),
        ),
        "conversion" => (
            json!({"post_id": "p1", "campaign_id": "c1"}),
            json!({"value": 49.95, "currency": "EUR", "order_id": "o-1"}),
        ),
        "like" | "unlike" | "share" => (json!({"post_id": "p1", "user_id": "u1"}), json!({})),
        "follow" | "unfollow" => (json!({"influencer_id": "i1", "user_id": "u1"}), json!({})),
        "follower_snapshot" => (json!({"influencer_id": "i1"}), json!({"followers": 120000})),
        "influencer_registered" => (
            json!({"influencer_id": "i1", "platform": "tiktok"}),
            json!({"handle": "@anna", "name": "Anna", "tags": ["beauty", "fr"]}),
        ),
        "influencer_updated" => (json!({"influencer_id": "i1"}), json!({"name": "Anna B."})),
        "post_published" => (
            json!({"post_id": "p1", "influencer_id": "i1", "campaign_id": "c1", "platform": "instagram"}),
            json!({"content_type": "reel", "published_at": "2026-11-22T09:00:00Z", "tags": ["launch"]}),
        ),
        "campaign_created" => (
            json!({"campaign_id": "c1"}),
            json!({"name": "Spring launch", "budget": 25000, "currency": "USD",
                   "starts_at": "2026-03-01T00:00:00Z", "ends_at": "2026-05-31T23:59:59Z"}),
        ),
        "campaign_updated" => (json!({"campaign_id": "c1"}), json!({"budget": 30000.5})),
        other => panic!("no example for {other}"),
    };
    for (k, v) in envelope.as_object().unwrap() {
        event[k] = v.clone();
    }
    event["payload"] = payload;
    event
}

fn with_payload(kind: &str, field: &str, value: Value) -> Value {
    let mut event = example(kind);
    event["payload"][field] = value;
    event
}

fn without(kind: &str, field: &str) -> Value {
    let mut event = example(kind);
    if let Some(name) = field.strip_prefix("payload.") {
        event["payload"].as_object_mut().unwrap().remove(name);
    } else {
        event.as_object_mut().unwrap().remove(field);
    }
    event
}

#[test]
fn every_kind_has_a_valid_example() {
    for kind in EventKind::ALL {
        check(example(kind.as_str()), &[]);
    }
}

#[test]
fn required_fields_per_kind() {
    let cases = [
        ("conversion", "post_id"),
        ("conversion", "payload.value"),
        ("conversion", "payload.currency"),
        ("follow", "influencer_id"),
        ("follower_snapshot", "payload.followers"),
        ("influencer_registered", "platform"),
        ("influencer_registered", "payload.handle"),
        ("influencer_updated", "influencer_id"),
        ("post_published", "influencer_id"),
        ("post_published", "payload.content_type"),
        ("campaign_created", "campaign_id"),
        ("campaign_created", "payload.budget"),
        ("campaign_created", "payload.ends_at"),
    ];
    for (kind, field) in cases {
        check(without(kind, field), &[field]);
    }
    // Optional ones really are optional.
    for (kind, field) in [
        ("conversion", "payload.order_id"),
        ("post_published", "payload.tags"),
        ("follow", "user_id"),
    ] {
        check(without(kind, field), &[]);
    }
}

#[test]
fn payload_rules() {
    let bad = [
        ("conversion", "value", json!(-0.01)),
        ("conversion", "value", json!("12")),
        ("conversion", "value", json!(2e12)),
        ("conversion", "currency", json!("eur")),
        ("conversion", "currency", json!("ZZZ")),
        ("conversion", "order_id", json!("o.1")),
        ("follower_snapshot", "followers", json!(-5)),
        ("follower_snapshot", "followers", json!(3.5)),
        ("influencer_registered", "handle", json!("")),
        ("influencer_registered", "handle", json!("a\u{0}b")),
        ("influencer_registered", "handle", json!("x".repeat(101))),
        ("influencer_registered", "tags", json!("beauty")),
        ("influencer_registered", "tags", json!(["ok", "not ok"])),
        ("influencer_registered", "tags", json!(vec!["t"; 51])),
        ("post_published", "content_type", json!("podcast")),
        ("post_published", "published_at", json!("today")),
        ("campaign_created", "budget", json!(-1)),
        ("campaign_created", "starts_at", json!(20260301)),
        ("comment", "text", json!("bell\u{7}")),
        ("click", "url", json!("https://a b")),
        ("like", "count", json!(1)),
    ];
    for (kind, field, value) in bad {
        let expected = format!("payload.{field}");
        check(with_payload(kind, field, value), &[expected.as_str()]);
    }
    check(with_payload("conversion", "value", json!(0)), &[]);
    check(
        with_payload("follower_snapshot", "followers", json!(0)),
        &[],
    );
}

#[test]
fn campaigns_end_after_they_start() {
    check(
        with_payload("campaign_created", "ends_at", json!("2026-02-01T00:00:00Z")),
        &["payload.ends_at"],
    );
    let mut update = example("campaign_updated");
    update["payload"] =
        json!({"starts_at": "2026-06-01T00:00:00Z", "ends_at": "2026-05-01T00:00:00Z"});
    check(update, &["payload.ends_at"]);
}

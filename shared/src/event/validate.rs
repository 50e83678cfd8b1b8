//! Validation of untrusted event JSON into an [`Event`].
//!
//! Works on a parsed `serde_json::Value` rather than deriving `Deserialize`
//! so that every problem is reported, each naming its field, instead of the
//! first one serde trips over.

use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::{is_valid_id, Event, EventKind, Platform, SCHEMA_VERSION};

/// Longest `payload.text` of a comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 10_000;
/// Longest `payload.url` of a click, in bytes.
pub const MAX_URL_LEN: usize = 2_048;
/// Largest pre-counted `payload.count` of a view.
pub const MAX_VIEW_COUNT: u64 = 1_000_000_000;

/// One problem with one field. `field` is a dotted path (`payload.text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far in the future `occurred_at` may be (clock skew of sources).
    pub max_future_skew: Duration,
    /// How far in the past `occurred_at` may be.
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_future_skew: Duration::minutes(5),
            max_age: Duration::days(10 * 365),
        }
    }
}

const ENVELOPE_FIELDS: [&str; 10] = [
    "event_id",
    "type",
    "occurred_at",
    "platform",
    "influencer_id",
    "post_id",
    "campaign_id",
    "user_id",
    "payload",
    "schema_version",
];

/// Validates one event sent by a client, as of `now`.
pub fn validate(
    input: &Value,
    now: OffsetDateTime,
    limits: &Limits,
) -> Result<Event, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(object) = input.as_object() else {
        return Err(vec![FieldError::new("", "an event must be a JSON object")]);
    };
    for key in object.keys() {
        if !ENVELOPE_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(printable(key), "unknown field"));
        }
    }

    let event_id = required_id(object, "event_id", &mut errors);
    let kind = match object.get("type") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("type", "is required"));
            None
        }
        Some(Value::String(name)) => EventKind::parse(name).or_else(|| {
            errors.push(FieldError::new(
                "type",
                format!("unknown event type; expected one of {}", kind_names()),
            ));
            None
        }),
        Some(_) => {
            errors.push(FieldError::new("type", "must be a string"));
            None
        }
    };
    let occurred_at = occurred_at(object.get("occurred_at"), now, limits, &mut errors);
    let platform = match object.get("platform") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Platform::parse(name).or_else(|| {
            errors.push(FieldError::new(
                "platform",
                "must be one of instagram, tiktok, youtube, twitter, facebook, other",
            ));
            None
        }),
        Some(_) => {
            errors.push(FieldError::new("platform", "must be a string"));
            None
        }
    };
    let influencer_id = optional_id(object, "influencer_id", &mut errors);
    let post_id = optional_id(object, "post_id", &mut errors);
    let campaign_id = optional_id(object, "campaign_id", &mut errors);
    let user_id = optional_id(object, "user_id", &mut errors);
    match object.get("schema_version") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(_) => errors.push(FieldError::new(
            "schema_version",
            format!("only version {SCHEMA_VERSION} is accepted"),
        )),
    }
    let payload = match object.get("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            errors.push(FieldError::new("payload", "must be a JSON object"));
            Map::new()
        }
    };

    // Every interaction happens on a post.
    if kind.is_some() && matches!(object.get("post_id"), None | Some(Value::Null)) {
        errors.push(FieldError::new(
            "post_id",
            "is required for this event type",
        ));
    }
    let payload = match kind {
        Some(kind) => validate_payload(kind, payload, &mut errors),
        None => payload,
    };

    match (event_id, kind, occurred_at) {
        (Some(event_id), Some(kind), Some(occurred_at)) if errors.is_empty() => Ok(Event {
            event_id,
            kind,
            occurred_at,
            platform,
            influencer_id,
            post_id,
            campaign_id,
            user_id,
            payload,
        }),
        _ => Err(errors),
    }
}

fn kind_names() -> String {
    EventKind::ALL.map(EventKind::as_str).join(", ")
}

/// Field names are echoed back to clients: keep hostile ones short and plain.
fn printable(key: &str) -> String {
    let mut shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    shown
}

fn required_id(
    object: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    if matches!(object.get(field), None | Some(Value::Null)) {
        errors.push(FieldError::new(field, "is required"));
        return None;
    }
    optional_id(object, field, errors)
}

fn optional_id(
    object: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if is_valid_id(id) => Some(id.clone()),
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                field,
                "must be 1-128 characters of A-Z, a-z, 0-9, '_', ':' or '-'",
            ));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

fn occurred_at(
    value: Option<&Value>,
    now: OffsetDateTime,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
) -> Option<OffsetDateTime> {
    let text = match value {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("occurred_at", "is required"));
            return None;
        }
        Some(Value::String(text)) => text,
        Some(_) => {
            errors.push(FieldError::new(
                "occurred_at",
                "must be an RFC 3339 timestamp string",
            ));
            return None;
        }
    };
    let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) else {
        errors.push(FieldError::new(
            "occurred_at",
            "must be an RFC 3339 timestamp such as 2026-11-22T10:15:00Z",
        ));
        return None;
    };
    if at > now + limits.max_future_skew {
        errors.push(FieldError::new(
            "occurred_at",
            format!(
                "is more than {} seconds in the future",
                limits.max_future_skew.whole_seconds()
            ),
        ));
        return None;
    }
    if at < now - limits.max_age {
        errors.push(FieldError::new(
            "occurred_at",
            format!(
                "is more than {} days in the past",
                limits.max_age.whole_days()
            ),
        ));
        return None;
    }
    Some(at)
}

/// Checks the type-specific payload and fills in its defaults.
fn validate_payload(
    kind: EventKind,
    mut payload: Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Map<String, Value> {
    let allowed: &[&str] = match kind {
        EventKind::Liked | EventKind::Unliked | EventKind::Shared => &[],
        EventKind::Commented => &["text"],
        EventKind::Viewed => &["count"],
        EventKind::Clicked => &["url"],
    };
    for key in payload.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("payload.{}", printable(key)),
                format!("unknown field for a {} event", kind.as_str()),
            ));
        }
    }
    match kind {
        EventKind::Commented => match payload.get("text") {
            None | Some(Value::Null) => errors.push(FieldError::new("payload.text", "is required")),
            Some(Value::String(text)) if text.chars().count() > MAX_COMMENT_CHARS => {
                errors.push(FieldError::new(
                    "payload.text",
                    format!("is longer than {MAX_COMMENT_CHARS} characters"),
                ))
            }
            Some(Value::String(_)) => {}
            Some(_) => errors.push(FieldError::new("payload.text", "must be a string")),
        },
        EventKind::Viewed => match payload.get("count") {
            None | Some(Value::Null) => {
                payload.insert("count".into(), Value::from(1));
            }
            Some(count) => match count.as_u64() {
                Some(n) if (1..=MAX_VIEW_COUNT).contains(&n) => {}
                _ => errors.push(FieldError::new(
                    "payload.count",
                    format!("must be a whole number from 1 to {MAX_VIEW_COUNT}"),
                )),
            },
        },
        EventKind::Clicked => match payload.get("url") {
            None | Some(Value::Null) => {}
            Some(Value::String(url))
                if url.len() <= MAX_URL_LEN
                    && (url.starts_with("https://") || url.starts_with("http://"))
                    && !url.chars().any(char::is_control) => {}
            Some(_) => errors.push(FieldError::new(
                "payload.url",
                format!("must be an http(s) URL of at most {MAX_URL_LEN} bytes"),
            )),
        },
        EventKind::Liked | EventKind::Unliked | EventKind::Shared => {}
    }
    payload
}

#[cfg(test)]
mod tests {
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
            with("like", "schema_version", json!(2)),
            &["schema_version"],
        );
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
}

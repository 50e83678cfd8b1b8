//! Validation of untrusted event JSON into an [`Event`].
//!
//! Works on a parsed `serde_json::Value` rather than deriving `Deserialize`
//! so that every problem is reported, each naming its field, instead of the
//! first one serde trips over.

use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::currency::is_currency;
use super::{is_valid_id, Category, Event, EventKind, Platform, SCHEMA_VERSION};

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
    // The client-visible envelope is the same in every version so far; the
    // server fills in what later versions added (such as `source`).
    match object.get("schema_version") {
        None | Some(Value::Null) => {}
        Some(v)
            if v.as_u64()
                .is_some_and(|v| (1..=u64::from(SCHEMA_VERSION)).contains(&v)) => {}
        Some(_) => errors.push(FieldError::new(
            "schema_version",
            format!("must be a version from 1 to {SCHEMA_VERSION}"),
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

    if let Some(kind) = kind {
        for field in required_envelope_fields(kind) {
            if matches!(object.get(*field), None | Some(Value::Null)) {
                errors.push(FieldError::new(
                    *field,
                    format!("is required for a {} event", kind.as_str()),
                ));
            }
        }
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

/// Envelope fields an event kind cannot do without.
fn required_envelope_fields(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::InfluencerRegistered => &["influencer_id", "platform"],
        EventKind::InfluencerUpdated => &["influencer_id"],
        EventKind::PostPublished => &["post_id", "influencer_id"],
        EventKind::CampaignCreated | EventKind::CampaignUpdated => &["campaign_id"],
        kind => match kind.category() {
            Category::Interaction => &["post_id"],
            Category::Audience => &["influencer_id"],
            Category::Catalogue => &[],
        },
    }
}

/// What one payload field must be.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A string of at most this many characters, no control characters
    /// (newlines and tabs are allowed in comments).
    Text { max_chars: usize, multiline: bool },
    /// A whole number in the range.
    Count { min: u64, max: u64 },
    /// A finite number from 0 to [`MAX_MONEY`].
    Money,
    /// An ISO 4217 code.
    Currency,
    /// An id like the envelope's.
    Id,
    /// An http(s) URL.
    Url,
    /// An RFC 3339 timestamp.
    Timestamp,
    /// Up to [`MAX_TAGS`] tags of 1-64 id characters.
    Tags,
    /// One of the content types.
    ContentType,
}

/// A payload field: its name, rule and whether it must be present.
type FieldRule = (&'static str, Rule, bool);

const REQUIRED: bool = true;
const OPTIONAL: bool = false;

/// Largest money amount (conversion value, campaign budget).
pub const MAX_MONEY: f64 = 1e12;
/// Largest follower count.
pub const MAX_FOLLOWERS: u64 = 10_000_000_000;
/// Most tags on one influencer, post or campaign.
pub const MAX_TAGS: usize = 50;
/// Post content types.
pub const CONTENT_TYPES: [&str; 7] = ["image", "video", "reel", "story", "short", "text", "live"];

const NAME: Rule = Rule::Text {
    max_chars: 200,
    multiline: false,
};

fn payload_rules(kind: EventKind) -> &'static [FieldRule] {
    match kind {
        EventKind::Liked | EventKind::Unliked | EventKind::Shared => &[],
        EventKind::Followed | EventKind::Unfollowed => &[],
        EventKind::Commented => &[(
            "text",
            Rule::Text {
                max_chars: MAX_COMMENT_CHARS,
                multiline: true,
            },
            REQUIRED,
        )],
        EventKind::Viewed => &[(
            "count",
            Rule::Count {
                min: 1,
                max: MAX_VIEW_COUNT,
            },
            OPTIONAL,
        )],
        EventKind::Clicked => &[("url", Rule::Url, OPTIONAL)],
        EventKind::Converted => &[
            ("value", Rule::Money, REQUIRED),
            ("currency", Rule::Currency, REQUIRED),
            ("order_id", Rule::Id, OPTIONAL),
        ],
        EventKind::FollowersCounted => &[(
            "followers",
            Rule::Count {
                min: 0,
                max: MAX_FOLLOWERS,
            },
            REQUIRED,
        )],
        EventKind::InfluencerRegistered => &[
            (
                "handle",
                Rule::Text {
                    max_chars: 100,
                    multiline: false,
                },
                REQUIRED,
            ),
            ("name", NAME, OPTIONAL),
            ("tags", Rule::Tags, OPTIONAL),
        ],
        EventKind::InfluencerUpdated => &[
            (
                "handle",
                Rule::Text {
                    max_chars: 100,
                    multiline: false,
                },
                OPTIONAL,
            ),
            ("name", NAME, OPTIONAL),
            ("tags", Rule::Tags, OPTIONAL),
        ],
        EventKind::PostPublished => &[
            ("content_type", Rule::ContentType, REQUIRED),
            ("published_at", Rule::Timestamp, OPTIONAL),
            ("tags", Rule::Tags, OPTIONAL),
        ],
        EventKind::CampaignCreated => &[
            ("name", NAME, REQUIRED),
            ("budget", Rule::Money, REQUIRED),
            ("currency", Rule::Currency, REQUIRED),
            ("starts_at", Rule::Timestamp, REQUIRED),
            ("ends_at", Rule::Timestamp, REQUIRED),
            ("tags", Rule::Tags, OPTIONAL),
        ],
        EventKind::CampaignUpdated => &[
            ("name", NAME, OPTIONAL),
            ("budget", Rule::Money, OPTIONAL),
            ("currency", Rule::Currency, OPTIONAL),
            ("starts_at", Rule::Timestamp, OPTIONAL),
            ("ends_at", Rule::Timestamp, OPTIONAL),
            ("tags", Rule::Tags, OPTIONAL),
        ],
    }
}

/// Checks the type-specific payload and fills in its defaults.
fn validate_payload(
    kind: EventKind,
    mut payload: Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Map<String, Value> {
    let rules = payload_rules(kind);
    for key in payload.keys() {
        if !rules.iter().any(|(name, _, _)| name == key) {
            errors.push(FieldError::new(
                format!("payload.{}", printable(key)),
                format!("unknown field for a {} event", kind.as_str()),
            ));
        }
    }
    for (name, rule, required) in rules {
        let field = format!("payload.{name}");
        match payload.get(*name) {
            None | Some(Value::Null) if *required => {
                errors.push(FieldError::new(field, "is required"))
            }
            None | Some(Value::Null) => {}
            Some(value) => {
                if let Err(message) = check_rule(*rule, value) {
                    errors.push(FieldError::new(field, message));
                }
            }
        }
    }
    // Cross-field rules and defaults.
    match kind {
        EventKind::Viewed if matches!(payload.get("count"), None | Some(Value::Null)) => {
            payload.insert("count".into(), Value::from(1));
        }
        EventKind::CampaignCreated | EventKind::CampaignUpdated => {
            let at = |name: &str| {
                payload
                    .get(name)
                    .and_then(Value::as_str)
                    .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            };
            if let (Some(starts), Some(ends)) = (at("starts_at"), at("ends_at")) {
                if ends < starts {
                    errors.push(FieldError::new(
                        "payload.ends_at",
                        "must not be before payload.starts_at",
                    ));
                }
            }
        }
        _ => {}
    }
    payload
}

fn check_rule(rule: Rule, value: &Value) -> Result<(), String> {
    match rule {
        Rule::Text {
            max_chars,
            multiline,
        } => {
            let text = value.as_str().ok_or("must be a string")?;
            if text.chars().count() > max_chars {
                return Err(format!("is longer than {max_chars} characters"));
            }
            let allowed = |c: char| multiline && (c == '\n' || c == '\r' || c == '\t');
            if text.chars().any(|c| c.is_control() && !allowed(c)) {
                return Err("must not contain control characters".into());
            }
            if !multiline && text.trim().is_empty() {
                return Err("must not be blank".into());
            }
            Ok(())
        }
        Rule::Count { min, max } => match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        },
        Rule::Money => match value.as_f64() {
            Some(v) if value.is_number() && v.is_finite() && (0.0..=MAX_MONEY).contains(&v) => {
                Ok(())
            }
            _ => Err(format!("must be a number from 0 to {MAX_MONEY:e}")),
        },
        Rule::Currency => match value.as_str() {
            Some(code) if is_currency(code) => Ok(()),
            _ => Err("must be an ISO 4217 currency code such as EUR or USD".into()),
        },
        Rule::Id => match value.as_str() {
            Some(id) if is_valid_id(id) => Ok(()),
            _ => Err("must be 1-128 characters of A-Z, a-z, 0-9, '_', ':' or '-'".into()),
        },
        Rule::Url => match value.as_str() {
            Some(url)
                if url.len() <= MAX_URL_LEN
                    && (url.starts_with("https://") || url.starts_with("http://"))
                    && !url.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "must be an http(s) URL of at most {MAX_URL_LEN} bytes"
            )),
        },
        Rule::Timestamp => match value.as_str().map(|s| OffsetDateTime::parse(s, &Rfc3339)) {
            Some(Ok(_)) => Ok(()),
            _ => Err("must be an RFC 3339 timestamp such as 2026-11-22T10:15:00Z".into()),
        },
        Rule::Tags => {
            let tags = value.as_array().ok_or("must be an array of strings")?;
            if tags.len() > MAX_TAGS {
                return Err(format!("must have at most {MAX_TAGS} tags"));
            }
            if tags
                .iter()
                .all(|t| t.as_str().is_some_and(|t| t.len() <= 64 && is_valid_id(t)))
            {
                Ok(())
            } else {
                Err("each tag must be 1-64 characters of A-Z, a-z, 0-9, '_', ':' or '-'".into())
            }
        }
        Rule::ContentType => match value.as_str() {
            Some(t) if CONTENT_TYPES.contains(&t) => Ok(()),
            _ => Err(format!("must be one of {}", CONTENT_TYPES.join(", "))),
        },
    }
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
}

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

impl Limits {
    /// The limits `command` configures (bounded by `Config::check`; clamped
    /// again so that no value can overflow).
    pub fn from_config(command: &crate::config::CommandConfig) -> Limits {
        Limits {
            max_future_skew: Duration::seconds(
                i64::try_from(command.max_future_skew_secs.min(7 * 86_400)).unwrap_or(0),
            ),
            max_age: Duration::days(
                i64::try_from(command.max_event_age_days.min(36_500)).unwrap_or(0),
            ),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_future_skew: Duration::minutes(5),
            max_age: Duration::days(10 * 365),
        }
    }
}

/// The keys a client may send at the top level of an event.
pub(crate) const ENVELOPE_FIELDS: [&str; 10] = [
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
mod tests;

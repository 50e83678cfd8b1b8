//! The event envelope: the one wire format every ingest source speaks, and the
//! form in which accepted events are recorded on the JetStream stream.
//!
//! Two types matter:
//! - [`validate`] turns untrusted JSON into an [`Event`] or a list of
//!   [`FieldError`]s that name every offending field;
//! - [`StoredEvent`] is an accepted event as it lives on the stream: the client's
//!   envelope plus the tenant (taken from the token, never from the body), the
//!   time it was received and its schema version.

mod currency;
#[cfg(test)]
mod proptests;
mod validate;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

pub use currency::is_currency;
pub use validate::{validate, FieldError, Limits, CONTENT_TYPES};

/// The schema version new events are recorded with.
pub const SCHEMA_VERSION: u16 = 2;

/// Longest id (`event_id`, `post_id`, …) accepted.
pub const MAX_ID_LEN: usize = 128;

/// What happened. Serialised with the product's type names (`like`,
/// `post_published`…); the Rust names are past tense because an event is a
/// fact that already happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    #[serde(rename = "like")]
    Liked,
    #[serde(rename = "unlike")]
    Unliked,
    #[serde(rename = "share")]
    Shared,
    #[serde(rename = "comment")]
    Commented,
    #[serde(rename = "view")]
    Viewed,
    #[serde(rename = "click")]
    Clicked,
    #[serde(rename = "conversion")]
    Converted,
    #[serde(rename = "follow")]
    Followed,
    #[serde(rename = "unfollow")]
    Unfollowed,
    #[serde(rename = "follower_snapshot")]
    FollowersCounted,
    #[serde(rename = "influencer_registered")]
    InfluencerRegistered,
    #[serde(rename = "influencer_updated")]
    InfluencerUpdated,
    #[serde(rename = "post_published")]
    PostPublished,
    #[serde(rename = "campaign_created")]
    CampaignCreated,
    #[serde(rename = "campaign_updated")]
    CampaignUpdated,
}

/// The three families of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Something an audience did to a post.
    Interaction,
    /// Followers of an influencer.
    Audience,
    /// Influencers, posts and campaigns themselves.
    Catalogue,
}

impl EventKind {
    /// Every kind this version accepts, in documentation order.
    pub const ALL: [EventKind; 15] = [
        EventKind::Liked,
        EventKind::Unliked,
        EventKind::Shared,
        EventKind::Commented,
        EventKind::Viewed,
        EventKind::Clicked,
        EventKind::Converted,
        EventKind::Followed,
        EventKind::Unfollowed,
        EventKind::FollowersCounted,
        EventKind::InfluencerRegistered,
        EventKind::InfluencerUpdated,
        EventKind::PostPublished,
        EventKind::CampaignCreated,
        EventKind::CampaignUpdated,
    ];

    /// The product's name for the kind, as on the wire and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Liked => "like",
            EventKind::Unliked => "unlike",
            EventKind::Shared => "share",
            EventKind::Commented => "comment",
            EventKind::Viewed => "view",
            EventKind::Clicked => "click",
            EventKind::Converted => "conversion",
            EventKind::Followed => "follow",
            EventKind::Unfollowed => "unfollow",
            EventKind::FollowersCounted => "follower_snapshot",
            EventKind::InfluencerRegistered => "influencer_registered",
            EventKind::InfluencerUpdated => "influencer_updated",
            EventKind::PostPublished => "post_published",
            EventKind::CampaignCreated => "campaign_created",
            EventKind::CampaignUpdated => "campaign_updated",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn category(self) -> Category {
        match self {
            EventKind::Liked
            | EventKind::Unliked
            | EventKind::Shared
            | EventKind::Commented
            | EventKind::Viewed
            | EventKind::Clicked
            | EventKind::Converted => Category::Interaction,
            EventKind::Followed | EventKind::Unfollowed | EventKind::FollowersCounted => {
                Category::Audience
            }
            EventKind::InfluencerRegistered
            | EventKind::InfluencerUpdated
            | EventKind::PostPublished
            | EventKind::CampaignCreated
            | EventKind::CampaignUpdated => Category::Catalogue,
        }
    }
}

/// The platform an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Instagram,
    Tiktok,
    Youtube,
    Twitter,
    Facebook,
    Other,
}

impl Platform {
    pub const ALL: [Platform; 6] = [
        Platform::Instagram,
        Platform::Tiktok,
        Platform::Youtube,
        Platform::Twitter,
        Platform::Facebook,
        Platform::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Instagram => "instagram",
            Platform::Tiktok => "tiktok",
            Platform::Youtube => "youtube",
            Platform::Twitter => "twitter",
            Platform::Facebook => "facebook",
            Platform::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Platform> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// A validated event as the client sent it (payload defaults filled in).
///
/// As a request body: which ids and payload fields are required depends on
/// `type` (PRODUCT.md section 2); every problem is answered at once, field
/// by field, with `422`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "event_id": "evt-1", "type": "comment", "occurred_at": "2026-11-22T10:00:00Z",
    "platform": "instagram", "influencer_id": "inf-1", "post_id": "post-1",
    "campaign_id": "camp-1", "user_id": "user-1", "payload": {"text": "Love it!"}
}))]
pub struct Event {
    /// The client's id for the event: a retry with the same id is stored
    /// once. 1-128 of A-Z, a-z, 0-9, `_`, `:`, `-`.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened (RFC 3339), not in the future beyond the allowed skew.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influencer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The type's own fields (`text` of a comment, `value` and `currency`
    /// of a conversion, …).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Map<String, Value>,
}

/// Where an accepted event entered Tally (schema version 2 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/events`.
    Api,
    /// `POST /v1/events/batch`.
    Batch,
    /// `PUT`/`DELETE /v1/posts/{post}/likes/{user}`.
    LikeButton,
    /// `POST /v1/webhooks/{platform}`.
    Webhook,
    /// An NDJSON history import.
    Import,
}

/// An accepted event as recorded on the stream.
///
/// Version history (each older version is upcast on read, see [`UPCASTERS`]):
/// - 1: the envelope, `tenant`, `received_at`;
/// - 2: adds `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlatStoredEvent")]
pub struct StoredEvent {
    pub schema_version: u16,
    pub tenant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub source: Source,
    #[serde(flatten)]
    pub event: Event,
}

/// A [`StoredEvent`] as read: every field at one level. Read through
/// `#[serde(flatten)]`, the event's fields were first buffered as generic
/// content and then read again; read flat, decode + fold runs about a
/// third faster.
#[derive(Deserialize)]
struct FlatStoredEvent {
    schema_version: u16,
    tenant: String,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    source: Source,
    event_id: String,
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    influencer_id: Option<String>,
    #[serde(default)]
    post_id: Option<String>,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    payload: Map<String, Value>,
}

impl From<FlatStoredEvent> for StoredEvent {
    fn from(flat: FlatStoredEvent) -> StoredEvent {
        StoredEvent {
            schema_version: flat.schema_version,
            tenant: flat.tenant,
            received_at: flat.received_at,
            source: flat.source,
            event: Event {
                event_id: flat.event_id,
                kind: flat.kind,
                occurred_at: flat.occurred_at,
                platform: flat.platform,
                influencer_id: flat.influencer_id,
                post_id: flat.post_id,
                campaign_id: flat.campaign_id,
                user_id: flat.user_id,
                payload: flat.payload,
            },
        }
    }
}

/// Rewrites a recorded event of version `N` (the index + 1) into version
/// `N + 1`, as JSON. Append one for every schema change; never edit one.
pub const UPCASTERS: &[fn(&mut Map<String, Value>)] = &[upcast_v1_to_v2];

/// Version 1 had no `source`: everything came through the single-event API.
fn upcast_v1_to_v2(event: &mut Map<String, Value>) {
    event.insert("source".into(), Value::from("api"));
}

/// Why bytes read from the stream are not a readable event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("schema_version {0} is not one this build understands (1 to {SCHEMA_VERSION})")]
    UnknownVersion(u64),
}

impl StoredEvent {
    pub fn new(tenant: &str, source: Source, event: Event, received_at: OffsetDateTime) -> Self {
        StoredEvent {
            schema_version: SCHEMA_VERSION,
            tenant: tenant.to_owned(),
            received_at,
            source,
            event,
        }
    }

    /// Reads an event recorded by this or any earlier version.
    ///
    /// Older versions are upcast here, on read; history is never rewritten.
    /// Records without a `schema_version` are version 1.
    pub fn decode(bytes: &[u8]) -> Result<StoredEvent, DecodeError> {
        // The common case, a current record, is one parse.
        if let Ok(event) = serde_json::from_slice::<StoredEvent>(bytes) {
            if event.schema_version == SCHEMA_VERSION {
                return Ok(event);
            }
        }
        #[derive(Deserialize)]
        struct Version {
            schema_version: Option<u64>,
        }
        let version = serde_json::from_slice::<Version>(bytes)?
            .schema_version
            .unwrap_or(1);
        if version == u64::from(SCHEMA_VERSION) {
            // Current, yet not readable above: report why.
            return Ok(serde_json::from_slice(bytes)?);
        }
        if version == 0 || version > u64::from(SCHEMA_VERSION) {
            return Err(DecodeError::UnknownVersion(version));
        }
        let Value::Object(mut object) = serde_json::from_slice(bytes)? else {
            return Err(DecodeError::NotAnObject);
        };
        for upcast in &UPCASTERS[(version - 1) as usize..] {
            upcast(&mut object);
        }
        object.insert("schema_version".into(), Value::from(SCHEMA_VERSION));
        Ok(serde_json::from_value(Value::Object(object))?)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a StoredEvent always serialises")
    }

    /// The subject the event is recorded under: `tally.events.<tenant>.<type>`,
    /// so consumers and replays can select by tenant and kind.
    pub fn subject(&self) -> String {
        subject(&self.tenant, self.event.kind)
    }

    /// The JetStream `Nats-Msg-Id`: deduplication is per tenant.
    pub fn msg_id(&self) -> String {
        msg_id(&self.tenant, &self.event.event_id)
    }

    /// `payload.count` of a `view` (1 when absent).
    pub fn view_count(&self) -> u64 {
        match self.event.kind {
            EventKind::Viewed => self
                .event
                .payload
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(1),
            _ => 0,
        }
    }
}

/// Prefix of every event subject.
pub const SUBJECT_PREFIX: &str = "tally.events";

pub fn subject(tenant: &str, kind: EventKind) -> String {
    format!("{SUBJECT_PREFIX}.{tenant}.{}", kind.as_str())
}

/// The subject of one like aggregate (a tenant's post and user): every
/// like and unlike through the like endpoints, in order.
pub fn like_subject(tenant: &str, post_id: &str, user_id: &str) -> String {
    format!("{SUBJECT_PREFIX}.{tenant}.likes.{post_id}.{user_id}")
}

pub fn msg_id(tenant: &str, event_id: &str) -> String {
    format!("{tenant}:{event_id}")
}

/// Whether `id` may be used as an event, post, user, influencer or campaign id:
/// 1–128 characters of `[A-Za-z0-9_:-]` (a UUID qualifies).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-')
}

/// Whether `tenant` is usable as one token of a NATS subject and a ClickHouse
/// key: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn stored() -> StoredEvent {
        StoredEvent::new(
            "acme",
            Source::Api,
            Event {
                event_id: "e-1".into(),
                kind: EventKind::Viewed,
                occurred_at: datetime!(2026-11-01 12:00:00 UTC),
                platform: Some(Platform::Tiktok),
                influencer_id: None,
                post_id: Some("p1".into()),
                campaign_id: None,
                user_id: None,
                payload: serde_json::json!({"count": 7}).as_object().unwrap().clone(),
            },
            datetime!(2026-11-01 12:00:01 UTC),
        )
    }

    #[test]
    fn stored_events_round_trip() {
        let event = stored();
        assert_eq!(StoredEvent::decode(&event.encode()).unwrap(), event);
        assert_eq!(event.subject(), "tally.events.acme.view");
        assert_eq!(event.msg_id(), "acme:e-1");
        assert_eq!(event.view_count(), 7);
    }

    #[test]
    fn a_record_reads_with_every_field_present_absent_or_unknown() {
        let full = StoredEvent::new(
            "acme",
            Source::Webhook,
            Event {
                event_id: "e-2".into(),
                kind: EventKind::Converted,
                occurred_at: datetime!(2026-11-01 12:00:00.25 +01:00),
                platform: Some(Platform::Youtube),
                influencer_id: Some("i1".into()),
                post_id: Some("p1".into()),
                campaign_id: Some("c1".into()),
                user_id: Some("u1".into()),
                payload: serde_json::json!({"value": 9.99, "currency": "EUR", "n": {"a": [1]}})
                    .as_object()
                    .unwrap()
                    .clone(),
            },
            datetime!(2026-11-01 12:00:01.5 UTC),
        );
        assert_eq!(StoredEvent::decode(&full.encode()).unwrap(), full);
        // Optional fields and the payload may be missing; fields this
        // build does not know are ignored (a newer writer's additions).
        let sparse = br#"{"schema_version":2,"tenant":"acme","received_at":"2026-11-01T12:00:01Z",
            "source":"batch","event_id":"e-3","type":"like","occurred_at":"2026-11-01T12:00:00Z",
            "later_field":{"x":1}}"#;
        let read = StoredEvent::decode(sparse).unwrap();
        assert_eq!(read.source, Source::Batch);
        assert_eq!(read.event.kind, EventKind::Liked);
        assert_eq!(
            (read.event.platform, read.event.post_id, read.event.user_id),
            (None, None, None)
        );
        assert!(read.event.payload.is_empty());
        // A required field missing, or of the wrong type, is an error.
        for broken in [
            r#"{"schema_version":2,"tenant":"acme","received_at":"2026-11-01T12:00:01Z","source":"api","type":"like","occurred_at":"2026-11-01T12:00:00Z"}"#,
            r#"{"schema_version":2,"tenant":"acme","received_at":"yesterday","source":"api","event_id":"e","type":"like","occurred_at":"2026-11-01T12:00:00Z"}"#,
            r#"{"schema_version":2,"tenant":"acme","received_at":"2026-11-01T12:00:01Z","source":"api","event_id":"e","type":"liked","occurred_at":"2026-11-01T12:00:00Z"}"#,
        ] {
            assert!(StoredEvent::decode(broken.as_bytes()).is_err(), "{broken}");
        }
    }

    /// A record exactly as version 1 wrote it (the walking skeleton).
    const V1_RECORD: &str = r#"{"schema_version":1,"tenant":"acme","received_at":"2026-11-01T12:00:01Z",
        "event_id":"e-1","type":"view","occurred_at":"2026-11-01T12:00:00Z","platform":"tiktok",
        "post_id":"p1","payload":{"count":7}}"#;

    #[test]
    fn version_one_records_are_upcast_on_read() {
        let decoded = StoredEvent::decode(V1_RECORD.as_bytes()).unwrap();
        assert_eq!(decoded, stored(), "v1 upcasts to the current version");
        assert_eq!(decoded.schema_version, SCHEMA_VERSION);
        assert_eq!(decoded.source, Source::Api);
    }

    #[test]
    fn records_without_a_version_are_version_one() {
        let mut json: Value = serde_json::from_str(V1_RECORD).unwrap();
        json.as_object_mut().unwrap().remove("schema_version");
        let decoded = StoredEvent::decode(json.to_string().as_bytes()).unwrap();
        assert_eq!(decoded, stored());
    }

    #[test]
    fn unknown_versions_are_refused() {
        for version in [0, 99] {
            let mut json: Value = serde_json::from_slice(&stored().encode()).unwrap();
            json["schema_version"] = version.into();
            let err = StoredEvent::decode(json.to_string().as_bytes()).unwrap_err();
            assert!(
                matches!(err, DecodeError::UnknownVersion(v) if v == version),
                "{err}"
            );
        }
        assert!(StoredEvent::decode(b"[1]").is_err());
        assert!(StoredEvent::decode(b"{\"schema_version\":1}").is_err());
    }

    #[test]
    fn there_is_an_upcaster_per_older_version() {
        assert_eq!(UPCASTERS.len(), usize::from(SCHEMA_VERSION) - 1);
    }

    #[test]
    fn kinds_and_platforms_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::from(kind.as_str())
            );
        }
        for platform in Platform::ALL {
            assert_eq!(Platform::parse(platform.as_str()), Some(platform));
        }
    }

    #[test]
    fn ids_and_tenants() {
        for ok in ["a", "A-b_c:9", "0b6f8a1e-7a5e-4c3b-9d2f-1f1f1f1f1f1f"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in ["", "a.b", "a*", "a>", "a b", "é", long.as_str()] {
            assert!(!is_valid_id(bad), "{bad}");
        }
        assert!(is_valid_tenant("acme_2"));
        for bad in ["", "a:b", "a.b", "a*"] {
            assert!(!is_valid_tenant(bad), "{bad}");
        }
    }
}

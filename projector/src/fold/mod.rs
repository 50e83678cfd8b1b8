//! The fold: pure arithmetic from recorded events to read-model rows. No
//! I/O here, so replay tooling and tests reuse it as it is.
//!
//! Every row is keyed by the event's stream sequence, which makes writing a
//! batch idempotent: a redelivered event produces the identical row, and the
//! ReplacingMergeTree tables keep one.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_shared::event::{EventKind, StoredEvent};

/// One row of `events`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct EventRow {
    pub tenant: String,
    pub seq: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// DateTime: seconds since the epoch.
    pub occurred_at: u32,
    pub received_at: u32,
    pub platform: String,
    pub influencer_id: String,
    pub post_id: String,
    pub campaign_id: String,
    pub user_id: String,
    pub payload: String,
    pub schema_version: u16,
}

/// One event's contribution to its post, a row of `post_metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct PostMetricRow {
    pub tenant: String,
    pub post_id: String,
    pub seq: u64,
    pub occurred_at: u32,
    /// +1 for a like, -1 for an unlike.
    pub likes: i8,
    pub shares: u8,
    pub comments: u8,
    pub views: u64,
    pub clicks: u8,
}

/// The rows a batch of events becomes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub events: Vec<EventRow>,
    pub post_metrics: Vec<PostMetricRow>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.post_metrics.is_empty()
    }
}

/// Folds `(stream sequence, event)` pairs into rows.
pub fn fold<'a>(batch: impl IntoIterator<Item = (u64, &'a StoredEvent)>) -> Rows {
    let mut rows = Rows::default();
    for (seq, stored) in batch {
        let event = &stored.event;
        let occurred_at = epoch_seconds(event.occurred_at);
        rows.events.push(EventRow {
            tenant: stored.tenant.clone(),
            seq,
            event_id: event.event_id.clone(),
            kind: event.kind.as_str().to_owned(),
            occurred_at,
            received_at: epoch_seconds(stored.received_at),
            platform: event.platform.map(|p| p.as_str()).unwrap_or("").to_owned(),
            influencer_id: event.influencer_id.clone().unwrap_or_default(),
            post_id: event.post_id.clone().unwrap_or_default(),
            campaign_id: event.campaign_id.clone().unwrap_or_default(),
            user_id: event.user_id.clone().unwrap_or_default(),
            payload: serde_json::Value::Object(event.payload.clone()).to_string(),
            schema_version: stored.schema_version,
        });
        let counted = post_counter(stored);
        if let (Some(post_id), Some((likes, shares, comments, views, clicks))) =
            (&event.post_id, counted)
        {
            rows.post_metrics.push(PostMetricRow {
                tenant: stored.tenant.clone(),
                post_id: post_id.clone(),
                seq,
                occurred_at,
                likes,
                shares,
                comments,
                views,
                clicks,
            });
        }
    }
    rows
}

/// An event's contribution to its post's (likes, shares, comments, views,
/// clicks); `None` for kinds the post metrics do not count (yet: conversions
/// join them with the projections issue).
fn post_counter(stored: &StoredEvent) -> Option<(i8, u8, u8, u64, u8)> {
    Some(match stored.event.kind {
        EventKind::Liked => (1, 0, 0, 0, 0),
        EventKind::Unliked => (-1, 0, 0, 0, 0),
        EventKind::Shared => (0, 1, 0, 0, 0),
        EventKind::Commented => (0, 0, 1, 0, 0),
        EventKind::Viewed => (0, 0, 0, stored.view_count(), 0),
        EventKind::Clicked => (0, 0, 0, 0, 1),
        EventKind::Converted
        | EventKind::Followed
        | EventKind::Unfollowed
        | EventKind::FollowersCounted
        | EventKind::InfluencerRegistered
        | EventKind::InfluencerUpdated
        | EventKind::PostPublished
        | EventKind::CampaignCreated
        | EventKind::CampaignUpdated => return None,
    })
}

/// ClickHouse `DateTime` is unsigned seconds; clamp what it cannot hold.
fn epoch_seconds(at: time::OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp().max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tally_shared::event::{validate, Limits, Source};
    use time::macros::datetime;

    fn stored(kind: &str, post: &str, payload: serde_json::Value) -> StoredEvent {
        let now = datetime!(2026-11-22 12:00:00 UTC);
        let event = validate(
            &json!({"event_id": "e", "type": kind, "occurred_at": "2026-11-22T11:00:00Z",
                    "post_id": post, "payload": payload}),
            now,
            &Limits::default(),
        )
        .unwrap();
        StoredEvent::new("acme", Source::Api, event, now)
    }

    /// Folds one event and returns its post-metrics contribution as
    /// (likes, shares, comments, views, clicks).
    fn check(kind: &str, payload: serde_json::Value, expected: (i8, u8, u8, u64, u8)) {
        let event = stored(kind, "p1", payload);
        let rows = fold([(7, &event)]);
        assert_eq!(rows.events.len(), 1);
        let m = &rows.post_metrics[0];
        assert_eq!(
            (m.likes, m.shares, m.comments, m.views, m.clicks),
            expected,
            "{kind}"
        );
        assert_eq!(
            (m.seq, m.post_id.as_str(), m.tenant.as_str()),
            (7, "p1", "acme")
        );
    }

    #[test]
    fn each_kind_contributes_to_its_counter() {
        check("like", json!({}), (1, 0, 0, 0, 0));
        check("unlike", json!({}), (-1, 0, 0, 0, 0));
        check("share", json!({}), (0, 1, 0, 0, 0));
        check("comment", json!({"text": "nice"}), (0, 0, 1, 0, 0));
        check("view", json!({}), (0, 0, 0, 1, 0));
        check("view", json!({"count": 1200}), (0, 0, 0, 1200, 0));
        check("click", json!({}), (0, 0, 0, 0, 1));
    }

    #[test]
    fn catalogue_events_are_recorded_but_count_nothing_on_the_post() {
        let now = datetime!(2026-11-22 12:00:00 UTC);
        let event = validate(
            &json!({"event_id": "e", "type": "post_published", "occurred_at": "2026-11-22T11:00:00Z",
                    "post_id": "p1", "influencer_id": "i1", "payload": {"content_type": "reel"}}),
            now,
            &Limits::default(),
        )
        .unwrap();
        let stored = StoredEvent::new("acme", Source::Api, event, now);
        let rows = fold([(3, &stored)]);
        assert_eq!(rows.events.len(), 1);
        assert!(rows.post_metrics.is_empty());
    }

    #[test]
    fn event_rows_keep_the_whole_event() {
        let event = stored("comment", "p9", json!({"text": "wow"}));
        let rows = fold([(42, &event)]);
        let row = &rows.events[0];
        assert_eq!(row.seq, 42);
        assert_eq!(row.kind, "comment");
        assert_eq!(row.occurred_at, 1_795_345_200);
        assert_eq!(row.payload, r#"{"text":"wow"}"#);
        assert_eq!(row.schema_version, tally_shared::event::SCHEMA_VERSION);
    }

    #[test]
    fn folding_is_deterministic_so_redelivery_writes_identical_rows() {
        let a = stored("like", "p1", json!({}));
        let b = stored("view", "p2", json!({"count": 3}));
        assert_eq!(fold([(1, &a), (2, &b)]), fold([(1, &a), (2, &b)]));
    }
}

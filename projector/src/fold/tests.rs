//! The fold's unit tests: each kind of row, lateness, determinism, and
//! batches folded in chunks with poison among them.

use super::*;
use serde_json::json;
use tally_shared::event::{validate, Limits, Source};
use time::macros::datetime;

const OPTIONS: FoldOptions = FoldOptions { grace_seconds: 60 };

/// The event id whose fold panics (see `fold_into`).
pub(super) const PANICS: &str = "panics-when-folded";

fn stored_at(envelope: serde_json::Value, received_at: OffsetDateTime) -> StoredEvent {
    let event = validate(&envelope, received_at, &Limits::default()).unwrap();
    StoredEvent::new("acme", Source::Api, event, received_at)
}

fn stored(kind: &str, post: &str, payload: serde_json::Value) -> StoredEvent {
    stored_at(
        json!({"event_id": "e", "type": kind, "occurred_at": "2026-11-22T11:00:00Z",
               "post_id": post, "influencer_id": "i1", "payload": payload}),
        datetime!(2026-11-22 11:00:30 UTC),
    )
}

fn engagement(kind: &str, payload: serde_json::Value) -> EngagementRow {
    let event = stored(kind, "p1", payload);
    let rows = fold([(7, &event)], OPTIONS);
    assert_eq!(rows.len(), 1);
    assert!(rows.catalogue.is_empty());
    let row = rows.engagements.into_iter().next().unwrap();
    assert_eq!(
        (row.seq, row.post_id.as_str(), row.tenant.as_str()),
        (7, "p1", "acme")
    );
    row
}

#[test]
fn each_interaction_kind_contributes_to_its_counter() {
    let counters = |r: EngagementRow| {
        (
            r.likes,
            r.shares,
            r.comments,
            r.views,
            r.clicks,
            r.conversions,
        )
    };
    assert_eq!(counters(engagement("like", json!({}))), (1, 0, 0, 0, 0, 0));
    assert_eq!(
        counters(engagement("unlike", json!({}))),
        (-1, 0, 0, 0, 0, 0)
    );
    assert_eq!(counters(engagement("share", json!({}))), (0, 1, 0, 0, 0, 0));
    assert_eq!(
        counters(engagement("comment", json!({"text": "nice"}))),
        (0, 0, 1, 0, 0, 0)
    );
    assert_eq!(counters(engagement("view", json!({}))), (0, 0, 0, 1, 0, 0));
    assert_eq!(
        counters(engagement("view", json!({"count": 1200}))),
        (0, 0, 0, 1200, 0, 0)
    );
    assert_eq!(counters(engagement("click", json!({}))), (0, 0, 0, 0, 1, 0));
    assert_eq!(
        counters(engagement(
            "conversion",
            json!({"value": 19.99, "currency": "EUR"})
        )),
        (0, 0, 0, 0, 0, 1)
    );
}

#[test]
fn conversion_values_are_exact_integers_and_keep_their_currency() {
    let row = engagement("conversion", json!({"value": 19.99, "currency": "EUR"}));
    assert_eq!((row.value_e4, row.currency.as_str()), (199_900, "EUR"));
    let row = engagement("conversion", json!({"value": 0.0001, "currency": "BHD"}));
    assert_eq!(row.value_e4, 1);
}

#[test]
fn comments_carry_their_sentiment() {
    assert!(engagement("comment", json!({"text": "I love this"})).sentiment > 500);
    assert!(engagement("comment", json!({"text": "awful"})).sentiment < -500);
    assert_eq!(engagement("like", json!({})).sentiment, 0);
}

#[test]
fn audience_events_carry_follows_and_snapshots() {
    let event = |kind: &str, payload| {
        let e = stored_at(
            json!({"event_id": "f", "type": kind, "occurred_at": "2026-11-22T11:00:00Z",
                   "influencer_id": "i1", "payload": payload}),
            datetime!(2026-11-22 11:00:30 UTC),
        );
        fold([(1, &e)], OPTIONS).engagements.remove(0)
    };
    assert_eq!(
        (
            event("follow", json!({})).follows,
            event("follow", json!({})).followers
        ),
        (1, -1)
    );
    assert_eq!(event("unfollow", json!({})).follows, -1);
    let snapshot = event("follower_snapshot", json!({"followers": 12_345}));
    assert_eq!((snapshot.follows, snapshot.followers), (0, 12_345));
    assert_eq!(snapshot.influencer_id, "i1");
    assert_eq!(snapshot.post_id, "");
}

#[test]
fn catalogue_events_become_catalogue_rows_with_presence_flags() {
    let at = datetime!(2026-11-22 12:00:00 UTC);
    let post = stored_at(
        json!({"event_id": "c1", "type": "post_published", "occurred_at": "2026-11-22T11:00:00Z",
               "post_id": "p1", "influencer_id": "i1", "campaign_id": "c9", "platform": "instagram",
               "payload": {"content_type": "reel", "tags": ["summer", "shoes"]}}),
        at,
    );
    let campaign = stored_at(
        json!({"event_id": "c2", "type": "campaign_updated", "occurred_at": "2026-11-22T11:00:00Z",
               "campaign_id": "c9", "payload": {"budget": 2500.5}}),
        at,
    );
    let rows = fold([(3, &post), (4, &campaign)], OPTIONS);
    assert_eq!(rows.len(), 2);
    assert!(rows.engagements.is_empty());
    let (post, campaign) = (&rows.catalogue[0], &rows.catalogue[1]);
    assert_eq!(
        (
            post.kind.as_str(),
            post.post_id.as_str(),
            post.influencer_id.as_str(),
            post.campaign_id.as_str()
        ),
        ("post_published", "p1", "i1", "c9")
    );
    assert_eq!(
        (post.content_type.as_str(), post.platform.as_str()),
        ("reel", "instagram")
    );
    assert_eq!(
        (post.tags.clone(), post.has_tags, post.has_budget),
        (vec!["summer".into(), "shoes".into()], 1, 0)
    );
    assert_eq!(
        (campaign.budget_e4, campaign.has_budget, campaign.has_tags),
        (25_005_000, 1, 0)
    );
    assert_eq!((campaign.name.as_str(), campaign.starts_at), ("", 0));
}

#[test]
fn events_received_after_their_bucket_and_grace_are_late_and_listed() {
    let at = |received| {
        stored_at(
            json!({"event_id": "l", "type": "like", "occurred_at": "2026-11-22T11:00:10Z", "post_id": "p1"}),
            received,
        )
    };
    // Bucket 11:00-11:01, grace 60 s: on time up to 11:02:00.
    let on_time = at(datetime!(2026-11-22 11:02:00 UTC));
    let late = at(datetime!(2026-11-22 11:02:01 UTC));
    let rows = fold([(1, &on_time), (2, &late)], OPTIONS);
    assert_eq!(
        rows.engagements.iter().map(|r| r.late).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(rows.late.len(), 1);
    let listed = &rows.late[0];
    assert_eq!(
        (listed.seq, listed.event_id.as_str(), listed.kind.as_str()),
        (2, "l", "like")
    );
    assert_eq!(listed.bucket_end, minute_bucket_end(listed.occurred_at));
    assert_eq!(listed.lateness_s, 61);
}

#[test]
fn minute_buckets_end_on_the_next_minute() {
    assert_eq!(minute_bucket_end(0), 60);
    assert_eq!(minute_bucket_end(59), 60);
    assert_eq!(minute_bucket_end(60), 120);
    assert_eq!(minute_bucket_end(u32::MAX), u32::MAX);
}

#[test]
fn folding_is_deterministic_so_redelivery_writes_identical_rows() {
    let a = stored("like", "p1", json!({}));
    let b = stored("view", "p2", json!({"count": 3}));
    assert_eq!(
        fold([(1, &a), (2, &b)], OPTIONS),
        fold([(1, &a), (2, &b)], OPTIONS)
    );
}

#[test]
fn a_batch_larger_than_a_chunk_folds_like_its_events_one_by_one() {
    // Events of every kind of row across several chunks, with
    // unreadable, quarantined and late ones among them, and one whose
    // fold panics after its late row is pushed.
    let kinds = ["like", "view", "comment", "follow", "post_published"];
    let late = datetime!(2026-11-22 12:00:00 UTC);
    let mut events = Vec::new();
    for i in 0..FOLD_CHUNK * 2 + 7 {
        let kind = kinds[i % kinds.len()];
        let payload = match kind {
            "view" => json!({"count": 2}),
            "comment" => json!({"text": "nice"}),
            "post_published" => json!({"content_type": "reel"}),
            _ => json!({}),
        };
        let mut event = stored(kind, &format!("p{}", i % 13), payload);
        event.event.event_id = format!("e{i}");
        if i % 7 == 0 {
            event.received_at = late;
        }
        events.push(event);
    }
    let panics = FOLD_CHUNK + 6; // a late comment
    events[panics].event.event_id = PANICS.into();
    assert_eq!(events[panics].received_at, late);
    let mut payloads: Vec<Vec<u8>> = events.iter().map(StoredEvent::encode).collect();
    let unreadable = [0, FOLD_CHUNK - 1, FOLD_CHUNK, 2 * FOLD_CHUNK + 6];
    for &i in &unreadable {
        payloads[i] = b"{not json".to_vec();
    }
    let quarantined = FOLD_CHUNK + 3;
    let quarantine = Quarantine::new(&[format!("acme:e{quarantined}")]);

    let folded = fold_recorded(
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (100 + i as u64, &p[..])),
        OPTIONS,
        &quarantine,
    );

    let kept: Vec<(u64, &StoredEvent)> = (0..events.len())
        .filter(|i| !unreadable.contains(i) && ![quarantined, panics].contains(i))
        .map(|i| (100 + i as u64, &events[i]))
        .collect();
    let expected_rows = fold(kept.iter().copied(), OPTIONS);
    assert!(!expected_rows.late.is_empty() && !expected_rows.catalogue.is_empty());
    assert_eq!(folded.rows, expected_rows);
    assert_eq!(
        folded.seqs,
        kept.iter().map(|(seq, _)| *seq).collect::<Vec<_>>()
    );
    let mut poison: Vec<(usize, u64, &str)> = folded
        .poison
        .iter()
        .map(|p| {
            (
                p.index,
                p.seq,
                if p.quarantined {
                    "quarantined"
                } else {
                    p.error.as_str()
                },
            )
        })
        .collect();
    poison.sort_unstable();
    assert_eq!(poison.len(), 6, "{poison:?}");
    for &i in &unreadable {
        assert!(poison.iter().any(|&(index, seq, error)| index == i
            && seq == 100 + i as u64
            && error != "folding panicked"));
    }
    assert!(poison.contains(&(quarantined, 100 + quarantined as u64, "quarantined")));
    assert!(poison.contains(&(panics, 100 + panics as u64, "folding panicked")));
}

//! Every read model against a small dataset whose expected values are worked
//! out by hand here, independently of the projector: post metrics with
//! attribution from the catalogue (one post catalogued only after its
//! interactions), influencer buckets, rankings, followers, a campaign with
//! CTR, conversion rate and ROI, sentiment, late events, bursts, and the
//! position and watermark the projector records; then the query API's
//! reports over the same dataset (`reports.rs`).

use std::time::Duration;

use serde_json::{json, Value};
use tally_shared::store::models::{is_complete, Granularity, Metric, Models, Position};
use tally_tests::{eventually, read, Stack, TokenScope as Scope};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn at(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// Events of a kind occurred at `occurred_at` (seconds), with the fields
/// given, numbered `{prefix}-1`, `{prefix}-2`, ... as they are made.
pub fn numbered(prefix: &str, occurred_at: i64) -> impl FnMut(&str, Value) -> Value {
    let (prefix, at) = (prefix.to_owned(), at(occurred_at));
    let mut n = 0;
    move |kind, fields| {
        n += 1;
        let mut event =
            json!({"event_id": format!("{prefix}-{n}"), "type": kind, "occurred_at": at});
        for (key, value) in fields.as_object().unwrap() {
            event[key] = value.clone();
        }
        event
    }
}

/// Waits until every read model's position reaches `last`; their positions.
pub async fn projected_to(models: &Models, last: u64) -> Vec<Position> {
    eventually(
        "every read model at the last sequence",
        Duration::from_secs(30),
        || {
            let models = models.clone();
            async move {
                let positions = models.positions().await.map_err(|e| e.to_string())?;
                if positions.len() == tally_shared::store::READ_MODELS.len()
                    && positions.iter().all(|p| p.position >= last)
                {
                    Ok(positions)
                } else {
                    Err(format!("{positions:?}"))
                }
            }
        },
    )
    .await
}

/// Posts `events` as one batch and returns the highest sequence stored.
pub async fn ingest(stack: &Stack, token: &str, events: &[Value]) -> u64 {
    let response = stack
        .http
        .post(format!("{}/v1/events/batch", stack.command.url()))
        .bearer_auth(token)
        .json(events)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], events.len(), "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_model_matches_values_worked_out_by_hand() {
    // Positions are recorded right after each batch is acked: with the
    // periodic record ten minutes apart, only those reach the last event.
    let stack = Stack::start_with("read_models", |c| {
        c.projector.position_interval_ms = 600_000;
    })
    .await;
    let acme = stack.token("acme", &[Scope::EventsWrite]);
    let globex = stack.token("globex", &[Scope::EventsWrite]);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // Two hours ago, on the hour: every bucket below is long closed.
    let t0 = (now - 2 * 3600) / 3600 * 3600;
    let mut e = numbered("ev", t0 + 300);

    let catalogue = vec![
        e(
            "campaign_created",
            json!({"campaign_id": "c1", "payload": {"name": "Winter", "budget": 1000,
            "currency": "EUR", "starts_at": at(t0 - 86_400), "ends_at": at(t0 + 86_400)}}),
        ),
        e(
            "influencer_registered",
            json!({"influencer_id": "i1", "platform": "instagram", "payload": {"handle": "ana"}}),
        ),
        e(
            "post_published",
            json!({"post_id": "p1", "influencer_id": "i1", "campaign_id": "c1",
            "platform": "instagram", "payload": {"content_type": "reel", "tags": ["winter"]}}),
        ),
        e(
            "post_published",
            json!({"post_id": "p2", "influencer_id": "i2", "campaign_id": "c1",
            "platform": "tiktok", "payload": {"content_type": "video"}}),
        ),
    ];
    let post = |e: &mut dyn FnMut(&str, Value) -> Value,
                kind: &str,
                post: &str,
                user: &str,
                payload: Value| {
        e(
            kind,
            json!({"post_id": post, "user_id": user, "payload": payload}),
        )
    };
    let mut interactions = vec![];
    for user in ["a", "b", "c"] {
        interactions.push(post(&mut e, "like", "p1", user, json!({})));
    }
    interactions.push(post(&mut e, "unlike", "p1", "c", json!({})));
    interactions.push(post(
        &mut e,
        "comment",
        "p1",
        "a",
        json!({"text": "love it"}),
    ));
    interactions.push(post(
        &mut e,
        "comment",
        "p1",
        "b",
        json!({"text": "great, really love this"}),
    ));
    interactions.push(post(&mut e, "view", "p1", "a", json!({"count": 100})));
    interactions.push(post(&mut e, "click", "p1", "a", json!({})));
    interactions.push(post(&mut e, "click", "p1", "b", json!({})));
    interactions.push(post(
        &mut e,
        "conversion",
        "p1",
        "a",
        json!({"value": 19.99, "currency": "EUR"}),
    ));
    interactions.push(post(
        &mut e,
        "conversion",
        "p1",
        "b",
        json!({"value": 5.01, "currency": "EUR"}),
    ));
    interactions.push(post(&mut e, "like", "p2", "a", json!({})));
    interactions.push(post(&mut e, "share", "p2", "a", json!({})));
    interactions.push(post(&mut e, "view", "p2", "a", json!({"count": 38})));
    interactions.push(post(&mut e, "click", "p2", "a", json!({})));
    interactions.push(post(
        &mut e,
        "conversion",
        "p2",
        "a",
        json!({"value": 25, "currency": "EUR"}),
    ));
    // A bot: twelve views of p2 within one minute.
    for _ in 0..12 {
        interactions.push(post(&mut e, "view", "p2", "bot", json!({})));
    }
    // p3's interactions come before its catalogue event.
    interactions.push(post(&mut e, "like", "p3", "a", json!({})));
    interactions.push(post(&mut e, "like", "p3", "b", json!({})));
    // Followers of i1: a snapshot, then three follows and an unfollow.
    interactions.push(e(
        "follower_snapshot",
        json!({"influencer_id": "i1", "payload": {"followers": 1000}}),
    ));
    for user in ["x", "y", "z"] {
        interactions.push(e("follow", json!({"influencer_id": "i1", "user_id": user})));
    }
    interactions.push(e(
        "unfollow",
        json!({"influencer_id": "i1", "user_id": "x"}),
    ));
    // One like that is on time (everything above is two hours old).
    let mut recent = post(&mut e, "like", "p2", "d", json!({}));
    recent["occurred_at"] = json!(at(now - 5));
    interactions.push(recent);
    let late_catalogue = vec![e(
        "post_published",
        json!({"post_id": "p3", "influencer_id": "i1",
        "platform": "instagram", "payload": {"content_type": "image"}}),
    )];

    ingest(&stack, &acme, &catalogue).await;
    ingest(&stack, &acme, &interactions).await;
    ingest(
        &stack,
        &globex,
        &[
            json!({"event_id": "g1", "type": "like", "occurred_at": at(t0 + 300), "post_id": "p1"}),
            // Never catalogued; its fact carries its own attribution.
            json!({"event_id": "g2", "type": "like", "occurred_at": at(now - 5), "post_id": "p2",
                   "influencer_id": "gi", "campaign_id": "gc"}),
        ],
    )
    .await;
    let last = ingest(&stack, &acme, &late_catalogue).await;

    let models = Models::connect(&stack.config.clickhouse);
    let positions = projected_to(&models, last).await;
    for p in &positions {
        assert_eq!((p.position, p.stream_last), (last, last), "{p:?}");
        // Caught up, the watermark is the clock.
        assert!(i64::from(p.watermark) >= now - 5, "{p:?}");
    }

    // Post metrics, attribution from the catalogue.
    let p1 = models.post("acme", "p1").await.unwrap().unwrap();
    let c = &p1.counters;
    assert_eq!(
        (
            c.likes,
            c.shares,
            c.comments,
            c.views,
            c.clicks,
            c.conversions
        ),
        (2, 0, 2, 100, 2, 2)
    );
    assert_eq!(p1.conversion_value_e4.get("EUR"), Some(&250_000));
    assert_eq!(
        (
            p1.influencer_id.as_str(),
            p1.campaign_id.as_str(),
            p1.platform.as_str()
        ),
        ("i1", "c1", "instagram")
    );
    assert_eq!(
        (p1.content_type.as_str(), p1.tags.clone()),
        ("reel", vec!["winter".to_owned()])
    );
    assert!(
        (c.engagement_rate() - 0.04).abs() < 1e-12,
        "(2 + 0 + 2) / 100"
    );
    assert!(
        c.sentiment().unwrap() > 0.5,
        "two warm comments: {:?}",
        c.sentiment()
    );
    let p3 = models.post("acme", "p3").await.unwrap().unwrap();
    assert_eq!(
        (
            p3.counters.likes,
            p3.influencer_id.as_str(),
            p3.content_type.as_str()
        ),
        (2, "i1", "image")
    );
    let globex_p1 = models.post("globex", "p1").await.unwrap().unwrap();
    assert_eq!(
        (globex_p1.counters.likes, globex_p1.influencer_id.as_str()),
        (1, ""),
        "tenants never mix"
    );
    let globex_p2 = models.post("globex", "p2").await.unwrap().unwrap();
    assert_eq!(
        (
            globex_p2.counters.likes,
            globex_p2.influencer_id.as_str(),
            globex_p2.campaign_id.as_str(),
            globex_p2.platform.as_str()
        ),
        (1, "gi", "gc", ""),
        "an uncatalogued post is attributed as its facts are"
    );
    assert!(models.post("acme", "p404").await.unwrap().is_none());

    // Influencer buckets by event time: i1 owns p1 and (late) p3.
    let to = u32::try_from(now + 3600).unwrap();
    for granularity in [Granularity::Minute, Granularity::Hour, Granularity::Day] {
        let series = models
            .influencer_series("acme", "i1", granularity, 0, to)
            .await
            .unwrap();
        assert_eq!(series.len(), 1, "{granularity:?}: {series:?}");
        let b = &series[0];
        let start = i64::from(b.start);
        assert_eq!(
            start,
            (t0 + 300) / i64::from(granularity.seconds()) * i64::from(granularity.seconds())
        );
        let c = &b.counters;
        assert_eq!(
            (
                c.likes,
                c.comments,
                c.views,
                c.clicks,
                c.conversions,
                c.events
            ),
            (4, 2, 100, 2, 2, 13)
        );
        assert_eq!(b.late, 13, "all two hours old");
        if granularity != Granularity::Day {
            assert!(is_complete(
                b.start,
                granularity,
                60,
                positions[0].watermark
            ));
        }
    }
    let i2 = models
        .influencer_series("acme", "i2", Granularity::Minute, 0, to)
        .await
        .unwrap();
    assert_eq!(i2.len(), 2, "the old minute and the recent like's: {i2:?}");
    assert_eq!(
        (i2[0].counters.views, i2[0].counters.events, i2[0].late),
        (50, 17, 17)
    );
    assert_eq!((i2[1].counters.likes, i2[1].late), (1, 0));

    // Rankings over the last three hours.
    let from = u32::try_from(t0 - 3600).unwrap();
    let by_likes = models
        .ranking("acme", Metric::Likes, from, to, 10)
        .await
        .unwrap();
    let by_likes: Vec<(&str, i64)> = by_likes
        .iter()
        .map(|r| (r.influencer_id.as_str(), r.value))
        .collect();
    assert_eq!(by_likes, [("i1", 4), ("i2", 2)]);
    let by_views = models
        .ranking("acme", Metric::Views, from, to, 1)
        .await
        .unwrap();
    assert_eq!(
        (
            by_views[0].influencer_id.as_str(),
            by_views[0].value,
            by_views.len()
        ),
        ("i1", 100, 1)
    );
    let by_engagements = models
        .ranking("acme", Metric::Engagements, from, to, 10)
        .await
        .unwrap();
    assert_eq!(
        by_engagements.iter().map(|r| r.value).collect::<Vec<_>>(),
        [6, 3]
    );
    // Engagement rate, in millionths: engagements / views per influencer.
    let views = |id: &str, all: &[tally_shared::store::models::Ranked]| {
        all.iter().find(|r| r.influencer_id == id).unwrap().value
    };
    let all_views = models
        .ranking("acme", Metric::Views, from, to, 10)
        .await
        .unwrap();
    let (i1_views, i2_views) = (views("i1", &all_views), views("i2", &all_views));
    assert_eq!(i1_views, 100);
    let by_rate = models
        .ranking("acme", Metric::EngagementRate, from, to, 10)
        .await
        .unwrap();
    let mut expected = vec![
        ("i1", (6.0 * 1e6 / i1_views as f64).round() as i64),
        ("i2", (3.0 * 1e6 / i2_views as f64).round() as i64),
    ];
    expected.sort_by_key(|(id, rate)| (-rate, *id));
    assert_eq!(
        by_rate
            .iter()
            .map(|r| (r.influencer_id.as_str(), r.value))
            .collect::<Vec<_>>(),
        expected
    );
    // A period before everything is empty.
    assert!(models
        .ranking("acme", Metric::Likes, 0, from, 10)
        .await
        .unwrap()
        .is_empty());

    // Followers.
    let followers = models
        .followers(
            "acme",
            "i1",
            u32::try_from(t0).unwrap(),
            u32::try_from(t0 + 1).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(followers.count, 1002);

    // The campaign: p1 (i1, instagram) and p2 (i2, tiktok).
    let campaign = models
        .campaign("acme", "c1", (0, u32::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            campaign.name.as_str(),
            campaign.currency.as_str(),
            campaign.budget_e4
        ),
        ("Winter", "EUR", 10_000_000)
    );
    let c = &campaign.counters;
    assert_eq!((c.views, c.clicks, c.conversions), (150, 3, 3));
    assert_eq!(campaign.value_e4, 500_000);
    assert!((campaign.ctr - 3.0 / 150.0).abs() < 1e-12);
    assert!((campaign.conversion_rate - 1.0).abs() < 1e-12);
    assert!(
        (campaign.roi.unwrap() - 0.05).abs() < 1e-12,
        "50 EUR of conversions on a 1000 EUR budget"
    );
    let keys = |b: &[tally_shared::store::models::Breakdown]| {
        b.iter()
            .map(|b| (b.key.clone(), b.counters.views, b.value_e4))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&campaign.by_influencer),
        [("i1".into(), 100, 250_000), ("i2".into(), 50, 250_000)]
    );
    assert_eq!(
        keys(&campaign.by_platform),
        [
            ("instagram".into(), 100, 250_000),
            ("tiktok".into(), 50, 250_000)
        ]
    );
    assert!(models
        .campaign("globex", "c1", (0, u32::MAX))
        .await
        .unwrap()
        .is_none());

    // Late events: every interaction and audience event but the recent like.
    let (late, listed) = models.late_events("acme", 100).await.unwrap();
    assert_eq!(late, interactions.len() as u64 - 1);
    assert_eq!(listed.len(), interactions.len() - 1);
    assert!(listed
        .iter()
        .all(|l| l.lateness_s > 0 && l.received_at > l.bucket_end + 60));
    assert_eq!(models.late_events("globex", 100).await.unwrap().0, 1);

    // Bursts: the bot's twelve views in one minute, nobody else.
    let bursts = models.bursts("acme", 0, to, 10).await.unwrap();
    assert_eq!(bursts.len(), 1, "{bursts:?}");
    assert_eq!(
        (
            bursts[0].user_id.as_str(),
            bursts[0].post_id.as_str(),
            bursts[0].events
        ),
        ("bot", "p2", 12)
    );

    // The projector's metrics show the position too. (The metrics registry
    // is one per process, and the other tests' in-process projectors set
    // the same gauges, so only its presence is checked here.)
    let text = stack.metrics_text(&stack.projector).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("tally_projection_position{model=\"post_metrics\"} ")),
        "{text}"
    );
    assert!(text.contains("tally_late_events_total"), "{text}");

    // The same numbers through the query API.
    crate::reports::check(
        &stack,
        crate::reports::Dataset {
            t0,
            last,
            late: interactions.len() as u64 - 1,
        },
    )
    .await;
}

//! Reports on one influencer or one campaign narrow the facts before they
//! attribute them (`shared/src/store/models/narrowed.rs`). Every way a fact
//! comes to count for an influencer or a campaign must survive that:
//! attribution carried by the fact over its post's, a post published for
//! one influencer and moved to another, a post published after its
//! interactions, a post never published, another tenant's facts with the
//! same ids, and facts written twice (as a redelivery does). Bursts, found
//! by a hash of their cells first, count each fact once too.
//!
//! Each view counts a distinct power of two, so a sum names exactly the
//! facts it counted.

use serde_json::{json, Value};
use tally_shared::store::models::{Entity, Metric, Models};
use tally_tests::{Stack, TokenScope as Scope};
use time::OffsetDateTime;

use crate::read_models::{ingest, numbered, projected_to};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_one_influencer_or_campaign_count_what_attribution_gives() {
    let stack = Stack::start("narrowed").await;
    let acme = stack.token("acme", &[Scope::EventsWrite]);
    let globex = stack.token("globex", &[Scope::EventsWrite]);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let t0 = (now - 2 * 3600) / 3600 * 3600;
    let mut e = numbered("n", t0 + 300);
    let publish =
        |e: &mut dyn FnMut(&str, Value) -> Value, post: &str, inf: &str, camp: &str, plat: &str| {
            e(
                "post_published",
                json!({"post_id": post, "influencer_id": inf, "campaign_id": camp,
                   "platform": plat, "payload": {"content_type": "reel"}}),
            )
        };
    let view = |e: &mut dyn FnMut(&str, Value) -> Value, post: &str, count: u64, carried: Value| {
        let mut event = e(
            "view",
            json!({"post_id": post, "payload": {"count": count}}),
        );
        for (key, value) in carried.as_object().unwrap() {
            event[key] = value.clone();
        }
        event
    };
    let first = vec![
        publish(&mut e, "pa", "x", "k", "tiktok"),
        publish(&mut e, "pb", "x", "k", "instagram"),
        publish(&mut e, "pc", "y", "l", "instagram"),
        // 1: pa's own attribution, x and k.
        view(&mut e, "pa", 1, json!({})),
        // 2: carries y, over pa's x (campaign k from pa).
        view(&mut e, "pa", 2, json!({"influencer_id": "y"})),
        // 4: pb, moved to y and l below.
        view(&mut e, "pb", 4, json!({})),
        // 8: carries x on y's pc (campaign l from pc).
        view(&mut e, "pc", 8, json!({"influencer_id": "x"})),
        // 16: carries x, k and youtube on pd, never published.
        view(
            &mut e,
            "pd",
            16,
            json!({"influencer_id": "x", "campaign_id": "k", "platform": "youtube"}),
        ),
        // 32: pe, published for x and k only afterwards.
        view(&mut e, "pe", 32, json!({})),
        // 64: carries k on pc (influencer y from pc).
        view(&mut e, "pc", 64, json!({"campaign_id": "k"})),
        // A bot's three views of pz (nobody's) in one minute.
        view(&mut e, "pz", 256, json!({"user_id": "bot"})),
        view(&mut e, "pz", 256, json!({"user_id": "bot"})),
        view(&mut e, "pz", 256, json!({"user_id": "bot"})),
    ];
    let before_moves = ingest(&stack, &acme, &first).await;
    let then = vec![
        publish(&mut e, "pb", "y", "l", "instagram"),
        publish(&mut e, "pe", "x", "k", "instagram"),
    ];
    ingest(&stack, &acme, &then).await;
    // 128: another tenant's fact with the same ids.
    let other = vec![view(
        &mut e,
        "pa",
        128,
        json!({"influencer_id": "x", "campaign_id": "k"}),
    )];
    let last = ingest(&stack, &globex, &other).await;

    let models = Models::connect(&stack.config.clickhouse);
    projected_to(&models, last).await;
    // As a redelivery would: every fact and catalogue row twice, kept
    // apart (no merge folds the copies away while the test reads).
    let client = tally_shared::store::client(&stack.config.clickhouse);
    for table in ["engagements", "post_catalogue", "catalogue"] {
        for sql in [
            format!("SYSTEM STOP MERGES {table}"),
            format!("INSERT INTO {table} SELECT * FROM {table}"),
        ] {
            client.query(&sql).execute().await.unwrap();
        }
    }
    let (rows, facts): (u64, u64) = client
        .query("SELECT toUInt64(count()), toUInt64(uniqExact(seq)) FROM engagements")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(rows, 2 * facts, "every fact twice");

    // Influencers: x has 1 + 8 + 16 + 32, y has 2 + 4 + 64.
    assert_eq!(views_of(&models, "x").await, 57);
    assert_eq!(views_of(&models, "y").await, 70);
    assert_eq!(views_of(&models, "nobody").await, 0);
    let period = ((t0 - 3600) as u32, (t0 + 3600) as u32);
    for (entity, views) in [
        (Entity::Influencer("x".into()), 57),
        (Entity::Influencer("y".into()), 70),
        (Entity::Campaign("k".into()), 1 + 2 + 16 + 32 + 64),
        (Entity::Campaign("l".into()), 4 + 8),
    ] {
        let steps = models
            .trend_steps("acme", &entity, Metric::Views, period, 3600, u64::MAX)
            .await
            .unwrap();
        let total: i64 = steps.iter().map(|s| s.value).sum();
        assert_eq!(total, views, "{entity:?}: {steps:?}");
    }

    // Campaign k: 1 + 2 + 16 + 32 + 64, by influencer and by platform.
    let k = models.campaign("acme", "k", period).await.unwrap().unwrap();
    assert_eq!(k.counters.views, 115);
    assert_eq!(k.counters.events, 5);
    let lines = |breakdown: &[tally_shared::store::models::Breakdown]| {
        breakdown
            .iter()
            .map(|b| (b.key.clone(), b.counters.views))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lines(&k.by_influencer),
        [("x".into(), 49), ("y".into(), 66)]
    );
    assert_eq!(
        lines(&k.by_platform),
        [
            ("instagram".into(), 96),
            ("tiktok".into(), 3),
            ("youtube".into(), 16)
        ]
    );
    let l = models.campaign("acme", "l", period).await.unwrap().unwrap();
    assert_eq!(l.counters.views, 12);
    assert_eq!(lines(&l.by_influencer), [("x".into(), 8), ("y".into(), 4)]);
    // Bursts count each fact once: three views, written twice.
    let (day_from, day_to) = ((t0 - 86_400) as u32, (t0 + 86_400) as u32);
    let bursts = models.bursts("acme", day_from, day_to, 2).await.unwrap();
    let found: Vec<_> = bursts
        .iter()
        .map(|b| (b.user_id.as_str(), b.post_id.as_str(), b.events))
        .collect();
    assert_eq!(found, [("bot", "pz", 3)]);
    assert_eq!(bursts[0].minute, (t0 + 300) as u32 / 60 * 60);
    assert!(models
        .bursts("acme", day_from, day_to, 3)
        .await
        .unwrap()
        .is_empty());
    // Pinned where pb was still x's and pe was not published: x has
    // 1 + 4 + 8 + 16, and k 1 + 2 + 4 + 16 + 64.
    for (entity, views) in [
        (Entity::Influencer("x".into()), 29),
        (Entity::Campaign("k".into()), 87),
    ] {
        let steps = models
            .trend_steps("acme", &entity, Metric::Views, period, 3600, before_moves)
            .await
            .unwrap();
        let total: i64 = steps.iter().map(|s| s.value).sum();
        assert_eq!(total, views, "{entity:?} at {before_moves}: {steps:?}");
    }
    // globex's fact only for globex.
    let globex_k = models
        .campaign("globex", "k", period)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(globex_k.counters.views, 128);
}

/// An influencer's views over the day around the dataset, from its
/// engagement series.
async fn views_of(models: &Models, influencer: &str) -> u64 {
    let now = OffsetDateTime::now_utc().unix_timestamp() as u32;
    models
        .influencer_series(
            "acme",
            influencer,
            tally_shared::store::models::Granularity::Hour,
            now - 86_400,
            now + 60,
        )
        .await
        .unwrap()
        .iter()
        .map(|b| b.counters.views)
        .sum()
}

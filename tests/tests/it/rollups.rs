//! Rankings read from rollups (ADR 0006) are exactly the rankings from the
//! facts alone, at every stream position, through what makes rollups hard:
//! posts catalogued after their interactions were rolled, a post moved to
//! another influencer and campaign, unlikes, facts written twice (as a
//! redelivery would), periods that start and end within a minute, filters,
//! two tenants, bases summed from ranges, and short ranges (a stream that
//! pauses) joined.

use std::time::Duration;

use serde_json::{json, Value};
use tally_shared::store::models::{Filters, Metric, Models, Ranked};
use tally_shared::store::rollups::{self, Roller};
use tally_tests::{eventually, Kind, Stack, TokenScope as Scope};
use time::OffsetDateTime;

use crate::read_models::{at, ingest};

/// Events per level-0 range: small, so that a few hundred events make
/// many ranges and several bases.
const RANGE: u64 = 7;

/// The attempt number of a roll that crashed after writing its rows.
const CRASHED: u64 = 4_242_424_242;

/// Waits until the facts reach `seq` and the rollups cover at least `rolled`.
async fn settled(roller: &Roller, seq: u64, rolled: u64) {
    eventually(
        &format!("projected to {seq} and rolled to {rolled}"),
        Duration::from_secs(60),
        || async {
            let position = roller.position().await.map_err(|e| e.to_string())?;
            let done = roller.done().await.map_err(|e| e.to_string())?;
            let covered = rollups::cover(&done, u64::MAX).0;
            if position >= seq && covered >= rolled {
                Ok(())
            } else {
                Err(format!("position {position}, rolled {covered}"))
            }
        },
    )
    .await
}

/// The ranking page at `position` from the rollups, which must equal the
/// one from the facts alone.
pub async fn ranked_as_the_facts(
    models: &Models,
    (tenant, metric, period): (&str, Metric, (u32, u32)),
    filter: &Filters,
    position: u64,
    limit: u32,
) -> Vec<Ranked> {
    let from_rollups = models
        .ranking_page(tenant, metric, period, filter, position, 0, limit)
        .await
        .unwrap();
    let from_facts = models
        .ranking_page_from_facts(tenant, metric, period, filter, position, 0, limit)
        .await
        .unwrap();
    assert_eq!(
        from_rollups, from_facts,
        "{tenant} {metric:?} {period:?} {filter:?} at {position}"
    );
    from_facts
}

/// `posts` posts p0, p1, ... published at `t0` by `influencers`
/// influencers i0, i1, ... in turn.
fn published(t0: i64, posts: usize, influencers: usize) -> Vec<Value> {
    (0..posts)
        .map(|p| {
            json!({"event_id": format!("c{p}"), "type": "post_published", "occurred_at": at(t0),
                   "post_id": format!("p{p}"), "influencer_id": format!("i{}", p % influencers),
                   "platform": "instagram", "payload": {"content_type": "reel"}})
        })
        .collect()
}

/// [`ranked_as_the_facts`] for tenant acme, without filters, by each of
/// `metrics`.
pub async fn acme_ranked_as_the_facts(
    models: &Models,
    metrics: &[Metric],
    period: (u32, u32),
    position: u64,
    limit: u32,
) -> Vec<(Metric, Vec<Ranked>)> {
    let mut rankings = Vec::new();
    for &metric in metrics {
        let ranked = ranked_as_the_facts(
            models,
            ("acme", metric, period),
            &Filters::default(),
            position,
            limit,
        )
        .await;
        rankings.push((metric, ranked));
    }
    rankings
}

/// Writes every fact and catalogue row a second time, as a redelivery does.
async fn write_twice(client: &clickhouse::Client) {
    for table in ["engagements", "facts_by_seq", "catalogue", "post_catalogue"] {
        client
            .query(&format!("INSERT INTO {table} SELECT * FROM {table}"))
            .execute()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_from_rollups_equal_rankings_from_the_facts_at_every_position() {
    let stack = Stack::start_with("rollups", |config| {
        config.projector.rollup_range = RANGE;
        config.projector.rollup_interval_ms = 50;
        // Every range stays, so that rankings at every position below read
        // rollups (a retired range's positions read the facts).
        config.projector.rollup_retire = false;
    })
    .await;
    let tokens = [
        ("acme", stack.token("acme", &[Scope::EventsWrite])),
        ("globex", stack.token("globex", &[Scope::EventsWrite])),
    ];
    let roller = Roller::connect(&stack.config.clickhouse);
    let models = Models::connect(&stack.config.clickhouse);
    let client = tally_shared::store::client(&stack.config.clickhouse);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let t0 = (now - 3 * 3600) / 3600 * 3600;

    let mut n = 0;
    let mut event = |kind: &str, offset: i64, fields: Value| {
        n += 1;
        let mut e =
            json!({"event_id": format!("e{n}"), "type": kind, "occurred_at": at(t0 + offset)});
        for (key, value) in fields.as_object().unwrap() {
            e[key] = value.clone();
        }
        e
    };
    let published = |post: usize, influencer: &str, campaign: &str, platform: &str| {
        json!({"post_id": format!("p{post}"), "influencer_id": influencer, "campaign_id": campaign,
               "platform": platform,
               "payload": {"content_type": if post % 2 == 0 { "reel" } else { "story" },
                           "tags": if post % 3 == 0 { json!(["winter"]) } else { json!(["summer"]) }}})
    };
    let interactions = |event: &mut dyn FnMut(&str, i64, Value) -> Value, round: i64| {
        let mut out = Vec::new();
        for i in 0..60i64 {
            let post = (i * 7 + round) % 8;
            let offset = 600 * round + i * 37;
            let (kind, payload) = match i % 9 {
                0 | 4 => ("like", json!({})),
                1 => ("view", json!({"count": 10 + i})),
                2 => ("comment", json!({"text": "love it, great"})),
                3 => ("share", json!({})),
                5 => ("click", json!({})),
                6 => ("conversion", json!({"value": 9.5, "currency": "EUR"})),
                7 => ("unlike", json!({})),
                _ => ("view", json!({"count": 3})),
            };
            if i % 17 == 16 {
                out.push(event(
                    "follow",
                    offset,
                    json!({"influencer_id": format!("i{}", post % 3), "user_id": format!("u{i}")}),
                ));
            } else {
                out.push(event(
                    kind,
                    offset,
                    json!({"post_id": format!("p{post}"), "user_id": format!("u{}", i % 5),
                           "payload": payload}),
                ));
            }
        }
        out
    };

    // Round 1: posts p0..p5 catalogued, p6 and p7 not yet; interactions on
    // all eight, spread over ten minutes at odd seconds.
    let mut last = 0;
    for (tenant, token) in &tokens {
        let catalogue: Vec<Value> = (0..6)
            .map(|p| {
                let influencer = format!("i{}", p % 3);
                let platform = if p % 2 == 0 { "instagram" } else { "tiktok" };
                let campaign = if *tenant == "acme" { "c1" } else { "c9" };
                event(
                    "post_published",
                    0,
                    published(p, &influencer, campaign, platform),
                )
            })
            .collect();
        last = last.max(ingest(&stack, token, &catalogue).await);
        for chunk in interactions(&mut event, 0).chunks(13) {
            last = last.max(ingest(&stack, token, chunk).await);
        }
    }
    settled(&roller, last, last / RANGE * RANGE).await;
    write_twice(&client).await;

    // Round 2: p6 catalogued after its rolled interactions, p1 moved to
    // another influencer and campaign, more interactions.
    let mut late_catalogue = Vec::new();
    for (_, token) in &tokens {
        let catalogue = vec![
            event("post_published", 5, published(6, "i7", "c2", "youtube")),
            event("post_published", 5, published(1, "i8", "c2", "tiktok")),
        ];
        let seq = ingest(&stack, token, &catalogue).await;
        late_catalogue.push(seq);
        last = last.max(seq);
        for chunk in interactions(&mut event, 1).chunks(11) {
            last = last.max(ingest(&stack, token, chunk).await);
        }
    }
    settled(&roller, last, last / RANGE * RANGE).await;
    write_twice(&client).await;

    // Round 3: a stream that pauses after every two events, rolled up to
    // its position each time (short ranges), which are joined at level 0;
    // p2 moved to another influencer in one of them.
    for round in 0..8 {
        let (_, token) = &tokens[round % 2];
        let mut pair: Vec<Value> = interactions(&mut event, 2)
            .into_iter()
            .skip(2 * round)
            .take(2)
            .collect();
        if round == 5 {
            pair[0] = event("post_published", 5, published(2, "i6", "c3", "instagram"));
            late_catalogue.push(ingest(&stack, token, &pair[..1]).await);
            pair.remove(0);
        }
        last = last.max(ingest(&stack, token, &pair).await);
        settled(&roller, last, last).await;
    }

    let done = roller.done().await.unwrap();
    assert!(
        done.iter().any(|r| r.level == 1),
        "ranges were summed into a base: {done:?}"
    );
    // A join and the first range it joined start at the same sequence.
    assert!(
        done.iter()
            .any(|joined| done.iter().any(|part| part.level == 0
                && joined.level == 0
                && part.lo == joined.lo
                && part.hi < joined.hi)),
        "ranges were joined: {done:?}"
    );

    // Periods: whole hours, odd seconds spanning minutes, within a minute,
    // and across a single minute boundary.
    let t = |offset: i64| u32::try_from(t0 + offset).unwrap();
    let periods = [
        (t(-3600), t(7200)),
        (t(61), t(1_000)),
        (t(130), t(170)),
        (t(590), t(650)),
    ];
    let filters = [
        Filters::default(),
        Filters {
            campaign_id: Some("c2".into()),
            ..Filters::default()
        },
        Filters {
            tag: Some("winter".into()),
            platform: Some("tiktok".into()),
            ..Filters::default()
        },
    ];
    let metrics = [
        Metric::Engagements,
        Metric::Likes,
        Metric::Follows,
        Metric::EngagementRate,
        Metric::Views,
    ];
    let mut compared = 0;
    let mut nonempty = 0;
    let check = |tenant: &'static str, metric, period, filter: &Filters, position| {
        let (models, filter) = (models.clone(), filter.clone());
        async move {
            !ranked_as_the_facts(&models, (tenant, metric, period), &filter, position, 100)
                .await
                .is_empty()
        }
    };
    // Positions through the whole stream, a combination each.
    for position in (1..=last).step_by(5) {
        for (i, period) in periods.iter().enumerate() {
            let k = position as usize + i;
            let ranked = check(
                tokens[k % 2].0,
                metrics[k % metrics.len()],
                *period,
                &filters[(k / 3) % filters.len()],
                position,
            )
            .await;
            compared += 1;
            nonempty += usize::from(ranked);
        }
    }
    // Every position around the late catalogue events: posts re-attributed
    // after the range that holds their earlier facts was rolled, before and
    // after the range that holds the catalogue events is.
    let around = late_catalogue
        .iter()
        .flat_map(|seq| seq - RANGE..=seq + RANGE);
    for position in around {
        for (tenant, _) in &tokens {
            for filter in &filters[..2] {
                let ranked = check(tenant, Metric::Engagements, periods[0], filter, position).await;
                compared += 1;
                nonempty += usize::from(ranked);
            }
        }
    }
    assert!(
        nonempty > compared / 2,
        "most comparisons rank someone ({nonempty} of {compared})"
    );
}

/// The ranges that newer joins supersede are retired and their rows
/// deleted; what stays ranks as the facts do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_ranges_are_retired_and_their_rows_deleted() {
    let stack = Stack::start_with("rollups_retired", |config| {
        config.projector.rollup_range = RANGE;
        config.projector.rollup_interval_ms = 50;
        // The shortest keep allowed: three ClickHouse timeouts.
        config.clickhouse.timeout_ms = 5_000;
        config.projector.rollup_retired_keep_ms = 15_000;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let roller = Roller::connect(&stack.config.clickhouse);
    let models = Models::connect(&stack.config.clickhouse);
    let client = tally_shared::store::client(&stack.config.clickhouse);
    let t0 = OffsetDateTime::now_utc().unix_timestamp() / 3600 * 3600 - 4 * 3600;

    let mut last = ingest(&stack, &token, &published(t0, 4, 2)).await;
    // What a roll that crashed after writing leaves: rows of an attempt
    // that no range records. Readers never choose it; it is retired once
    // found so for the keep time, then deleted.
    client
        .query(&format!(
            "INSERT INTO rollups (tenant, level, lo, hi, attempt, minute, influencer, campaign,
                 platform, content_type, tags, likes, shares, comments, views, clicks,
                 conversions, follows, sentiment, events)
             VALUES ('acme', 0, 0, {RANGE}, {CRASHED}, toDateTime({t0}), 'i0', '', 'instagram', 'reel', [],
                 1000, 0, 0, 0, 0, 0, 0, 0, 1000)"
        ))
        .execute()
        .await
        .unwrap();
    // The most bases recorded at once, sampled from now on: those retired
    // stay recorded until their rows are deleted.
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (most, client) = (most.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                let recorded = client
                    .query("SELECT count(DISTINCT hi) FROM rollup_ranges WHERE level = 1")
                    .fetch_one::<u64>()
                    .await;
                if let Ok(recorded) = recorded {
                    most.fetch_max(recorded as usize, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // 150 events, ranges of 7: a base each time the history doubles.
    for round in 0..10i64 {
        let events: Vec<Value> = (0..15i64)
            .map(|i| {
                let n = round * 15 + i;
                json!({"event_id": format!("e{n}"), "type": if n % 3 == 0 { "like" } else { "view" },
                       "occurred_at": at(t0 + 60 * n), "post_id": format!("p{}", n % 4),
                       "user_id": format!("u{n}"),
                       "payload": if n % 3 == 0 { json!({}) } else { json!({"count": 2}) }})
            })
            .collect();
        last = last.max(ingest(&stack, &token, &events).await);
    }
    settled(&roller, last, last / RANGE * RANGE).await;
    let period = (
        u32::try_from(t0 - 60).unwrap(),
        u32::try_from(t0 + 60 * 200).unwrap(),
    );
    // Readers never choose the crashed roll's rows (1,000 likes more for
    // i0 if they did).
    ranked_as_the_facts(
        &models,
        ("acme", Metric::Likes, period),
        &Filters::default(),
        last,
        100,
    )
    .await;

    // Nothing left to roll, and no range left that no reader at a recent
    // position chooses; the retired ranges' rows are kept a while.
    let bases = |client: clickhouse::Client| async move {
        client
            .query("SELECT DISTINCT hi FROM rollup_ranges WHERE level = 1 ORDER BY hi")
            .fetch_all::<u64>()
            .await
            .map_err(|e| e.to_string())
    };
    let kept_rows = |client: clickhouse::Client| async move {
        client
            .query(
                "SELECT count() FROM rollups
                 WHERE attempt IN (SELECT attempt FROM rollup_retired)",
            )
            .fetch_one::<u64>()
            .await
            .map_err(|e| e.to_string())
    };
    let seen = || async {
        let done = roller.done().await.map_err(|e| e.to_string())?;
        let mut bases: Vec<u64> = done.iter().filter(|r| r.level == 1).map(|r| r.hi).collect();
        bases.sort_unstable();
        bases.dedup();
        Ok::<_, String>((done, bases))
    };
    let seen_bases = eventually("rolled and retired", Duration::from_secs(60), || async {
        let (done, bases) = seen().await?;
        let position = roller.position().await.map_err(|e| e.to_string())?;
        let superseded = rollups::superseded(&done, RANGE);
        match rollups::next(&done, position, RANGE, true) {
            None if superseded.is_empty() && !bases.is_empty() => Ok(bases),
            plan => Err(format!(
                "bases {bases:?}, next {plan:?}, superseded {superseded:?}"
            )),
        }
    })
    .await;
    sampler.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    let kept = kept_rows(client.clone()).await.unwrap();
    assert!(
        most > seen_bases.len() && kept > 0,
        "retired but not deleted yet: {most} bases recorded ({seen_bases:?} seen), {kept} rows"
    );

    eventually(
        "retired ranges deleted",
        Duration::from_secs(90),
        || async {
            let recorded = bases(client.clone()).await?;
            let kept = kept_rows(client.clone()).await?;
            let unrecorded: u64 = client
                .query(
                    "SELECT count() FROM rollups
                     WHERE attempt NOT IN (SELECT attempt FROM rollup_ranges)",
                )
                .fetch_one()
                .await
                .map_err(|e| e.to_string())?;
            if recorded == seen_bases && kept == 0 && unrecorded == 0 {
                Ok(())
            } else {
                Err(format!(
                    "bases {recorded:?}, {kept} retired rows, {unrecorded} rows of no range"
                ))
            }
        },
    )
    .await;
    let projector = stack.metrics_text(&stack.projector).await;
    let retired = |why: &str| {
        let name = format!("tally_rollups_retired_total{{why=\"{why}\"}} ");
        projector
            .lines()
            .find_map(|line| line.strip_prefix(&name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        retired("superseded") >= 4 && retired("unrecorded") >= 1,
        "superseded ranges and the crashed roll's attempt retired:\n{projector}"
    );
    // Once deleted for the keep time, and their rows gone, superseded
    // attempts are struck from `rollup_retired` (nothing else is retired
    // after the last base); those never recorded (the crashed roll's, and
    // any roll of the test's own that failed after writing) stay listed
    // (state 3), should they ever be recorded.
    eventually(
        "deleted attempts forgotten",
        Duration::from_secs(60),
        || async {
            let listed: Vec<(u64, u8)> = client
                .query(
                    "SELECT attempt, argMax(purged, at_ms) FROM rollup_retired
                     GROUP BY attempt ORDER BY attempt",
                )
                .fetch_all()
                .await
                .map_err(|e| e.to_string())?;
            if listed.contains(&(CRASHED, 3)) && listed.iter().all(|(_, state)| *state == 3) {
                Ok(())
            } else {
                Err(format!("listed in rollup_retired: {listed:?}"))
            }
        },
    )
    .await;
    // The crashed roll recorded done now, after all that: still ignored.
    client
        .query(&format!(
            "INSERT INTO rollup_ranges (level, lo, hi, attempt, done_ms)
             VALUES (0, 0, 1000000, {CRASHED}, toUInt64(now()) * 1000 + 1000)"
        ))
        .execute()
        .await
        .unwrap();
    let done = roller.done().await.unwrap();
    assert!(done.iter().all(|r| r.attempt != CRASHED), "{done:?}");

    // The latest position reads the latest base; a position after the
    // oldest base still seen reads that one; both rank as the facts do.
    let done = roller.done().await.unwrap();
    let previous = done
        .iter()
        .filter(|r| r.level == 1)
        .map(|r| r.hi)
        .min()
        .unwrap();
    for position in [last, previous + 3] {
        let covered = rollups::cover(&done, position);
        assert!(covered.1[0].level == 1, "{position}: {covered:?}");
        assert!(
            covered.0 > position - RANGE,
            "{position}: rolled to {covered:?}"
        );
        let metrics = [Metric::Engagements, Metric::Likes, Metric::Views];
        for (_, ranked) in acme_ranked_as_the_facts(&models, &metrics, period, position, 100).await
        {
            assert!(!ranked.is_empty());
        }
    }
}

/// A projection catching up a backlog leaves rolling for later (more than
/// `rollup_defer_lag` events behind the stream), then rolls every range it
/// passed; rankings then read the rollups and rank as the facts do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_waits_while_a_backlog_is_caught_up_then_rolls_what_it_passed() {
    const SIZE: u64 = 200;
    let mut stack = Stack::start_with("rollups_deferred", |config| {
        config.projector.rollup_range = SIZE;
        config.projector.rollup_interval_ms = 50;
        // Deferred while more than 2,000 behind, and while the facts past
        // the rollups are under 16 ranges (3,200 events).
        config.projector.rollup_defer_lag = 2_000;
        // The backlog takes many batches, and positions are recorded
        // between them.
        config.projector.batch_size = 100;
        config.rate_limit.enabled = false;
    })
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let roller = Roller::connect(&stack.config.clickhouse);
    let models = Models::connect(&stack.config.clickhouse);
    let t0 = OffsetDateTime::now_utc().unix_timestamp() / 3600 * 3600 - 4 * 3600;
    let first = ingest(&stack, &token, &published(t0, 6, 3)).await;
    settled(&roller, first, 0).await;

    // The projector steps aside while 6,000 events are accepted.
    stack.projector.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), &mut stack.projector.task)
        .await
        .expect("the projector stops")
        .expect("the projector stops cleanly");
    let mut last = first;
    for round in 0..6i64 {
        let events: Vec<Value> = (0..1000i64)
            .map(|i| {
                let n = round * 1000 + i;
                json!({"event_id": format!("e{n}"), "type": if n % 4 == 0 { "like" } else { "view" },
                       "occurred_at": at(t0 + n % 7200), "post_id": format!("p{}", n % 6),
                       "user_id": format!("u{n}"), "payload": {}})
            })
            .collect();
        last = last.max(ingest(&stack, &token, &events).await);
    }
    stack.projector = tally_tests::start_service(Kind::Projector, stack.config.clone()).await;
    settled(&roller, last, last / SIZE * SIZE).await;

    let metrics = stack.metrics_text(&stack.projector).await;
    let deferrals = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("tally_rollup_deferrals_total ")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    assert!(deferrals >= 1, "rolling was deferred:\n{metrics}");
    let done = roller.done().await.unwrap();
    let covered = rollups::cover(&done, last);
    assert!(covered.0 > last - SIZE, "rolled to {last}: {covered:?}");
    let period = (
        u32::try_from(t0 - 60).unwrap(),
        u32::try_from(t0 + 7200).unwrap(),
    );
    let metrics = [Metric::Engagements, Metric::Likes, Metric::Views];
    for (metric, ranked) in acme_ranked_as_the_facts(&models, &metrics, period, last, 10).await {
        assert_eq!(ranked.len(), 3, "{metric:?}: {ranked:?}");
    }
}

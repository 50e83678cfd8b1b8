use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tally_tests::{read, start_service, Kind, Stack, TokenScope as Scope};

async fn like_request(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    post: &str,
    user: &str,
) -> (u16, Value) {
    let response = http
        .request(method, format!("{base}/v1/posts/{post}/likes/{user}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("like request");
    read(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_are_idempotent_and_report_the_state() {
    let stack = Stack::start("likes_idempotent").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let base = stack.command.url();
    let call = |method| like_request(&stack.http, &base, &token, method, "post-1", "user-1");

    let (status, state) = call(reqwest::Method::GET).await;
    assert_eq!(
        (status, &state["liked"], &state["seq"]),
        (200, &Value::Bool(false), &Value::Null),
        "{state}"
    );
    let (status, liked) = call(reqwest::Method::PUT).await;
    assert_eq!(
        (status, &liked["liked"], &liked["changed"]),
        (200, &Value::Bool(true), &Value::Bool(true)),
        "{liked}"
    );
    let (_, again) = call(reqwest::Method::PUT).await;
    assert_eq!(
        (&again["liked"], &again["changed"], &again["seq"]),
        (&Value::Bool(true), &Value::Bool(false), &liked["seq"])
    );
    let (_, unliked) = call(reqwest::Method::DELETE).await;
    assert_eq!(
        (&unliked["liked"], &unliked["changed"]),
        (&Value::Bool(false), &Value::Bool(true)),
        "{unliked}"
    );
    let (_, again) = call(reqwest::Method::DELETE).await;
    assert_eq!(again["changed"], Value::Bool(false));

    // The events count like any other: net likes of post-1 are 0, then 1.
    call(reqwest::Method::PUT).await;
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    tally_tests::eventually(
        "post-1 to show one net like",
        Duration::from_secs(30),
        || async {
            match stack.post_metrics(&reader, "post-1").await {
                (200, body) if body["likes"] == 1 && body["events"] == 3 => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;

    let (status, body) = like_request(
        &stack.http,
        &base,
        &token,
        reqwest::Method::PUT,
        "bad.post",
        "u",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let reader_only = stack.token("acme", &[Scope::ReportsRead]);
    let (status, _) = like_request(
        &stack.http,
        &base,
        &reader_only,
        reqwest::Method::PUT,
        "p",
        "u",
    )
    .await;
    assert_eq!(status, 403);
}

/// Many likes and unlikes for one user, raced across two command API
/// processes' worth of instances: the stream holds a valid alternating
/// history (like, unlike, like, …), and the final state is the last winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_likes_across_two_instances_keep_a_valid_history() {
    let stack = Stack::start("likes_race").await;
    let second = start_service(Kind::Command, stack.config.clone()).await;
    let bases = [stack.command.url(), second.url()];
    tally_tests::eventually(
        "the second command API to be ready",
        Duration::from_secs(30),
        || async {
            match stack.http.get(format!("{}/readyz", bases[1])).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let before = like_counters(&stack).await;

    // Waves of concurrent requests, half likes and half unlikes, split over
    // the two instances: within a wave they decide from the same state and
    // race to append.
    const WAVES: usize = 25;
    const PER_WAVE: usize = 8;
    const REQUESTS: usize = WAVES * PER_WAVE;
    let mut answers = Vec::new();
    for _ in 0..WAVES {
        let mut racing = FuturesUnordered::new();
        for i in 0..PER_WAVE {
            let method = if i % 2 == 0 {
                reqwest::Method::PUT
            } else {
                reqwest::Method::DELETE
            };
            let (http, base, token) = (
                stack.http.clone(),
                bases[(i / 2) % 2].clone(),
                token.clone(),
            );
            racing.push(
                async move { like_request(&http, &base, &token, method, "viral", "fan").await },
            );
        }
        while let Some((status, body)) = racing.next().await {
            assert_eq!(status, 200, "{body}");
            answers.push(body);
        }
    }
    let changed: Vec<&Value> = answers.iter().filter(|a| a["changed"] == true).collect();

    // Read the aggregate's history straight from the stream.
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: "tally.events.acme.likes.viral.fan".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut history: BTreeMap<u64, String> = BTreeMap::new();
    let mut messages = consumer
        .fetch()
        .max_messages(10_000)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(message)) = messages.next().await {
        let seq = message.info().unwrap().stream_sequence;
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        history.insert(seq, event["type"].as_str().unwrap().to_owned());
    }
    let kinds: Vec<&str> = history.values().map(String::as_str).collect();
    assert_eq!(
        kinds.len(),
        changed.len(),
        "one event per request that reported a change"
    );
    for (i, kind) in kinds.iter().enumerate() {
        let expected = if i % 2 == 0 { "like" } else { "unlike" };
        assert_eq!(
            *kind, expected,
            "history must alternate from a like: {kinds:?}"
        );
    }
    // The last winner: the change with the highest sequence decides the state.
    let last = changed.iter().max_by_key(|a| a["seq"].as_u64()).unwrap();
    assert_eq!(last["seq"].as_u64(), history.keys().last().copied());
    let (_, state) = like_request(
        &stack.http,
        &bases[0],
        &token,
        reqwest::Method::GET,
        "viral",
        "fan",
    )
    .await;
    assert_eq!(state["liked"], last["liked"], "{state} vs {last}");
    assert_eq!(state["liked"], Value::Bool(kinds.last() == Some(&"like")));

    let after = like_counters(&stack).await;
    let (retried, absorbed) = (after.0 - before.0, after.1 - before.1);
    // Racers that decided from the same position send the same event id:
    // JetStream keeps one (absorbed); a decision from a stale position is
    // refused by the sequence check and retried.
    assert!(retried + absorbed > 0, "the waves must have raced");
    println!(
        "like race: {REQUESTS} requests over 2 instances, {} changes appended, {absorbed} racing appends absorbed as duplicates, {retried} conflicts retried",
        changed.len()
    );
    second.stop().await;
}

/// (like conflicts retried, like-button duplicates) from /metrics.
async fn like_counters(stack: &Stack) -> (u64, u64) {
    let text = stack.metrics_text(&stack.command).await;
    let read = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    (
        read("tally_like_conflicts_total "),
        read("tally_events_duplicate_total{source=\"like_button\"} "),
    )
}

/// The optimistic-concurrency check itself: an append that expects a stale
/// subject sequence is refused by JetStream (NATS 2.9 and later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_sequence_is_a_conflict() {
    use tally_command::{AppendError, Publisher};
    use tally_shared::event::{like_subject, Event, EventKind, Source, StoredEvent};

    let stack = Stack::start("likes_occ").await;
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let publisher = Publisher::new(
        async_nats::jetstream::new(client),
        "TALLY_EVENTS".into(),
        Duration::from_secs(5),
    );
    let subject = like_subject("acme", "p", "u");
    let event = |id: &str| {
        let now = time::OffsetDateTime::now_utc();
        let event = Event {
            event_id: id.into(),
            kind: EventKind::Liked,
            occurred_at: now,
            platform: None,
            influencer_id: None,
            post_id: Some("p".into()),
            campaign_id: None,
            user_id: Some("u".into()),
            payload: Default::default(),
        };
        StoredEvent::new("acme", Source::LikeButton, event, now)
    };
    let first = publisher
        .append_to(subject.clone(), &event("o-1"), Some(0))
        .await
        .unwrap();
    // Expecting an empty subject again is stale now.
    let stale = publisher
        .append_to(subject.clone(), &event("o-2"), Some(0))
        .await;
    assert!(matches!(stale, Err(AppendError::Conflict)), "{stale:?}");
    let next = publisher
        .append_to(subject.clone(), &event("o-3"), Some(first.seq))
        .await
        .unwrap();
    assert!(next.seq > first.seq);
    let (seq, last) = publisher.last_on_subject(&subject).await.unwrap().unwrap();
    assert_eq!((seq, last.event.event_id.as_str()), (next.seq, "o-3"));
}

/// The like button knows only post and user: the catalogue (fed from
/// `post_published`) attributes its events to influencer, campaign and
/// platform. Unknown posts are accepted unattributed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn like_events_are_attributed_from_the_catalogue() {
    let stack = Stack::start("likes_catalogue").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let published = serde_json::json!({
        "event_id": "pub-1", "type": "post_published", "occurred_at": tally_tests::rfc3339_ago(60),
        "post_id": "ig:post:9", "influencer_id": "inf-1", "campaign_id": "spring", "platform": "tiktok",
        "payload": {"content_type": "reel"},
    });
    let (status, body) = stack.post_event(&token, &published).await;
    assert_eq!(status, 202, "{body}");

    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    let base = stack.command.url();
    // Like and unlike until an event carries the attribution (the follower
    // copies the post within moments; unknown posts are cached for 2 s).
    let attributed = tally_tests::eventually(
        "a like attributed to inf-1",
        Duration::from_secs(30),
        || async {
            let (_, like) = like_request(
                &stack.http,
                &base,
                &token,
                reqwest::Method::PUT,
                "ig:post:9",
                "fan",
            )
            .await;
            let seq = like["seq"].as_u64().ok_or(format!("{like}"))?;
            like_request(
                &stack.http,
                &base,
                &token,
                reqwest::Method::DELETE,
                "ig:post:9",
                "fan",
            )
            .await;
            let stored: Value =
                serde_json::from_slice(&stream.get_raw_message(seq).await.unwrap().payload)
                    .unwrap();
            if stored["influencer_id"] == "inf-1" {
                Ok(stored)
            } else {
                Err(format!("{stored}"))
            }
        },
    )
    .await;
    assert_eq!(
        (&attributed["campaign_id"], &attributed["platform"]),
        (&Value::from("spring"), &Value::from("tiktok"))
    );
    assert_eq!(attributed["source"], "like_button");

    let (status, unknown) = like_request(
        &stack.http,
        &base,
        &token,
        reqwest::Method::PUT,
        "never-published",
        "fan",
    )
    .await;
    assert_eq!(
        (status, &unknown["liked"]),
        (200, &Value::Bool(true)),
        "{unknown}"
    );
    let stored: Value = serde_json::from_slice(
        &stream
            .get_raw_message(unknown["seq"].as_u64().unwrap())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert!(stored.get("influencer_id").is_none(), "{stored}");
}

/// A post published twice in one burst (its campaign changed): the
/// follower copies a fetched batch's records together, and the catalogue
/// keeps the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_keeps_a_posts_newest_record() {
    let stack = Stack::start("likes_catalogue_newest").await;
    let token = stack.token("acme", &[Scope::EventsWrite]);
    let published = |id: &str, post: &str, campaign: &str| {
        serde_json::json!({
            "event_id": id, "type": "post_published", "occurred_at": tally_tests::rfc3339_ago(60),
            "post_id": post, "influencer_id": "inf-1", "campaign_id": campaign,
            "payload": {"content_type": "reel"},
        })
    };
    // Other posts around it, so that both records travel in one batch.
    let mut burst: Vec<Value> = (0..50)
        .map(|i| {
            published(
                &format!("before-{i}"),
                &format!("ig:post:other-{i}"),
                "other",
            )
        })
        .collect();
    burst.push(published("pub-spring", "ig:post:7", "spring"));
    burst.push(published("pub-summer", "ig:post:7", "summer"));
    let (status, body) = stack.post_batch(&token, &burst).await;
    assert_eq!(status, 202, "{body}");

    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let events = js.get_stream("TALLY_EVENTS").await.unwrap();
    let catalogue = js.get_stream("TALLY_CATALOGUE").await.unwrap();
    let subject = "tally.catalogue.acme.posts.ig:post:7";
    let campaign = tally_tests::eventually(
        "the follower caught up",
        Duration::from_secs(30),
        || async {
            let mut follower = events
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("catalogue")
                .await
                .map_err(|e| e.to_string())?;
            let info = follower.info().await.map_err(|e| e.to_string())?;
            if info.num_pending > 0
                || info.num_ack_pending > 0
                || info.ack_floor.stream_sequence < 52
            {
                return Err(format!("{info:?}"));
            }
            let record = catalogue
                .get_last_raw_message_by_subject(subject)
                .await
                .map_err(|e| e.to_string())?;
            let record: Value = serde_json::from_slice(&record.payload).unwrap();
            Ok(record["campaign_id"].clone())
        },
    )
    .await;
    assert_eq!(campaign, "summer");
}

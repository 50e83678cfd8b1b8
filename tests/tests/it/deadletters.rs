use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tally_tests::{eventually, rfc3339_ago, Stack, TokenScope as Scope};

/// Events the projector cannot read go to the dead-letter stream after the
/// allowed attempts, with their error, and never block the events behind
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_dead_lettered_without_blocking_the_rest() {
    poison("deadletters_poison", false).await;
}

/// A worker alone on an exclusive consumer cannot retry an event with a
/// delay (its next cumulative ack would acknowledge it): it dead-letters
/// the event on its first delivery, and still counts every valid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_worker_dead_letters_poison_at_once() {
    poison("deadletters_solo", true).await;
}

/// Two unreadable events among six valid likes; with three attempts each
/// on a shared consumer, or one on an exclusive consumer.
async fn poison(name: &str, exclusive: bool) {
    let stack = Stack::start_with(name, |config| {
        config.projector.max_attempts = 3;
        config.projector.retry_delay_ms = 100;
        config.projector.exclusive = exclusive;
    })
    .await;
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let like = |id: &str| json!({"event_id": id, "type": "like", "occurred_at": rfc3339_ago(5), "post_id": "p1"});
    assert_eq!(stack.post_event(&writer, &like("before")).await.0, 202);

    // Two events no projector can read, appended behind the API's back:
    // garbage, and a schema version from the future.
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let garbage = js
        .publish("tally.events.acme.like", "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let future = json!({"schema_version": 99, "tenant": "acme", "event_id": "f", "type": "like"})
        .to_string();
    let future = js
        .publish("tally.events.acme.like", future.into())
        .await
        .unwrap()
        .await
        .unwrap();
    for i in 0..5 {
        assert_eq!(
            stack
                .post_event(&writer, &like(&format!("after-{i}")))
                .await
                .0,
            202
        );
    }

    let reader = stack.token("acme", &[Scope::ReportsRead]);
    eventually(
        "the six valid likes to be counted",
        Duration::from_secs(30),
        || async {
            match stack.post_metrics(&reader, "p1").await {
                (200, m) if m["likes"] == 6 => Ok(()),
                (status, m) => Err(format!("{status} {m}")),
            }
        },
    )
    .await;

    let dead = eventually("two dead letters", Duration::from_secs(30), || async {
        let mut stream = js
            .get_stream("TALLY_DEAD_LETTERS")
            .await
            .map_err(|e| e.to_string())?;
        match stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .messages
        {
            2 => Ok(stream),
            n => Err(format!("{n} dead letters")),
        }
    })
    .await;
    let consumer: async_nats::jetstream::consumer::PullConsumer = dead
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(Ok(message)) = messages.next().await {
        let headers = message.headers.clone().unwrap();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let attempts = if exclusive { "1" } else { "3" };
        assert_eq!(header("Tally-Attempts"), attempts);
        assert_eq!(header("Tally-Original-Subject"), "tally.events.acme.like");
        assert!(
            message.subject.as_str().starts_with("tally.dead.acme."),
            "{}",
            message.subject
        );
        seen.push((
            header("Tally-Original-Seq").parse::<u64>().unwrap(),
            header("Tally-Error"),
        ));
    }
    seen.sort();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, garbage.sequence);
    assert!(seen[0].1.contains("not a JSON event"), "{}", seen[0].1);
    assert_eq!(seen[1].0, future.sequence);
    assert!(seen[1].1.contains("schema_version 99"), "{}", seen[1].1);

    let metrics = stack.metrics_text(&stack.projector).await;
    assert!(metrics.contains("tally_dead_letters_total"), "{metrics}");

    // Every event is acknowledged: the consumer has nothing pending. (A
    // dead-lettering that fails under load leaves the event to come back
    // after the consumer's ack_wait of 30 s, hence the longer wait.)
    let consumer = js
        .get_stream("TALLY_EVENTS")
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("projector")
        .await
        .unwrap();
    let last = future.sequence + 5;
    let policy = eventually("every event acknowledged", Duration::from_secs(90), || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.map_err(|e| e.to_string())?;
            let policy = info.config.ack_policy;
            match (info.ack_floor.stream_sequence, info.num_ack_pending) {
                (floor, 0) if floor == last => Ok(policy),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    use async_nats::jetstream::consumer::AckPolicy;
    let wanted = if exclusive {
        AckPolicy::All
    } else {
        AckPolicy::Explicit
    };
    assert_eq!(policy, wanted);
}

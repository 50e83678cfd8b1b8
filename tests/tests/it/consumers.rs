//! The projector's consumer, shared or exclusive (`projector.exclusive`).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Message;
use futures::StreamExt;
use serde_json::json;
use tally_shared::nats::{
    ack_floor, ensure_events_stream, ensure_projector_consumer, projector_consumer_config,
};
use tally_tests::{
    eventually, rfc3339_ago, start_service, Kind, NatsServer, Stack, TokenScope as Scope,
};

/// A server of its own whose event stream holds one message on each of
/// `subjects`, in order (sequences from 1).
async fn events(subjects: impl Iterator<Item = String>) -> (NatsServer, Stream) {
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = ensure_events_stream(&js, &tally_shared::Config::defaults().nats)
        .await
        .unwrap();
    for (i, subject) in subjects.enumerate() {
        js.publish(subject, format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    (nats, stream)
}

/// What `consumer` delivers to one pull request of at most `max` messages
/// (waiting at most half a second).
async fn fetch(consumer: PullConsumer, max: usize) -> Vec<Message> {
    let mut messages = consumer
        .fetch()
        .max_messages(max)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(Ok(message)) = messages.next().await {
        got.push(message);
    }
    got
}

/// Binding an exclusive consumer starts it again just after its ack floor:
/// events an earlier (killed) run was delivered but never acknowledged come
/// to the new run at once, not after `ack_wait` (30 s), and so the new run's
/// first cumulative ack cannot cover them unwritten. And a consumer's ack
/// policy cannot change: switching is refused, saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_redelivers_what_it_left_pending_when_bound_again() {
    let (_nats, stream) = events((0..5).map(|_| "tally.events.acme.view".to_owned())).await;
    // A first run is delivered all five and acknowledges up to the second.
    let consumer = ensure_projector_consumer(&stream, "solo", true, 0)
        .await
        .unwrap();
    assert_eq!(consumer.cached_info().config.ack_policy, AckPolicy::All);
    let first = fetch(consumer, 10).await;
    assert_eq!(first.len(), 5);
    first[1].double_ack().await.unwrap();

    // Bound again (the first run was killed): 3, 4 and 5 come at once.
    let consumer = ensure_projector_consumer(&stream, "solo", true, 0)
        .await
        .unwrap();
    assert_eq!(ack_floor(consumer.cached_info()), 2);
    let seqs: Vec<u64> = fetch(consumer.clone(), 10)
        .await
        .iter()
        .map(|m| m.info().unwrap().stream_sequence)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);

    // Killed again before acknowledging anything: the floor is still 2
    // (nats-server reports 0 for a consumer that has acked nothing), so the
    // next run starts at 3 again, not at the stream's beginning.
    let consumer = ensure_projector_consumer(&stream, "solo", true, 0)
        .await
        .unwrap();
    assert_eq!(ack_floor(consumer.cached_info()), 2);
    let again = fetch(consumer.clone(), 10).await;
    let seqs: Vec<u64> = again
        .iter()
        .map(|m| m.info().unwrap().stream_sequence)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    again[2].double_ack().await.unwrap();
    let info = consumer.clone().info().await.unwrap().clone();
    assert_eq!(ack_floor(&info), 5);

    // While another worker's pull request waits on it, binding is refused
    // (an exclusive consumer serves one worker).
    let waiting = tokio::spawn(fetch(consumer.clone(), 10));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = ensure_projector_consumer(&stream, "solo", true, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("another worker"), "{error}");
    waiting.await.unwrap();

    // A consumer's ack policy is fixed: the other mode is refused.
    let error = ensure_projector_consumer(&stream, "solo", false, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot change"), "{error}");
    ensure_projector_consumer(&stream, "shared", false, 0)
        .await
        .unwrap();
    let error = ensure_projector_consumer(&stream, "shared", true, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("projector.consumer a new name"), "{error}");
}

/// A shared consumer made by an earlier version, with the subject filter
/// `tally.events.>` (the stream's one subject), loses its filter when a
/// worker binds it, and keeps its place: what it acknowledged stays
/// acknowledged, what it did not comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_the_filtered_definition_is_updated_in_place() {
    let (_nats, stream) = events((0..4).map(|i| format!("tally.events.t{i}.view"))).await;
    let mut earlier = projector_consumer_config("projector", false);
    earlier.filter_subject = "tally.events.>".into();
    let consumer = stream.create_consumer(earlier).await.unwrap();
    for message in fetch(consumer, 2).await {
        message.double_ack().await.unwrap();
    }

    let consumer = ensure_projector_consumer(&stream, "projector", false, 0)
        .await
        .unwrap();
    let info = consumer.clone().info().await.unwrap().clone();
    assert_eq!(info.config.filter_subject, "");
    assert_eq!(ack_floor(&info), 2);
    let seqs: Vec<u64> = fetch(consumer, 10)
        .await
        .iter()
        .map(|m| m.info().unwrap().stream_sequence)
        .collect();
    assert_eq!(seqs, [3, 4]);
}

/// A stack whose one projector worker is alone on its consumer.
async fn exclusive_stack(test: &str) -> Stack {
    Stack::start_with(test, |c| {
        c.projector.exclusive = true;
        c.projector.rollup_range = 0;
    })
    .await
}

/// A like by `u1` of `post`.
fn like(id: &str, post: &str) -> serde_json::Value {
    json!({"event_id": id, "type": "like", "post_id": post, "user_id": "u1",
           "occurred_at": rfc3339_ago(60)})
}

/// Waits until tenant `t1`'s `post` shows `want` likes.
async fn likes(stack: &Stack, post: &str, want: i64) {
    let reader = stack.token("t1", &[Scope::ReportsRead]);
    eventually(
        &format!("{post} to show {want} like(s)"),
        Duration::from_secs(30),
        || async {
            let (status, body) = stack.post_metrics(&reader, post).await;
            match body["likes"].as_i64() {
                Some(n) if status == 200 && n == want => Ok(()),
                _ => Err(format!("status {status}, body {body}")),
            }
        },
    )
    .await;
}

/// The event stream and the projector consumer's ack floor once it is
/// `want`.
async fn acked_up_to(stack: &Stack, want: u64) -> Stream {
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream = js.get_stream("TALLY_EVENTS").await.unwrap();
    eventually(
        &format!("ack floor {want}"),
        Duration::from_secs(30),
        || async {
            match stream
                .consumer_info("projector")
                .await
                .map(|i| ack_floor(&i))
            {
                Ok(n) if n == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    stream
}

/// What a second worker binding the exclusive consumer does: delete it and
/// create it again just after its ack floor (`floor`).
async fn re_create(stream: &Stream, floor: u64) {
    stream.delete_consumer("projector").await.unwrap();
    let mut again = projector_consumer_config("projector", true);
    if floor > 0 {
        again.deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        };
    }
    stream.create_consumer(again).await.unwrap();
}

/// A second worker binding an exclusive consumer re-creates it under the
/// first. If the new consumer's deliveries happen to continue the old
/// one's numbering (here: neither had delivered anything), the first
/// worker cannot tell from them; it checks the consumer before each ack,
/// and rather than ack the new consumer (its cumulative ack would cover
/// events the other worker was given) it halts. A worker started
/// afterwards projects the event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_worker_halts_when_its_consumer_is_re_created_under_it() {
    let mut stack = exclusive_stack("recreated").await;
    let writer = stack.token("t1", &[Scope::EventsWrite]);
    let stream = acked_up_to(&stack, 0).await;
    re_create(&stream, 0).await;

    assert_eq!(stack.post_event(&writer, &like("e1", "p1")).await.0, 202);
    let ended = tokio::time::timeout(Duration::from_secs(30), &mut stack.projector.task)
        .await
        .expect("the first worker stops");
    let panic = ended.expect_err("the projector fails").into_panic();
    let message = panic.downcast_ref::<String>().expect("a panic message");
    assert!(message.contains("re-created"), "{message}");
    // It acked nothing on the new consumer.
    acked_up_to(&stack, 0).await;

    let worker = start_service(Kind::Projector, stack.config.clone()).await;
    acked_up_to(&stack, 1).await;
    likes(&stack, "p1", 1).await;
    worker.stop().await;
}

/// When a delivery is missing from an exclusive worker's batches (here:
/// its consumer was re-created after it had delivered one event, so the
/// next delivery is numbered 1 again), the worker acks nothing more and
/// binds the consumer again, from its ack floor. Every event is projected
/// once, and the worker runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_worker_binds_its_consumer_again_after_a_gap_in_its_deliveries() {
    let stack = exclusive_stack("gap").await;
    let writer = stack.token("t1", &[Scope::EventsWrite]);
    assert_eq!(stack.post_event(&writer, &like("e1", "p1")).await.0, 202);
    likes(&stack, "p1", 1).await;
    let stream = acked_up_to(&stack, 1).await;
    re_create(&stream, 1).await;

    assert_eq!(stack.post_event(&writer, &like("e2", "p2")).await.0, 202);
    assert_eq!(stack.post_event(&writer, &like("e3", "p3")).await.0, 202);
    acked_up_to(&stack, 3).await;
    for post in ["p1", "p2", "p3"] {
        likes(&stack, post, 1).await;
    }
    assert!(!stack.projector.task.is_finished(), "the worker runs on");
}

/// How many inserts the stack's `engagements` table has taken: the block
/// numbers of its parts (one per insert, kept by the merged parts), so
/// counted in the test's own database whatever else runs.
async fn inserts_into_engagements(stack: &Stack) -> u64 {
    tally_shared::store::client(&stack.config.clickhouse)
        .query(
            "SELECT toUInt64(max(max_block_number)) FROM system.parts \
             WHERE database = ? AND table = 'engagements'",
        )
        .bind(&stack.config.clickhouse.database)
        .fetch_one::<u64>()
        .await
        .unwrap()
}

/// A batch that is not full waits `projector.linger_ms` for more events, so
/// that a trickle of events makes few ClickHouse inserts: events posted one
/// by one within the linger are written as one batch (one insert into
/// `engagements`). Without a linger, the pull request returns with the
/// first event, and they make several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_is_not_full_lingers_for_more_events() {
    for (linger, one_batch) in [(3_000, true), (0, false)] {
        let stack = Stack::start_with(&format!("linger_{linger}"), |c| {
            c.projector.linger_ms = linger;
            c.projector.rollup_range = 0;
        })
        .await;
        let writer = stack.token("t1", &[Scope::EventsWrite]);
        let before = inserts_into_engagements(&stack).await;
        for i in 0..5 {
            let event = like(&format!("e{i}"), &format!("p{i}"));
            assert_eq!(stack.post_event(&writer, &event).await.0, 202);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..5 {
            likes(&stack, &format!("p{i}"), 1).await;
        }
        let batches = inserts_into_engagements(&stack).await - before;
        if one_batch {
            assert_eq!(batches, 1, "linger {linger} ms");
        } else {
            assert!(batches >= 2, "linger {linger} ms: {batches} batch(es)");
        }
    }
}

/// A batch ends `projector.linger_ms` after its first event even while
/// events keep coming: it takes what the consumer held when it began, then
/// what arrives within the linger. A steady stream makes a batch every
/// linger or so, not one batch that follows the stream until it is full
/// (which delayed every event in it by as long as the batch took to fill),
/// and every event is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_ends_at_its_linger_while_events_keep_coming() {
    let stack = Stack::start_with("linger_stream", |c| {
        c.projector.linger_ms = 20;
        c.projector.batch_size = 1_000_000;
        c.projector.batch_bytes = 1 << 30;
        c.projector.rollup_range = 0;
    })
    .await;
    let events = tally_tests::bench::dataset("t1", 1, 60_000);
    let before = inserts_into_engagements(&stack).await;
    tally_tests::bench::publish(&stack.nats.url(), &events).await;
    let reader = stack.token("t1", &[Scope::ReportsRead]);
    eventually(
        "post-0 to show its 60,000 events",
        Duration::from_secs(60),
        || async {
            let (status, body) = stack.post_metrics(&reader, "post-0").await;
            match body["events"].as_u64() {
                Some(60_000) if status == 200 => Ok(()),
                _ => Err(format!("status {status}, body {body}")),
            }
        },
    )
    .await;
    let batches = inserts_into_engagements(&stack).await - before;
    assert!(
        batches >= 3,
        "{batches} batch(es) for a stream of 60,000 events"
    );
}

//! The replay tooling's stream reader when the NATS client drops messages.

use std::time::Duration;

use tally_replay::reader::{Reader, Start};
use tally_tests::NatsServer;

/// A client with room for only 64 messages a subscription drops most of
/// each pull (the server counts them delivered and never sends them again
/// to that consumer); a reader that takes its batches slowly still hands
/// out every event once, in order, from where it started to where it was
/// told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_client_drops_messages_still_hands_out_every_event_once_in_order() {
    let nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(64)
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "scratch".into(),
            subjects: vec!["s.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 1..=1_000u64 {
        acks.push(js.publish("s.x", i.to_string().into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }

    let read = |start, until| {
        let stream = stream.clone();
        async move {
            let mut reader = Reader::open(&stream, "", start, until).await.unwrap();
            let mut seqs = Vec::new();
            while let Some(batch) = reader.next_batch(200).await.unwrap() {
                for event in &batch {
                    // The payload is the event's own: nothing was mixed up.
                    assert_eq!(event.payload, event.seq.to_string().as_bytes());
                }
                seqs.extend(batch.iter().map(|event| event.seq));
                // Slower than the server: the client's room overflows.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (seqs, reader.resumed())
        }
    };
    let (seqs, resumed) = read(Start::Beginning, None).await;
    assert_read(&seqs, 1..=1_000);
    assert!(
        resumed > 0,
        "the client dropped nothing: the test tests nothing"
    );
    let (seqs, _) = read(Start::Seq(301), Some(900)).await;
    assert_read(&seqs, 301..=900);
}

/// `seqs` are `want`, or a short account of where they part.
fn assert_read(seqs: &[u64], want: std::ops::RangeInclusive<u64>) {
    let want: Vec<u64> = want.collect();
    if seqs != want {
        let at = seqs.iter().zip(&want).take_while(|(a, b)| a == b).count();
        panic!(
            "read {} events, {} expected; from index {at}: {:?}…, {:?}… expected",
            seqs.len(),
            want.len(),
            &seqs[at..seqs.len().min(at + 5)],
            &want[at..want.len().min(at + 5)],
        );
    }
}

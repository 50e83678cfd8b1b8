//! Checks the durability tests share: what was acknowledged is on the
//! stream once, and the read models match the stream exactly.

use std::collections::HashSet;
use std::time::Duration;

use tally_replay::reader::{Reader, Start};
use tally_replay::{verify, Env};
use tally_shared::config::Config;
use tally_shared::event::StoredEvent;
use tally_shared::store::models::Models;
use tally_tests::eventually;

/// Waits until the projectors' recorded position reaches `seq`.
pub async fn wait_projected(config: &Config, seq: u64) {
    let models = Models::connect(&config.clickhouse);
    eventually("the projection position", Duration::from_secs(90), || {
        let models = &models;
        async move {
            let positions = models.positions().await.map_err(|e| e.to_string())?;
            match positions.iter().map(|p| p.position).min() {
                Some(position) if position >= seq => Ok(()),
                other => Err(format!("at {other:?} of {seq}")),
            }
        }
    })
    .await;
}

/// Every event id in `accepted` is on the event stream, and no event is
/// there twice; then, once a projector has caught up, `verify` finds the
/// read models exactly as the stream says. The events stored.
pub async fn stored_once_and_projected_exactly(config: &Config, accepted: &HashSet<String>) -> u64 {
    let mut env = Env::connect(config.clone()).await.unwrap();
    let stored = env.stream_last().await.unwrap();
    let mut reader = Reader::open(&env.events, "", Start::Beginning, None)
        .await
        .unwrap();
    let mut on_stream = HashSet::new();
    while let Some(batch) = reader.next_batch(10_000).await.unwrap() {
        for recorded in batch {
            let event = StoredEvent::decode(&recorded.payload).unwrap();
            assert!(
                on_stream.insert(event.event.event_id.clone()),
                "stored twice: {}",
                event.event.event_id
            );
        }
    }
    assert_eq!(on_stream.len() as u64, stored);
    let lost: Vec<_> = accepted.difference(&on_stream).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");

    wait_projected(config, stored).await;
    let report = verify::verify(&mut env, None).await.unwrap();
    assert_eq!(report.events, stored);
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    stored
}

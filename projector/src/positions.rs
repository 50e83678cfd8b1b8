//! Position, lag and watermark of the read models.
//!
//! Every read model is written from the same batches before they are acked,
//! so they share one position: the consumer's ack floor, below which every
//! event is projected whichever worker took it. The watermark is processing
//! time: the receive time of the oldest event not yet projected, or now when
//! nothing is pending. It therefore advances with the clock for a quiet
//! tenant too, and since lateness is judged by receive time (see the fold),
//! a bucket marked complete has every on-time event in it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use clickhouse::Row;
use metrics::gauge;
use serde::{Deserialize, Serialize};
use tally_shared::config::ClickHouseConfig;
use tally_shared::event::StoredEvent;
use tally_shared::metrics as names;
use tally_shared::store::{self, READ_MODELS};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::worker::Progress;

/// A row of `projection_positions`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct PositionRow {
    pub model: String,
    pub position: u64,
    pub stream_last: u64,
    pub watermark: u32,
    pub updated_ms: u64,
}

/// Where the read models stand at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Every event at or below this stream sequence is projected.
    pub position: u64,
    /// The stream's last sequence.
    pub stream_last: u64,
    /// Receive time (epoch seconds) of the oldest unprojected event; `None`
    /// when caught up.
    pub oldest_pending: Option<u32>,
}

impl Position {
    /// Events not yet reflected.
    pub fn lag_events(&self) -> u64 {
        self.stream_last.saturating_sub(self.position)
    }

    /// The event-time watermark at `now`: buckets whose end plus the grace
    /// period is at or before it are complete.
    pub fn watermark(&self, now: u32) -> u32 {
        match self.oldest_pending {
            // Receive times are whole seconds: events received in that
            // second may still be pending.
            Some(received) => received.saturating_sub(1).min(now),
            None => now,
        }
    }

    /// Seconds the oldest unprojected event has waited.
    pub fn lag_seconds(&self, now: u32) -> u32 {
        self.oldest_pending
            .map_or(0, |received| now.saturating_sub(received))
    }
}

/// The soonest a worker records the position again after recording it:
/// right after a batch is acked, so that answers show new events soon, but
/// about five times a second at most under load.
const SOONEST: Duration = Duration::from_millis(200);

/// Records the position after each batch acked (at most every
/// [`SOONEST`]) and at least every `interval` (for the watermark of a quiet
/// stream), until `shutdown`.
pub async fn run(
    stream: Stream,
    mut consumer: PullConsumer,
    clickhouse: ClickHouseConfig,
    interval: Duration,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
) {
    let client = store::client(&clickhouse);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let soonest = SOONEST.min(interval);
    // The floor and stream end last written.
    let mut unchanged = None;
    loop {
        let ticked = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => true,
            _ = progress.acked.notified() => false,
        };
        // Stamped before the read, so that a later record never carries an
        // older floor (readers take each model's latest record).
        let now = OffsetDateTime::now_utc();
        let recorded = match read(&stream, &mut consumer).await {
            Ok(position)
                if !ticked && Some((position.position, position.stream_last)) == unchanged =>
            {
                // Woken by an ack that has not moved the floor yet: the
                // same record again would only add a row (the periodic one
                // moves the watermark).
                Some(position.position)
            }
            Ok(position) => {
                let written = record(&client, &clickhouse, &progress, position, now).await;
                unchanged = written.then_some((position.position, position.stream_last));
                written.then_some(position.position)
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the projection position failed");
                None
            }
        };
        // An ack just sent may not have moved the floor yet, and a failed
        // read or write leaves the last one standing: look again soon
        // while what is recorded is behind what this worker acked.
        if recorded.is_none_or(|p| p < progress.last_seq.load(Ordering::Relaxed)) {
            progress.acked.notify_one();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(soonest) => {}
        }
    }
}

/// Shares `position` with the health endpoint and the metrics, and writes
/// it to `projection_positions` for the query side, stamped `now`; whether
/// it was written.
async fn record(
    client: &clickhouse::Client,
    clickhouse: &ClickHouseConfig,
    progress: &Progress,
    position: Position,
    now: OffsetDateTime,
) -> bool {
    let now_s = u32::try_from(now.unix_timestamp().max(0)).unwrap_or(u32::MAX);
    let watermark = position.watermark(now_s);
    progress
        .position
        .store(position.position, Ordering::Relaxed);
    progress
        .watermark
        .store(watermark.into(), Ordering::Relaxed);
    for model in READ_MODELS {
        let labels = [("model", *model)];
        gauge!(names::PROJECTION_POSITION, &labels).set(position.position as f64);
        gauge!(names::PROJECTION_LAG_EVENTS, &labels).set(position.lag_events() as f64);
        gauge!(names::PROJECTION_LAG_SECONDS, &labels).set(f64::from(position.lag_seconds(now_s)));
    }
    gauge!(names::WATERMARK).set(f64::from(watermark));
    let updated_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let rows: Vec<PositionRow> = READ_MODELS
        .iter()
        .map(|model| PositionRow {
            model: (*model).to_owned(),
            position: position.position,
            stream_last: position.stream_last,
            watermark,
            updated_ms,
        })
        .collect();
    let write = async {
        let mut insert = client.insert::<PositionRow>("projection_positions").await?;
        for row in &rows {
            insert.write(row).await?;
        }
        insert.end().await
    };
    match store::timed(clickhouse, write).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "recording the projection position failed");
            false
        }
    }
}

/// The consumer's ack floor, the stream's end, and the receive time of the
/// first event above the floor.
async fn read(stream: &Stream, consumer: &mut PullConsumer) -> Result<Position, async_nats::Error> {
    let info = consumer.info().await?;
    let position = tally_shared::nats::ack_floor(info);
    let stream_last = stream.get_info().await?.state.last_sequence.max(position);
    let oldest_pending = if stream_last > position {
        let message = stream.get_raw_message(position + 1).await?;
        let event = StoredEvent::decode(&message.payload)?;
        Some(u32::try_from(event.received_at.unix_timestamp().max(0)).unwrap_or(u32::MAX))
    } else {
        None
    };
    Ok(Position {
        position,
        stream_last,
        oldest_pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_the_watermark_is_now_and_there_is_no_lag() {
        let p = Position {
            position: 100,
            stream_last: 100,
            oldest_pending: None,
        };
        assert_eq!(
            (p.watermark(5_000), p.lag_events(), p.lag_seconds(5_000)),
            (5_000, 0, 0)
        );
    }

    #[test]
    fn behind_the_watermark_stops_before_the_oldest_pending_event() {
        let p = Position {
            position: 100,
            stream_last: 150,
            oldest_pending: Some(4_990),
        };
        assert_eq!(p.watermark(5_000), 4_989);
        assert_eq!(p.lag_events(), 50);
        assert_eq!(p.lag_seconds(5_000), 10);
        // A receive time in the future (clock skew) never moves it past now.
        let skewed = Position {
            oldest_pending: Some(6_000),
            ..p
        };
        assert_eq!(skewed.watermark(5_000), 5_000);
    }
}

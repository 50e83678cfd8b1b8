//! How fresh an answer is: the stream position the read models reflect
//! (every event at or below it is in), the stream's end, the event-time
//! watermark, and whether the answer came from cache or is stale. The
//! projector records positions in ClickHouse after its batches are acked
//! (at most five times a second) and at least every
//! `projector.position_interval_ms`; this
//! reads them at most every [`REFRESH`] and shares the result between
//! requests. The read happens beside the requests, not in one: a request
//! that finds the shared view due for a refresh starts one (unless one is
//! under way) and answers from the view it has, waiting only when that view
//! is older than [`WAIT_AFTER`] (the first request, or ClickHouse slow or
//! gone).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_shared::http::ApiError;
use tally_shared::store::models::Models;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How long a position read from ClickHouse is reused before a refresh
/// starts.
const REFRESH: Duration = Duration::from_millis(100);
/// How old a position may be before requests wait for a fresh one.
const WAIT_AFTER: Duration = Duration::from_secs(1);
/// How often a `min_seq` wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// Where the read models stand, as recorded by the projector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub position: u64,
    pub stream_last: u64,
    /// Seconds since the epoch.
    pub watermark: u32,
    /// When the projector recorded it, milliseconds since the epoch.
    pub recorded_ms: u64,
}

/// The freshness every answer carries (body and headers).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Freshness {
    pub position: u64,
    pub stream_last: u64,
    pub lag_events: u64,
    /// Event time up to which every bucket is final but for late events
    /// (RFC 3339).
    pub watermark: String,
    /// Seconds between the watermark and now.
    pub lag_seconds: u64,
    /// When the projector recorded the position.
    pub recorded_at: String,
    pub cached: bool,
    /// The answer does not reflect the requested `min_seq`, or comes from
    /// cache while ClickHouse is unavailable.
    pub stale: bool,
}

impl Freshness {
    pub fn of(snapshot: Snapshot, now: OffsetDateTime, cached: bool, stale: bool) -> Freshness {
        let rfc3339 = |seconds: i64| {
            OffsetDateTime::from_unix_timestamp(seconds)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default()
        };
        Freshness {
            position: snapshot.position,
            stream_last: snapshot.stream_last,
            lag_events: snapshot.stream_last.saturating_sub(snapshot.position),
            watermark: rfc3339(i64::from(snapshot.watermark)),
            lag_seconds: u64::try_from(now.unix_timestamp() - i64::from(snapshot.watermark))
                .unwrap_or(0),
            recorded_at: rfc3339((snapshot.recorded_ms / 1000) as i64),
            cached,
            stale,
        }
    }
}

/// The shared, briefly cached view of the projector's positions.
#[derive(Clone)]
pub struct Tracker {
    models: Models,
    last: Arc<Mutex<Option<(Instant, Snapshot)>>>,
    refreshing: Arc<AtomicBool>,
}

impl Tracker {
    pub fn new(models: Models) -> Tracker {
        Tracker {
            models,
            last: Arc::new(Mutex::new(None)),
            refreshing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The current snapshot: the shared one, refreshed beside the request
    /// once older than [`REFRESH`], and read now once older than
    /// [`WAIT_AFTER`]. If ClickHouse fails then, the last one read and
    /// `true` (degraded); 503 if there is none.
    pub async fn current(&self) -> Result<(Snapshot, bool), ApiError> {
        let last = *self.last.lock().expect("not poisoned");
        if let Some((at, snapshot)) = last {
            let age = at.elapsed();
            if age < REFRESH {
                return Ok((snapshot, false));
            }
            if age < WAIT_AFTER {
                self.refresh_beside();
                return Ok((snapshot, false));
            }
        }
        match self.read().await {
            Ok(snapshot) => Ok((snapshot, false)),
            Err(e) => match last {
                Some((_, snapshot)) => Ok((snapshot, true)),
                None => Err(ApiError::Unavailable(e.to_string())),
            },
        }
    }

    /// Starts a read unless one is under way.
    fn refresh_beside(&self) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the read ends (a panic included).
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let tracker = self.clone();
        let done = Done(self.refreshing.clone());
        tokio::spawn(async move {
            let _done = done;
            // A failure leaves the old view to age until requests read
            // (and report the failure) themselves.
            let _ = tracker.read().await;
        });
    }

    /// Reads the positions from ClickHouse and shares them.
    async fn read(&self) -> Result<Snapshot, tally_shared::store::StoreError> {
        let positions = self.models.positions().await?;
        // Every read model is written by the same batches; the least
        // advanced one is what all of them reflect.
        let snapshot = positions
            .iter()
            .min_by_key(|p| p.position)
            .map(|p| Snapshot {
                position: p.position,
                stream_last: positions.iter().map(|p| p.stream_last).max().unwrap_or(0),
                watermark: p.watermark,
                recorded_ms: p.updated_ms,
            })
            .unwrap_or_default();
        *self.last.lock().expect("not poisoned") = Some((Instant::now(), snapshot));
        Ok(snapshot)
    }

    /// The current snapshot, after waiting up to `wait` for it to reach
    /// `min_seq`; `stale` when it did not, or ClickHouse failed.
    pub async fn at_least(
        &self,
        min_seq: Option<u64>,
        wait: Duration,
    ) -> Result<(Snapshot, bool), ApiError> {
        let started = Instant::now();
        loop {
            let (snapshot, degraded) = self.current().await?;
            if degraded {
                return Ok((snapshot, true));
            }
            match min_seq {
                Some(seq) if snapshot.position < seq => {
                    if started.elapsed() + POLL > wait {
                        return Ok((snapshot, true));
                    }
                    tokio::time::sleep(POLL).await;
                }
                _ => return Ok((snapshot, false)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn lag_is_counted_in_events_and_seconds() {
        let now = datetime!(2026-11-22 12:00:10 UTC);
        let snapshot = Snapshot {
            position: 90,
            stream_last: 100,
            watermark: now.unix_timestamp() as u32 - 10,
            recorded_ms: now.unix_timestamp() as u64 * 1000,
        };
        let freshness = Freshness::of(snapshot, now, false, true);
        assert_eq!((freshness.lag_events, freshness.lag_seconds), (10, 10));
        assert_eq!(freshness.watermark, "2026-11-22T12:00:00Z");
        assert_eq!(freshness.recorded_at, "2026-11-22T12:00:10Z");
        assert!(freshness.stale && !freshness.cached);
        // A watermark ahead of this clock is no negative lag.
        let ahead = Snapshot {
            watermark: now.unix_timestamp() as u32 + 5,
            ..snapshot
        };
        assert_eq!(Freshness::of(ahead, now, false, false).lag_seconds, 0);
    }
}

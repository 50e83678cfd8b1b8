//! The hot tier: answers kept in memory (moka), keyed by tenant and query.
//!
//! An answer is reused while the read models' position is the one it was
//! computed at and it is younger than `query.cache_fresh_ms`; the position
//! moving (the projector committed and acknowledged more events) makes it
//! old at once. Every replica keeps its own cache and asks ClickHouse for
//! the position, so replicas never disagree by more than that bound.
//! When ClickHouse fails, an answer up to `query.cache_stale_ms` old is
//! served marked stale; without one the request gets 503 with
//! `Retry-After`. Memory is bounded by `query.cache_max_bytes`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use tally_shared::http::ApiError;

/// A computed answer.
#[derive(Debug)]
pub struct Entry {
    /// The data, serialised once as a JSON object: a hit copies these
    /// bytes into the answer instead of serialising the data again.
    pub json: Bytes,
    /// Its entity tag, computed once.
    pub etag: String,
    /// The read models' position it was computed at.
    pub position: u64,
    computed: Instant,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Computed now from ClickHouse.
    Store,
    /// From the cache, as fresh as a computed one.
    Cache,
    /// From the cache because ClickHouse failed: stale.
    Fallback,
}

impl Source {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Source::Store => "store",
            Source::Cache => "cache",
            Source::Fallback => "fallback",
        }
    }
}

pub struct Hot {
    cache: Cache<String, Arc<Entry>>,
    fresh: Duration,
}

impl Hot {
    pub fn new(max_bytes: u64, fresh: Duration, stale: Duration) -> Hot {
        Hot {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, entry: &Arc<Entry>| {
                    let size = key.len() + entry.json.len() + 64;
                    u32::try_from(size).unwrap_or(u32::MAX)
                })
                .time_to_live(stale.max(fresh))
                .build(),
            fresh,
        }
    }

    /// The answer for `key` at `position`: cached if fresh, else computed
    /// (and kept); if computing fails because the store is unavailable, the
    /// last answer kept, whatever its position.
    pub async fn get<F, Fut>(
        &self,
        key: String,
        position: u64,
        compute: F,
    ) -> Result<(Arc<Entry>, Source), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        let kept = self.cache.get(&key).await;
        if let Some(entry) = &kept {
            if entry.position == position && entry.computed.elapsed() < self.fresh {
                return Ok((entry.clone(), Source::Cache));
            }
        }
        match compute().await {
            Ok(json) => {
                let entry = Arc::new(Entry {
                    etag: crate::respond::etag_of(&json),
                    json,
                    position,
                    computed: Instant::now(),
                });
                self.cache.insert(key, entry.clone()).await;
                Ok((entry, Source::Store))
            }
            Err(ApiError::Unavailable(cause)) => match kept {
                Some(entry) => {
                    tracing::warn!(%cause, "ClickHouse unavailable; serving a kept answer");
                    Ok((entry, Source::Fallback))
                }
                None => Err(ApiError::Unavailable(cause)),
            },
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    impl Entry {
        fn data(&self) -> Value {
            serde_json::from_slice(&self.json).unwrap()
        }
    }

    fn hot() -> Hot {
        Hot::new(1 << 20, Duration::from_secs(60), Duration::from_secs(300))
    }

    async fn answer(value: i64) -> Result<Bytes, ApiError> {
        Ok(json!({"likes": value}).to_string().into())
    }

    async fn down() -> Result<Bytes, ApiError> {
        Err(ApiError::Unavailable("connection refused".into()))
    }

    #[tokio::test]
    async fn fresh_answers_are_reused_until_the_position_moves() {
        let hot = hot();
        let (first, source) = hot.get("k".into(), 10, || answer(1)).await.unwrap();
        assert_eq!(
            (first.data()["likes"].as_i64(), source),
            (Some(1), Source::Store)
        );
        let (again, source) = hot.get("k".into(), 10, || answer(2)).await.unwrap();
        assert_eq!(
            (again.data()["likes"].as_i64(), source),
            (Some(1), Source::Cache)
        );
        let (moved, source) = hot.get("k".into(), 11, || answer(3)).await.unwrap();
        assert_eq!(
            (moved.data()["likes"].as_i64(), source),
            (Some(3), Source::Store)
        );
        // Other keys (tenants, queries) never share an answer.
        let (other, _) = hot.get("k2".into(), 11, || answer(4)).await.unwrap();
        assert_eq!(other.data()["likes"], 4);
    }

    #[tokio::test]
    async fn answers_age_out_even_at_the_same_position() {
        let hot = Hot::new(1 << 20, Duration::ZERO, Duration::from_secs(300));
        hot.get("k".into(), 10, || answer(1)).await.unwrap();
        let (entry, source) = hot.get("k".into(), 10, || answer(2)).await.unwrap();
        assert_eq!(
            (entry.data()["likes"].as_i64(), source),
            (Some(2), Source::Store)
        );
    }

    #[tokio::test]
    async fn an_unavailable_store_falls_back_to_the_kept_answer_or_503() {
        let hot = hot();
        assert!(matches!(
            hot.get("k".into(), 10, down).await,
            Err(ApiError::Unavailable(_))
        ));
        hot.get("k".into(), 10, || answer(1)).await.unwrap();
        let (entry, source) = hot.get("k".into(), 12, down).await.unwrap();
        assert_eq!(
            (entry.data()["likes"].as_i64(), source),
            (Some(1), Source::Fallback)
        );
        // Other errors (404, 400) are answered as they are.
        let not_found = hot
            .get("k".into(), 13, || async {
                Err(ApiError::NotFound("no".into()))
            })
            .await;
        assert!(matches!(not_found, Err(ApiError::NotFound(_))));
    }
}

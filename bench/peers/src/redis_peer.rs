//! Peer 1, the seed articles' design: a Redis counter per post, `INCR` on a
//! like and `DECR` on an unlike, one request per op. Each worker has its own
//! connection (a `MultiplexedConnection` used by that worker alone, so one
//! request in flight per connection, like a classic client per worker).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::drive::{drive, ApplyError, Peer};
use crate::ops::{self, Kind, Op};
use crate::stats::{log_mismatches, Summary};

/// Keys per MGET/UNLINK when checking and cleaning up.
const CHUNK: usize = 1_000;

/// The Redis counter peer.
pub struct RedisPeer {
    client: redis::Client,
    /// Fresh per run so runs never see each other's counters.
    prefix: String,
}

impl RedisPeer {
    fn key(&self, post: &str) -> String {
        format!("{}likes:{post}", self.prefix)
    }

    async fn connect(&self) -> anyhow::Result<MultiplexedConnection> {
        // The default 500 ms response timeout would turn a slow reply on a
        // busy machine into an error for an INCR that did happen.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting to Redis")
    }
}

impl Peer for RedisPeer {
    type Worker = MultiplexedConnection;

    async fn worker(&self) -> anyhow::Result<MultiplexedConnection> {
        self.connect().await
    }

    async fn apply(&self, conn: &mut MultiplexedConnection, op: &Op) -> Result<u32, ApplyError> {
        let verb = match op.op {
            Kind::Like => "INCR",
            Kind::Unlike => "DECR",
        };
        redis::cmd(verb)
            .arg(self.key(&op.post))
            .query_async::<i64>(conn)
            .await
            .map_err(|e| ApplyError(format!("{verb}: {e}")))?;
        Ok(0)
    }
}

/// Runs the ops against Redis at `url`, checks every post's final count
/// and deletes the run's keys.
pub async fn run(
    url: &str,
    run_id: &str,
    ops: Arc<Vec<Op>>,
    parts: Vec<Vec<usize>>,
    rate: Option<f64>,
    expected: &BTreeMap<String, i64>,
) -> anyhow::Result<Summary> {
    let peer = Arc::new(RedisPeer {
        client: redis::Client::open(url).with_context(|| format!("Redis URL {url}"))?,
        prefix: format!("tally-peers:{run_id}:"),
    });
    let mut conn = peer.connect().await?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .context("Redis PING")?;
    let connections = parts.len();
    let outcome = drive("redis", peer.clone(), ops, parts, rate).await?;

    let keys: Vec<String> = expected.keys().map(|post| peer.key(post)).collect();
    let mut actual = BTreeMap::new();
    for (posts, keys) in expected
        .keys()
        .collect::<Vec<_>>()
        .chunks(CHUNK)
        .zip(keys.chunks(CHUNK))
    {
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .context("reading the counters back")?;
        for (post, value) in posts.iter().zip(values) {
            actual.insert((*post).clone(), value.unwrap_or(0));
        }
    }
    let mismatches = ops::mismatches(expected, &actual);
    log_mismatches("redis", &mismatches);
    for keys in keys.chunks(CHUNK) {
        redis::cmd("UNLINK")
            .arg(keys)
            .query_async::<i64>(&mut conn)
            .await
            .context("deleting the run's counters")?;
    }
    let notes = format!(
        "INCR/DECR {}likes:<post>, one request per op, {connections} connections \
         (one MultiplexedConnection per worker, no pipelining); counts checked with MGET; \
         keys deleted after the run",
        peer.prefix
    );
    Ok(outcome.summarise(mismatches.len() as u64, expected.len() as u64, notes))
}

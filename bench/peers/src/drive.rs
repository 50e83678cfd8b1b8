//! Drives a peer through the ops: one task per worker, each running its
//! share sequentially, either flat out (closed loop: saturation) or paced
//! to a total rate (open loop).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ops::Op;
use crate::stats::Outcome;

/// An op that could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// A system under test.
pub trait Peer: Send + Sync + 'static {
    /// What one worker holds on to across its ops (a connection, or nothing).
    type Worker: Send + 'static;

    /// Sets up one worker; not timed.
    fn worker(&self) -> impl Future<Output = anyhow::Result<Self::Worker>> + Send;

    /// Applies one op, retrying as the peer needs; returns the retries.
    fn apply(
        &self,
        worker: &mut Self::Worker,
        op: &Op,
    ) -> impl Future<Output = Result<u32, ApplyError>> + Send;
}

/// Runs every worker's share of `ops` against `peer`. With `rate`, op `i`
/// (its position in the file) is due at `start + i / rate`; when its
/// worker is behind, its latency counts from then, so falling behind shows
/// in the latency rather than silently lowering the offered load.
pub async fn drive<P: Peer>(
    name: &'static str,
    peer: Arc<P>,
    ops: Arc<Vec<Op>>,
    parts: Vec<Vec<usize>>,
    rate: Option<f64>,
) -> anyhow::Result<Outcome> {
    let mut workers = Vec::with_capacity(parts.len());
    for _ in &parts {
        workers.push(peer.worker().await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report_progress(name, done.clone(), ops.len() as u64));
    let start = Instant::now();
    let tasks: Vec<_> = parts
        .into_iter()
        .zip(workers)
        .map(|(part, mut worker)| {
            let (peer, ops, done) = (peer.clone(), ops.clone(), done.clone());
            tokio::spawn(async move {
                let mut outcome = Outcome {
                    latencies_us: Vec::with_capacity(part.len()),
                    ..Outcome::default()
                };
                for i in part {
                    let due = rate.map(|r| start + Duration::from_secs_f64(i as f64 / r));
                    let began = match due {
                        // Early: wait, and count from the actual start, as
                        // tokio's timer may wake up to a millisecond late.
                        Some(due) if due > Instant::now() => {
                            tokio::time::sleep_until(due).await;
                            Instant::now()
                        }
                        // Behind: the wait since the op was due counts.
                        Some(due) => due,
                        None => Instant::now(),
                    };
                    match peer.apply(&mut worker, &ops[i]).await {
                        Ok(retries) => {
                            outcome
                                .latencies_us
                                .push(began.elapsed().as_micros() as u64);
                            outcome.retries += u64::from(retries);
                            outcome.conflicted_ops += u64::from(retries > 0);
                            outcome.max_retries_one_op = outcome.max_retries_one_op.max(retries);
                        }
                        Err(e) => {
                            outcome.errors += 1;
                            outcome.first_error.get_or_insert(e.0);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome::default();
    for task in tasks {
        total.merge(task.await?);
    }
    total.elapsed = start.elapsed();
    progress.abort();
    Ok(total)
}

async fn report_progress(name: &str, done: Arc<AtomicU64>, total: u64) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let n = done.load(Ordering::Relaxed);
        eprintln!(
            "{name}: {n}/{total} ops, {:.0} ops/s so far",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
}

//! Load drivers for the benchmark: a closed loop (N clients, each sending
//! its next request as soon as the last is answered: the saturation point)
//! and an open loop (requests at a fixed rate, each timed from the moment
//! it was due, so a stall shows in the latencies instead of slowing the
//! sender down).
//!
//! Requests are prepared beforehand, so building them is not timed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::Method;
use tokio::sync::Semaphore;

use super::percentile;

/// One prepared request.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: Method,
    /// Path and query, appended to the driver's base URL.
    pub path: String,
    pub token: Arc<str>,
    pub body: Option<(&'static str, Bytes)>,
    /// Events it carries (1 for a single event or a like, the batch's size
    /// for a batch, 0 for a request without events).
    pub events: u64,
}

impl Prepared {
    pub fn get(path: impl Into<String>, token: Arc<str>) -> Prepared {
        Prepared {
            method: Method::GET,
            path: path.into(),
            token,
            body: None,
            events: 0,
        }
    }

    pub fn json(path: impl Into<String>, token: Arc<str>, body: Bytes, events: u64) -> Prepared {
        Prepared {
            method: Method::POST,
            path: path.into(),
            token,
            body: Some(("application/json", body)),
            events,
        }
    }
}

/// What a run of a driver saw.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub elapsed: Duration,
    /// Requests answered 2xx, and the events they carried.
    pub ok: u64,
    pub events: u64,
    /// Answers by status (0: no answer: a connection error or timeout).
    pub statuses: BTreeMap<u16, u64>,
    /// Latency of every 2xx answer.
    pub latencies: Vec<Duration>,
    /// An open loop's slowest 2xx answer and when (wall clock) it was due:
    /// dates a stall, to set beside the servers' logs.
    pub slowest: Option<(Duration, SystemTime)>,
}

impl Run {
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    pub fn events_per_second(&self) -> f64 {
        per_second(self.events, self.elapsed)
    }

    /// The `p`-th percentile latency in milliseconds (NaN without samples).
    pub fn ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }

    /// Requests that were not answered 2xx.
    pub fn failed(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Latencies are those of 2xx answers only: a fast refusal is not a
    /// fast request (failures are counted by status instead).
    fn record(&mut self, status: u16, events: u64, latency: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        if (200..300).contains(&status) {
            self.ok += 1;
            self.events += events;
            self.latencies.push(latency);
        }
    }

    /// [`Run::record`] for a request that was due at `due`.
    fn record_due(&mut self, status: u16, events: u64, latency: Duration, due: SystemTime) {
        self.record(status, events, latency);
        if (200..300).contains(&status) && self.slowest.is_none_or(|(worst, _)| latency > worst) {
            self.slowest = Some((latency, due));
        }
    }

    fn merge(&mut self, other: Run) {
        self.ok += other.ok;
        self.events += other.events;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.latencies.extend(other.latencies);
        if let Some((latency, due)) = other.slowest {
            if self.slowest.is_none_or(|(worst, _)| latency > worst) {
                self.slowest = Some((latency, due));
            }
        }
    }
}

/// `n` per `elapsed`, 0 for no time.
pub fn per_second(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

/// When the `i`-th request of an open loop at `rate` requests per second
/// is due, counted from the start.
pub fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate.max(f64::MIN_POSITIVE))
}

/// Sends requests from one queue.
#[derive(Clone)]
pub struct Driver {
    pub http: reqwest::Client,
    pub base: String,
}

impl Driver {
    pub fn new(base: impl Into<String>) -> Driver {
        Driver {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(512)
                .build()
                .expect("an HTTP client"),
            base: base.into(),
        }
    }

    /// Sends one request; its status (0 without an answer) and latency.
    pub async fn send(&self, request: &Prepared) -> (u16, Duration) {
        let started = Instant::now();
        let status = self.status_of(request).await;
        (status, started.elapsed())
    }

    async fn status_of(&self, request: &Prepared) -> u16 {
        let mut builder = self
            .http
            .request(
                request.method.clone(),
                format!("{}{}", self.base, request.path),
            )
            .bearer_auth(&*request.token);
        if let Some((content_type, body)) = &request.body {
            builder = builder
                .header("content-type", *content_type)
                .body(body.clone());
        }
        match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the whole answer: it is part of the request's cost.
                match response.bytes().await {
                    Ok(_) => status,
                    Err(_) => 0,
                }
            }
            Err(_) => 0,
        }
    }

    /// `clients` clients send `requests` back to back, for at most `limit`
    /// or until the queue is empty.
    pub async fn closed_loop(
        &self,
        requests: Arc<Vec<Prepared>>,
        clients: usize,
        limit: Duration,
    ) -> Run {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (driver, requests, next) = (self.clone(), requests.clone(), next.clone());
                tokio::spawn(async move {
                    let mut run = Run::default();
                    while started.elapsed() < limit {
                        let Some(request) = requests.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        let (status, took) = driver.send(request).await;
                        run.record(status, request.events, took);
                    }
                    run
                })
            })
            .collect();
        gather(tasks, started).await
    }

    /// Sends `requests` at `rate` per second for at most `limit`, each timed
    /// from when it was due; at most `in_flight` at once (past that, the
    /// wait counts in the latency).
    pub async fn open_loop(
        &self,
        requests: Arc<Vec<Prepared>>,
        rate: f64,
        limit: Duration,
        in_flight: usize,
    ) -> Run {
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        let run = Arc::new(Mutex::new(Run::default()));
        let (started, wall) = (tokio::time::Instant::now(), SystemTime::now());
        let mut tasks = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let at = due(i as u64, rate);
            if at >= limit {
                break;
            }
            tokio::time::sleep_until(started + at).await;
            let slot = slots.clone().acquire_owned().await.expect("open semaphore");
            let (driver, request, run) = (self.clone(), request.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slot;
                let status = driver.status_of(&request).await;
                let took = started.elapsed().saturating_sub(at);
                run.lock()
                    .unwrap()
                    .record_due(status, request.events, took, wall + at);
            }));
        }
        for task in tasks {
            task.await.expect("a load request");
        }
        let mut total = std::mem::take(&mut *run.lock().unwrap());
        total.elapsed = started.elapsed();
        total
    }
}

impl Driver {
    /// One client per queue, each sending its queue's requests in order
    /// (requests that must not overtake each other share a queue).
    pub async fn partitioned(&self, queues: Vec<Vec<Prepared>>) -> Run {
        let started = Instant::now();
        let tasks: Vec<_> = queues
            .into_iter()
            .map(|queue| {
                let driver = self.clone();
                tokio::spawn(async move {
                    let mut run = Run::default();
                    for request in &queue {
                        let (status, took) = driver.send(request).await;
                        run.record(status, request.events, took);
                    }
                    run
                })
            })
            .collect();
        gather(tasks, started).await
    }
}

/// The clients' runs as one, timed from `started`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Run>>, started: Instant) -> Run {
    let mut total = Run::default();
    for task in tasks {
        total.merge(task.await.expect("a load client"));
    }
    total.elapsed = started.elapsed();
    total
}

/// Of closed-loop runs at several client counts, the one with the highest
/// event rate: the saturation point (the first of equals).
pub fn saturation(levels: &[(usize, Run)]) -> Option<&(usize, Run)> {
    levels.iter().fold(None, |best, level| match best {
        Some(b) if b.1.events_per_second() >= level.1.events_per_second() => Some(b),
        _ => Some(level),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: u64, secs: u64) -> Run {
        Run {
            elapsed: Duration::from_secs(secs),
            ok: events,
            events,
            ..Run::default()
        }
    }

    #[test]
    fn the_slowest_answer_is_kept_with_when_it_was_due() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let ms = Duration::from_millis;
        let mut one = Run::default();
        one.record_due(202, 1, ms(5), at(1));
        one.record_due(202, 1, ms(900), at(2));
        // A refusal is not an answer's latency.
        one.record_due(503, 1, ms(2000), at(3));
        one.record_due(202, 1, ms(7), at(4));
        assert_eq!(one.slowest, Some((ms(900), at(2))));
        let mut other = Run::default();
        other.record_due(202, 1, ms(950), at(9));
        one.merge(other);
        assert_eq!(one.slowest, Some((ms(950), at(9))));
        one.merge(Run::default());
        assert_eq!(one.slowest, Some((ms(950), at(9))));
    }

    #[test]
    fn open_loop_requests_are_due_evenly() {
        assert_eq!(due(0, 100.0), Duration::ZERO);
        assert_eq!(due(100, 100.0), Duration::from_secs(1));
        assert_eq!(due(5, 2.0), Duration::from_millis(2500));
    }

    #[test]
    fn the_saturation_point_is_the_fastest_level() {
        let levels = vec![(1, run(100, 1)), (4, run(400, 1)), (16, run(350, 1))];
        assert_eq!(saturation(&levels).unwrap().0, 4);
        assert!(saturation(&[]).is_none());
        // Equal rates: the fewer clients.
        let equal = vec![(2, run(100, 1)), (8, run(100, 1))];
        assert_eq!(saturation(&equal).unwrap().0, 2);
    }

    #[test]
    fn a_run_counts_answers_and_failures() {
        let mut r = Run::default();
        r.record(202, 100, Duration::from_millis(5));
        r.record(503, 100, Duration::from_millis(7));
        r.record(0, 100, Duration::from_secs(30));
        r.elapsed = Duration::from_secs(2);
        assert_eq!((r.ok, r.events, r.failed()), (1, 100, 2));
        // Only the stored request's latency counts.
        assert_eq!(r.latencies.len(), 1);
        assert_eq!(r.events_per_second(), 50.0);
        assert_eq!(r.ms(100.0), 5.0);
        assert!(Run::default().ms(50.0).is_nan());
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
    }
}

//! Single-event ingest on its own, with where the CPU went: the command
//! service, nats-server and this load generator, in CPU microseconds per
//! request. For finding the single-event path's costs; the benchmark
//! (`./dev bench`) gives the figures. Before the load, the same events are
//! published straight to JetStream (into a scratch stream of the same
//! definition, on the same nats-server) for the ingest's ratio to the raw
//! limit: here the command service is alone with nats-server, with no
//! projector or ClickHouse taking a share of the cores.
//!
//! ```text
//! ./dev bench-ingest [CLIENTS [SECONDS [batch|healthz]]]
//! ```
//!
//! `PROBE_TALLY_<SETTING>=value` sets a setting of the command service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tally_shared::event::{validate, Limits, Source, StoredEvent};
use tally_tests::bench::load::{Driver, Prepared};
use tally_tests::bench::procs::{binaries, cpu_time, ServiceProcess};
use tally_tests::bench::raw_publish_scratch;
use tally_tests::workload::{Spec, Workload};
use tally_tests::{config_for, NatsServer, TokenScope as Scope};
use time::OffsetDateTime;

/// Events published raw, at most (the first of the requests' events).
const RAW_EVENTS: usize = 500_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clients: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let batch = args.iter().any(|a| a == "batch");
    let healthz = args.iter().any(|a| a == "healthz");

    let nats = NatsServer::start();
    let config = config_for("ingest_probe", &nats);
    let logs = std::env::temp_dir().join("tally-ingest-probe");
    std::fs::create_dir_all(&logs)?;
    let bins = binaries();
    // PROBE_TALLY_X=v sets the command service's TALLY_X=v.
    let extra: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("PROBE_")?.to_owned(), v)))
        .collect();
    let command = ServiceProcess::start_with("tally-command", &bins, &config, &logs, &extra).await;
    let mut tokens: HashMap<String, Arc<str>> = HashMap::new();
    let mut workload = Workload::new(Spec::default());
    let now = OffsetDateTime::now_utc();
    let need = if batch { 150_000 } else { 40_000 } * seconds as usize;
    let mut requests = Vec::with_capacity(need);
    let mut pending: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    // The events the requests carry, as stored, for the raw publish.
    let mut stored: Vec<StoredEvent> = Vec::new();
    while requests.len() < if batch { need / 500 } else { need } {
        let g = workload.next().expect("an endless workload");
        let mut envelope = g.envelope;
        envelope["occurred_at"] = json!((now - time::Duration::seconds(g.age_seconds as i64))
            .format(&time::format_description::well_known::Rfc3339)?);
        let token: Arc<str> = tokens
            .entry(g.tenant.clone())
            .or_insert_with(|| {
                tally_shared::auth::mint_token(
                    &config.auth,
                    "probe",
                    &g.tenant,
                    &[Scope::EventsWrite],
                    3600,
                )
                .into()
            })
            .clone();
        if !healthz && stored.len() < RAW_EVENTS {
            let event = validate(&envelope, now, &Limits::default()).expect("a valid event");
            stored.push(StoredEvent::new(&g.tenant, Source::Api, event, now));
        }
        if healthz {
            requests.push(Prepared::get("/healthz", token));
        } else if batch {
            let items = pending.entry(g.tenant).or_default();
            items.push(envelope);
            if items.len() == 500 {
                let body = Bytes::from(serde_json::to_vec(&std::mem::take(items))?);
                requests.push(Prepared::json("/v1/events/batch", token, body, 500));
            }
        } else {
            let body = Bytes::from(serde_json::to_vec(&envelope)?);
            requests.push(Prepared::json("/v1/events", token, body, 1));
        }
    }
    let bytes: usize = requests
        .iter()
        .filter_map(|r| r.body.as_ref().map(|(_, b)| b.len()))
        .sum();
    println!(
        "{} requests, {:.0} body bytes each on average",
        requests.len(),
        bytes as f64 / requests.len().max(1) as f64
    );
    let raw = if stored.is_empty() {
        None
    } else {
        let took = raw_publish_scratch(&nats.url(), &stored).await?;
        let rate = stored.len() as f64 / took.as_secs_f64();
        println!(
            "raw JetStream publish of {} of these events: {rate:.0} events/s",
            stored.len()
        );
        Some(rate)
    };
    drop(stored);
    let driver = Driver::new(command.url.clone());
    // Warm up: connections, token cache.
    let warm = Arc::new(requests.split_off(requests.len() - 2_000.min(requests.len() / 10)));
    driver
        .closed_loop(warm, clients, Duration::from_secs(2))
        .await;

    let me = std::process::id();
    let pids = [
        ("command", command.pid()),
        ("nats-server", nats.pid().expect("a running server")),
        ("load", me),
    ];
    let before: Vec<Duration> = pids.iter().map(|(_, p)| cpu_time(*p)).collect();
    let run = driver
        .closed_loop(Arc::new(requests), clients, Duration::from_secs(seconds))
        .await;
    let after: Vec<Duration> = pids.iter().map(|(_, p)| cpu_time(*p)).collect();
    println!(
        "{clients} clients, {:.1} s: {:.0} req/s, {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, statuses {:?}",
        run.elapsed.as_secs_f64(),
        run.requests_per_second(),
        run.events_per_second(),
        run.ms(50.0),
        run.ms(99.0),
        run.statuses
    );
    if let Some(raw) = raw {
        println!("  {:.2}x the raw publish", run.events_per_second() / raw);
    }
    let requests = run.ok.max(1) as f64;
    for (((name, _), b), a) in pids.iter().zip(&before).zip(&after) {
        let used = (*a - *b).as_secs_f64();
        println!(
            "  {name:<12} {:>6.2} CPU s  {:>7.1} µs/request  {:>4.0}% of a core",
            used,
            used * 1e6 / requests,
            100.0 * used / run.elapsed.as_secs_f64()
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", command.url))
        .await?
        .text()
        .await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("tally_events_rejected_total"))
    {
        println!("  {line}");
    }
    println!(
        "  command peak resident {:.1} MiB",
        command.peak_resident_bytes().unwrap_or(0) as f64 / 1048576.0
    );
    command.stop();
    Ok(())
}

//! The measured phases.

use super::*;

/// Closed loops at each client count, then an open loop at half of the
/// best; (saturation row, half row). The saturation row notes the cores
/// each of `processes` used at that level.
pub async fn ingest(
    settle: &mut Settle,
    driver: &Driver,
    events: &mut Events,
    tokens: &Tokens,
    size: &Size,
    (batch, processes): (bool, &[(&str, u32)]),
) -> (Row, Row, f64) {
    let (clients, per_second_guess) = if batch {
        (size.batch_clients, 120_000.0)
    } else {
        (size.single_clients, 25_000.0)
    };
    let need = (per_second_guess * size.level.as_secs_f64()) as usize;
    let (mut levels, mut notes) = (Vec::new(), Vec::new());
    for &n in clients {
        let requests = Arc::new(events.requests(need, batch, tokens));
        settle.settle().await;
        let cpu = CpuMeter::start(processes);
        let storage = StorageMeter::start(&settle.env.live().url).await;
        let run = driver.closed_loop(requests, n, size.level).await;
        eprintln!(
            "  {} clients: {:.0} events/s, p99 {:.1} ms",
            n,
            run.events_per_second(),
            run.ms(99.0)
        );
        levels.push((n, run));
        notes.push((n, format!("{}; {}", cpu.note(), storage.note().await)));
    }
    let (n, best) = saturation(&levels).expect("at least one level").clone();
    let cpu = notes.iter().find(|(m, _)| *m == n).map(|(_, note)| note);
    let kind = if batch { "batch" } else { "single-event" };
    let at_saturation = Row::run(
        "ingest",
        &format!("{kind} ingest, saturation"),
        &best,
        "events",
    )
    .note(format!("{n} clients; {}", cpu.map_or("", String::as_str)));
    let rate = best.requests_per_second() / 2.0;
    let need = (rate * size.level.as_secs_f64() * 1.05) as usize + 1;
    let requests =
        Arc::new(events.requests(need * if batch { BATCH_EVENTS } else { 1 }, batch, tokens));
    settle.settle().await;
    let half = driver.open_loop(requests, rate, size.level, 4_096).await;
    let at_half = Row::open_run(
        "ingest",
        &format!("{kind} ingest, half of saturation"),
        &half,
        "events",
    )
    .note(format!("open loop at {rate:.0} req/s"));
    (at_saturation, at_half, best.events_per_second())
}

/// Accept-to-visible: a like on a fresh post, then its metrics polled
/// until they show it; under an open loop at `rate` events/s of batches
/// (`batch`) or of single events. Only probes accepted while the load was
/// still running count.
pub async fn accept_to_visible(
    command: &Driver,
    query: &Driver,
    events: &mut Events,
    tokens: &Tokens,
    size: &Size,
    (rate, batch, measure): (f64, bool, &str),
) -> Row {
    let span = Duration::from_millis(150 * size.probes as u64) + Duration::from_secs(5);
    let need = (rate * span.as_secs_f64() * 1.05) as usize;
    let load = Arc::new(events.requests(need, batch, tokens));
    let per_request = if batch { BATCH_EVENTS as f64 } else { 1.0 };
    let background = {
        let command = command.clone();
        tokio::spawn(async move {
            let run = command
                .open_loop(load, rate / per_request, span, 4_096)
                .await;
            (run, Instant::now())
        })
    };
    let writer = tokens.writer("bench-0");
    let reader = tokens.mint("bench-0", &[Scope::ReportsRead]);
    let mut probes = Vec::new();
    for i in 0..size.probes {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if background.is_finished() {
            break;
        }
        // Each measure its own probe posts: a like that repeated an
        // earlier probe's event id would be a duplicate, visible at once.
        let post = format!("probe-{}-{i}", if batch { "batch" } else { "single" });
        let body = json!({"event_id": post, "type": "like", "post_id": post,
                          "user_id": "prober", "occurred_at": now_rfc3339(0, OffsetDateTime::now_utc())});
        // A 503 (the API at capacity, or no PubAck in time) is retried
        // with the same event id after its Retry-After, as a client is
        // told to. Without a PubAck the like may have been stored all the
        // same: the retry is then answered `duplicate`, with the stored
        // like's sequence, and the probe's time counts from its first
        // send (it may have been visible before the 202).
        let (first_sent, first_wall) = (Instant::now(), std::time::SystemTime::now());
        let mut attempts = 0;
        let accepted = loop {
            let answer = command
                .http
                .post(format!("{}/v1/events", command.base))
                .bearer_auth(&*writer)
                .json(&body)
                .send()
                .await
                .expect("the probe's like");
            attempts += 1;
            if answer.status() != 503 || attempts == 20 {
                break answer;
            }
            let wait = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 5))).await;
        };
        assert_eq!(accepted.status(), 202, "probe {i} refused");
        let answer: Value = accepted.json().await.expect("the like's answer");
        let retried = attempts > 1;
        assert!(
            answer["status"] == "accepted" || (retried && answer["status"] == "duplicate"),
            "probe {i} not new: {answer}"
        );
        let seq = answer["seq"].as_u64().expect("the like's sequence");
        let (accepted, wall) = if retried {
            (first_sent, first_wall)
        } else {
            (Instant::now(), std::time::SystemTime::now())
        };
        let path = format!("/v1/posts/{post}/metrics");
        let mut projected = None;
        loop {
            let response = query
                .http
                .get(format!("{}{path}", query.base))
                .bearer_auth(&*reader)
                .send()
                .await;
            if let Ok(response) = response {
                let position = response
                    .headers()
                    .get("tally-position")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if projected.is_none() && position.is_some_and(|p| p >= seq) {
                    projected = Some(accepted.elapsed());
                }
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if body["likes"] == 1 {
                    let took = accepted.elapsed();
                    probes.push(Probe {
                        accepted,
                        wall,
                        seq,
                        projected: projected.unwrap_or(took),
                        visible: took,
                        retried,
                    });
                    break;
                }
            }
            assert!(
                accepted.elapsed() < Duration::from_secs(60),
                "probe {i} never visible"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (load, load_ended) = background.await.expect("the background load");
    probes.retain(|probe| probe.accepted < load_ended);
    let visible = Run {
        latencies: probes.iter().map(|probe| probe.visible).collect(),
        ..Run::default()
    };
    let projected: Vec<Duration> = probes.iter().map(|probe| probe.projected).collect();
    let kind = if batch { "batches" } else { "single events" };
    let slowest = probes
        .iter()
        .max_by_key(|probe| probe.visible)
        .map_or(String::new(), |probe| {
            format!(
                "; the slowest, sequence {}, accepted at {} UTC",
                probe.seq,
                tally_tests::bench::report::clock(probe.wall)
            )
        });
    Row::latency("end to end", measure, &visible).note(format!(
        "under {:.0} events/s of {kind}; {} of {} probes sent while it ran{}; \
         the query API's position reached the probe after p50 {:.0} ms, p99 {:.0} ms{slowest}",
        load.events_per_second(),
        visible.latencies.len(),
        size.probes,
        match probes.iter().filter(|probe| probe.retried).count() {
            0 => String::new(),
            n =>
                format!(" ({n} of them answered 503 first and retried, timed from the first send)"),
        },
        ms(&projected, 50.0),
        ms(&projected, 99.0),
    ))
}

/// One accept-to-visible probe: when its like was accepted, and how long
/// until the query API's position passed it and until its answer showed it.
struct Probe {
    accepted: Instant,
    /// When it was accepted, by the wall clock (for the servers' logs).
    wall: std::time::SystemTime,
    /// Its like's stream sequence.
    seq: u64,
    projected: Duration,
    visible: Duration,
    /// Its like was answered 503 before the 202: timed from its first send.
    retried: bool,
}

/// The `p`-th percentile of `samples` in milliseconds (0 without any).
fn ms(samples: &[Duration], p: f64) -> f64 {
    tally_tests::bench::percentile(samples, p).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The `i`-th path to ask an endpoint.
pub type PathOf = Box<dyn Fn(usize) -> String>;

/// Each endpoint: one path asked again and again (cache hits counted), and
/// distinct paths (ClickHouse-backed answers counted).
pub async fn queries(query: &Driver, reader: Arc<str>, size: &Size, posts: u64) -> Vec<Row> {
    let influencers = Spec::default().influencers;
    let endpoints: Vec<(&str, PathOf)> = vec![
        (
            "post metrics",
            Box::new(move |i| format!("/v1/posts/post-{}/metrics", i as u64 % posts)),
        ),
        (
            "influencer engagement (minute)",
            Box::new(move |i| {
                format!(
                    "/v1/influencers/inf-{}/engagement?granularity=minute",
                    i as u64 % influencers
                )
            }),
        ),
        (
            "influencer followers",
            Box::new(move |i| format!("/v1/influencers/inf-{}/followers", i as u64 % influencers)),
        ),
        (
            "campaign aggregates",
            Box::new(|i| {
                format!(
                    "/v1/campaigns/camp-{}/aggregates?period={}",
                    i % 20,
                    ["24h", "7d", "30d", "1h"][i / 20 % 4]
                )
            }),
        ),
        (
            "influencer rankings",
            Box::new(|i| {
                let metrics = [
                    "likes",
                    "views",
                    "comments",
                    "shares",
                    "engagements",
                    "engagement_rate",
                ];
                format!(
                    "/v1/influencers/rankings?metric={}&period={}&limit={}",
                    metrics[i % 6],
                    ["24h", "7d", "30d"][i % 3],
                    10 + i
                )
            }),
        ),
        (
            "trends (post, 1m windows)",
            Box::new(move |i| {
                format!(
                    "/v1/trends?entity=post:post-{}&metric=likes&window=1m&step=10s",
                    i as u64 % posts
                )
            }),
        ),
        (
            "late events",
            Box::new(|i| format!("/v1/late-events?limit={}", 10 + i)),
        ),
        (
            "anomalies",
            Box::new(move |i| {
                format!("/v1/anomalies?influencer_id=inf-{}", i as u64 % influencers)
            }),
        ),
    ];
    let mut rows = Vec::new();
    // The same client and server stack answering with no work, asked after
    // each hit: what the machine allows a hit at the same moments.
    let mut baseline = Run::default();
    for (name, path) in endpoints {
        let (mut hits, mut misses) = (Run::default(), Run::default());
        let mut idle = Run::default();
        let mut statuses = HashMap::new();
        for round in 0..size.hits {
            let (took, status, hit) = timed(query, &reader, &path(0)).await;
            *statuses.entry(status).or_insert(0) += 1;
            if hit {
                hits.latencies.push(took);
                let (took, status, _) = timed(query, &reader, "/healthz").await;
                if status == 200 {
                    idle.latencies.push(took);
                }
            }
            if round % 50 == 49 {
                tokio::task::yield_now().await;
            }
        }
        for i in 1..=size.misses {
            let (took, status, hit) = timed(query, &reader, &path(i)).await;
            *statuses.entry(status).or_insert(0) += 1;
            if !hit && status == 200 {
                misses.latencies.push(took);
            }
        }
        let mut hit_row = Row::latency("query", &format!("{name}: cache hit"), &hits);
        if !idle.latencies.is_empty() {
            hit_row = hit_row.note(format!(
                "no work between them: p99 {:.2} ms",
                ms(&idle.latencies, 99.0)
            ));
        }
        baseline.latencies.append(&mut idle.latencies);
        let miss_row = Row::latency("query", &format!("{name}: ClickHouse"), &misses);
        if statuses.keys().any(|s| *s != 200 && *s != 404) {
            hit_row = hit_row.note(format!("statuses {statuses:?}"));
        }
        rows.extend([hit_row, miss_row]);
    }
    rows.insert(
        0,
        Row::latency("query", QUERY_BASELINE, &baseline).note(
            "the query API's /healthz, one client, asked after each cache hit of every endpoint",
        ),
    );
    rows
}

/// The query API answering with no work, between the cache hits.
pub const QUERY_BASELINE: &str = "no work (/healthz) between the hits";

pub async fn timed(query: &Driver, token: &str, path: &str) -> (Duration, u16, bool) {
    tally_tests::bench::timed_get(&query.http, &format!("{}{path}", query.base), token).await
}

/// Tally's like endpoints on `ops`: each user's operations in order on one
/// client; then the counts checked against the query API.
pub async fn likes(
    settle: &mut Settle,
    command: &Driver,
    query: &Driver,
    ops: &[LikeOp],
    size: &Size,
    tokens: &Tokens,
) -> (Row, u64) {
    let writer = tokens.mint("bench-likes", &[Scope::EventsWrite]);
    let mut queues: Vec<Vec<Prepared>> = vec![Vec::new(); size.like_clients];
    for op in ops {
        let method = if op.like { Method::PUT } else { Method::DELETE };
        queues[client_of(&op.user, size.like_clients)].push(Prepared {
            method,
            path: format!("/v1/posts/{}/likes/{}", op.post, op.user),
            token: writer.clone(),
            body: None,
            events: 1,
        });
    }
    let run = command.partitioned(queues).await;
    // Every count as expected, once projected (read-your-writes by waiting).
    let reader = tokens.mint("bench-likes", &[Scope::ReportsRead]);
    let expected = expected_likes(ops);
    // Once projected, every post's likes must be exactly the pairs left liked.
    settle.settle().await;
    let checks = expected.iter().map(|(post, count)| {
        let (http, url, reader) = (
            query.http.clone(),
            format!("{}/v1/posts/{post}/metrics", query.base),
            reader.clone(),
        );
        async move {
            let seen: Value = match http.get(url).bearer_auth(&*reader).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            seen["likes"].as_i64().unwrap_or(0) != *count
        }
    });
    let mismatches = futures::stream::iter(checks)
        .buffer_unordered(16)
        .filter(|wrong| std::future::ready(*wrong))
        .count()
        .await as u64;
    let row = Row::run(
        "like button",
        "Tally like endpoints (PUT/DELETE)",
        &run,
        "ops",
    )
    .note(format!(
        "{} clients, {mismatches} of {} posts' counts wrong",
        size.like_clients,
        expected.len()
    ));
    (row, mismatches)
}

/// The peers on the same operations, from `bench/peers`.
pub fn peers(ops: &[LikeOp], size: &Size, out: &Path) -> anyhow::Result<Vec<Row>> {
    let file = out.join("like-ops.ndjson");
    let lines: Vec<String> = ops.iter().map(|op| op.to_json().to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n")?;
    let binary =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peers/target/release/tally-peers");
    let output = std::process::Command::new(&binary)
        .arg("--ops")
        .arg(&file)
        .args(["--concurrency", &size.like_clients.to_string()])
        .stderr(std::fs::File::create(out.join("logs/peers.log"))?)
        .output()
        .with_context(|| format!("running {} (build it: cargo build --release --manifest-path bench/peers/Cargo.toml)", binary.display()))?;
    let answer: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the peers' answer ({}); see logs/peers.log", output.status))?;
    let mut rows = Vec::new();
    for (key, name) in [
        ("redis", "Redis INCR counter per post"),
        ("cqrs_es", "cqrs-es + postgres-es aggregate per post"),
    ] {
        let peer = &answer[key];
        let mut row = Row::rate(
            "like button",
            name,
            peer["ops_per_second"].as_f64().unwrap_or(0.0),
            "ops",
            peer["ops"].as_u64().unwrap_or(0),
        );
        row.p50_ms = peer["p50_ms"].as_f64();
        row.p99_ms = peer["p99_ms"].as_f64();
        row.p999_ms = peer["p999_ms"].as_f64();
        row.note = Some(format!(
            "{} retries, {} mismatches, {} errors",
            peer["retries"], peer["mismatches"], peer["errors"]
        ));
        rows.push(row);
    }
    Ok(rows)
}

/// The projector's other limit: the backlog of `n` events fetched in the
/// projector's batches through a consumer like its own and acked as it
/// acks (one by one, or once per batch when `projector.exclusive`), with no
/// work between.
pub async fn raw_consume_ack(config: &tally_shared::Config, n: u64) -> anyhow::Result<Row> {
    let client = async_nats::connect(&config.nats.url).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TALLY_EVENTS").await?;
    let consumer = stream
        .create_consumer(tally_shared::nats::projector_consumer_config(
            "bench-raw",
            config.projector.exclusive,
        ))
        .await?;
    // As the projector process runs: its default batches and wait.
    let settings = tally_shared::Config::defaults().projector;
    let wait = Duration::from_millis(settings.fetch_wait_ms);
    let started = Instant::now();
    // Done once the stream's sequence `n` is reached. Counting messages
    // instead hung one run here; the likely cause (not confirmed): a
    // message that came after its pull request was given up is covered by
    // the next batch's cumulative ack and never delivered again.
    let (mut reached, mut last_progress) = (0u64, Instant::now());
    while reached < n {
        anyhow::ensure!(
            last_progress.elapsed() < Duration::from_secs(60),
            "raw consume: no message for 60 s at stream sequence {reached} of {n}"
        );
        let mut batch = Vec::with_capacity(settings.batch_size);
        let collect = async {
            let mut messages = consumer
                .fetch()
                .max_messages(settings.batch_size)
                .max_bytes(settings.batch_bytes)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            while let Some(Ok(message)) = messages.next().await {
                batch.push(message);
            }
            Ok::<(), anyhow::Error>(())
        };
        // nats-server 2.9 ends a partly served pull request silently; stop
        // waiting shortly after its expiry, as the projector does.
        if let Ok(result) = tokio::time::timeout(wait + Duration::from_millis(50), collect).await {
            result?;
        }
        let acked = match config.projector.exclusive {
            true => &batch[batch.len().saturating_sub(1)..],
            false => &batch[..],
        };
        for message in acked {
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if let Some(info) = batch.last().and_then(|m| m.info().ok()) {
            reached = reached.max(info.stream_sequence);
            last_progress = Instant::now();
        }
    }
    let rate = reached as f64 / started.elapsed().as_secs_f64();
    stream.delete_consumer("bench-raw").await?;
    Ok(Row::rate(
        "raw limits",
        if config.projector.exclusive {
            "raw JetStream consume + ack per batch (the projector's batches)"
        } else {
            "raw JetStream consume + ack (the projector's batches)"
        },
        rate,
        "events",
        reached,
    ))
}

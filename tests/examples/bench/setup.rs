//! What the phases share: the workload as requests, tokens, waiting for
//! the projection, the machine.

use super::*;

pub fn now_rfc3339(age_seconds: u64, now: OffsetDateTime) -> String {
    (now - time::Duration::seconds(age_seconds as i64))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The workload, stamped with times: (tenant, envelope).
pub struct Events {
    pub workload: Workload,
}

impl Events {
    pub fn next(&mut self, now: OffsetDateTime) -> (String, Value) {
        let g = self.workload.next().expect("an endless workload");
        let mut envelope = g.envelope;
        envelope["occurred_at"] = json!(now_rfc3339(g.age_seconds, now));
        (g.tenant, envelope)
    }

    /// As the command API would store them.
    pub fn stored(&mut self, n: usize) -> Vec<StoredEvent> {
        let now = OffsetDateTime::now_utc();
        (0..n)
            .map(|_| {
                let (tenant, envelope) = self.next(now);
                let event = validate(&envelope, now, &Limits::default()).expect("a valid event");
                StoredEvent::new(&tenant, Source::Api, event, now)
            })
            .collect()
    }

    /// Requests carrying about `events` events: batches of
    /// [`BATCH_EVENTS`] of one tenant each, or single events.
    pub fn requests(&mut self, events: usize, batch: bool, tokens: &Tokens) -> Vec<Prepared> {
        let now = OffsetDateTime::now_utc();
        if !batch {
            return (0..events)
                .map(|_| {
                    let (tenant, envelope) = self.next(now);
                    let body = Bytes::from(serde_json::to_vec(&envelope).unwrap());
                    Prepared::json("/v1/events", tokens.writer(&tenant), body, 1)
                })
                .collect();
        }
        let mut open: HashMap<String, Vec<Value>> = HashMap::new();
        let mut requests = Vec::new();
        for _ in 0..events {
            let (tenant, envelope) = self.next(now);
            let items = open.entry(tenant.clone()).or_default();
            items.push(envelope);
            if items.len() == BATCH_EVENTS {
                let body = Bytes::from(serde_json::to_vec(&std::mem::take(items)).unwrap());
                let token = tokens.writer(&tenant);
                requests.push(Prepared::json(
                    "/v1/events/batch",
                    token,
                    body,
                    BATCH_EVENTS as u64,
                ));
            }
        }
        requests
    }
}

/// The servers' processes (nats-server, clickhouse-server) and `others`,
/// named, for a [`CpuMeter`].
pub fn servers<'a>(nats: &NatsServer, others: &[(&'a str, u32)]) -> Vec<(&'a str, u32)> {
    let mut processes: Vec<(&str, u32)> = [
        ("nats-server", nats.pid()),
        ("clickhouse-server", tally_tests::clickhouse().pid()),
    ]
    .into_iter()
    .filter_map(|(name, pid)| Some((name, pid?)))
    .collect();
    processes.extend_from_slice(others);
    processes
}

/// Tokens per tenant.
pub struct Tokens {
    pub config: tally_shared::Config,
    pub writers: HashMap<String, Arc<str>>,
}

impl Tokens {
    pub fn writer(&self, tenant: &str) -> Arc<str> {
        self.writers.get(tenant).cloned().expect("a known tenant")
    }

    pub fn mint(&self, tenant: &str, scopes: &[Scope]) -> Arc<str> {
        tally_shared::auth::mint_token(&self.config.auth, "bench", tenant, scopes, 24 * 3600).into()
    }
}

/// Waits until every read model reflects the stream up to `last`.
pub async fn projected(models: &Models, last: u64) -> (Instant, u64) {
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let positions = models.positions().await.unwrap_or_default();
        let at = positions.iter().map(|p| p.position).min().unwrap_or(0);
        if positions.is_empty() || at == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        first.get_or_insert((Instant::now(), at));
        if at >= last {
            return first.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the projection has caught up with everything stored, so
/// that each phase starts from a quiet system (not competing with the
/// last phase's backlog on the same cores).
pub struct Settle {
    pub env: Env,
    pub models: Models,
}

/// How long a settle waits at most for the rollups the last phase made due.
const ROLLED_WITHIN: Duration = Duration::from_secs(60);

impl Settle {
    pub async fn settle(&mut self) -> u64 {
        self.settle_rolled(false).await
    }

    /// [`Settle::settle`], and then the roll the projector makes once the
    /// stream has been quiet for a few seconds (up to the position, and any
    /// base that completes): for a phase that ingests nothing, which would
    /// otherwise see that roll happen while it measures.
    pub async fn settle_quiet(&mut self) -> u64 {
        self.settle_rolled(true).await
    }

    async fn settle_rolled(&mut self, quiet: bool) -> u64 {
        let started = Instant::now();
        let last = self
            .env
            .stream_last()
            .await
            .expect("the stream's last sequence");
        projected(&self.models, last).await;
        self.rolled(last, quiet).await;
        self.merged().await;
        if started.elapsed() > Duration::from_secs(1) {
            eprintln!("  (settled in {:.1} s)", started.elapsed().as_secs_f64());
        }
        last
    }

    /// Waits (up to [`ROLLED_WITHIN`]) until the projector has rolled every
    /// range and base that the position `last` makes due (ADR 0006), up to
    /// `last` itself if `quiet`: a base left over from the last phase
    /// rewrites every cell of the history, and would take the cores from
    /// the next phase. The projector rolls with the same range size: the
    /// benchmark passes it this configuration's.
    async fn rolled(&self, last: u64, quiet: bool) {
        let range = self.env.config.projector.rollup_range;
        if range == 0 {
            return;
        }
        let roller = Roller::connect(self.env.live());
        let started = Instant::now();
        let mut failure = None;
        while started.elapsed() < ROLLED_WITHIN {
            match roller.done().await {
                Ok(done) if rollups::next(&done, last, range, quiet).is_none() => return,
                Ok(_) => {}
                Err(e) => failure = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "  (rollups still due after {ROLLED_WITHIN:?}; measuring anyway{})",
            failure.map_or(String::new(), |e| format!("; last error: {e}"))
        );
    }

    /// Waits (up to 20 s) until ClickHouse has no merge running, so
    /// that background merges of the last phase's inserts do not take the
    /// cores from the next phase.
    async fn merged(&self) {
        tally_tests::bench::merges_done(&self.env.live().url, Duration::from_secs(20)).await;
    }
}

/// The machine, for the report.
pub async fn machine(clickhouse: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = memory
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    format!(
        "{model}, {cores} cores, {:.0} GiB; nats-server {}, ClickHouse {}; client, servers and services on the same cores",
        total as f64 / 1024.0 / 1024.0,
        version("nats-server", "--version").trim_start_matches("nats-server: "),
        clickhouse_version(clickhouse).await,
    )
}

async fn clickhouse_version(url: &str) -> String {
    let answer = reqwest::Client::new()
        .get(format!("{url}/?query=SELECT%20version()"))
        .send()
        .await;
    match answer {
        Ok(r) => r.text().await.unwrap_or_default().trim().to_owned(),
        Err(_) => "?".to_owned(),
    }
}

/// Files created for each measure of [`disk::create_cost`].
const PROBE_FILES: usize = 1_000;

/// Above this, a file create is the slow kind ([`disk`]'s notes).
const SLOW_CREATE: Duration = Duration::from_micros(100);

/// The servers' data directory and what a file create cost there at the
/// start of the run; [`Disk::finish`] measures it again at the end.
pub struct Disk {
    dir: PathBuf,
    fs: String,
    at_start: Option<Duration>,
    /// The start's files, kept to the end of the run (see
    /// [`disk::create_cost`]).
    _kept: Option<tempfile::TempDir>,
}

impl Disk {
    pub fn probe() -> Disk {
        let (dir, fs) = disk::data_dir();
        let (at_start, kept) = disk::create_cost(&dir, PROBE_FILES).ok().unzip();
        if let Some(cost) = at_start.filter(|c| *c > SLOW_CREATE) {
            eprintln!(
                "  (creating a file in {} ({fs}) takes {} µs: ClickHouse, which creates thousands a second, will spend its CPU in the kernel; TMPDIR=<a directory elsewhere> ./dev bench … moves the servers' data)",
                dir.display(),
                cost.as_micros()
            );
        }
        Disk {
            dir,
            fs,
            at_start,
            _kept: kept,
        }
    }

    /// For the report: where the data was, and the cost of a file create
    /// there at the start and at the end of the run.
    pub fn finish(&self) -> String {
        let at_end = disk::create_cost(&self.dir, PROBE_FILES)
            .ok()
            .map(|(cost, _)| cost);
        let micros = |c: Option<Duration>| c.map_or("?".to_owned(), |c| c.as_micros().to_string());
        format!(
            "servers' data in {} ({}): a file create {} µs at the start, {} µs at the end",
            self.dir.display(),
            self.fs,
            micros(self.at_start),
            micros(at_end)
        )
    }
}

//! The services as processes of their own (the release binaries, as they
//! run in production), so that each one's memory can be read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_shared::Config;

/// A running service binary.
pub struct ServiceProcess {
    pub name: &'static str,
    pub url: String,
    child: Child,
}

/// The folder of the binaries built with the running one: an example of
/// `target/release/examples/` runs beside `target/release/tally-*`.
pub fn binaries() -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary's path");
    let dir = exe.parent().expect("a folder");
    if dir.ends_with("examples") {
        dir.parent().expect("the profile folder").to_owned()
    } else {
        dir.to_owned()
    }
}

/// The `TALLY_*` environment for a service of `config` listening on
/// `listen`: limits off, quiet logs, what a benchmark needs.
pub fn environment(config: &Config, name: &str, listen: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("TALLY_NATS__URL", config.nats.url.clone()),
        ("TALLY_CLICKHOUSE__URL", config.clickhouse.url.clone()),
        (
            "TALLY_CLICKHOUSE__DATABASE",
            config.clickhouse.database.clone(),
        ),
        ("TALLY_CLICKHOUSE__TIMEOUT_MS", "120000".to_owned()),
        (
            "TALLY_AUTH__HS256_SECRET",
            tally_shared::config::DEVELOPMENT_HS256_SECRET.to_owned(),
        ),
        ("TALLY_RATE_LIMIT__ENABLED", "false".to_owned()),
        ("TALLY_QUERY__RATE_LIMIT__ENABLED", "false".to_owned()),
        // The services' log filter: errors only, unless TALLY_BENCH_LOG
        // asks for more (e.g. `error,tally_projector=debug` dates every
        // batch the projector fetches and writes, in its log).
        (
            "TALLY_LOG__FILTER",
            std::env::var("TALLY_BENCH_LOG").unwrap_or_else(|_| "error".to_owned()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // How the projector fetches and acks: the configuration's, as the
    // benchmark's raw consume measures it; and the rollup range, by which
    // the benchmark waits for the rollups.
    let projector = &config.projector;
    env.extend(
        [
            ("EXCLUSIVE", projector.exclusive.to_string()),
            ("FETCH_WAIT_MS", projector.fetch_wait_ms.to_string()),
            ("LINGER_MS", projector.linger_ms.to_string()),
            ("BATCH_SIZE", projector.batch_size.to_string()),
            ("BATCH_BYTES", projector.batch_bytes.to_string()),
            ("ROLLUP_RANGE", projector.rollup_range.to_string()),
            (
                "ROLLUP_INTERVAL_MS",
                projector.rollup_interval_ms.to_string(),
            ),
        ]
        .map(|(k, v)| (format!("TALLY_PROJECTOR__{k}"), v)),
    );
    for service in ["command", "query", "projector"] {
        let address = if name == format!("tally-{service}") {
            listen
        } else {
            "127.0.0.1:0"
        };
        env.push((
            format!("TALLY_{}__LISTEN", service.to_uppercase()),
            address.to_owned(),
        ));
    }
    env
}

impl ServiceProcess {
    /// Starts `name` (`tally-command`, `tally-query`, `tally-projector`)
    /// from `binaries` on a free port, its output in `logs/<name>.log`,
    /// and waits until it is ready.
    pub async fn start(
        name: &'static str,
        binaries: &Path,
        config: &Config,
        logs: &Path,
    ) -> ServiceProcess {
        Self::start_with(name, binaries, config, logs, &[]).await
    }

    /// [`ServiceProcess::start`], with `extra` settings (`TALLY_*`
    /// variables) over the benchmark's.
    pub async fn start_with(
        name: &'static str,
        binaries: &Path,
        config: &Config,
        logs: &Path,
        extra: &[(String, String)],
    ) -> ServiceProcess {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).expect("a log file");
        let mut command = Command::new(binaries.join(name));
        for (key, _) in std::env::vars() {
            if key.starts_with("TALLY_") {
                command.env_remove(key);
            }
        }
        command
            .envs(environment(config, name, &listen))
            .envs(extra.iter().cloned())
            .stdout(Stdio::from(log.try_clone().expect("the log file")))
            .stderr(Stdio::from(log));
        // Killed with the benchmark, as its servers are (PDEATHSIG).
        let child = crate::servers::spawn(command).unwrap_or_else(|e| {
            panic!(
                "starting {}: {e} (build it first: cargo build --release --bins)",
                binaries.join(name).display()
            )
        });
        let mut service = ServiceProcess {
            name,
            url: format!("http://{listen}"),
            child,
        };
        service.wait_ready().await;
        service
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before it was ready", self.name);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} not ready after 60 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The most memory the process has held resident (`VmHWM`), in bytes.
    pub fn peak_resident_bytes(&self) -> Option<u64> {
        peak_resident_bytes(self.pid())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 20 s).
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `VmHWM` of `pid` from `/proc`, in bytes.
pub fn peak_resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:  1234 kB` line of a `/proc/<pid>/status`, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// User + system CPU time `pid` has used so far, from `/proc/<pid>/stat`
/// (zero once the process is gone).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(parse_cpu_ticks(&stat).unwrap_or(0) * 10)
}

/// utime + stime, in clock ticks, of a `/proc/<pid>/stat` line.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The fields after the command name, which may hold spaces and parens.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU a set of processes uses over a stretch of time, in cores (1.0:
/// one core busy all along): which process a phase's limit is.
pub struct CpuMeter {
    processes: Vec<(String, u32, Duration)>,
    started: Instant,
}

impl CpuMeter {
    /// Starts measuring the named processes.
    pub fn start(processes: &[(&str, u32)]) -> CpuMeter {
        CpuMeter {
            processes: processes
                .iter()
                .map(|&(name, pid)| (name.to_owned(), pid, cpu_time(pid)))
                .collect(),
            started: Instant::now(),
        }
    }

    /// Each process's cores since the start, busiest first.
    pub fn cores(&self) -> Vec<(String, f64)> {
        let secs = self.started.elapsed().as_secs_f64();
        let mut cores: Vec<(String, f64)> = self
            .processes
            .iter()
            .map(|(name, pid, before)| {
                let used = cpu_time(*pid).saturating_sub(*before).as_secs_f64();
                (name.clone(), if secs > 0.0 { used / secs } else { 0.0 })
            })
            .collect();
        cores.sort_by(|a, b| b.1.total_cmp(&a.1));
        cores
    }

    /// Microseconds of CPU per event that the `named` processes used
    /// together since the start, for `events` events, and each one's share
    /// (in the order named).
    pub fn per_event(&self, named: &[&str], events: u64) -> (f64, Vec<(String, f64)>) {
        let each: Vec<(String, f64)> = named
            .iter()
            .filter_map(|name| {
                let (_, pid, before) = self.processes.iter().find(|(n, ..)| n == name)?;
                let used = cpu_time(*pid).saturating_sub(*before);
                Some(((*name).to_owned(), micros_per_event(used, events)))
            })
            .collect();
        (each.iter().map(|(_, us)| us).sum(), each)
    }

    /// [`CpuMeter::cores`] as a note: "CPU (cores): nats-server 0.85, …".
    pub fn note(&self) -> String {
        let each: Vec<String> = self
            .cores()
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        format!("CPU (cores): {}", each.join(", "))
    }
}

/// Waits, up to `limit`, until each of `processes` uses at most 5% of a
/// core over half a second: a raw limit measured then has the cores to
/// itself, not shared with the last phase's leftovers (the command
/// service's catalogue follower copies a backlog's new posts for seconds
/// after a million publishes). How long it waited, whether they went
/// quiet, and each one's cores in the first half second.
pub async fn quiet(
    processes: &[(&str, u32)],
    limit: Duration,
) -> (Duration, bool, Vec<(String, f64)>) {
    const WINDOW: Duration = Duration::from_millis(500);
    let started = Instant::now();
    let mut first = None;
    loop {
        let meter = CpuMeter::start(processes);
        tokio::time::sleep(WINDOW).await;
        let cores = meter.cores();
        let quiet = cores.iter().all(|(_, c)| *c <= 0.05);
        let first = first.get_or_insert(cores);
        if quiet || started.elapsed() >= limit {
            return (started.elapsed(), quiet, std::mem::take(first));
        }
    }
}

/// `used` CPU time spread over `events`, in microseconds each (0 for none).
pub fn micros_per_event(used: Duration, events: u64) -> f64 {
    if events == 0 {
        return 0.0;
    }
    used.as_secs_f64() * 1e6 / events as f64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_spread_over_the_events() {
        assert_eq!(micros_per_event(Duration::from_secs(3), 1_000_000), 3.0);
        assert_eq!(micros_per_event(Duration::from_millis(5), 2_000), 2.5);
        assert_eq!(micros_per_event(Duration::from_secs(1), 0), 0.0);
    }

    #[test]
    fn peak_resident_memory_is_read_from_proc_status() {
        let status =
            "Name:\ttally-query\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51200 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        // This process has a peak of its own.
        assert!(peak_resident_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn a_service_fetches_and_acks_as_its_configuration_says() {
        let mut config = Config::defaults();
        config.projector.exclusive = true;
        config.projector.fetch_wait_ms = 250;
        config.projector.linger_ms = 42;
        config.projector.batch_size = 1234;
        config.projector.batch_bytes = 5678;
        let env = environment(&config, "tally-projector", "127.0.0.1:1");
        let value = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{key} is not passed"))
        };
        assert_eq!(value("TALLY_PROJECTOR__EXCLUSIVE"), "true");
        assert_eq!(value("TALLY_PROJECTOR__FETCH_WAIT_MS"), "250");
        assert_eq!(value("TALLY_PROJECTOR__LINGER_MS"), "42");
        assert_eq!(value("TALLY_PROJECTOR__BATCH_SIZE"), "1234");
        assert_eq!(value("TALLY_PROJECTOR__BATCH_BYTES"), "5678");
        assert_eq!(value("TALLY_PROJECTOR__LISTEN"), "127.0.0.1:1");
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        // A command name with a space and a parenthesis; utime 250, stime 50.
        let stat = "4242 (tally (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_cpu_ticks(""), None);
        // A meter over this process sees the CPU it spends meanwhile.
        let me = std::process::id();
        let meter = CpuMeter::start(&[("me", me)]);
        let until = cpu_time(me) + Duration::from_millis(50);
        let mut x = 0u64;
        while cpu_time(me) < until {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let cores = meter.cores();
        assert_eq!(cores.len(), 1);
        assert!(cores[0].1 > 0.0, "{cores:?}");
        assert!(meter.note().starts_with("CPU (cores): me "));
    }

    #[test]
    fn each_service_listens_where_it_is_told() {
        let config = Config::development();
        let env = environment(&config, "tally-query", "127.0.0.1:9999");
        let listen = |key: &str| {
            let found: Vec<&str> = env
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect();
            found
        };
        assert_eq!(listen("TALLY_QUERY__LISTEN"), ["127.0.0.1:9999"]);
        assert_eq!(listen("TALLY_COMMAND__LISTEN"), ["127.0.0.1:0"]);
    }
}

//! Real server processes for tests.
//!
//! Every child is spawned by one long-lived thread with `PR_SET_PDEATHSIG`,
//! so when the test process exits (even killed) its servers die with it;
//! `NatsServer` also kills its process on drop.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// Finds a server binary: `$env_var`, then `PATH`, then `/usr/sbin`, `/usr/bin`.
fn find_binary(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/sbin"),
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/local/bin"),
        ])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn require_binary(name: &str, env_var: &str) -> PathBuf {
    find_binary(name, env_var).unwrap_or_else(|| {
        panic!(
            "{name} is not installed (looked in ${env_var}, PATH, /usr/sbin, /usr/bin). \
             Run `./dev test`, which installs it, or `apt-get install {name}`."
        )
    })
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` from the harness's long-lived spawner thread; the
/// child is killed when this process dies.
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("server-spawner".into())
            .spawn(move || {
                // Lives as long as the process: PDEATHSIG fires when the
                // spawning *thread* exits, so it must never exit early.
                for (mut command, reply) in rx {
                    die_with_parent(&mut command);
                    let _ = reply.send(command.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, reply))
        .expect("the spawner thread is alive");
    answer.recv().expect("the spawner thread answers")
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits until `port` accepts TCP connections.
fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited with {status} before listening on {port}:\n{log}");
        }
        if Instant::now() > deadline {
            panic!("{what} did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `nats-server -js` of the test's own. Killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// A configuration file to start with (cluster nodes), else flags.
    config: Option<PathBuf>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("tally-nats-")
            .tempdir()
            .expect("creating a temp dir");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir,
            config: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let binary = require_binary("nats-server", "TALLY_NATS_SERVER");
        let log = self.dir.path().join("nats.log");
        let mut command = Command::new(binary);
        match &self.config {
            Some(config) => {
                command.arg("-c").arg(config);
            }
            None => {
                command
                    .args([
                        "-a",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-js",
                        "-sd",
                    ])
                    .arg(self.dir.path().join("store"));
            }
        }
        // For profiling: nats-server serves Go's pprof endpoints on this
        // port (`/debug/pprof/profile?seconds=N`).
        if let Ok(port) = std::env::var("TALLY_NATS_PROFILE_PORT") {
            command.arg("--profile").arg(port);
        }
        command
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn(command).expect("starting nats-server");
        wait_for_port(self.port, &mut child, "nats-server", &log);
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (its store stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

/// Three (or more) `nats-server`s clustered on loopback, JetStream on each,
/// configured from `nats/cluster-node.conf`. Killed on drop.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let template = include_str!("../../nats/cluster-node.conf");
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsServer> = (0..size)
            .map(|i| {
                let dir = tempfile::Builder::new()
                    .prefix("tally-nats-cluster-")
                    .tempdir()
                    .expect("creating a temp dir");
                let port = free_port();
                let routes: Vec<String> = route_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
                    .collect();
                let config = template
                    .replace("@NAME@", &format!("n{i}"))
                    .replace("@HOST@", "127.0.0.1")
                    .replace("@CLIENT_PORT@", &port.to_string())
                    .replace("@CLUSTER_PORT@", &route_ports[i].to_string())
                    .replace("@ROUTES@", &routes.join(", "))
                    .replace("@STORE@", &dir.path().join("store").display().to_string());
                let path = dir.path().join("nats.conf");
                std::fs::write(&path, config).expect("writing a node's configuration");
                NatsServer {
                    child: None,
                    port,
                    dir,
                    config: Some(path),
                }
            })
            .collect();
        for node in &mut nodes {
            node.launch();
        }
        NatsCluster { nodes }
    }

    /// Every node's client URL, comma-separated (as `nats.url` takes it).
    pub fn url(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A service running in a child process of its own: this test binary,
/// re-executed to run one `#[ignore]`d entry test (which reads its
/// configuration from `TALLY_*` variables). SIGKILL is then a real crash.
pub struct WorkerProcess {
    entry: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts `entry` (a test name such as `faults::projector_process`) with
    /// `env` added to a clean `TALLY_*` environment.
    pub fn start(entry: &str, env: &[(String, String)], log: PathBuf) -> WorkerProcess {
        let mut worker = WorkerProcess {
            entry: entry.to_owned(),
            env: env.to_vec(),
            child: None,
            log,
        };
        worker.launch();
        worker
    }

    fn launch(&mut self) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the worker log");
        let mut command = Command::new(exe);
        command
            .args([
                self.entry.as_str(),
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (key, _) in std::env::vars() {
            if key.starts_with("TALLY_") {
                command.env_remove(key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(spawn(command).expect("starting a worker process"));
    }

    /// SIGKILL, at whatever instant the worker is in.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGTERM (through `kill`, as an orchestrator sends it), then waits up
    /// to `limit` for the process to exit; its exit status, `None` if it
    /// was still running (it is then killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether the process still runs (it must not have died on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `clickhouse-server` with a generated configuration (free ports, data
/// under the temp dir). Killed when the test process exits.
pub struct ClickHouseServer {
    http_port: u16,
    tcp_port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl ClickHouseServer {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's process id (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// A server of its own (for a test that stops it), in a fresh dir.
    pub fn start_dedicated(name: &str) -> ClickHouseServer {
        let dir = clickhouse_root().join(format!("{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ClickHouseServer::start_in(dir)
    }

    fn start_in(dir: PathBuf) -> ClickHouseServer {
        std::fs::create_dir_all(&dir).expect("creating the ClickHouse dir");
        let server = ClickHouseServer {
            http_port: free_port(),
            tcp_port: free_port(),
            dir,
            child: Mutex::new(None),
        };
        let config = server.dir.join("config.xml");
        std::fs::write(
            &config,
            config_xml(&server.dir, server.http_port, server.tcp_port),
        )
        .unwrap();
        std::fs::write(server.dir.join("users.xml"), USERS_XML).unwrap();
        server.launch();
        server
    }

    fn launch(&self) {
        let (binary, server_arg) = match find_binary("clickhouse-server", "TALLY_CLICKHOUSE_SERVER")
        {
            Some(binary) => (binary, None),
            None => (
                require_binary("clickhouse", "TALLY_CLICKHOUSE"),
                Some("server"),
            ),
        };
        let mut command = Command::new(binary);
        if let Some(arg) = server_arg {
            command.arg(arg);
        }
        command
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn(command).expect("starting clickhouse-server");
        wait_for_port(
            self.http_port,
            &mut child,
            "clickhouse-server",
            &self.dir.join("err.log"),
        );
        *self.child.lock().unwrap() = Some(child);
    }

    /// Kills the server (SIGKILL); its data stays.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and deletes its data, its logs first copied into
    /// `keep_logs` (as `clickhouse-server.log`, `clickhouse-err.log`): for
    /// the very end of a process that leaves much data (a full benchmark's
    /// millions of rows take the next run tens of seconds to delete as
    /// stale). Never for a server that others still use: it is not started
    /// again.
    pub fn stop_and_remove(&self, keep_logs: Option<&Path>) {
        self.kill();
        if let Some(into) = keep_logs {
            for log in ["server.log", "err.log"] {
                let _ = std::fs::copy(self.dir.join(log), into.join(format!("clickhouse-{log}")));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Starts a killed server again on the same ports and data.
    pub fn restart(&self) {
        self.kill();
        // The old process may hold its ports for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.http_port)).is_ok() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.launch();
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn clickhouse_root() -> PathBuf {
    std::env::temp_dir().join("tally-tests-clickhouse")
}

/// The one shared `clickhouse-server` of this test run, started on first use.
pub fn clickhouse() -> &'static ClickHouseServer {
    static SERVER: OnceLock<ClickHouseServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = clickhouse_root();
        remove_stale_dirs(&root);
        ClickHouseServer::start_in(root.join(std::process::id().to_string()))
    })
}

/// Data dirs of earlier runs whose process is gone.
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|name| name.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `local/clickhouse/config.xml`, the template `./dev` uses too.
const CONFIG_TEMPLATE: &str = include_str!("../../local/clickhouse/config.xml");
/// `local/clickhouse/users.xml`.
const USERS_XML: &str = include_str!("../../local/clickhouse/users.xml");

fn config_xml(dir: &Path, http_port: u16, tcp_port: u16) -> String {
    CONFIG_TEMPLATE
        .replace("@DIR@", &dir.display().to_string())
        .replace("@HTTP_PORT@", &http_port.to_string())
        .replace("@TCP_PORT@", &tcp_port.to_string())
}

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

/// Spawns `command` from the harness's long-lived spawner thread.
fn spawn(command: Command) -> io::Result<Child> {
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
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let binary = require_binary("nats-server", "TALLY_NATS_SERVER");
        let log = self.dir.path().join("nats.log");
        let mut command = Command::new(binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
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

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test run's `clickhouse-server`.
pub struct ClickHouseServer {
    http_port: u16,
    _child: Mutex<Child>,
}

impl ClickHouseServer {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// The one `clickhouse-server` of this test run, started on first use.
pub fn clickhouse() -> &'static ClickHouseServer {
    static SERVER: OnceLock<ClickHouseServer> = OnceLock::new();
    SERVER.get_or_init(start_clickhouse)
}

fn start_clickhouse() -> ClickHouseServer {
    let (binary, server_arg) = match find_binary("clickhouse-server", "TALLY_CLICKHOUSE_SERVER") {
        Some(binary) => (binary, None),
        None => (
            require_binary("clickhouse", "TALLY_CLICKHOUSE"),
            Some("server"),
        ),
    };
    let root = std::env::temp_dir().join("tally-tests-clickhouse");
    remove_stale_dirs(&root);
    let dir = root.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("creating the ClickHouse dir");
    let (http_port, tcp_port) = (free_port(), free_port());
    let config = dir.join("config.xml");
    std::fs::write(&config, config_xml(&dir, http_port, tcp_port)).unwrap();
    std::fs::write(dir.join("users.xml"), USERS_XML).unwrap();
    let mut command = Command::new(binary);
    if let Some(arg) = server_arg {
        command.arg(arg);
    }
    command
        .arg(format!("--config-file={}", config.display()))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn(command).expect("starting clickhouse-server");
    wait_for_port(
        http_port,
        &mut child,
        "clickhouse-server",
        &dir.join("err.log"),
    );
    ClickHouseServer {
        http_port,
        _child: Mutex::new(child),
    }
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
            .and_then(|name| name.parse::<u32>().ok())
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

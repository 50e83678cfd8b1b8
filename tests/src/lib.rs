//! The integration-test harness: real `nats-server` and `clickhouse-server`
//! processes, and Tally's services running in-process on `127.0.0.1:0`.
//!
//! - [`NatsServer`]: one per test, on a free port with its store in a temp
//!   dir; killed on drop.
//! - [`clickhouse`]: one `clickhouse-server` per test run (generated config,
//!   free ports, data under the target dir); each test gets its own database.
//! - [`Stack`]: NATS + a database + command, projector and query services.
//!
//! Missing server binaries fail the test loudly: no test skips for want of
//! a server. `./dev test` installs them.

mod servers;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_shared::auth::{mint_token, Scope};
use tally_shared::config::{ClickHouseConfig, Config};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod bench;
pub mod workload;

pub use servers::{clickhouse, ClickHouseServer, NatsCluster, NatsServer, WorkerProcess};

/// A database name for `test`, unique within the run.
pub fn database_name(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let clean: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!(
        "t_{clean}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A configuration pointing at `nats` and at a fresh database named after `test`.
pub fn config_for(test: &str, nats: &NatsServer) -> Config {
    config_for_url(test, &nats.url())
}

/// [`config_for`] NATS at `url` (a cluster's comma-separated URLs).
pub fn config_for_url(test: &str, url: &str) -> Config {
    let mut config = Config::development();
    config.nats.url = url.to_owned();
    config.nats.publish_timeout_ms = 2000;
    config.clickhouse = clickhouse_config(test);
    config.projector.fetch_wait_ms = 100;
    config.log.filter = "warn".into();
    config
}

/// The run's ClickHouse, with a fresh database named after `test`.
pub fn clickhouse_config(test: &str) -> ClickHouseConfig {
    let mut config = Config::development().clickhouse;
    config.url = clickhouse().url();
    config.database = database_name(test);
    config
}

/// One running service.
pub struct Service {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service and waits for it to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// Which service to start.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Command,
    Projector,
    Query,
}

/// Starts one service in-process on a free loopback port.
pub async fn start_service(kind: Kind, config: Config) -> Service {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a free port");
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let result = match kind {
            Kind::Command => tally_command::serve(config, listener, token)
                .await
                .map_err(|e| e.to_string()),
            Kind::Projector => tally_projector::serve(config, listener, token)
                .await
                .map_err(|e| e.to_string()),
            Kind::Query => tally_query::serve(config, listener, token)
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            panic!("{kind:?} service failed: {e}");
        }
    });
    Service {
        addr,
        shutdown,
        task,
    }
}

/// NATS, a database and the three services.
pub struct Stack {
    pub nats: NatsServer,
    pub config: Config,
    pub command: Service,
    pub projector: Service,
    pub query: Service,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts everything for `test` and waits until every service is ready.
    pub async fn start(test: &str) -> Stack {
        Stack::start_with(test, |_| {}).await
    }

    /// Like [`Stack::start`], with `adjust` applied to the configuration.
    pub async fn start_with(test: &str, adjust: impl FnOnce(&mut Config)) -> Stack {
        let nats = NatsServer::start();
        let mut config = config_for(test, &nats);
        adjust(&mut config);
        let projector = start_service(Kind::Projector, config.clone()).await;
        let command = start_service(Kind::Command, config.clone()).await;
        let query = start_service(Kind::Query, config.clone()).await;
        let stack = Stack {
            nats,
            config,
            command,
            projector,
            query,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for service in [&stack.projector, &stack.command, &stack.query] {
            stack.wait_ready(service).await;
        }
        stack
    }

    async fn wait_ready(&self, service: &Service) {
        let url = format!("{}/readyz", service.url());
        let http = self.http.clone();
        eventually(
            &format!("{url} answers 200"),
            Duration::from_secs(60),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
    }

    /// How many messages the event stream holds.
    pub async fn stored_events(&self) -> u64 {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connecting to NATS");
        let mut stream = async_nats::jetstream::new(client)
            .get_stream("TALLY_EVENTS")
            .await
            .expect("the event stream");
        stream
            .info()
            .await
            .expect("the event stream's info")
            .state
            .messages
    }

    /// The Prometheus text a service answers at `/metrics`.
    pub async fn metrics_text(&self, service: &Service) -> String {
        self.http
            .get(format!("{}/metrics", service.url()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body")
    }

    /// A token for `tenant` with `scopes`.
    pub fn token(&self, tenant: &str, scopes: &[Scope]) -> String {
        mint_token(&self.config.auth, "tests", tenant, scopes, 3600)
    }

    /// `POST /v1/events` with `body` as JSON; returns status and parsed body.
    pub async fn post_event(&self, token: &str, body: &Value) -> (u16, Value) {
        self.post_json("/v1/events", token, body).await
    }

    /// `POST /v1/events/batch` with `events` as a JSON array; returns status
    /// and parsed body.
    pub async fn post_batch(&self, token: &str, events: &[Value]) -> (u16, Value) {
        self.post_json("/v1/events/batch", token, &Value::from(events.to_vec()))
            .await
    }

    async fn post_json(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.command.url()))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        read(response).await
    }

    /// `GET /v1/posts/{post}/metrics`; returns status and parsed body.
    pub async fn post_metrics(&self, token: &str, post: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/v1/posts/{post}/metrics", self.query.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /v1/posts/{post}/metrics");
        read(response).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for service in [&self.command, &self.projector, &self.query] {
            service.shutdown.cancel();
        }
    }
}

/// Status and JSON body (`Null` when the body is not JSON).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Polls `check` until it returns `Ok` or `limit` passes; then panics with
/// `what` and the last thing `check` saw.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("waited {limit:?} for {what}; last saw: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// An RFC 3339 timestamp `seconds_ago` seconds before now.
pub fn rfc3339_ago(seconds_ago: i64) -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

pub use tally_shared::auth::Scope as TokenScope;

/// The OpenAPI document of both APIs, as the code describes them; the
/// services serve `docs/openapi.json`, which must equal it
/// (`./dev openapi` writes it).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    use tally_shared::http::openapi::{assemble, Part};
    assemble(vec![
        Part {
            doc: tally_command::openapi(),
            server: "http://127.0.0.1:8470",
            description: "The command API (`./dev up`)",
        },
        Part {
            doc: tally_query::openapi(),
            server: "http://127.0.0.1:8471",
            description: "The query API (`./dev up`)",
        },
    ])
}

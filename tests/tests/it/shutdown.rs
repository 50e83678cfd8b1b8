//! Graceful shutdown: SIGTERM to a command API and a projector worker, each
//! a process of its own, in the middle of steady ingest. Every request that
//! got a response got a whole one, every event answered 202 is on the
//! stream, both processes exit cleanly, and once a projector runs again the
//! read models match the stream exactly (nothing lost, nothing doubled).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tally_tests::{
    config_for, eventually, rfc3339_ago, start_service, Kind, NatsServer, TokenScope as Scope,
    WorkerProcess,
};

use crate::durability::stored_once_and_projected_exactly;

/// A service in a process of its own, shut down by its signal handler
/// (re-executed by the test below). Does nothing when run by hand.
#[test]
#[ignore = "a service process, started by the shutdown test"]
fn service_process() {
    let Some(kind) = std::env::var_os("SHUTDOWN_TEST_SERVICE") else {
        return;
    };
    let config = tally_shared::Config::load().expect("the service's configuration");
    let name = if kind == "command" {
        "tally-command"
    } else {
        "tally-projector"
    };
    tally_shared::telemetry::init_tracing(&config.log, name);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let shutdown = tally_shared::shutdown::on_signal();
        if kind == "command" {
            tally_command::run(config, shutdown)
                .await
                .expect("the command API");
        } else {
            tally_projector::run(config, shutdown)
                .await
                .expect("the projector");
        }
    });
    tally_shared::telemetry::flush();
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment of a [`service_process`] of `kind` (`command` or
/// `projector`) for `config`, the command API on `command_port`, with
/// `extra` settings.
pub fn service_env(
    kind: &str,
    config: &tally_shared::Config,
    command_port: u16,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("SHUTDOWN_TEST_SERVICE", kind.to_owned()),
        ("TALLY_NATS__URL", config.nats.url.clone()),
        ("TALLY_CLICKHOUSE__URL", config.clickhouse.url.clone()),
        (
            "TALLY_CLICKHOUSE__DATABASE",
            config.clickhouse.database.clone(),
        ),
        (
            "TALLY_AUTH__HS256_SECRET",
            tally_shared::config::DEVELOPMENT_HS256_SECRET.to_owned(),
        ),
        ("TALLY_COMMAND__LISTEN", format!("127.0.0.1:{command_port}")),
        ("TALLY_PROJECTOR__LISTEN", "127.0.0.1:0".to_owned()),
        ("TALLY_PROJECTOR__FETCH_WAIT_MS", "100".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// A command API (on `command_port`) and a projector, each a process of
/// its own, with `extra` settings; once the command API is ready. Their
/// logs are in the returned folder.
pub async fn service_processes(
    config: &tally_shared::Config,
    command_port: u16,
    extra: &[(&str, &str)],
) -> (WorkerProcess, WorkerProcess, tempfile::TempDir) {
    let logs = tempfile::tempdir().unwrap();
    let start = |kind: &str| {
        WorkerProcess::start(
            "shutdown::service_process",
            &service_env(kind, config, command_port, extra),
            logs.path().join(format!("{kind}.log")),
        )
    };
    let (command, projector) = (start("command"), start("projector"));
    let ready = format!("http://127.0.0.1:{command_port}/readyz");
    let http = reqwest::Client::new();
    eventually("the command API ready", Duration::from_secs(60), || async {
        match http.get(&ready).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    (command, projector, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_nothing_acknowledged() {
    let nats = NatsServer::start();
    let config = config_for("shutdown", &nats);
    let command_port = free_port();
    let (mut command, mut projector, _logs) = service_processes(
        &config,
        command_port,
        &[
            ("TALLY_PROJECTOR__BATCH_SIZE", "200"),
            ("TALLY_LOG__FILTER", "warn"),
        ],
    )
    .await;
    let url = format!("http://127.0.0.1:{command_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Four clients post likes (each its own user) until the API goes away.
    let token = tally_shared::auth::mint_token(
        &config.auth,
        "shutdown",
        "acme",
        &[Scope::EventsWrite],
        3600,
    );
    let stopping = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (http, url, token, stopping) =
                (http.clone(), url.clone(), token.clone(), stopping.clone());
            tokio::spawn(async move {
                let (mut accepted, mut other) = (Vec::new(), Vec::new());
                for n in 0.. {
                    let id = format!("c{client}-{n}");
                    let event = json!({"event_id": id, "type": "like",
                                       "occurred_at": rfc3339_ago(1),
                                       "post_id": format!("p{}", n % 5), "user_id": &id});
                    let sent = http
                        .post(format!("{url}/v1/events"))
                        .bearer_auth(&token)
                        .json(&event)
                        .send()
                        .await;
                    match sent {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            // A response, once begun, arrives whole.
                            let body = response.text().await.expect("a whole response body");
                            match status {
                                202 => accepted.push(id),
                                // Over the rate limit: not stored, not kept.
                                429 => {}
                                _ => other.push((status, body)),
                            }
                        }
                        // Refused: the listener is closed.
                        Err(_) if stopping.load(Ordering::Relaxed) => break,
                        Err(e) => panic!("request failed before shutdown: {e}"),
                    }
                }
                (accepted, other)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    stopping.store(true, Ordering::Relaxed);
    let (command_exit, projector_exit) = tokio::task::spawn_blocking(move || {
        let command_exit = command.terminate(Duration::from_secs(30));
        let projector_exit = projector.terminate(Duration::from_secs(30));
        (command_exit, projector_exit)
    })
    .await
    .unwrap();
    assert!(
        command_exit.is_some_and(|s| s.success()),
        "the command API exits cleanly on SIGTERM: {command_exit:?}"
    );
    assert!(
        projector_exit.is_some_and(|s| s.success()),
        "the projector exits cleanly on SIGTERM: {projector_exit:?}"
    );
    let mut accepted = HashSet::new();
    for client in clients {
        let (ids, other) = client.await.unwrap();
        assert!(other.is_empty(), "answers other than 202: {other:?}");
        accepted.extend(ids);
    }
    assert!(accepted.len() > 20, "steady load: {}", accepted.len());

    // Every acknowledged event is on the stream, once; with a projector
    // again, the read models come out exact.
    let projector = start_service(Kind::Projector, config.clone()).await;
    let stored = stored_once_and_projected_exactly(&config, &accepted).await;
    println!(
        "shutdown: {} events acknowledged, {stored} stored, 0 lost, read models exact",
        accepted.len()
    );
    projector.stop().await;
}

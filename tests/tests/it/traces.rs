//! Trace export: with `log.otlp_traces_endpoint` set, a request that comes
//! with a W3C `traceparent` is exported as a span of the caller's trace by
//! the command API, and the projector's span for the batch that writes its
//! event links that trace. The collector here is a plain HTTP endpoint that
//! keeps what it receives (OTLP/HTTP protobuf bodies).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tally_tests::{config_for, rfc3339_ago, NatsServer, TokenScope as Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::shutdown::{free_port, service_processes};

/// Accepts HTTP/1.1 requests and keeps their bodies.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: headers, then Content-Length bytes.
                    let end = loop {
                        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    kept.lock()
                        .unwrap()
                        .push(buffer[end..end + length].to_vec());
                    buffer.drain(..end + length);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trace_is_exported_and_linked_by_the_projector() {
    let nats = NatsServer::start();
    let config = config_for("traces", &nats);
    let (endpoint, bodies) = collector().await;
    let port = free_port();
    let (mut command, mut projector, _logs) = service_processes(
        &config,
        port,
        &[
            ("TALLY_LOG__FILTER", "info"),
            ("TALLY_LOG__OTLP_TRACES_ENDPOINT", endpoint.as_str()),
        ],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let token =
        tally_shared::auth::mint_token(&config.auth, "traces", "acme", &[Scope::EventsWrite], 600);
    let response = http
        .post(format!("{url}/v1/events"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(
            &json!({"event_id": "traced-1", "type": "like", "occurred_at": rfc3339_ago(1),
                      "post_id": "p1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let seq = response.json::<serde_json::Value>().await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    crate::durability::wait_projected(&config, seq).await;

    // Shut both down: they flush their spans on the way out.
    tokio::task::spawn_blocking(move || {
        command.terminate(Duration::from_secs(30));
        projector.terminate(Duration::from_secs(30));
    })
    .await
    .unwrap();
    let id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let bodies = bodies.lock().unwrap().clone();
    let of = |service: &str| {
        bodies
            .iter()
            .any(|b| contains(b, service.as_bytes()) && contains(b, &id))
    };
    assert!(!bodies.is_empty(), "nothing was exported");
    assert!(
        of("tally-command"),
        "the command API's request span is in the caller's trace"
    );
    assert!(
        of("tally-projector"),
        "the projector's batch span links the request's trace"
    );
}

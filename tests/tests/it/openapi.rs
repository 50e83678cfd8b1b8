//! The OpenAPI document: it is what the code describes, both services serve
//! it, every operation in it is routed, and schemathesis finds neither a
//! server error nor an answer the document does not describe.
//!
//! That every route is in the document holds by construction: both routers
//! are built by `utoipa_axum` from the handlers' `#[utoipa::path]`s, so a
//! route cannot be added without its description. These tests check the
//! other way round, and that the served document is the current one.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use tally_shared::http::openapi::DOCUMENT;
use tally_tests::{read, Stack, TokenScope as Scope};

fn served() -> Value {
    serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
}

#[test]
fn docs_openapi_json_is_what_the_code_describes() {
    let described = serde_json::to_value(tally_tests::openapi_document()).unwrap();
    assert!(
        served() == described,
        "docs/openapi.json is out of date: run ./dev openapi"
    );
}

/// Every documented operation, as (method, path).
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// Which service answers a documented path: the path's own server, else
/// (service routes) both.
fn services_of(doc: &Value, path: &str) -> Vec<&'static str> {
    match doc["paths"][path]["servers"][0]["url"].as_str() {
        Some(url) if url.ends_with(":8470") => vec!["command"],
        Some(url) if url.ends_with(":8471") => vec!["query"],
        Some(other) => panic!("{path}: unexpected server {other}"),
        None => vec!["command", "query"],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_serve_the_document_and_route_every_operation_in_it() {
    let stack = Stack::start("openapi_routes").await;
    let doc = served();
    for service in [&stack.command, &stack.query] {
        let response = stack
            .http
            .get(format!("{}/openapi.json", service.url()))
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, 200);
        assert!(body == doc, "{} serves another document", service.url());
    }
    let operations = operations(&doc);
    assert!(operations.len() >= 20, "{operations:?}");
    for (method, path) in operations {
        // Path parameters filled with an id-shaped value; no credentials.
        let concrete = path.replace(['{', '}'], "");
        for service in services_of(&doc, &path) {
            let base = match service {
                "command" => stack.command.url(),
                _ => stack.query.url(),
            };
            let response = stack
                .http
                .request(method.parse().unwrap(), format!("{base}{concrete}"))
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await;
            let Ok(response) = response else {
                // The live stream answers and then never ends.
                assert!(path.ends_with("/live"), "{method} {path}: no answer");
                continue;
            };
            let (status, body) = read(response).await;
            let unrouted = (status == 404 && body["detail"] == "no such resource") || status == 405;
            assert!(
                !unrouted,
                "{method} {path} is documented but {service} does not route it: {status} {body}"
            );
        }
    }
}

/// The schemathesis executable `./dev test` installs, or `$SCHEMATHESIS`.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let installed = root.join(".tally/venv/bin/schemathesis");
    assert!(
        installed.exists(),
        "schemathesis is not installed: run ./dev test (it installs it into .tally/venv)"
    );
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let stack = Stack::start("openapi_schemathesis").await;
    let writer = stack.token("acme", &[Scope::EventsWrite]);
    let reader = stack.token("acme", &[Scope::ReportsRead]);
    // Something to find: a post, its influencer and campaign.
    let (status, body) = stack
        .post_event(
            &writer,
            &json!({"event_id": "st-1", "type": "post_published",
                    "occurred_at": tally_tests::rfc3339_ago(60), "platform": "instagram",
                    "influencer_id": "i1", "post_id": "p1", "campaign_id": "c1",
                    "payload": {"content_type": "reel", "tags": ["launch"]}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let document = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(document.path(), DOCUMENT).unwrap();
    // Reports, and schemathesis's own cache, go under target/.
    let reports = root.join("target/schemathesis");
    std::fs::create_dir_all(&reports).unwrap();
    let (command_url, query_url) = (stack.command.url(), stack.query.url());
    let schemathesis = schemathesis();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(root.join("tests/schemathesis/run.sh"))
            .args([
                document.path().to_str().unwrap(),
                &command_url,
                &query_url,
                &writer,
                &reader,
            ])
            .env("SCHEMATHESIS", schemathesis)
            .env("SCHEMATHESIS_REPORTS", &reports)
            .current_dir(&reports)
            .output()
            .expect("running tests/schemathesis/run.sh")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
}

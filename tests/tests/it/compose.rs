use std::path::Path;
use std::process::Command;

/// `docker-compose config` accepts docker-compose.yml (given the secret it
/// requires), and refuses it without the secret.
#[test]
fn docker_compose_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .env(
            "TALLY_HS256_SECRET",
            "a-secret-of-at-least-thirty-two-bytes",
        )
        .current_dir(root)
        .output()
        .expect("docker-compose is not installed: run ./dev test, which installs it");
    assert!(
        output.status.success(),
        "docker-compose config rejected docker-compose.yml:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let without_secret = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .env_remove("TALLY_HS256_SECRET")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        !without_secret.status.success(),
        "compose must not run with a public default secret"
    );
}

/// The production-like composition: the NATS cluster, ClickHouse, the
/// services with two projectors, Prometheus scraping each service, and a
/// Grafana dashboard whose every metric is one the services export.
#[test]
fn the_composition_runs_a_cluster_and_watches_every_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .env(
            "TALLY_HS256_SECRET",
            "a-secret-of-at-least-thirty-two-bytes",
        )
        .current_dir(root)
        .output()
        .expect("docker-compose is not installed: run ./dev test, which installs it");
    assert!(output.status.success());
    let config = String::from_utf8_lossy(&output.stdout);
    for service in [
        "nats1:",
        "nats2:",
        "nats3:",
        "clickhouse:",
        "command:",
        "query:",
        "projector:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            config.contains(&format!("\n  {service}")),
            "{service} missing"
        );
    }
    assert!(config.contains("replicas: 2"), "two projectors");
    assert!(
        config.contains("TALLY_NATS__STREAM_REPLICAS: '3'"),
        "{config}"
    );

    let prometheus = std::fs::read_to_string(root.join("ops/prometheus.yml")).unwrap();
    for target in ["command:8470", "query:8471", "port: 8472"] {
        assert!(prometheus.contains(target), "Prometheus scrapes {target}");
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("ops/grafana/dashboards/tally.json")).unwrap(),
    )
    .unwrap();
    let defined = std::fs::read_to_string(root.join("shared/src/metrics.rs")).unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("tally_"))
            {
                let base = name.trim_end_matches("_bucket");
                assert!(
                    defined.contains(&format!("\"{base}\"")),
                    "the dashboard uses {name}, which no service exports"
                );
                used += 1;
            }
        }
    }
    assert!(used >= 8, "{used}");
    for title in ["Ingest", "lag", "latency", "Errors"] {
        assert!(
            dashboard["panels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["title"].as_str().unwrap().contains(title)),
            "a panel for {title}"
        );
    }
}

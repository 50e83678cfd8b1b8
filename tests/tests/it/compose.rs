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

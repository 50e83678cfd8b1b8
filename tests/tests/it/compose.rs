use std::path::Path;
use std::process::Command;

/// `docker-compose config` accepts docker-compose.yml.
#[test]
fn docker_compose_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root)
        .output()
        .expect("docker-compose is not installed: run ./dev test, which installs it");
    assert!(
        output.status.success(),
        "docker-compose config rejected docker-compose.yml:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

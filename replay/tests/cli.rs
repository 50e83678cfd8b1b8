//! The command line: every command and subcommand answers `--help`, and
//! arguments that contradict each other are refused before anything runs.

use std::process::Command;

fn replay(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally-replay"))
        .args(args)
        .output()
        .expect("running tally-replay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["rebuild"],
        &["verify"],
        &["snapshot"],
        &["snapshot", "create"],
        &["snapshot", "list"],
        &["snapshot", "drop"],
        &["dead-letters"],
        &["dead-letters", "list"],
        &["dead-letters", "inspect"],
        &["dead-letters", "redrive"],
        &["export"],
        &["import"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let (ok, text) = replay(&args);
        assert!(ok, "{args:?}: {text}");
        assert!(text.contains("Usage: tally-replay"), "{args:?}: {text}");
    }
}

#[test]
fn contradictory_arguments_are_refused() {
    for args in [
        &[
            "rebuild",
            "--from-seq",
            "5",
            "--from-time",
            "2026-01-01T00:00:00Z",
        ][..],
        &["snapshot", "create", "x"][..],
        &["dead-letters", "redrive"][..],
        &["dead-letters", "redrive", "5", "--all"][..],
        &["rebuild", "--model", "nonsense"][..],
        &["rebuild", "--from-time", "yesterday"][..],
    ] {
        let (ok, text) = replay(args);
        assert!(!ok, "{args:?} was accepted: {text}");
        assert!(text.contains("error"), "{args:?}: {text}");
    }
}

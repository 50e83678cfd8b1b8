//! `tally-peers`: runs an NDJSON file of like ops against the peers and
//! prints one JSON report on stdout (progress goes to stderr); or, with
//! `--generate N`, writes a sample ops file.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde::Serialize;
use tally_peers::cqrs_peer::{self, StoreKind};
use tally_peers::stats::Summary;
use tally_peers::{generate, ops, redis_peer};

/// The like-counting workload against a Redis INCR counter per post and
/// against cqrs-es + postgres-es, side by side.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// NDJSON ops, one `{"post":…,"user":…,"op":"like"|"unlike"}` a line
    /// (written instead of read with --generate).
    #[arg(long, value_name = "FILE")]
    ops: PathBuf,
    /// Concurrent workers; ops are split among them by a hash of the user.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Run one peer only.
    #[arg(long)]
    only: Option<Only>,
    /// Open-loop pacing at R ops/s in total; without it, closed loop at
    /// full speed (saturation).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// How cqrs-es rebuilds a post before each command.
    #[arg(long, value_enum, default_value_t = StoreKind::Snapshot)]
    cqrs_store: StoreKind,
    /// With --cqrs-store snapshot: events between snapshots.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    snapshot_every: u32,
    /// Write N generated ops to --ops and exit.
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
    /// With --generate: distinct posts.
    #[arg(long, default_value_t = 10_000)]
    posts: u64,
    /// With --generate: distinct users.
    #[arg(long, default_value_t = 50_000)]
    users: u64,
    /// With --generate: Zipf exponent of post popularity.
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// With --generate: random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Redis,
    CqrsEs,
}

/// The report printed on stdout; a peer not run is `null`.
#[derive(Debug, Serialize)]
struct Report {
    redis: Option<Summary>,
    cqrs_es: Option<Summary>,
    ops: usize,
    concurrency: u32,
    rate: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.generate {
        return write_sample(&args, n);
    }
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of ops/s, got {rate}"
        );
    }
    let file = File::open(&args.ops).with_context(|| format!("opening {}", args.ops.display()))?;
    let ops = ops::parse(BufReader::new(file))
        .with_context(|| format!("reading {}", args.ops.display()))?;
    let expected = ops::expected_counts(&ops);
    let parts = ops::partition(&ops, args.concurrency as usize);
    eprintln!(
        "{} ops on {} posts, {} workers, {}",
        ops.len(),
        expected.len(),
        args.concurrency,
        args.rate
            .map_or("closed loop (saturation)".to_owned(), |r| format!(
                "open loop at {r} ops/s"
            ))
    );
    let ops = Arc::new(ops);
    let run_id = run_id();

    let mut report = Report {
        redis: None,
        cqrs_es: None,
        ops: ops.len(),
        concurrency: args.concurrency,
        rate: args.rate,
    };
    // One peer after the other: on a small machine they would fight for
    // the cores.
    if args.only != Some(Only::CqrsEs) {
        eprintln!("redis: running");
        let summary = redis_peer::run(
            &args.redis,
            &run_id,
            ops.clone(),
            parts.clone(),
            args.rate,
            &expected,
        )
        .await
        .context("the Redis peer")?;
        eprintln!("redis: {:.0} ops/s", summary.ops_per_second);
        report.redis = Some(summary);
    }
    if args.only != Some(Only::Redis) {
        eprintln!("cqrs-es: running");
        let settings = cqrs_peer::Settings {
            url: args.postgres.clone(),
            store: args.cqrs_store,
            snapshot_every: args.snapshot_every as usize,
        };
        let summary = cqrs_peer::run(&settings, &run_id, ops, parts, args.rate, &expected)
            .await
            .context("the cqrs-es peer")?;
        eprintln!("cqrs-es: {:.0} ops/s", summary.ops_per_second);
        report.cqrs_es = Some(summary);
    }

    println!("{}", serde_json::to_string_pretty(&report)?);
    let failed = [&report.redis, &report.cqrs_es]
        .into_iter()
        .flatten()
        .any(|s| s.mismatches > 0 || s.errors > 0);
    anyhow::ensure!(
        !failed,
        "a peer had errors or mismatched counts (see the report)"
    );
    Ok(())
}

fn write_sample(args: &Args, n: usize) -> anyhow::Result<()> {
    let spec = generate::Spec {
        ops: n,
        posts: args.posts,
        users: args.users,
        zipf: args.zipf,
        seed: args.seed,
    };
    let ops = generate::ops(&spec);
    let file =
        File::create(&args.ops).with_context(|| format!("creating {}", args.ops.display()))?;
    generate::write(&ops, BufWriter::new(file))
        .with_context(|| format!("writing {}", args.ops.display()))?;
    let unlikes = ops.iter().filter(|op| op.op == ops::Kind::Unlike).count();
    eprintln!(
        "wrote {n} ops ({unlikes} unlikes) on {} posts to {}",
        ops::expected_counts(&ops).len(),
        args.ops.display()
    );
    Ok(())
}

/// Unique enough per run to name the run's Redis keys and Postgres schema:
/// the clock in microseconds and the process id, in hex.
fn run_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:x}{:x}", std::process::id())
}

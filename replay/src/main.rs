//! `tally-replay`: rebuild, verify and time-travel the read models from the
//! event stream; redrive dead letters; export and import history.
//! Configured like the services (`TALLY_CONFIG`, `TALLY_*`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tally_replay::reader::Start;
use tally_replay::snapshot::AsOf;
use tally_replay::tables::Model;
use tally_replay::{deadletters, history, rebuild, snapshot, verify, Env};
use tally_shared::{telemetry, Config};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// mimalloc rather than glibc's malloc, as in the services: a rebuild
/// decodes and folds every event of the stream, and glibc's malloc and free
/// were 29% of its own CPU samples in a profile of one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tally-replay",
    version,
    about = "Rebuild, verify and time-travel Tally's read models from the event stream; \
             redrive dead letters; export and import a tenant's history.",
    after_help = "Configuration as for the services: the file named by TALLY_CONFIG, then \
                  TALLY_* variables (for example TALLY_CLICKHOUSE__DATABASE)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fold the stream again into fresh tables while the live ones serve,
    /// catch up, and switch them live. Run it again after an interruption
    /// and it continues.
    Rebuild(RebuildArgs),
    /// Fold the stream up to the projectors' position and report every row
    /// of the live read models that differs (exit code 1 if any).
    Verify {
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read models as of a past sequence or time, in a database of their own.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Events the projector gave up on.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCommand),
    /// Write a tenant's history as NDJSON (gzip if the file ends in .gz).
    Export {
        #[arg(long)]
        tenant: String,
        /// The file to write; standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Append NDJSON history (plain or gzip) to a tenant, validated and
    /// deduplicated as live ingest is: importing twice stores nothing twice.
    Import {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
    },
}

#[derive(Args)]
struct RebuildArgs {
    /// A read model to rebuild (repeatable); all when absent.
    #[arg(long = "model", value_name = "MODEL")]
    models: Vec<Model>,
    /// Fold from this stream sequence (rows before it are kept as they are).
    #[arg(long, conflicts_with = "from_time")]
    from_seq: Option<u64>,
    /// Fold from the first event received at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    from_time: Option<OffsetDateTime>,
    /// Discard an interrupted rebuild instead of continuing it.
    #[arg(long)]
    restart: bool,
    /// Keep the replaced tables in <database>__replaced_<time>.
    #[arg(long)]
    keep_old: bool,
    /// Events folded and written at once; progress is recorded after each.
    #[arg(long, default_value_t = tally_replay::BATCH)]
    batch: usize,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Build (or replace) snapshot NAME as of --seq or --time.
    Create {
        name: String,
        /// Every event up to and including this stream sequence.
        #[arg(long, required_unless_present = "time", conflicts_with = "time")]
        seq: Option<u64>,
        /// Every event received before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        time: Option<OffsetDateTime>,
    },
    /// The snapshots there are.
    List,
    /// Delete snapshot NAME.
    Drop { name: String },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Every dead letter: sequence, subject, attempts, error.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// One dead letter with its event.
    Inspect {
        /// The event's stream sequence.
        seq: u64,
    },
    /// Project dead letters with this build and remove them.
    Redrive {
        /// The event's stream sequence.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

fn parse_time(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // A command line tool: warnings and errors only, unless RUST_LOG asks
    // for more (its output and progress are its own).
    let mut log = config.log.clone();
    log.filter = "warn".into();
    telemetry::init_tracing(&log, "tally-replay");
    match run(cli.command, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let mut env = Env::connect(config).await?;
    match command {
        Command::Rebuild(args) => {
            let start = match (args.from_seq, args.from_time) {
                (Some(seq), _) => Start::Seq(seq),
                (None, Some(at)) => Start::Time(at),
                (None, None) => Start::Beginning,
            };
            let report = rebuild::rebuild(
                &mut env,
                rebuild::Options {
                    models: args.models,
                    start,
                    restart: args.restart,
                    keep_old: args.keep_old,
                    batch: args.batch,
                },
            )
            .await?;
            let names: Vec<String> = report.models.iter().map(Model::to_string).collect();
            println!(
                "rebuilt {} from sequence {}{}: {} events folded, {} skipped (dead letters)",
                names.join(", "),
                report.from_seq,
                if report.resumed { " (resumed)" } else { "" },
                report.projected.events,
                report.projected.skipped,
            );
            if let Some(kept) = report.kept {
                println!("the replaced tables are in {kept}");
            }
        }
        Command::Verify { tenant, json } => {
            let report = verify::verify(&mut env, tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for difference in &report.differences {
                    println!("{difference}");
                }
                println!(
                    "checked {} events up to sequence {}: {} difference(s)",
                    report.events,
                    report.position,
                    report.differences.len()
                );
            }
            if !report.differences.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Snapshot(SnapshotCommand::Create { name, seq, time }) => {
            let as_of = match (seq, time) {
                (Some(seq), _) => AsOf::Seq(seq),
                (None, Some(at)) => AsOf::Time(at),
                (None, None) => anyhow::bail!("give --seq or --time"),
            };
            let snapshot = snapshot::create(&mut env, &name, as_of).await?;
            println!(
                "snapshot {} at sequence {}: {} events folded into {}",
                snapshot.name, snapshot.position, snapshot.projected.events, snapshot.database
            );
            println!(
                "serve it: TALLY_CLICKHOUSE__DATABASE={} tally-query",
                snapshot.database
            );
        }
        Command::Snapshot(SnapshotCommand::List) => {
            for name in snapshot::list(&env).await? {
                println!("{name}");
            }
        }
        Command::Snapshot(SnapshotCommand::Drop { name }) => {
            snapshot::drop(&env, &name).await?;
            println!("dropped snapshot {name}");
        }
        Command::DeadLetters(DeadLetterCommand::List { tenant }) => {
            let letters = deadletters::list(&env, tenant.as_deref()).await?;
            for letter in &letters {
                println!(
                    "seq {:>10}  {}  attempts {}  {}",
                    letter.seq, letter.subject, letter.attempts, letter.error
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        Command::DeadLetters(DeadLetterCommand::Inspect { seq }) => {
            let letter = deadletters::inspect(&env, seq).await?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        Command::DeadLetters(DeadLetterCommand::Redrive { seq, all }) => {
            let outcomes = deadletters::redrive(&env, if all { None } else { seq }).await?;
            let mut failed = false;
            for outcome in &outcomes {
                match outcome {
                    deadletters::Redriven::Projected { seq } => println!("seq {seq}: projected"),
                    deadletters::Redriven::Failed { seq, error } => {
                        failed = true;
                        println!("seq {seq}: still cannot be projected: {error}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Export { tenant, output } => {
            let exported = match output {
                Some(path) => history::export_to(&env, &tenant, &path).await?,
                None => history::export(&env, &tenant, &mut std::io::stdout().lock()).await?,
            };
            eprintln!(
                "exported {} events ({} unreadable left out)",
                exported.events, exported.unreadable
            );
        }
        Command::Import { tenant, file } => {
            let imported = history::import_from(&env, &tenant, &file).await?;
            for (line, why) in &imported.invalid {
                println!("line {line}: {why}");
            }
            println!(
                "imported {} events, {} duplicates, {} invalid lines",
                imported.accepted,
                imported.duplicates,
                imported.invalid.len()
            );
            if !imported.invalid.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

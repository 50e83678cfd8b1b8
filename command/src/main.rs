use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally_shared::auth::{mint_token, Scope};
use tally_shared::{shutdown, telemetry, Config};

/// mimalloc rather than glibc's malloc: a request for one event allocates
/// about 130 times, on both worker threads, and glibc's malloc and free were
/// over a quarter of the service's instructions. Without transparent huge
/// pages (`no_thp`), its resident memory stays about glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tally's command API (ingest), and a development-token minter.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the command API (the default).
    Serve,
    /// Print a development JWT signed with the configured HS256 secret.
    Token {
        /// The tenant the token acts for.
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Scopes: events:write, reports:read, admin (repeat or comma-separate).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "events:write,reports:read"
        )]
        scope: Vec<String>,
        /// The token's subject.
        #[arg(long, default_value = "developer")]
        subject: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        ttl: u64,
    },
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
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init_tracing(&config.log, "tally-command");
            let code = match tally_command::run(config, shutdown::on_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "command API failed");
                    ExitCode::FAILURE
                }
            };
            telemetry::flush();
            code
        }
        Command::Token {
            tenant,
            scope,
            subject,
            ttl,
        } => {
            let scopes: Result<Vec<Scope>, String> = scope
                .iter()
                .map(|s| Scope::parse(s.trim()).ok_or_else(|| format!("unknown scope {s:?}")))
                .collect();
            if let Err(e) = tally_shared::auth::Authenticator::from_config(&config.auth) {
                eprintln!("cannot mint a token that this configuration would accept: {e}");
                return ExitCode::from(2);
            }
            match scopes {
                Ok(scopes) if tally_shared::event::is_valid_tenant(&tenant) => {
                    println!(
                        "{}",
                        mint_token(&config.auth, &subject, &tenant, &scopes, ttl)
                    );
                    ExitCode::SUCCESS
                }
                Ok(_) => {
                    eprintln!("invalid tenant {tenant:?}: use 1-64 of A-Z, a-z, 0-9, '_', '-'");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

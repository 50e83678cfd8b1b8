use std::process::ExitCode;

use tally_shared::{shutdown, telemetry, Config};

/// Tally's query API (reports).
#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&config.log, "tally-query");
    let code = match tally_query::run(config, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "query API failed");
            ExitCode::FAILURE
        }
    };
    telemetry::flush();
    code
}

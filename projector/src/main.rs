use std::process::ExitCode;

use tally_shared::{shutdown, telemetry, Config};

/// mimalloc rather than glibc's malloc, as in the command service: decoding
/// and folding allocate for every event, and glibc's malloc and free were
/// about a fifth of the worker's CPU in a profile. With mimalloc decode +
/// fold alone ran 11–17% faster (`./dev bench-fold`, alternating runs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tally's projector worker: run as many as the load needs.
#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&config.log, "tally-projector");
    let code = match tally_projector::run(config, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "projector failed");
            ExitCode::FAILURE
        }
    };
    telemetry::flush();
    code
}

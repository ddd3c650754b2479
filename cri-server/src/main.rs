//! The `berthd` binary: parse flags, load the config, serve the CRI.

use std::process::ExitCode;

use clap::Parser;
use cri_server::server::{daemon, logging};
use cri_server::{cli::Cli, config};

fn main() -> ExitCode {
    cri_server::memory::tune_allocator();
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::default_config_toml());
        return ExitCode::SUCCESS;
    }
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        return match toml::to_string(&config.redacted()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("berthd: render config: {e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(&config.log);
    if let Ok(point) = std::env::var(failpoint::ENV) {
        match failpoint::ENABLED {
            true => tracing::warn!(failpoint = %point, "test build: will crash at this failpoint"),
            false => tracing::warn!(
                failpoint = %point,
                "BERTH_FAILPOINT is set but this berthd has no failpoints (they exist only in test builds)"
            ),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berthd failed");
            ExitCode::FAILURE
        }
    }
}

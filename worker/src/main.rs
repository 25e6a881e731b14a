//! `nexingest`: parse flags, set up logging, dispatch. Everything else is in the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = worker::cli::Cli::parse();
    worker::logging::init(&cli.global);
    let json = cli.global.log_format == worker::cli::LogFormat::Json;
    match run(cli) {
        Ok(code) => code,
        // Once: a JSON log line for CloudWatch, or a plain line for a terminal.
        Err(err) if json => {
            tracing::error!(error = format!("{err:#}"), "failed");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: worker::cli::Cli) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nexingest")
        .build()?;
    rt.block_on(worker::cmd::dispatch(cli))
}

//! `nexingest`: parse flags, set up logging, dispatch. Everything else is in the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = worker::cli::Cli::parse();
    worker::logging::init(&cli.global);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "failed");
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

//! One module per subcommand; [`dispatch`] maps the parsed CLI onto them.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::config::{AwsConfig, DbConfig, PipelineConfig, RunConfig};

pub mod derive_historic;
pub mod enqueue;
pub mod import_locations;
pub mod ingest;
pub mod migrate;
pub mod run;
pub mod status;

/// Runs one parsed command line.
///
/// # Errors
/// Configuration, connection and command failures, with context.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Migrate => {
            let db = DbConfig::from_args(g)?;
            let report = migrate::run(&db).await?;
            println!(
                "schema {} at version {} (applied: {:?}, seed rows inserted: {})",
                db.schema, report.version, report.applied, report.seeded
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Enqueue(a) => {
            let cfg = enqueue::EnqueueConfig::from_args(g, a)?;
            let n = enqueue::run(&cfg).await?;
            if cfg.dry_run {
                println!("{n} jobs (dry run, nothing sent)");
            } else {
                println!("queued {n} jobs");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => {
            let cfg = RunConfig::from_args(g, a)?;
            let summary = run::run(cfg, shutdown_signal()).await?;
            tracing::info!(
                done = summary.done,
                skipped = summary.skipped,
                failed = summary.failed,
                released = summary.released,
                rejected = summary.rejected,
                "worker stopped"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(a) => {
            let db = DbConfig::from_args(g)?;
            let pipeline = PipelineConfig::from_args(&a.pipeline)?;
            let ok = ingest::run(&db, &pipeline, a).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::ImportLocations(a) => {
            let db = DbConfig::from_args(g)?;
            let aws = AwsConfig::from_args(&a.aws)?;
            let r = import_locations::run(&db, &aws, a).await?;
            println!(
                "imported {} locations into source {:?} ({} new, {} updated, {} bad features skipped)",
                r.inserted + r.updated,
                r.source,
                r.inserted,
                r.updated,
                r.skipped.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::DeriveHistoric(a) => {
            let db = DbConfig::from_args(g)?;
            let cfg = crate::derive::DeriveConfig::from_args(db, a)?;
            let out = derive_historic::run(&cfg, !a.no_progress).await?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(a) => {
            let db = DbConfig::from_args(g)?;
            let out = status::run(&db, a).await.context("status")?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on SIGTERM (ECS stop, spot interruption) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}

//! One module per subcommand; [`dispatch`] maps the parsed CLI onto them.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command, JobFilterArgs, PlotKind};
use crate::config::{AwsConfig, DbConfig, PipelineConfig};
use crate::producer::jobs::JobFilter;

pub mod bench;
pub mod derive_historic;
pub mod doctor;
pub mod enqueue;
pub mod finalize;
pub mod import_locations;
pub mod ingest;
pub mod jobs;
pub mod migrate;
pub mod plot;
pub mod requeue;
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
            let r = enqueue::run(&cfg).await?;
            if !r.skipped.is_empty() {
                println!(
                    "skipped {} of {} jobs: input files missing",
                    r.skipped_jobs(),
                    r.planned
                );
                print!("{}", enqueue::skipped_table(&r.skipped));
            }
            let n = r.enqueued;
            let checked = match r.check {
                enqueue::InputCheck::Done => "inputs checked",
                enqueue::InputCheck::Off => "inputs not checked",
                enqueue::InputCheck::Unavailable(_) => "inputs NOT checked: S3 listing failed",
            };
            if cfg.dry_run {
                println!("{n} jobs (dry run, nothing sent; {checked})");
            } else {
                println!("queued {n} jobs ({checked})");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => {
            run::run(g, a).await?;
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
            let cfg = derive_historic::config(db, a)?;
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
        Command::Jobs(a) => {
            let db = DbConfig::from_args(g)?;
            let report = jobs::run(&db, a).await?;
            print!("{}", report.render(a.json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Requeue(a) => {
            let cfg = requeue::RequeueConfig::from_args(g, a)?;
            let report = requeue::run(&cfg).await?;
            print!("{}", report.render(&cfg));
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(a) => {
            let db = DbConfig::from_args(g)?;
            let cfg = doctor::DoctorConfig::from_args(a)?;
            let report = doctor::run(&db, &cfg).await?;
            print!("{}", report.render(a.json));
            Ok(if report.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bench(a) => {
            let cfg = bench::BenchConfig::from_args(g, a)?;
            let report = bench::run(&cfg, !a.no_progress, shutdown_signal()).await?;
            print!("{}", report.render(a.json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Finalize(a) => {
            let db = DbConfig::from_args(g)?;
            let report = finalize::run(&db, a).await?;
            print!("{}", report.render(a.json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot(p) => {
            let report = match &p.kind {
                PlotKind::Series(a) => {
                    let db = DbConfig::from_args(g)?;
                    plot::series(&db, a).await?
                }
                PlotKind::Map(a) => {
                    let a = a.clone();
                    tokio::task::spawn_blocking(move || plot::map(&a))
                        .await
                        .context("plot map")??
                }
            };
            println!(
                "wrote {} ({} x {}): {}",
                report.path.display(),
                report.size.0,
                report.size.1,
                report.summary
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The data source filter flags of `jobs` and `requeue`, validated.
///
/// # Errors
/// As [`JobFilter::new`].
fn job_filter(a: &JobFilterArgs) -> anyhow::Result<JobFilter> {
    JobFilter::new(
        a.dataset.as_deref(),
        a.scenario.as_deref(),
        a.model.as_deref(),
        a.years.as_deref(),
        a.since.as_deref(),
        a.stale_after,
    )
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

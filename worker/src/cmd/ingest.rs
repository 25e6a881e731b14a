//! `ingest`: the same pipeline on local files, no AWS, with a progress bar and a summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::Instrument;

use crate::cli::IngestArgs;
use crate::config::{DbConfig, PipelineConfig, worker_id};
use crate::db;
use crate::message::{JobSpec, LocationSource};
use crate::pipeline::attempt::Failed;
use crate::pipeline::{self, Attempt, Event, Inputs, Observer, Pipeline};

struct Bar(ProgressBar);

impl Observer for Bar {
    fn event(&self, e: Event) {
        match e {
            Event::Fetching(v) => self.0.set_message(format!("reading {v}")),
            Event::Fetched(..) => {}
            Event::Decoding(v) => self.0.set_message(format!("decoding {v}")),
            Event::Decoded(v, n) => self.0.println(format!("  {v}: {n} cells")),
            Event::Loading(n) => {
                self.0.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} [{bar:40}] {pos}/{len} rows ({per_sec})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                self.0.set_length(n);
                self.0.set_message("loading");
            }
            Event::Rows(n) => self.0.set_position(n),
            Event::Committed(n) => {
                self.0.set_position(n);
                self.0.set_message("committed");
            }
            Event::WaitingForSlot => self
                .0
                .set_message("waiting for a database load slot (--max-db-loads)"),
        }
    }
}

/// Runs one local job; returns whether it succeeded (or was already done).
///
/// # Errors
/// Invalid arguments, missing files, database connection failures.
pub async fn run(dbc: &DbConfig, p: &PipelineConfig, a: &IngestArgs) -> anyhow::Result<bool> {
    let locations = LocationSource::parse(&a.locations, None, true).map_err(anyhow::Error::msg)?;
    let spec = JobSpec::new(
        &a.dataset,
        &a.scenario,
        &a.model,
        a.year,
        &a.variables,
        locations,
        a.update_existing,
        None,
        None,
    )?;
    let files = pipeline::local_inputs(&spec, &a.inputs)?;
    // The load, the background insert of a first job's cells, and one spare.
    let pool = db::pool(dbc, 3)?;
    let pl = Pipeline::new(pool, dbc.schema.clone(), p.clone(), None, worker_id());
    let prepared = pl
        .prepare(&spec)
        .await
        .context("preparing the job (did you run `migrate`?)")?;
    let plan = pl.plan(&spec, &prepared).await?;
    let attempt = Attempt::default();
    if pl.is_done(&spec, &prepared, &plan).await? {
        pl.record_skip(&spec, &prepared, Some(&plan), &attempt)
            .await?;
        println!(
            "{}: this job ({} for {}) is already done (pass --update-existing to reload)",
            spec.id(),
            spec.variables.join(","),
            spec.locations
        );
        return Ok(true);
    }
    // Shows `jobs` this attempt's process is alive (a `run` worker does so with its heartbeat).
    let beat = {
        let ds = prepared.data_source_id;
        let pl = &pl;
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                pl.beat(ds).await;
            }
        }
    };
    let bar = if a.no_progress {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let observer = Arc::new(Bar(bar.clone()));
    let attempt = Attempt {
        observer: Some(observer),
        ..attempt
    };
    let t = Instant::now();
    // The pipeline's lines carry the job from this span (as the consumer's do). One attempt,
    // started, run and (on failure) recorded as the consumer's are; no time limit.
    let inputs = Inputs::Local(files);
    let work = pl
        .run_attempt(&spec, &prepared, &plan, &inputs, &attempt, None)
        .instrument(tracing::info_span!("job", job = %spec.id()));
    let r = tokio::select! {
        r = work => r,
        () = beat => unreachable!("the heartbeat loop never ends"),
    };
    bar.finish_and_clear();
    match r {
        Ok(l) if l.superseded => {
            pl.record_skip(&spec, &prepared, Some(&plan), &attempt)
                .await?;
            println!("{}: finished by another run meanwhile", spec.id());
            Ok(true)
        }
        Ok(l) => {
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{}: {} rows ({} new, {} updated, {} cells already loaded) in {:.2} s — decode {:.2} s, load {:.2} s, {:.0} rows/s; {} unmatched locations",
                spec.id(),
                l.rows,
                l.rows_new,
                l.rows_updated,
                l.cells_skipped,
                secs,
                l.decode_ms as f64 / 1e3,
                l.load_ms as f64 / 1e3,
                l.rows as f64 / secs.max(1e-9),
                l.unmatched
            );
            Ok(true)
        }
        Err(Failed { error: e, .. }) => {
            eprintln!("{}: failed ({}): {e}", spec.id(), e.class());
            Ok(false)
        }
    }
}

//! The bench's jobs: takes the [`BenchConfig`], a pool on the migrated scratch schema and the
//! [`Files`]; runs the jobs at once through the real pipeline, as `run` would, and hands on
//! what they did ([`Measured`]): each job's figures, the wall time, the table's bytes and the
//! WAL written.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::files::{Files, points_geojson};
use super::{BenchConfig, DATASET, JobFigures, Progress, SCENARIO, VARIABLES, YEAR};
use crate::config::{PipelineConfig, Schema, worker_id};
use crate::message::{JobSpec, LocationSource};
use crate::pipeline::{Attempt, Event, Inputs, Loaded, Observer, Pipeline, estimate_bytes};

/// What the jobs did, before it becomes a [`super::BenchReport`].
#[derive(Debug, Clone)]
pub struct Measured {
    /// Each job.
    pub jobs: Vec<JobFigures>,
    /// Jobs whose decoded grids fit in the memory budget at once.
    pub budget_jobs: usize,
    /// From the first job's start to the last job's commit, seconds.
    pub wall_seconds: f64,
    /// `map_cell` rows in the scratch schema.
    pub map_cell_rows: i64,
    /// `pg_total_relation_size` of the scratch `climate_data_year`.
    pub table_bytes: i64,
    /// WAL written while the jobs ran.
    pub wal_bytes: i64,
}

/// One job's pipeline events, passed on to the bench's [`Progress`].
struct JobProgress {
    progress: Arc<dyn Progress>,
    job: usize,
}

impl Observer for JobProgress {
    fn event(&self, e: Event) {
        self.progress.job_event(self.job, e);
    }
}

/// What one run of the jobs reads, and how.
pub struct Source<'a> {
    /// The generated files (their data cells; their bytes too when `inputs` is local).
    pub files: &'a Files,
    /// Pipeline settings (reading by ranges, or downloading whole first).
    pub pipeline: &'a PipelineConfig,
    /// Where the files' bytes come from: the local files, or S3 through a link.
    pub inputs: Inputs,
}

/// Runs `cfg.jobs` jobs at once on `source.inputs` (the generated files, or their copies in
/// S3) with `source.pipeline`'s settings into `scratch` (through `pool`), measuring WAL and
/// table size with `admin`.
///
/// # Errors
/// More cells asked for than the grid has, the points file cannot be written, a job fails,
/// database errors (a standby has no WAL position).
pub async fn measure(
    cfg: &BenchConfig,
    pool: &deadpool_postgres::Pool,
    scratch: &Schema,
    admin: &tokio_postgres::Client,
    source: Source<'_>,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<Measured> {
    let Source {
        files,
        pipeline,
        inputs,
    } = source;
    let data_cells = &files.data_cells;
    // Locations: every data cell, or N of them as GeoJSON points (the file lives as long as
    // the jobs).
    let mut _points = None;
    let locations = match cfg.cells {
        None => LocationSource::All,
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > data_cells.len() {
                bail!(
                    "--cells {n}: the grid has {} data cells (use --cells all)",
                    data_cells.len()
                );
            }
            let f = tempfile::Builder::new()
                .prefix(".bench-points-")
                .suffix(".geojson")
                .tempfile_in(&cfg.pipeline.work_dir)
                .with_context(|| format!("a points file in {}", cfg.pipeline.work_dir.display()))?;
            std::fs::write(f.path(), points_geojson(data_cells, n))
                .with_context(|| format!("writing {}", f.path().display()))?;
            let src = LocationSource::parse(&format!("geojson:{}", f.path().display()), None, true)
                .map_err(anyhow::Error::msg)?;
            _points = Some(f);
            src
        }
    };
    let pl = Pipeline::new(
        pool.clone(),
        scratch.clone(),
        pipeline.clone(),
        None,
        worker_id(),
    );
    let variables: Vec<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    let mut planned = Vec::new();
    for model in DATASET.models().into_iter().take(cfg.jobs) {
        let spec = JobSpec::new(
            DATASET.name(),
            SCENARIO,
            model,
            YEAR,
            &variables,
            locations.clone(),
            false,
            None,
            None,
        )?;
        let prepared = pl.prepare(&spec).await?;
        let plan = pl.plan(&spec, &prepared).await?;
        planned.push((spec, prepared, plan));
    }

    // As `run`: each job takes its share of the memory budget before decoding.
    let budget_mb = (cfg.pipeline.memory_budget >> 20).clamp(1, u64::from(u32::MAX)) as u32;
    let budget = Semaphore::new(budget_mb as usize);
    let need_mb =
        |spec: &JobSpec| (estimate_bytes(spec) >> 20).clamp(1, u64::from(budget_mb)) as u32;
    let budget_jobs = planned
        .first()
        .map_or(0, |(spec, ..)| (budget_mb / need_mb(spec)) as usize);
    let expected_rows = planned.len() as u64
        * cfg
            .cells
            .unwrap_or(data_cells.len() as u64)
            .min(data_cells.len() as u64);
    let lsn0: String = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .context("pg_current_wal_lsn() (bench needs a primary, not a standby)")?
        .get(0);
    progress.jobs_started(planned.len(), expected_rows);
    let t0 = Instant::now();
    let runs = planned
        .iter()
        .enumerate()
        .map(|(k, (spec, prepared, plan))| {
            let observer = Arc::new(JobProgress {
                progress: Arc::clone(&progress),
                job: k,
            });
            let (pl, inputs, budget, need_mb) = (&pl, &inputs, &budget, &need_mb);
            async move {
                let _permit = budget.acquire_many(need_mb(spec)).await?;
                pl.begin_attempt(prepared).await?;
                let attempt = Attempt {
                    observer: Some(observer),
                    ..Attempt::default()
                };
                let t = Instant::now();
                let l: Loaded = pl
                    .execute(spec, prepared, plan, inputs, &attempt)
                    .instrument(tracing::info_span!("job", job = %spec.id()))
                    .await
                    .with_context(|| format!("bench job {}", spec.id()))?;
                anyhow::Ok(JobFigures {
                    model: spec.model.to_owned(),
                    rows: l.rows,
                    seconds: t.elapsed().as_secs_f64(),
                    decode_seconds: l.decode_ms as f64 / 1e3,
                    load_seconds: (l.load_ms + l.slot_wait_ms) as f64 / 1e3,
                    copy_bytes: l.copy_bytes,
                })
            }
        });
    let jobs = futures_util::future::try_join_all(runs).await;
    let wall_seconds = t0.elapsed().as_secs_f64();
    progress.jobs_ended();
    let jobs = jobs?;
    let wal_bytes: i64 = admin
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&lsn0],
        )
        .await?
        .get(0);
    let r = admin
        .query_one(
            &format!(
                "SELECT pg_total_relation_size(to_regclass($1)), (SELECT count(*) FROM {})",
                scratch.table("map_cell")
            ),
            &[&scratch.table("climate_data_year")],
        )
        .await?;
    Ok(Measured {
        jobs,
        budget_jobs,
        wall_seconds,
        table_bytes: r.get(0),
        map_cell_rows: r.get(1),
        wal_bytes,
    })
}

//! Sizes a load by trying it against the target database: takes a [`BenchConfig`] (the
//! database, pipeline tuning, cells and jobs), a [`Progress`] observer and a shutdown future;
//! hands on a [`BenchReport`] (rates, bytes per row, WAL) and records it for `doctor`.
//!
//! 1. **Files** ([`files`]): the three variables (`tasmin`, `tasmax`, `pr`) of one
//!    NEX-GDDP-CMIP6 year at full size (365 × 600 × 1440, 383,727 data cells), written by the
//!    fixture generator ([`fixtures::GridSpec::nex_gddp_cmip6_full_grid`], the files
//!    `benches/e2e.rs` uses) into `<work dir>/nexingest-bench/<grid>/`, once: each file is
//!    written under a private name and renamed into place, so concurrent runs never see a
//!    partial file and later runs reuse it.
//! 2. **Scratch schema** ([`server`]): `nexingest_bench_<time>_<pid>`, migrated with the
//!    project's own migrations, so the table, its storage and its indexes are the production
//!    ones. Dropped at the end, also after an error or when `shutdown` resolves; a run killed
//!    outright leaves it behind, and the next run names such leftovers.
//! 3. **Jobs** ([`measure`]): `jobs` jobs (the same files under that many model names) through
//!    the real pipeline ([`crate::pipeline::Pipeline`], as `ingest` and `run` use it): one
//!    pipeline, one pool of `2K + 2` connections, each job's decoded grids within the memory
//!    budget (as `run` does), COPY under the load slots. The scratch schema starts empty, so
//!    the jobs also insert the grid's `map_cell` rows, as a dataset's first job does.
//! 4. **Figures**: job time (each job's attempt, decode included), aggregate rows/s and MB/s
//!    of the binary COPY stream over the wall time of all jobs, bytes per row on disk
//!    (`pg_total_relation_size` of `climate_data_year`: table, TOAST and indexes, over its
//!    rows), WAL bytes (`pg_wal_lsn_diff` of `pg_current_wal_lsn()` around the jobs: any
//!    other activity on the server in that time counts too).
//! 5. **Through a link** ([`link`], `--link-mbps R`): the same jobs again, each time in a fresh
//!    scratch schema, with their files uploaded (once) to a plain-HTTP S3 (the local moto) and
//!    read through a [`linkproxy`] of R Mbit/s: by ranges, then downloaded whole first. Each
//!    one's wall time ÷ max(its transfer at R, the local run's wall time) says how close a job
//!    gets to its link.
//! 6. **Record** ([`server::save`]): one row in the main schema's `bench_result` (when that
//!    schema is migrated), which [`crate::doctor`] reads for its estimates.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow};
use fixtures::{Calendar, GridSpec, Mask, Storage};
use serde::Serialize;

use crate::catalog::Dataset;
use crate::config::{DbConfig, PipelineConfig, Schema, redact_url};
use crate::db;
use crate::pipeline::{Event, Inputs};

pub mod files;
pub mod link;
pub mod measure;
pub mod server;

/// Dataset of the bench job.
pub const DATASET: Dataset = Dataset::NexGddpCmip6;
/// Scenario of the generated files.
pub const SCENARIO: &str = "ssp585";
/// Year of the generated files (2015: 365 days).
pub const YEAR: i32 = 2015;
/// Member of the generated files.
const MEMBER: &str = "r1i1p1f1";
/// The variables of a production job.
pub const VARIABLES: [&str; 3] = ["tasmin", "tasmax", "pr"];
/// Prefix of scratch schema names.
pub const SCRATCH_PREFIX: &str = "nexingest_bench_";

/// Which grid the files have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchGrid {
    /// The real NEX-GDDP-CMIP6 grid: 365 × 600 × 1440.
    Full,
    /// 365 × 20 × 20, every cell with data (tests).
    Test,
}

impl BenchGrid {
    /// The generator's spec of `var`'s file under `model`.
    pub fn spec(self, var: &str, model: &str) -> GridSpec {
        let mut s = GridSpec::nex_gddp_cmip6_full_grid(
            var,
            SCENARIO,
            model,
            MEMBER,
            YEAR,
            Calendar::Standard,
        );
        if self == BenchGrid::Test {
            // The grid's south-west corner, every cell with data.
            s.lat.truncate(20);
            s.lon.truncate(20);
            s.storage = Storage::cmip6(s.lat.len(), s.lon.len());
            s.mask = Mask::None;
        }
        s
    }
}

/// Validated bench settings (`nexingest bench` builds them from its flags).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The database; its schema is the main one (where the result is recorded).
    pub db: DbConfig,
    /// Pipeline tuning (work dir, memory budget, load slots).
    pub pipeline: PipelineConfig,
    /// Data cells per job (`None`: all).
    pub cells: Option<u64>,
    /// Concurrent jobs: 1 to the dataset's number of models (one model name per job).
    pub jobs: usize,
    /// Grid of the generated files.
    pub grid: BenchGrid,
    /// Record the result in `bench_result`.
    pub save: bool,
    /// Also run the jobs from S3 through a link of this rate (`--link-mbps`).
    pub link: Option<link::LinkBench>,
}

/// Receives a bench's progress: `nexingest bench` draws bars from it, [`NoProgress`] ignores
/// it. Every method has a default that does nothing.
pub trait Progress: Send + Sync {
    /// File `k` of `n` (0-based), of `variable`, is being generated: about `bytes` large.
    fn generating(&self, _variable: &str, _k: usize, _n: usize, _bytes: u64) {}
    /// Bytes of that file written so far.
    fn written(&self, _bytes: u64) {}
    /// That file is in place (or its generation failed).
    fn generated(&self) {}
    /// `jobs` jobs start, about `rows` rows in all.
    fn jobs_started(&self, _jobs: usize, _rows: u64) {}
    /// One of job `job`'s (0-based) pipeline events.
    fn job_event(&self, _job: usize, _e: Event) {}
    /// The jobs ended (all done, or one failed).
    fn jobs_ended(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// One job's figures.
#[derive(Debug, Clone, Serialize)]
pub struct JobFigures {
    /// Model name the job ran under.
    pub model: String,
    /// Rows written.
    pub rows: u64,
    /// The attempt's wall time (files → commit), seconds.
    pub seconds: f64,
    /// Of which decoding, seconds.
    pub decode_seconds: f64,
    /// Of which the load (map_cell ids, COPY, commit, and any wait for a load slot), seconds.
    pub load_seconds: f64,
    /// Bytes of its binary COPY stream.
    pub copy_bytes: u64,
}

/// What the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The server (URL without password).
    pub database: String,
    /// `server_version`.
    pub server_version: String,
    /// Settings that change what a load costs (`fsync`, `full_page_writes`, `wal_level`,
    /// `synchronous_commit`, `max_wal_size`, `wal_compression`, `default_toast_compression`).
    pub settings: BTreeMap<String, String>,
    /// Dataset, scenario and year of the job.
    pub dataset: String,
    /// Scenario.
    pub scenario: String,
    /// Year.
    pub year: i32,
    /// Variables (one `real[]` column each).
    pub variables: Vec<String>,
    /// Grid of the files, `[days, lat, lon]`.
    pub grid: [usize; 3],
    /// `all` or the number of cells asked for.
    pub cells: String,
    /// Data cells (rows) each job loaded.
    pub cells_per_job: u64,
    /// Jobs run at once.
    pub concurrent_jobs: usize,
    /// Jobs whose decoded grids fit in the memory budget at once (fewer than
    /// `concurrent_jobs`: the others waited for memory, as in `run`).
    pub memory_budget_jobs: usize,
    /// Seconds spent generating files now (0 when all were cached).
    pub generate_seconds: f64,
    /// The generated files.
    pub files: Vec<PathBuf>,
    /// Each job.
    pub jobs: Vec<JobFigures>,
    /// Rows of all jobs.
    pub rows: u64,
    /// Wall time from the first job's start to the last job's commit, seconds.
    pub wall_seconds: f64,
    /// Aggregate rows per second over `wall_seconds`.
    pub rows_per_second: f64,
    /// Bytes of all binary COPY streams.
    pub copy_bytes: u64,
    /// MB (10^6 bytes) per second of the binary COPY streams over `wall_seconds`.
    pub copy_mb_per_second: f64,
    /// `map_cell` rows the jobs inserted (a dataset's first job does this, later ones not).
    pub map_cell_rows: i64,
    /// `pg_total_relation_size` of `climate_data_year` (table, TOAST, indexes), bytes.
    pub table_bytes: i64,
    /// `table_bytes` / rows.
    pub bytes_per_row: f64,
    /// WAL written while the jobs ran (`pg_wal_lsn_diff`; includes any other activity on
    /// the server meanwhile), bytes.
    pub wal_bytes: i64,
    /// `wal_bytes` / jobs.
    pub wal_bytes_per_job: f64,
    /// `wal_bytes` / rows.
    pub wal_bytes_per_row: f64,
    /// The scratch schema.
    pub scratch_schema: String,
    /// Whether it was dropped.
    pub scratch_dropped: bool,
    /// Where the result was recorded, or why not.
    pub saved: String,
    /// The jobs again through a link (`--link-mbps`).
    pub link: Option<link::LinkReport>,
}

/// Runs the bench until done or `shutdown` resolves (the scratch schema is dropped either
/// way), telling `progress` how it goes.
///
/// # Errors
/// The database cannot be reached, the role may not create a schema, the work dir is not
/// writable or has too little space, a job fails, or `shutdown` resolved.
pub async fn run(
    cfg: &BenchConfig,
    progress: Arc<dyn Progress>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<BenchReport> {
    // Everything that can fail fast does so before the long generation step.
    let url = redact_url(&cfg.db.url);
    let admin = db::connect(&cfg.db.url).await.with_context(|| {
        format!(
            "cannot connect to the database {url}: check --database-url / \
             NEXINGEST_DATABASE_URL (host, port, user, database, sslmode) and that the server \
             is running"
        )
    })?;
    server::check_create_schema(&admin).await?;
    let leftovers = server::leftover_schemas(&admin).await?;
    if !leftovers.is_empty() {
        tracing::warn!(
            schemas = %leftovers.join(", "),
            "scratch schemas of earlier bench runs that were killed: drop them with \
             DROP SCHEMA \"<name>\" CASCADE once no bench runs"
        );
    }
    let server_version: String = admin
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    let settings = server::settings(&admin).await?;

    let t_gen = Instant::now();
    let files = files::generate(cfg, progress.as_ref()).await?;
    let generate_seconds = if files.generated {
        t_gen.elapsed().as_secs_f64()
    } else {
        0.0
    };

    // Files in S3 for --link-mbps, before any job: a refused upload fails fast.
    let link_bytes = match &cfg.link {
        Some(l) => {
            let models: Vec<&str> = DATASET.models().into_iter().take(cfg.jobs).collect();
            let s3 = crate::aws::clients(&l.aws).await.s3;
            Some(link::upload(&s3, l.bucket(), &l.aws.s3.region, &models, &files).await?)
        }
        None => None,
    };

    // Scratch schemas: unique names, created by the project's migrations, one per run of the
    // jobs (each starts empty, as the local one does). Any still there at the end is dropped,
    // also after an error or when `shutdown` resolves.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{SCRATCH_PREFIX}{stamp}_{}", std::process::id());
    let scratch = Schema::new(&base)?;
    let live = std::sync::Mutex::new(Vec::new());
    let runs = async {
        let local = in_scratch(
            cfg,
            &admin,
            &scratch,
            &live,
            measure::Source {
                files: &files,
                pipeline: &cfg.pipeline,
                inputs: Inputs::Local(files.paths.clone()),
            },
            Arc::clone(&progress),
        )
        .await?;
        let mut link_report = None;
        if let (Some(l), Some(file_bytes)) = (&cfg.link, link_bytes) {
            let mut runs = Vec::new();
            for (k, (path, stream)) in [("by ranges", true), ("download, then decode", false)]
                .into_iter()
                .enumerate()
            {
                tracing::info!(mbps = l.mbps, path, "bench jobs through the link");
                let through = link::Link::start(l).await?;
                let pipeline = PipelineConfig {
                    stream,
                    ..cfg.pipeline.clone()
                };
                let inputs = Inputs::S3 {
                    client: through.s3.clone(),
                    bucket: l.bucket().to_owned(),
                };
                let m = in_scratch(
                    cfg,
                    &admin,
                    &Schema::new(&format!("{base}_{}", k + 1))?,
                    &live,
                    measure::Source {
                        files: &files,
                        pipeline: &pipeline,
                        inputs,
                    },
                    Arc::clone(&progress),
                )
                .await?;
                let st = through.stats();
                let transfer = st.link_busy().as_secs_f64();
                runs.push(link::LinkRun {
                    path: path.to_owned(),
                    rows: m.jobs.iter().map(|j| j.rows).sum(),
                    wall_seconds: m.wall_seconds,
                    bytes_fetched: st.bytes_down,
                    requests: st.requests,
                    transfer_seconds: transfer,
                    ratio: m.wall_seconds / transfer.max(local.wall_seconds).max(1e-9),
                });
            }
            link_report = Some(link::LinkReport {
                mbps: l.mbps,
                latency_ms: l.latency.as_millis() as u64,
                endpoint: l.aws.endpoint_url.clone().unwrap_or_default(),
                bucket: l.bucket().to_owned(),
                file_bytes,
                local_seconds: local.wall_seconds,
                runs,
            });
        }
        anyhow::Ok((local, link_report))
    };
    let r = tokio::select! {
        r = runs => r,
        () = shutdown => Err(anyhow!("interrupted; the scratch schema is dropped")),
    };
    let left: Vec<Schema> = live
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    let mut dropped = Ok(());
    for s in &left {
        if let Err(e) = server::drop_schema(&admin, s).await {
            dropped = Err(e);
        }
    }
    let (m, link_report) = and_dropped(r, dropped)?;

    let rows: u64 = m.jobs.iter().map(|j| j.rows).sum();
    let copy_bytes: u64 = m.jobs.iter().map(|j| j.copy_bytes).sum();
    let secs = m.wall_seconds.max(1e-9);
    let per_row = |b: f64| if rows > 0 { b / rows as f64 } else { 0.0 };
    let mut report = BenchReport {
        database: url,
        server_version,
        settings,
        dataset: DATASET.name().to_owned(),
        scenario: SCENARIO.to_owned(),
        year: YEAR,
        variables: VARIABLES.iter().map(|v| (*v).to_owned()).collect(),
        grid: files.shape,
        cells: cfg
            .cells
            .map_or_else(|| "all".to_owned(), |n| n.to_string()),
        cells_per_job: m.jobs.first().map_or(0, |j| j.rows),
        concurrent_jobs: cfg.jobs,
        memory_budget_jobs: m.budget_jobs,
        generate_seconds,
        files: files.paths.values().cloned().collect(),
        rows,
        wall_seconds: m.wall_seconds,
        rows_per_second: rows as f64 / secs,
        copy_bytes,
        copy_mb_per_second: copy_bytes as f64 / 1e6 / secs,
        map_cell_rows: m.map_cell_rows,
        table_bytes: m.table_bytes,
        bytes_per_row: per_row(m.table_bytes as f64),
        wal_bytes: m.wal_bytes,
        wal_bytes_per_job: m.wal_bytes as f64 / cfg.jobs as f64,
        wal_bytes_per_row: per_row(m.wal_bytes as f64),
        jobs: m.jobs,
        scratch_schema: scratch.name().to_owned(),
        scratch_dropped: true,
        saved: String::new(),
        link: link_report,
    };
    report.saved = if cfg.save {
        server::save(&admin, &cfg.db.schema, &report).await?
    } else {
        "not recorded (--no-save)".to_owned()
    };
    Ok(report)
}

/// Runs the jobs once ([`measure::measure`]) in the fresh scratch schema `scratch`, noted in
/// `live` until it is dropped again.
async fn in_scratch(
    cfg: &BenchConfig,
    admin: &tokio_postgres::Client,
    scratch: &Schema,
    live: &std::sync::Mutex<Vec<Schema>>,
    source: measure::Source<'_>,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<measure::Measured> {
    if let Ok(mut l) = live.lock() {
        l.push(scratch.clone());
    }
    let sdb = DbConfig {
        url: cfg.db.url.clone(),
        schema: scratch.clone(),
    };
    let pool = db::pool(&sdb, cfg.jobs * 2 + 2)?;
    let r = async {
        db::migrate(&pool, scratch)
            .await
            .with_context(|| format!("creating the scratch schema {scratch}"))?;
        measure::measure(cfg, &pool, scratch, admin, source, progress).await
    }
    .await;
    pool.close();
    let dropped = server::drop_schema(admin, scratch).await;
    if dropped.is_ok()
        && let Ok(mut l) = live.lock()
    {
        l.retain(|s| s != scratch);
    }
    and_dropped(r, dropped)
}

/// A run's result once its scratch schema's drop has been tried: the run's error first, with a
/// failed drop as its context; a failed drop alone is an error too.
fn and_dropped<T>(r: anyhow::Result<T>, dropped: anyhow::Result<()>) -> anyhow::Result<T> {
    match (r, dropped) {
        (Ok(m), Ok(())) => Ok(m),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(d)) => Err(e.context(d)),
        (Ok(_), Err(d)) => Err(d),
    }
}

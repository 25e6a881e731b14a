//! `bench`: size a load by trying it against the target database.
//!
//! 1. **Files**: the three variables (`tasmin`, `tasmax`, `pr`) of one NEX-GDDP-CMIP6 year at
//!    full size (365 × 600 × 1440, 383,727 data cells), written by the fixture generator
//!    ([`fixtures::GridSpec::nex_gddp_cmip6_full_grid`], the files `benches/e2e.rs` uses) into
//!    `<work dir>/nexingest-bench/<grid>/`, once: each file is written under a private name
//!    and renamed into place, so concurrent runs never see a partial file and later runs
//!    reuse it.
//! 2. **Scratch schema**: `nexingest_bench_<time>_<pid>`, migrated with the project's own
//!    migrations, so the table, its storage and its indexes are the production ones. Dropped
//!    at the end, also after an error or Ctrl-C (SIGINT/SIGTERM); a run killed outright leaves
//!    it behind, and the next run names such leftovers.
//! 3. **Jobs**: `--jobs K` jobs (the same files under K model names) through the real
//!    pipeline ([`crate::pipeline::Pipeline`], as `ingest` and `run` use it): one pipeline,
//!    one pool of `2K + 2` connections, each job's decoded grids within `--memory-budget-mb`
//!    (as `run` does), COPY under `--max-db-loads`. The scratch schema starts empty, so the
//!    jobs also insert the grid's `map_cell` rows, as a dataset's first job does.
//! 4. **Figures**: job time (each job's attempt, decode included), aggregate rows/s and MB/s
//!    of the binary COPY stream over the wall time of all jobs, bytes per row on disk
//!    (`pg_total_relation_size` of `climate_data_year`: table, TOAST and indexes, over its
//!    rows), WAL bytes (`pg_wal_lsn_diff` of `pg_current_wal_lsn()` around the jobs: any
//!    other activity on the server in that time counts too).
//! 5. **Record**: one row in the main schema's `bench_result` (when that schema is migrated),
//!    which `doctor` reads for its estimates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use fixtures::{Calendar, GridSpec, Mask, Storage};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::catalog::Dataset;
use crate::cli::{BenchArgs, GlobalArgs};
use crate::config::{DbConfig, PipelineConfig, Schema, redact_url, worker_id};
use crate::db;
use crate::message::{JobSpec, LocationSource};
use crate::pipeline::{Attempt, Event, Inputs, Loaded, Observer, Pipeline, estimate_bytes};

/// Dataset of the bench job.
const DATASET: Dataset = Dataset::NexGddpCmip6;
/// Scenario, year and member of the generated files (2015: 365 days).
const SCENARIO: &str = "ssp585";
const YEAR: i32 = 2015;
const MEMBER: &str = "r1i1p1f1";
/// The variables of a production job.
const VARIABLES: [&str; 3] = ["tasmin", "tasmax", "pr"];
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
    fn spec(self, var: &str, model: &str) -> GridSpec {
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

/// Validated `bench` settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The database; its schema is the main one (where the result is recorded).
    pub db: DbConfig,
    /// Pipeline tuning (work dir, memory budget, load slots).
    pub pipeline: PipelineConfig,
    /// Data cells per job (`None`: all).
    pub cells: Option<u64>,
    /// Concurrent jobs.
    pub jobs: usize,
    /// Grid of the generated files.
    pub grid: BenchGrid,
    /// Record the result in `bench_result`.
    pub save: bool,
    /// Progress bars.
    pub progress: bool,
}

impl BenchConfig {
    /// From flags.
    ///
    /// # Errors
    /// A missing or invalid database URL, schema or pipeline setting; `--cells` not `all` or a
    /// positive number; `--jobs` outside 1..=the dataset's models.
    pub fn from_args(g: &GlobalArgs, a: &BenchArgs) -> anyhow::Result<Self> {
        let db = DbConfig::from_args(g)?;
        let pipeline = PipelineConfig::from_args(&a.pipeline)?;
        let cells = super::doctor::parse_cells(&a.cells)?;
        let models = DATASET.models().len();
        if !(1..=models).contains(&a.jobs) {
            bail!(
                "--jobs {}: use 1..={models} (one model name per job)",
                a.jobs
            );
        }
        Ok(BenchConfig {
            db,
            pipeline,
            cells,
            jobs: a.jobs,
            grid: if a.test_grid {
                BenchGrid::Test
            } else {
                BenchGrid::Full
            },
            save: !a.no_save,
            progress: !a.no_progress,
        })
    }
}

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

/// What `bench` measured.
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
    /// Jobs whose decoded grids fit in `--memory-budget-mb` at once (fewer than
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
}

/// Runs the bench until done or `shutdown` resolves (the scratch schema is dropped either
/// way).
///
/// # Errors
/// The database cannot be reached, the role may not create a schema, the work dir is not
/// writable or has too little space, a job fails, or `shutdown` resolved.
pub async fn run(
    cfg: &BenchConfig,
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
    check_create_schema(&admin).await?;
    let leftovers = leftover_schemas(&admin).await?;
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
    let settings = server_settings(&admin).await?;

    let t_gen = Instant::now();
    let (files, generated, shape, data_cells) = generate(cfg).await?;
    let generate_seconds = if generated {
        t_gen.elapsed().as_secs_f64()
    } else {
        0.0
    };

    // Scratch schema: unique name, created by the project's migrations.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let scratch = Schema::new(&format!("{SCRATCH_PREFIX}{stamp}_{}", std::process::id()))?;
    let sdb = DbConfig {
        url: cfg.db.url.clone(),
        schema: scratch.clone(),
    };
    let pool = db::pool(&sdb, cfg.jobs * 2 + 2)?;
    let measured = async {
        db::migrate(&pool, &scratch)
            .await
            .with_context(|| format!("creating the scratch schema {scratch}"))?;
        measure(cfg, &pool, &scratch, &admin, &files, data_cells).await
    };
    let r = tokio::select! {
        r = measured => r,
        () = shutdown => Err(anyhow!("interrupted; the scratch schema is dropped")),
    };
    pool.close();
    let dropped = drop_schema(&admin, &scratch).await;
    let m = match (r, dropped) {
        (Ok(m), Ok(())) => m,
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(d)) => return Err(e.context(d)),
        (Ok(_), Err(d)) => return Err(d),
    };

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
        grid: shape,
        cells: cfg
            .cells
            .map_or_else(|| "all".to_owned(), |n| n.to_string()),
        cells_per_job: m.jobs.first().map_or(0, |j| j.rows),
        concurrent_jobs: cfg.jobs,
        memory_budget_jobs: m.budget_jobs,
        generate_seconds,
        files: files.values().cloned().collect(),
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
    };
    report.saved = if cfg.save {
        save(&admin, &cfg.db.schema, &report).await?
    } else {
        "not recorded (--no-save)".to_owned()
    };
    Ok(report)
}

/// Fails with the fix when the role may not create a schema in the database.
async fn check_create_schema(c: &tokio_postgres::Client) -> anyhow::Result<()> {
    let r = c
        .query_one(
            "SELECT has_database_privilege(current_database(), 'CREATE'),
                    current_user::text, current_database()::text",
            &[],
        )
        .await
        .context("checking the CREATE privilege on the database")?;
    let (ok, user, database): (bool, String, String) = (r.get(0), r.get(1), r.get(2));
    if !ok {
        bail!(
            "role \"{user}\" may not create schemas in database \"{database}\" (bench loads \
             into a scratch schema it drops afterwards): GRANT CREATE ON DATABASE \"{database}\" \
             TO \"{user}\", or run bench as a role that may"
        );
    }
    Ok(())
}

/// Scratch schemas left by bench runs that were killed.
async fn leftover_schemas(c: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1",
            &[&SCRATCH_PREFIX],
        )
        .await
        .context("listing scratch schemas")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn server_settings(c: &tokio_postgres::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let names = [
        "fsync",
        "full_page_writes",
        "wal_level",
        "synchronous_commit",
        "max_wal_size",
        "wal_compression",
        "default_toast_compression",
    ];
    let rows = c
        .query(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1)",
            &[&&names[..]],
        )
        .await
        .context("reading pg_settings")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Bytes free for an unprivileged user in the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A generous size of one generated file: the whole grid's floats at a fifth (data cells
/// only, deflated; the full grid's files are ~195 MB).
fn expected_file_bytes(spec: &GridSpec) -> u64 {
    let [t, y, x] = spec.shape();
    (t * y * x * 4 / 5) as u64
}

/// The job's files, generated when missing: (variable → path, whether any was generated,
/// the grid's shape, the data cells' `(lat, lon)`).
#[allow(clippy::type_complexity)]
async fn generate(
    cfg: &BenchConfig,
) -> anyhow::Result<(BTreeMap<String, PathBuf>, bool, [usize; 3], Vec<(f64, f64)>)> {
    let model = DATASET.models()[0];
    let specs: Vec<GridSpec> = VARIABLES.iter().map(|v| cfg.grid.spec(v, model)).collect();
    let shape = specs[0].shape();
    let dir = cfg.pipeline.work_dir.join("nexingest-bench").join(format!(
        "{}-{}x{}x{}",
        match cfg.grid {
            BenchGrid::Full => "full",
            BenchGrid::Test => "test",
        },
        shape[0],
        shape[1],
        shape[2]
    ));
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create {} for the generated files: set --work-dir / NEXINGEST_WORK_DIR to \
             a writable directory with ~{} MB free",
            dir.display(),
            specs.iter().map(expected_file_bytes).sum::<u64>() / 1_000_000
        )
    })?;
    let mut files = BTreeMap::new();
    let mut generated = false;
    let n = specs.len();
    for (k, spec) in specs.into_iter().enumerate() {
        let path = dir.join(spec.file_name());
        if path.is_file() {
            files.insert(spec.var.name.clone(), path);
            continue;
        }
        let need = expected_file_bytes(&spec);
        let free = free_bytes(&dir).with_context(|| format!("free space of {}", dir.display()))?;
        if free < need {
            bail!(
                "not enough disk space in {}: {} MB free, generating {} needs ~{} MB (the \
                 three files ~{} MB, kept for later runs): free some space or set --work-dir / \
                 NEXINGEST_WORK_DIR to a larger volume",
                dir.display(),
                free / 1_000_000,
                spec.file_name(),
                need / 1_000_000,
                need * n as u64 / 1_000_000
            );
        }
        let tmp = dir.join(format!(
            ".{}.{}.{}.partial",
            spec.file_name(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let bar = if cfg.progress {
            let b = ProgressBar::new(need);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} written ({elapsed}; ~13 s per file in a release \
                     build, once)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(format!("generating {} ({}/{n})", spec.var.name, k + 1));
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        tracing::info!(file = %path.display(), "generating (once)");
        let var = spec.var.name.clone();
        let (tmp2, bar2) = (tmp.clone(), bar.clone());
        let work = tokio::task::spawn_blocking(move || fixtures::write_grid(&tmp2, &spec));
        let poll = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(m) = std::fs::metadata(&tmp) {
                    bar2.set_position(m.len());
                }
            }
        };
        let r = tokio::select! {
            r = work => r,
            () = poll => unreachable!("the progress loop never ends"),
        };
        bar.finish_and_clear();
        let written = r.context("the generator panicked").and_then(|r| {
            r.map_err(|e| {
                let full = free_bytes(&dir).is_ok_and(|f| f < 16 << 20);
                anyhow!(
                    "generating {}: {e}{}",
                    path.display(),
                    if full {
                        ": the disk is full; free some space or set --work-dir / \
                         NEXINGEST_WORK_DIR to a larger volume"
                    } else {
                        ""
                    }
                )
            })
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        generated = true;
        files.insert(var, path);
    }
    // Data cells from the generator's own mask (for `--cells N`).
    let spec = cfg.grid.spec(VARIABLES[0], model);
    let mut cells = Vec::new();
    for (i, &la) in spec.lat.iter().enumerate() {
        for (j, &lo) in spec.lon.iter().enumerate() {
            if !spec.is_masked(i, j) {
                cells.push((la, lo));
            }
        }
    }
    Ok((files, generated, shape, cells))
}

/// A GeoJSON FeatureCollection of `n` data cells' centres spread evenly over `cells`.
fn points_geojson(cells: &[(f64, f64)], n: usize) -> String {
    let mut s = String::from(r#"{"type":"FeatureCollection","features":["#);
    for k in 0..n {
        let (la, lo) = cells[k * cells.len() / n];
        let lo = if lo > 180.0 { lo - 360.0 } else { lo };
        if k > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"type":"Feature","properties":{{"id":"bench-{k}","name":"bench cell {k}"}},"geometry":{{"type":"Point","coordinates":[{lo},{la}]}}}}"#
        );
    }
    s.push_str("]}");
    s
}

/// What the jobs did, before it becomes a report.
struct Measured {
    jobs: Vec<JobFigures>,
    budget_jobs: usize,
    wall_seconds: f64,
    map_cell_rows: i64,
    table_bytes: i64,
    wal_bytes: i64,
}

/// Progress of one job into a shared bar.
struct JobBar {
    bar: ProgressBar,
    rows: Arc<Vec<AtomicU64>>,
    job: usize,
    jobs: usize,
}

impl Observer for JobBar {
    fn event(&self, e: Event) {
        let who = if self.jobs > 1 {
            format!("job {}: ", self.job + 1)
        } else {
            String::new()
        };
        match e {
            Event::Decoding(v) => self.bar.set_message(format!("{who}decoding {v}")),
            Event::Loading(_) => self.bar.set_message(format!("{who}loading")),
            Event::WaitingForSlot => self
                .bar
                .set_message(format!("{who}waiting for a load slot (--max-db-loads)")),
            Event::Rows(n) | Event::Committed(n) => {
                self.rows[self.job].store(n, Ordering::Relaxed);
                let all: u64 = self.rows.iter().map(|r| r.load(Ordering::Relaxed)).sum();
                self.bar.set_position(all);
            }
            _ => {}
        }
    }
}

async fn measure(
    cfg: &BenchConfig,
    pool: &deadpool_postgres::Pool,
    scratch: &Schema,
    admin: &tokio_postgres::Client,
    files: &BTreeMap<String, PathBuf>,
    data_cells: Vec<(f64, f64)>,
) -> anyhow::Result<Measured> {
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
            std::fs::write(f.path(), points_geojson(&data_cells, n))
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
        cfg.pipeline.clone(),
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
    let bar = if cfg.progress {
        let b = ProgressBar::new(expected_rows);
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} rows ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        ProgressBar::hidden()
    };
    let rows = Arc::new((0..planned.len()).map(|_| AtomicU64::new(0)).collect());
    let lsn0: String = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .context("pg_current_wal_lsn() (bench needs a primary, not a standby)")?
        .get(0);
    let inputs = Inputs::Local(files.clone());
    let t0 = Instant::now();
    let runs = planned
        .iter()
        .enumerate()
        .map(|(k, (spec, prepared, plan))| {
            let observer = Arc::new(JobBar {
                bar: bar.clone(),
                rows: Arc::clone(&rows),
                job: k,
                jobs: cfg.jobs,
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
    bar.finish_and_clear();
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

/// Drops the scratch schema (waiting up to a minute for the locks of an abandoned load).
async fn drop_schema(c: &tokio_postgres::Client, scratch: &Schema) -> anyhow::Result<()> {
    c.batch_execute(&format!(
        "SET statement_timeout = '120s'; SET lock_timeout = '60s';
         SET client_min_messages = warning;
         DROP SCHEMA IF EXISTS {scratch} CASCADE"
    ))
    .await
    .with_context(|| {
        format!(
            "dropping the scratch schema {scratch}: drop it by hand with DROP SCHEMA {scratch} \
             CASCADE"
        )
    })
}

/// Records the report in the main schema's `bench_result`, when the schema has it.
async fn save(
    c: &tokio_postgres::Client,
    schema: &Schema,
    r: &BenchReport,
) -> anyhow::Result<String> {
    let table = schema.table("bench_result");
    let exists: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(format!(
            "not recorded: schema {schema} has no bench_result table (run `nexingest migrate`, \
             then bench again, for `doctor` to use the figures)"
        ));
    }
    let json = serde_json::to_string(r)?;
    let id: i64 = c
        .query_one(
            &format!(
                "INSERT INTO {table} (dataset, variables, cells_per_job, concurrent_jobs,
                     rows_loaded, wall_seconds, rows_per_second, bytes_per_row,
                     wal_bytes_per_row, report)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)
                 RETURNING id"
            ),
            &[
                &r.dataset,
                &r.variables,
                &(r.cells_per_job as i64),
                &(r.concurrent_jobs as i32),
                &(r.rows as i64),
                &r.wall_seconds,
                &r.rows_per_second,
                &r.bytes_per_row,
                &r.wal_bytes_per_row,
                &json,
            ],
        )
        .await
        .with_context(|| format!("recording the result in {table}"))?
        .get(0);
    Ok(format!(
        "recorded in {table} (id {id}); `nexingest doctor` uses it"
    ))
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

impl BenchReport {
    /// What `bench` prints.
    pub fn render(&self, json: bool) -> String {
        if json {
            return format!("{:#}\n", serde_json::json!(self));
        }
        let mut o = String::new();
        let s = |k: &str| self.settings.get(k).map_or("?", String::as_str);
        let _ = writeln!(
            o,
            "database {} (PostgreSQL {}; fsync={}, full_page_writes={}, wal_level={}, \
             synchronous_commit={}, max_wal_size={})",
            self.database,
            self.server_version,
            s("fsync"),
            s("full_page_writes"),
            s("wal_level"),
            s("synchronous_commit"),
            s("max_wal_size")
        );
        let _ = writeln!(
            o,
            "job: {} {} {} {}, grid {}×{}×{}, {} data cells per job ({}), {} job{} at once{}",
            self.dataset,
            self.scenario,
            self.year,
            self.variables.join(","),
            self.grid[0],
            self.grid[1],
            self.grid[2],
            self.cells_per_job,
            if self.cells == "all" {
                "all".to_owned()
            } else {
                "--cells, as GeoJSON points".to_owned()
            },
            self.concurrent_jobs,
            if self.concurrent_jobs == 1 { "" } else { "s" },
            if self.generate_seconds > 0.0 {
                format!("; files generated in {:.1} s", self.generate_seconds)
            } else {
                "; files cached".to_owned()
            }
        );
        let _ = writeln!(
            o,
            "  {:<14} {:>10} {:>9} {:>9} {:>9} {:>11}",
            "model", "rows", "job s", "decode s", "load s", "rows/s"
        );
        for j in &self.jobs {
            let _ = writeln!(
                o,
                "  {:<14} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>11.0}",
                j.model,
                j.rows,
                j.seconds,
                j.decode_seconds,
                j.load_seconds,
                j.rows as f64 / j.seconds.max(1e-9)
            );
        }
        let _ = writeln!(
            o,
            "total: {} rows in {:.2} s: {:.0} rows/s, {:.1} MB/s of binary COPY stream ({})",
            self.rows,
            self.wall_seconds,
            self.rows_per_second,
            self.copy_mb_per_second,
            mb(self.copy_bytes as f64)
        );
        let _ = writeln!(
            o,
            "on disk: {:.0} bytes per row (climate_data_year with TOAST and indexes: {})",
            self.bytes_per_row,
            mb(self.table_bytes as f64)
        );
        let _ = writeln!(
            o,
            "WAL: {} per job, {:.0} bytes per row (pg_wal_lsn_diff; includes any other \
             activity on the server meanwhile)",
            mb(self.wal_bytes_per_job),
            self.wal_bytes_per_row
        );
        if self.memory_budget_jobs < self.concurrent_jobs {
            let _ = writeln!(
                o,
                "note: --memory-budget-mb let only {} of the {} jobs hold their decoded grids at \
                 once (a whole-grid job of three variables needs ~3.8 GB), so the others waited, \
                 as in `run`: raise it (NEXINGEST_MEMORY_BUDGET_MB) to measure them all at once",
                self.memory_budget_jobs.max(1),
                self.concurrent_jobs
            );
        }
        if self.map_cell_rows > 0 {
            let _ = writeln!(
                o,
                "note: the scratch schema started empty, so the jobs also inserted {} map_cell \
                 rows, as a dataset's first job does (later jobs do not)",
                self.map_cell_rows
            );
        }
        let _ = writeln!(
            o,
            "scratch schema {} {}; {}",
            self.scratch_schema,
            if self.scratch_dropped {
                "dropped"
            } else {
                "NOT dropped"
            },
            self.saved
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_spread_over_the_data_cells_and_in_range() {
        let cells: Vec<(f64, f64)> = (0..10)
            .map(|k| (k as f64, 170.0 + k as f64 * 2.0))
            .collect();
        let g: serde_json::Value = serde_json::from_str(&points_geojson(&cells, 5)).unwrap();
        let f = g["features"].as_array().unwrap();
        assert_eq!(f.len(), 5);
        let c: Vec<(f64, f64)> = f
            .iter()
            .map(|x| {
                let p = &x["geometry"]["coordinates"];
                (p[1].as_f64().unwrap(), p[0].as_f64().unwrap())
            })
            .collect();
        assert_eq!(
            c,
            [
                (0.0, 170.0),
                (2.0, 174.0),
                (4.0, 178.0),
                (6.0, -178.0),
                (8.0, -174.0)
            ]
        );
    }
}

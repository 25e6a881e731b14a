//! `nexingest bench`: its flags as [`BenchConfig`], progress bars over [`crate::bench::run`],
//! and the report as text or JSON.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

/// What [`crate::cmd::dispatch`] calls: the library's settings.
pub use crate::bench::BenchConfig;
use crate::bench::link::LinkBench;
use crate::bench::{self, BenchGrid, BenchReport, NoProgress, Progress};
use crate::cli::{BenchArgs, GlobalArgs};
use crate::config::{AwsConfig, DbConfig, PipelineConfig};
use crate::doctor::parse_cells;
use crate::pipeline::Event;

impl BenchConfig {
    /// From `bench`'s flags.
    ///
    /// # Errors
    /// A missing or invalid database URL, schema or pipeline setting; `--cells` not `all` or a
    /// positive number; `--jobs` outside 1..=the dataset's models; `--link-mbps` not positive
    /// or without a plain `http://` endpoint.
    pub fn from_args(g: &GlobalArgs, a: &BenchArgs) -> anyhow::Result<Self> {
        let db = DbConfig::from_args(g)?;
        let pipeline = PipelineConfig::from_args(&a.pipeline)?;
        let cells = parse_cells(&a.cells)?;
        let models = bench::DATASET.models().len();
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
            link: match a.link_mbps {
                Some(mbps) => Some(LinkBench::new(
                    mbps,
                    Duration::from_millis(a.link_latency_ms),
                    AwsConfig::from_args(&a.aws)?,
                )?),
                None => None,
            },
        })
    }
}

/// Runs the bench ([`bench::run`]), with progress bars when `progress`.
///
/// # Errors
/// As [`bench::run`].
pub async fn run(
    cfg: &BenchConfig,
    progress: bool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<BenchReport> {
    if progress {
        bench::run(cfg, Arc::new(Bars::default()), shutdown).await
    } else {
        bench::run(cfg, Arc::new(NoProgress), shutdown).await
    }
}

/// The bars: one per generated file, then one of all jobs' rows (with each job's rows so far).
#[derive(Default)]
struct Bars {
    file: Mutex<Option<ProgressBar>>,
    jobs: Mutex<Option<(ProgressBar, Vec<u64>)>>,
}

impl Progress for Bars {
    fn generating(&self, variable: &str, k: usize, n: usize, bytes: u64) {
        let b = ProgressBar::new(bytes);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {bytes} written ({elapsed}; ~13 s per file in a release \
                 build, once)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_message(format!("generating {variable} ({}/{n})", k + 1));
        b.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut slot) = self.file.lock() {
            *slot = Some(b);
        }
    }

    fn written(&self, bytes: u64) {
        if let Ok(Some(b)) = self.file.lock().as_deref() {
            b.set_position(bytes);
        }
    }

    fn generated(&self) {
        if let Some(b) = self.file.lock().ok().and_then(|mut b| b.take()) {
            b.finish_and_clear();
        }
    }

    fn jobs_started(&self, jobs: usize, rows: u64) {
        let b = ProgressBar::new(rows);
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} rows ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut slot) = self.jobs.lock() {
            *slot = Some((b, vec![0; jobs]));
        }
    }

    fn job_event(&self, job: usize, e: Event) {
        let Ok(mut slot) = self.jobs.lock() else {
            return;
        };
        let Some((bar, rows)) = slot.as_mut() else {
            return;
        };
        let who = if rows.len() > 1 {
            format!("job {}: ", job + 1)
        } else {
            String::new()
        };
        match e {
            Event::Decoding(v) => bar.set_message(format!("{who}decoding {v}")),
            Event::Loading(_) => bar.set_message(format!("{who}loading")),
            Event::WaitingForSlot => {
                bar.set_message(format!("{who}waiting for a load slot (--max-db-loads)"))
            }
            Event::Rows(n) | Event::Committed(n) => {
                if let Some(r) = rows.get_mut(job) {
                    *r = n;
                }
                bar.set_position(rows.iter().sum());
            }
            _ => {}
        }
    }

    fn jobs_ended(&self) {
        if let Some((b, _)) = self.jobs.lock().ok().and_then(|mut b| b.take()) {
            b.finish_and_clear();
        }
    }
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

impl BenchReport {
    /// What `bench` prints: the server, the job, each job's figures, the totals and notes; or
    /// the report as JSON.
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
        if let Some(l) = &self.link {
            let _ = writeln!(
                o,
                "through a link of {:.0} Mbps, {} ms per request (a local proxy in front of {}; \
                 the jobs' files, {}, in s3://{}/): each path in a fresh scratch schema",
                l.mbps,
                l.latency_ms,
                l.endpoint,
                mb(l.file_bytes as f64),
                l.bucket
            );
            let _ = writeln!(
                o,
                "  {:<22} {:>9} {:>11} {:>9} {:>11}  {:>22}",
                "path",
                "job s",
                "fetched MB",
                "requests",
                "transfer s",
                format!("÷ max(transfer, {:.1} s)", l.local_seconds)
            );
            for r in &l.runs {
                let _ = writeln!(
                    o,
                    "  {:<22} {:>9.2} {:>11.1} {:>9} {:>11.2}  {:>22.2}",
                    r.path,
                    r.wall_seconds,
                    r.bytes_fetched as f64 / 1e6,
                    r.requests,
                    r.transfer_seconds,
                    r.ratio
                );
            }
            let _ = writeln!(
                o,
                "  ({:.1} s is the local run above: decode + load with no transfer; 1.00 is a \
                 job that fully overlaps its transfer with them)",
                l.local_seconds
            );
        }
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

//! Derived historic data (`nexingest derive-historic`): per dataset, over the `historical`
//! scenario's loaded data, for each period a 366-slot average year per cell and percentile
//! baselines per cell (semantics in [`stats`] and the README).
//!
//! Each (dataset, period) is one pipeline, top to bottom:
//! - [`plan`] — which datasets, periods (all 30-year windows fully loaded, or the requested
//!   ones, checked), data sources, models, variables and cells;
//! - [`stream`] — the input rows through `--streams` binary `COPY (SELECT …) TO STDOUT`s, each
//!   a merge of the data sources' primary-key scans ordered by cell over one cell range,
//!   framed by [`pgcopy::decode`] and cut into batches of whole cells;
//! - [`compute`] — each batch's cells in parallel on a rayon pool (`--jobs`), decoding the
//!   tuples straight into reused [`stats::CellWork`] buffers;
//! - write — the results through binary COPY inside one transaction that first deletes the
//!   (dataset, period)'s earlier results (all of them, or the selected cities' cells), so a
//!   re-run replaces them and a failure leaves them as they were. The average-year COPY runs
//!   while the input streams in; baselines (a few rows per cell) follow from memory.
//!
//! Then `ANALYZE` of the tables written.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use anyhow::{Context, bail};
use deadpool_postgres::Pool;
use tracing::info;

use crate::config::{DbConfig, Schema};
use crate::db;

pub mod compute;
pub mod periods;
pub mod plan;
pub mod stats;
pub mod stream;
mod write;

pub use periods::Period;
pub use plan::{Cells, DatasetPlan, PeriodPlan};

/// Validated settings of a `derive-historic` run.
#[derive(Debug, Clone)]
pub struct DeriveConfig {
    /// Where the data is.
    pub db: DbConfig,
    /// One dataset (catalog name, case-insensitive), or every dataset with historical data.
    pub dataset: Option<String>,
    /// Explicit periods; `None`: every standard 30-year window that is fully loaded.
    pub periods: Option<Vec<Period>>,
    /// Which cells.
    pub cells: Cells,
    /// Threads computing cells.
    pub jobs: usize,
    /// Parallel `COPY … TO` input streams.
    pub streams: usize,
}

/// A model left out of a cell's percentile baselines because it lacks years of the period.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// `map_cell.id`.
    pub cell: i64,
    /// The cell's latitude (from `map_cell`).
    pub lat: f64,
    /// The cell's longitude.
    pub lon: f64,
    /// The models left out, each with the years it has for the cell (of the period's).
    pub models: Vec<(String, u32)>,
}

/// What one (dataset, period) did.
#[derive(Debug, Clone)]
pub struct PeriodReport {
    /// Dataset name.
    pub dataset: String,
    /// The period.
    pub period: Period,
    /// `historic_period.id`.
    pub period_id: i32,
    /// Models of the period (data sources: models × years).
    pub models: Vec<String>,
    /// Variables derived (columns).
    pub variables: Vec<&'static str>,
    /// Data sources read.
    pub data_sources: usize,
    /// Cells with results.
    pub cells: u64,
    /// Input rows read.
    pub rows_read: u64,
    /// Bytes of the input COPY streams.
    pub bytes_read: u64,
    /// `historic_average_year` rows written.
    pub average_rows: u64,
    /// `climate_baseline` rows written.
    pub baseline_rows: u64,
    /// Earlier rows replaced (average years + baselines deleted).
    pub replaced: u64,
    /// Wall time, seconds.
    pub secs: f64,
    /// Cells where a model was left out of the baselines.
    pub left_out: Vec<LeftOut>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per (dataset, period), in order.
    pub periods: Vec<PeriodReport>,
    /// Seconds the final `ANALYZE` took.
    pub analyze_secs: f64,
}

/// Receives progress while a run works (the CLI draws a progress bar).
pub trait Observer: Send + Sync {
    /// A (dataset, period) starts; about `rows` input rows are expected.
    fn period_started(&self, _dataset: &str, _period: Period, _rows: u64) {}
    /// Input rows and bytes read so far in the current period.
    fn progress(&self, _rows: u64, _bytes: u64) {}
    /// A (dataset, period) committed.
    fn period_done(&self, _report: &PeriodReport) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// Runs `derive-historic`: plans everything first (so a period that is not fully loaded is an
/// error before anything is written), then derives each (dataset, period) in its own
/// transaction, then `ANALYZE`s the tables written.
///
/// # Errors
/// No historical data, unknown dataset, a period not fully loaded, database or data errors
/// (a period that fails leaves its earlier results in place; periods committed before it stay).
pub async fn run(cfg: &DeriveConfig, observer: Arc<dyn Observer>) -> anyhow::Result<Report> {
    let pool = db::pool(&cfg.db, cfg.streams + 2)?;
    let plans = {
        let client = pool.get().await.context("connecting to the database")?;
        plan::plan(&**client, cfg)
            .await
            .context("planning (did you run `nexingest migrate`?)")?
    };
    let rayon_pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.jobs)
            .thread_name(|i| format!("derive-{i}"))
            .build()
            .context("starting the compute threads")?,
    );
    let mut report = Report::default();
    for d in &plans {
        for p in &d.periods {
            let r = derive_period(&pool, &cfg.db.schema, cfg, d, p, &rayon_pool, &*observer)
                .await
                .with_context(|| format!("{} {}", d.name, p.period))?;
            observer.period_done(&r);
            report.periods.push(r);
        }
    }
    let t = Instant::now();
    let client = pool.get().await?;
    client
        .batch_execute(
            "SET statement_timeout = 0;
             ANALYZE historic_period, historic_average_year, climate_baseline",
        )
        .await
        .context("ANALYZE")?;
    report.analyze_secs = t.elapsed().as_secs_f64();
    Ok(report)
}

/// Input rows and bytes read by all streams of a period.
#[derive(Debug, Default)]
pub struct Counters {
    /// Tuples read.
    pub rows: AtomicU64,
    /// Bytes of the COPY streams.
    pub bytes: AtomicU64,
}

async fn derive_period(
    pool: &Pool,
    schema: &Schema,
    cfg: &DeriveConfig,
    d: &DatasetPlan,
    p: &PeriodPlan,
    rayon_pool: &Arc<rayon::ThreadPool>,
    observer: &dyn Observer,
) -> anyhow::Result<PeriodReport> {
    let started = Instant::now();
    observer.period_started(&d.name, p.period, p.rows_expected);
    info!(
        dataset = %d.name,
        period = %p.period,
        data_sources = p.sources.len(),
        models = p.models.len(),
        variables = ?p.variables,
        streams = p.ranges.len(),
        "deriving"
    );
    let mut writer = pool.get().await?;
    let tx = writer.transaction().await?;
    let prep = write::prepare(&tx, schema, d, p, &cfg.cells).await?;

    let counters = Arc::new(Counters::default());
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(p.ranges.len() + 1);
    let (result_tx, result_rx) = tokio::sync::mpsc::channel(2);
    let ctx = Arc::new(compute::Context::new(p));
    let computing = {
        let ctx = Arc::clone(&ctx);
        let rayon_pool = Arc::clone(rayon_pool);
        tokio::task::spawn_blocking(move || compute::run(&ctx, &rayon_pool, batch_rx, result_tx))
    };
    let readers = p.ranges.iter().map(|range| {
        stream::read(
            pool,
            stream::sql(schema, d, p, *range, &cfg.cells),
            p.input_columns(),
            batch_tx.clone(),
            Arc::clone(&counters),
            observer,
        )
    });
    let readers = futures_util::future::try_join_all(readers);
    drop(batch_tx);
    let averages = write::averages(&tx, schema, d.id, prep.period_id, p, result_rx);
    let (written, streams) = tokio::try_join!(averages, readers)?;
    let computed = computing.await.context("compute thread")??;
    let rows_read: u64 = streams.iter().map(|s| s.rows).sum();
    let bytes_read: u64 = streams.iter().map(|s| s.bytes).sum();
    if computed.rows != rows_read {
        bail!(
            "internal: {rows_read} rows read but {} computed",
            computed.rows
        );
    }
    let baseline_rows =
        write::baselines(&tx, schema, d.id, prep.period_id, p, written.baselines).await?;
    tx.commit().await.context("COMMIT")?;
    let left_out = write::locate(&**writer, p, computed.left_out).await?;
    let r = PeriodReport {
        dataset: d.name.clone(),
        period: p.period,
        period_id: prep.period_id,
        models: p.models.iter().map(|(_, n)| n.clone()).collect(),
        variables: p.variables.clone(),
        data_sources: p.sources.len(),
        cells: computed.cells,
        rows_read,
        bytes_read,
        average_rows: written.rows,
        baseline_rows,
        replaced: prep.replaced,
        secs: started.elapsed().as_secs_f64(),
        left_out,
    };
    info!(
        dataset = %d.name,
        period = %p.period,
        cells = r.cells,
        rows = r.rows_read,
        mb = r.bytes_read as f64 / 1e6,
        secs = r.secs,
        left_out = r.left_out.len(),
        "committed"
    );
    Ok(r)
}

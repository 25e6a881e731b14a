//! `derive-historic`: the derived historic data ([`crate::derive`]) with a progress bar and a
//! summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::DeriveHistoricArgs;
use crate::config::DbConfig;
use crate::derive::{self, DeriveConfig, Observer, Period, PeriodReport, Report};

/// How many left-out cells the summary lists one by one per period.
const LIST_CELLS: usize = 20;

struct Bar(ProgressBar);

impl Observer for Bar {
    fn period_started(&self, dataset: &str, period: Period, rows: u64) {
        self.0.reset();
        self.0.set_length(rows);
        self.0.set_position(0);
        self.0.set_message(format!("{dataset} {period}"));
    }

    fn progress(&self, rows: u64, _bytes: u64) {
        self.0.set_position(rows);
    }

    fn period_done(&self, r: &PeriodReport) {
        self.0.println(format!(
            "{} {}: {} cells in {:.1} s",
            r.dataset, r.period, r.cells, r.secs
        ));
    }
}

/// Runs the command; returns the summary.
///
/// # Errors
/// `derive-historic`'s flags validated into its settings.
///
/// # Errors
/// Invalid periods, cell selection, `--jobs` or `--streams`.
pub fn config(db: DbConfig, a: &DeriveHistoricArgs) -> anyhow::Result<DeriveConfig> {
    let periods = a
        .periods
        .as_deref()
        .map(derive::periods::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--periods: {e}"))?;
    let cells = derive::Cells::parse(&a.cells).map_err(|e| anyhow::anyhow!("--cells: {e}"))?;
    let jobs = match a.jobs {
        Some(0) => bail!("--jobs must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    if !(1..=16).contains(&a.streams) {
        bail!("--streams must be 1 to 16");
    }
    Ok(DeriveConfig {
        db,
        dataset: a.dataset.clone(),
        periods,
        cells,
        jobs,
        streams: a.streams,
    })
}

/// As [`derive::run`].
pub async fn run(cfg: &DeriveConfig, progress: bool) -> anyhow::Result<String> {
    let bar = if progress {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        ProgressBar::hidden()
    };
    let r = derive::run(cfg, Arc::new(Bar(bar.clone()))).await;
    bar.finish_and_clear();
    Ok(summary(&r?))
}

fn period_line(r: &PeriodReport) -> String {
    format!(
        "{} {}: {} cells from {} data sources ({} models, {}), {} rows read ({:.1} MB, \
         {:.1} MB/s) in {:.2} s; wrote {} average years and {} baseline rows (replacing {} rows)",
        r.dataset,
        r.period,
        r.cells,
        r.data_sources,
        r.models.len(),
        r.variables.join(","),
        r.rows_read,
        r.bytes_read as f64 / 1e6,
        r.bytes_read as f64 / 1e6 / r.secs.max(1e-9),
        r.secs,
        r.average_rows,
        r.baseline_rows,
        r.replaced
    )
}

/// The summary printed at the end: one line per (dataset, period), then the cells whose
/// baselines leave models out, grouped by model, the first ones listed.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.periods {
        let _ = writeln!(out, "{}", period_line(r));
        if r.left_out.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {} cells: models left out of the baselines for lacking years of {} (their \
             data still counts in the average year):",
            r.left_out.len(),
            r.period
        );
        let mut by_model: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &r.left_out {
            for (m, _) in &c.models {
                *by_model.entry(m.as_str()).or_default() += 1;
            }
        }
        for (m, n) in by_model {
            let _ = writeln!(out, "    {m}: left out in {n} cells");
        }
        for c in r.left_out.iter().take(LIST_CELLS) {
            let models: Vec<String> = c
                .models
                .iter()
                .map(|(m, y)| format!("{m} has {y} of {} years", r.period.years()))
                .collect();
            let _ = writeln!(
                out,
                "    cell {} ({:.4}, {:.4}): {}",
                c.cell,
                c.lat,
                c.lon,
                models.join("; ")
            );
        }
        if r.left_out.len() > LIST_CELLS {
            let _ = writeln!(out, "    … and {} more", r.left_out.len() - LIST_CELLS);
        }
    }
    let _ = writeln!(
        out,
        "analyzed historic_period, historic_average_year, climate_baseline in {:.2} s",
        report.analyze_secs
    );
    out
}

//! `nexingest doctor`: its flags as [`DoctorConfig`], the checks of [`crate::doctor`], and the
//! report as text or JSON. The command exits non-zero when any check fails.

use std::fmt::Write as _;

use anyhow::bail;

use crate::catalog::Dataset;
use crate::cli::DoctorArgs;
/// What [`crate::cmd::dispatch`] calls: the library's settings, report and checks.
pub use crate::doctor::{DoctorConfig, DoctorReport, run};
use crate::doctor::{Status, parse_cells};

impl DoctorConfig {
    /// From `doctor`'s flags.
    ///
    /// # Errors
    /// Out-of-range values; `--cells all` with `--jobs` but no `--dataset`.
    pub fn from_args(a: &DoctorArgs) -> anyhow::Result<Self> {
        if !(1..=10_000).contains(&a.workers) {
            bail!("--workers must be 1..=10000");
        }
        if !(1..=64).contains(&a.worker_jobs) {
            bail!("--worker-jobs must be 1..=64");
        }
        let cells = parse_cells(&a.cells)?;
        let dataset = a
            .dataset
            .as_deref()
            .map(|d| d.parse::<Dataset>().map_err(anyhow::Error::msg))
            .transpose()?;
        if a.jobs.is_some() && cells.is_none() && dataset.is_none() {
            bail!("--cells all needs --dataset (whose data cells a job loads)");
        }
        let variables = crate::message::validate_variables(&a.variables)?.len();
        Ok(DoctorConfig {
            workers: a.workers,
            worker_jobs: a.worker_jobs,
            jobs: a.jobs,
            cells,
            dataset,
            variables,
        })
    }
}

/// A status as `doctor` prints it.
fn label(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Fail => "FAIL",
        Status::Info => "info",
    }
}

impl DoctorReport {
    /// What `doctor` prints: the checks, the parameters for the load and what to revert after
    /// it, and the verdict; or the report as JSON.
    pub fn render(&self, json: bool) -> String {
        if json {
            return format!("{:#}\n", serde_json::json!(self));
        }
        let mut out = String::new();
        let _ = writeln!(out, "checks:");
        for c in &self.checks {
            let _ = writeln!(out, "  [{:<4}] {:<18} {}", label(c.status), c.name, c.value);
            if !c.detail.is_empty() {
                let _ = writeln!(out, "         {:<18} {}", "", c.detail);
            }
        }
        let _ = writeln!(
            out,
            "\nparameters for the load (on RDS: a \"data-imports\" parameter group; * needs a \
             reboot):"
        );
        let _ = writeln!(
            out,
            "  {:<22} {:>10} {:>10}  why",
            "parameter", "now", "load"
        );
        for p in &self.parameters {
            let _ = writeln!(
                out,
                "  {:<22} {:>10} {:>10}{} {}",
                p.name,
                p.now,
                if p.change { &p.load } else { "keep" },
                if p.change && p.restart { "*" } else { " " },
                p.why
            );
        }
        let revert: Vec<String> = self
            .parameters
            .iter()
            .filter(|p| p.change)
            .map(|p| format!("{} = {}", p.name, p.now))
            .collect();
        let _ = writeln!(
            out,
            "\nafter the load: `nexingest finalize`, then revert {} and the instance class / \
             storage changes made for it.",
            if revert.is_empty() {
                "nothing here (no parameter changes)".to_owned()
            } else {
                revert.join(", ")
            },
        );
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let _ = writeln!(
            out,
            "{}: {} blockers, {} warnings",
            if self.failed { "NOT READY" } else { "ready" },
            count(Status::Fail),
            count(Status::Warn)
        );
        out
    }
}

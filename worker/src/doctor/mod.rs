//! Checks a target database before a load: takes a [`DbConfig`] and a [`DoctorConfig`] (the
//! planned fleet and load), hands on a [`DoctorReport`]: each check's outcome, the server
//! parameters to set for the load (the runbook's "data-imports" parameter group, with what to
//! revert afterwards) and the load's [`Size`]. Nothing is changed.
//!
//! Each check is `ok`, `warn` (works, but slower or riskier than it should be), `fail` (a
//! blocker: the load would not run or would fall over) or `info`; [`DoctorReport::failed`] says
//! whether any failed. The checks, in the report's order:
//!
//! - [`checks`]: server version, TLS, schema version, array column storage, `max_connections`
//!   for the fleet, `max_wal_size`, `checkpoint_timeout`, `synchronous_commit`, durability,
//!   autovacuum;
//! - [`size`]: the database's size and what the planned load adds, and its time from the latest
//!   `nexingest bench` result recorded in the schema.
//!
//! `nexingest doctor` (`cmd::doctor`) builds the settings from its flags and prints the report.

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::catalog::Dataset;
use crate::config::DbConfig;
use crate::db;

pub mod checks;
pub mod size;

pub use size::{BenchFigures, Size};

/// Connections one `nexingest run` process may hold: its pool has `2 × jobs + 2` (the
/// consumer's pool size, `worker/src/consumer/mod.rs`).
pub fn worker_connections(jobs: u32) -> u64 {
    u64::from(jobs) * 2 + 2
}

/// Bytes one `climate_data_year` row takes with `variables` arrays of a year, table, TOAST and
/// indexes together, when nothing is measured yet: each array (~1.5 KB) takes a fifth of an
/// 8 KB page, inline or as a TOAST chunk (the toaster moves arrays out until the row is under
/// ~2 KB, so one stays inline), plus ~170 bytes of tuple header, TOAST pointers and index
/// entries. Measured on PostgreSQL 15 with 20,000 rows of three 365-day arrays: 5,020 bytes per
/// row (the model: 5,150).
pub fn modelled_row_bytes(variables: usize) -> u64 {
    170 + 1660 * variables as u64
}

/// The fewest `climate_data_year` rows `doctor` measures bytes per row from: below this, the
/// fixed page and index overheads of a small table dominate and the model is used.
pub const MIN_MEASURED_ROWS: f64 = 10_000.0;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but slower or riskier than it should be.
    Warn,
    /// A blocker.
    Fail,
    /// For information.
    Info,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub value: String,
    /// Why it matters / what to do.
    pub detail: String,
}

/// A server parameter for the load.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    /// Parameter.
    pub name: &'static str,
    /// Its value now.
    pub now: String,
    /// Its value for the load.
    pub load: String,
    /// Whether it must change for the load (then revert it to `now` afterwards).
    pub change: bool,
    /// Whether changing it needs a server restart (RDS: reboot).
    pub restart: bool,
    /// Why.
    pub why: String,
}

/// What `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The checks.
    pub checks: Vec<Check>,
    /// Parameters for the load.
    pub parameters: Vec<Param>,
    /// Sizes.
    pub size: Size,
    /// Whether any check failed.
    pub failed: bool,
}

/// Validated `doctor` settings (`nexingest doctor` builds them from its flags).
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// Planned worker processes.
    pub workers: u32,
    /// Jobs per worker.
    pub worker_jobs: u32,
    /// Planned jobs.
    pub jobs: Option<u64>,
    /// Cells per job (`None`: all data cells of `dataset`).
    pub cells: Option<u64>,
    /// Dataset of the load.
    pub dataset: Option<Dataset>,
    /// Variables per row.
    pub variables: usize,
}

/// A `--cells` value (of `doctor` and `bench`): `all` (`None`) or a positive number of cells.
///
/// # Errors
/// Anything else.
pub fn parse_cells(v: &str) -> anyhow::Result<Option<u64>> {
    if v.trim().eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|c| *c > 0)
        .map(Some)
        .with_context(|| format!("--cells {v:?}: `all` or a positive number"))
}

/// Connects and runs the checks ([`inspect`]).
///
/// # Errors
/// When the database cannot be reached or queried.
pub async fn run(dbc: &DbConfig, cfg: &DoctorConfig) -> anyhow::Result<DoctorReport> {
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    inspect(&**client, dbc, cfg).await
}

/// Runs the checks on an open connection to `dbc`'s database.
///
/// # Errors
/// When the database cannot be queried.
pub async fn inspect(
    c: &impl GenericClient,
    dbc: &DbConfig,
    cfg: &DoctorConfig,
) -> anyhow::Result<DoctorReport> {
    let (version_num, version) = checks::server_version(c).await?;
    let cdy = dbc.schema.table("climate_data_year");
    let has_cdy = checks::table_exists(c, &cdy).await?;
    let mut list = vec![
        version,
        checks::tls(c).await?,
        checks::schema(c, dbc).await?,
        checks::array_storage(c, &cdy, has_cdy, version_num).await?,
    ];
    let s = checks::Settings::read(c).await?;
    let mut parameters = Vec::new();
    for (check, param) in [
        checks::connections(c, &s, cfg).await?,
        checks::max_wal_size(&s)?,
        checks::checkpoint_timeout(&s)?,
        checks::synchronous_commit(&s)?,
    ] {
        list.push(check);
        parameters.push(param);
    }
    list.push(checks::durability(&s));
    let (check, param) = checks::autovacuum(c, &s, &cdy, has_cdy).await?;
    list.push(check);
    parameters.push(param);

    let size = size::size(c, dbc, cfg, has_cdy).await?;
    list.push(size::size_check(&size, s.get("max_wal_size")?));
    list.push(size::load_time_check(&size));
    let failed = list.iter().any(|c| c.status == Status::Fail);
    Ok(DoctorReport {
        checks: list,
        parameters,
        size,
        failed,
    })
}

/// `1.5 GiB`, `300.0 MiB`, `2.1 TiB`.
fn gib(b: f64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if b >= 1024.0 * GIB {
        format!("{:.1} TiB", b / (1024.0 * GIB))
    } else if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_cells_and_sizes() {
        assert_eq!(worker_connections(2), 6);
        assert_eq!(modelled_row_bytes(3), 170 + 3 * 1660);
        assert_eq!(parse_cells(" ALL ").unwrap(), None);
        assert_eq!(parse_cells("50").unwrap(), Some(50));
        assert!(parse_cells("0").is_err() && parse_cells("lots").is_err());
        assert_eq!(gib(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(gib(300.0 * 1024.0 * 1024.0), "300.0 MiB");
    }
}

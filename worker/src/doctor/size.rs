//! The planned load's size and time: takes the database, the [`DoctorConfig`] (planned jobs,
//! cells per job, variables) and the latest `nexingest bench` result recorded in the schema;
//! hands on a [`Size`] and the `size` and `load time` [`Check`]s made from it.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::checks::{Setting, WANT_WAL, table_exists};
use super::{Check, DoctorConfig, MIN_MEASURED_ROWS, Status, gib, modelled_row_bytes};
use crate::config::DbConfig;

/// The planned load's size.
#[derive(Debug, Clone, Serialize)]
pub struct Size {
    /// Bytes of the database now.
    pub database_bytes: i64,
    /// Bytes of `climate_data_year` (table, TOAST, indexes) now.
    pub climate_data_year_bytes: i64,
    /// Its rows (planner estimate).
    pub climate_data_year_rows: f64,
    /// Bytes per row used for the plan.
    pub bytes_per_row: u64,
    /// `measured` (this table), `bench` (the latest `nexingest bench`) or `model`.
    pub bytes_per_row_from: &'static str,
    /// The latest `nexingest bench` result recorded in this schema.
    pub bench: Option<BenchFigures>,
    /// Planned jobs.
    pub jobs: Option<u64>,
    /// Cells per planned job.
    pub cells_per_job: Option<u64>,
    /// Where the cell count came from.
    pub cells_from: Option<String>,
    /// Bytes the planned load adds.
    pub planned_bytes: Option<u64>,
    /// Seconds the planned load's rows take at the bench's aggregate rate.
    pub planned_seconds: Option<f64>,
    /// WAL the planned load writes at the bench's WAL bytes per row.
    pub planned_wal_bytes: Option<u64>,
}

/// The latest `nexingest bench` result (`bench_result`), as `doctor` uses it.
#[derive(Debug, Clone, Serialize)]
pub struct BenchFigures {
    /// When it ran.
    pub measured_at: String,
    /// Data cells per bench job.
    pub cells_per_job: i64,
    /// Bench jobs run at once.
    pub concurrent_jobs: i32,
    /// Rows the bench loaded.
    pub rows: i64,
    /// Aggregate rows per second.
    pub rows_per_second: f64,
    /// Bytes per row on disk.
    pub bytes_per_row: f64,
    /// WAL bytes per row.
    pub wal_bytes_per_row: f64,
}

impl BenchFigures {
    /// Whether it loaded enough rows for its bytes per row to mean anything (the fixed page
    /// and index overheads of a small table dominate below [`MIN_MEASURED_ROWS`]).
    pub fn big_enough(&self) -> bool {
        self.rows as f64 >= MIN_MEASURED_ROWS
    }
}

/// The database's size now and what the planned load adds (`has_cdy`: whether the schema has
/// `climate_data_year` yet).
///
/// # Errors
/// Database errors.
pub async fn size(
    c: &impl GenericClient,
    dbc: &DbConfig,
    cfg: &DoctorConfig,
    has_cdy: bool,
) -> anyhow::Result<Size> {
    let database_bytes: i64 = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    let (cdy_bytes, rows): (i64, f64) = if has_cdy {
        let cdy = dbc.schema.table("climate_data_year");
        let r = c
            .query_one(
                "SELECT pg_total_relation_size(to_regclass($1)),
                        greatest(c.reltuples::float8, coalesce(s.n_live_tup, 0)::float8)
                 FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
                 WHERE c.oid = to_regclass($1)",
                &[&cdy],
            )
            .await?;
        (r.get(0), r.get(1))
    } else {
        (0, 0.0)
    };
    let bench = latest_bench(c, dbc).await?;
    let (bytes_per_row, from) = match &bench {
        _ if rows >= MIN_MEASURED_ROWS => ((cdy_bytes as f64 / rows).round() as u64, "measured"),
        Some(b) if b.big_enough() => (b.bytes_per_row.round() as u64, "bench"),
        _ => (modelled_row_bytes(cfg.variables), "model"),
    };
    let (cells, cells_from) = match (cfg.cells, cfg.dataset) {
        (Some(k), _) => (Some(k), Some("given".to_owned())),
        (None, Some(d)) => {
            let measured: Option<i64> = if has_cdy {
                c.query_one(
                    &format!(
                        "SELECT max(ds.rows_written) FROM {} ds
                         JOIN {} d ON d.id = ds.dataset_id
                         WHERE d.name = $1 AND EXISTS (
                             SELECT 1 FROM {} l WHERE l.data_source_id = ds.id
                               AND l.outcome = 'done' AND l.location_key = 'all')",
                        dbc.schema.table("data_source"),
                        dbc.schema.table("dataset"),
                        dbc.schema.table("job_ledger")
                    ),
                    &[&d.name()],
                )
                .await?
                .get(0)
            } else {
                None
            };
            match measured.filter(|m| *m > 0) {
                Some(m) => (
                    Some(m as u64),
                    Some(format!("data cells of a loaded `all` job of {d}")),
                ),
                None => (
                    Some(d.grid_cells()),
                    Some(format!(
                        "{d}'s whole grid, an upper bound: no `all` job of it is loaded yet"
                    )),
                ),
            }
        }
        (None, None) => (None, None),
    };
    let planned_rows = match (cfg.jobs, cells) {
        (Some(j), Some(k)) => Some(j.saturating_mul(k)),
        _ => None,
    };
    let planned = planned_rows.map(|r| r.saturating_mul(bytes_per_row));
    let planned_seconds = match (&bench, planned_rows) {
        (Some(b), Some(r)) if b.rows_per_second > 0.0 => Some(r as f64 / b.rows_per_second),
        _ => None,
    };
    let planned_wal_bytes = match (&bench, planned_rows) {
        (Some(b), Some(r)) => Some((r as f64 * b.wal_bytes_per_row) as u64),
        _ => None,
    };
    Ok(Size {
        database_bytes,
        climate_data_year_bytes: cdy_bytes,
        climate_data_year_rows: rows,
        bytes_per_row,
        bytes_per_row_from: from,
        jobs: cfg.jobs,
        cells_per_job: cfg.jobs.and(cells),
        cells_from: cfg.jobs.and(cells_from),
        planned_bytes: planned,
        planned_seconds,
        planned_wal_bytes,
        bench,
    })
}

/// The latest row of `bench_result`, when the schema has that table.
///
/// # Errors
/// Database errors.
pub async fn latest_bench(
    c: &impl GenericClient,
    dbc: &DbConfig,
) -> anyhow::Result<Option<BenchFigures>> {
    let table = dbc.schema.table("bench_result");
    if !table_exists(c, &table).await? {
        return Ok(None);
    }
    let row = c
        .query_opt(
            &format!(
                "SELECT to_char(measured_at, 'YYYY-MM-DD HH24:MI TZ'), cells_per_job,
                        concurrent_jobs, rows_loaded, rows_per_second, bytes_per_row,
                        wal_bytes_per_row
                 FROM {table} ORDER BY measured_at DESC, id DESC LIMIT 1"
            ),
            &[],
        )
        .await
        .with_context(|| format!("reading {table}"))?;
    Ok(row.map(|r| BenchFigures {
        measured_at: r.get(0),
        cells_per_job: r.get(1),
        concurrent_jobs: r.get(2),
        rows: r.get(3),
        rows_per_second: r.get(4),
        bytes_per_row: r.get(5),
        wal_bytes_per_row: r.get(6),
    }))
}

/// The `size` check: the database now, what the planned load adds and the disk to allocate
/// for it (with `max_wal_size`, `wal`, or the load's, whichever is larger).
pub fn size_check(size: &Size, wal: &Setting) -> Check {
    let wal_b = wal.scaled().unwrap_or(0.0);
    let mut value = format!(
        "database {}, climate_data_year {} ({:.0} rows); {} B per row ({})",
        gib(size.database_bytes as f64),
        gib(size.climate_data_year_bytes as f64),
        size.climate_data_year_rows.max(0.0),
        size.bytes_per_row,
        size.bytes_per_row_from
    );
    let mut detail = "pass --jobs N --cells all|K (--dataset) for the size a load adds".to_owned();
    if size.bytes_per_row_from == "model" {
        detail.push_str(
            "; bytes per row from the model: run `nexingest bench` against this database to \
             measure them",
        );
    }
    if let (Some(j), Some(cells), Some(b)) = (size.jobs, size.cells_per_job, size.planned_bytes) {
        let _ = write!(value, "; the planned load adds {}", gib(b as f64));
        detail = format!(
            "{j} jobs × {cells} cells ({}) × {} B; allocate at least {} (now + planned + \
             max_wal_size for the load + 20 %)",
            size.cells_from.as_deref().unwrap_or(""),
            size.bytes_per_row,
            gib((size.database_bytes as f64 + b as f64 + WANT_WAL.max(wal_b)) * 1.2)
        );
    }
    Check {
        name: "size",
        status: Status::Info,
        value,
        detail,
    }
}

/// `45 min`, `3.5 h`.
fn hours(secs: f64) -> String {
    if secs >= 2.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} min", (secs / 60.0).ceil())
    }
}

/// The `load time` check: the planned load's COPY time and WAL at the latest bench's rates.
pub fn load_time_check(size: &Size) -> Check {
    let Some(b) = &size.bench else {
        return Check {
            name: "load time",
            status: Status::Info,
            value: "unknown: no `nexingest bench` result in this schema".into(),
            detail: "run `nexingest bench --jobs K` against this database (K = the load's \
                     --max-db-loads) for a time estimate and measured bytes per row"
                .into(),
        };
    };
    let plural = if b.concurrent_jobs == 1 { "" } else { "s" };
    let figures = format!(
        "bench of {}: {} job{plural} of {} cells at once, {:.0} rows/s, {:.0} B/row on disk, \
         {:.0} WAL B/row",
        b.measured_at,
        b.concurrent_jobs,
        b.cells_per_job,
        b.rows_per_second,
        b.bytes_per_row,
        b.wal_bytes_per_row
    );
    let mut detail = format!(
        "the database's rate with {} COPY{plural} at once; with more (workers × --worker-jobs, \
         or --max-db-loads) it is faster only until the database's CPU or disk is the limit: \
         bench with --jobs = the load's --max-db-loads",
        b.concurrent_jobs,
    );
    if !b.big_enough() {
        let _ = write!(
            detail,
            "; only {} rows: a quick try, not figures to size with (bench with --cells all)",
            b.rows
        );
    }
    let value = match (size.planned_seconds, size.planned_wal_bytes) {
        (Some(s), Some(w)) => format!(
            "the planned load takes ~{} of COPY and writes ~{} of WAL; {figures}",
            hours(s),
            gib(w as f64)
        ),
        _ => format!("{figures}; pass --jobs N --cells … for the load's time"),
    };
    Check {
        name: "load time",
        status: Status::Info,
        value,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(bench: Option<BenchFigures>) -> Size {
        Size {
            database_bytes: 1 << 30,
            climate_data_year_bytes: 0,
            climate_data_year_rows: 0.0,
            bytes_per_row: 5000,
            bytes_per_row_from: "model",
            bench,
            jobs: Some(100),
            cells_per_job: Some(1000),
            cells_from: Some("given".into()),
            planned_bytes: Some(100 * 1000 * 5000),
            planned_seconds: Some(3600.0),
            planned_wal_bytes: Some(1 << 30),
        }
    }

    #[test]
    fn load_time_comes_from_the_bench() {
        let c = load_time_check(&size(None));
        assert!(c.value.contains("no `nexingest bench` result"), "{c:?}");
        let b = BenchFigures {
            measured_at: "2026-12-01 10:00 UTC".into(),
            cells_per_job: 50,
            concurrent_jobs: 1,
            rows: 50,
            rows_per_second: 100.0,
            bytes_per_row: 5000.0,
            wal_bytes_per_row: 6000.0,
        };
        let c = load_time_check(&size(Some(b)));
        assert!(
            c.value.starts_with("the planned load takes ~60 min"),
            "{c:?}"
        );
        assert!(c.detail.contains("1 COPY at once") && c.detail.contains("quick try"));
        assert_eq!(
            (hours(7200.0), hours(61.0)),
            ("2.0 h".into(), "2 min".into())
        );
    }
}

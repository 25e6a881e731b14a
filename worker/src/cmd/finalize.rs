//! `finalize`: `VACUUM (ANALYZE)` of the tables a load writes, with sizes and dead rows before
//! and after — the runbook's closing `VACUUM (VERBOSE, ANALYZE)`.
//!
//! `VACUUM` cannot run inside a transaction, so each table is vacuumed in its own statement on
//! one session without a statement timeout (a whole load's `climate_data_year` takes long).
//! It takes a `SHARE UPDATE EXCLUSIVE` lock: workers can keep loading meanwhile.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::cli::FinalizeArgs;
use crate::config::DbConfig;
use crate::db;

/// The tables a load writes, largest first.
pub const LOAD_TABLES: [&str; 7] = [
    "climate_data_year",
    "map_cell",
    "location_cell",
    "location",
    "data_source",
    "data_source_variable",
    "job_ledger",
];

/// Sizes of one table.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TableSize {
    /// Table, TOAST and indexes, bytes.
    pub total_bytes: i64,
    /// Live rows (statistics).
    pub live_rows: i64,
    /// Dead rows (statistics).
    pub dead_rows: i64,
}

/// One vacuumed table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Table.
    pub table: String,
    /// Before.
    pub before: TableSize,
    /// After (same as before in a dry run).
    pub after: TableSize,
    /// Seconds the VACUUM took.
    pub seconds: f64,
}

/// What `finalize` did.
#[derive(Debug, Clone, Serialize)]
pub struct FinalizeReport {
    /// The statement form used.
    pub statement: String,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Whether nothing was vacuumed.
    pub dry_run: bool,
}

async fn table_size(c: &tokio_postgres::Client, qualified: &str) -> anyhow::Result<TableSize> {
    let r = c
        .query_one(
            "SELECT pg_total_relation_size(to_regclass($1)),
                    coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0)
             FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
             WHERE c.oid = to_regclass($1)",
            &[&qualified],
        )
        .await
        .with_context(|| format!("size of {qualified}"))?;
    Ok(TableSize {
        total_bytes: r.get(0),
        live_rows: r.get(1),
        dead_rows: r.get(2),
    })
}

/// Vacuums and analyzes the load's tables.
///
/// # Errors
/// An unknown table name; database errors (a table vacuumed before the error stays vacuumed).
pub async fn run(dbc: &DbConfig, a: &FinalizeArgs) -> anyhow::Result<FinalizeReport> {
    let tables: Vec<&str> = if a.tables.is_empty() {
        LOAD_TABLES.to_vec()
    } else {
        let mut v = Vec::new();
        for t in &a.tables {
            let t = t.trim();
            match LOAD_TABLES.iter().find(|x| x.eq_ignore_ascii_case(t)) {
                Some(x) if !v.contains(x) => v.push(*x),
                Some(_) => {}
                None => bail!(
                    "--tables: {t:?} is not a table a load writes ({})",
                    LOAD_TABLES.join(", ")
                ),
            }
        }
        v
    };
    let opts = if a.freeze {
        "FREEZE, ANALYZE"
    } else {
        "ANALYZE"
    };
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    let c: &tokio_postgres::Client = &client;
    c.batch_execute("SET statement_timeout = 0")
        .await
        .context("lifting the statement timeout for VACUUM")?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let q = dbc.schema.table(t);
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&q])
            .await?
            .get(0);
        if !exists {
            bail!("{q} does not exist (run `nexingest migrate`)");
        }
        let before = table_size(c, &q).await?;
        let started = Instant::now();
        if !a.dry_run {
            tracing::info!(table = t, "vacuum");
            c.batch_execute(&format!("VACUUM ({opts}) {q}"))
                .await
                .with_context(|| format!("VACUUM ({opts}) {q}"))?;
        }
        let seconds = started.elapsed().as_secs_f64();
        // The statistics collector reports asynchronously: read what VACUUM itself set.
        let after = if a.dry_run {
            before
        } else {
            table_size(c, &q).await?
        };
        out.push(TableReport {
            table: t.to_owned(),
            before,
            after,
            seconds,
        });
    }
    c.batch_execute("RESET statement_timeout").await?;
    Ok(FinalizeReport {
        statement: format!("VACUUM ({opts})"),
        tables: out,
        dry_run: a.dry_run,
    })
}

fn mib(b: i64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

impl FinalizeReport {
    /// What `finalize` prints.
    pub fn render(&self, json: bool) -> String {
        if json {
            return format!("{:#}\n", serde_json::json!(self));
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}{}",
            self.statement,
            if self.dry_run {
                " (dry run: nothing vacuumed)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<22} {:>11} {:>11} {:>12} {:>11} {:>11} {:>8}",
            "table", "MiB before", "MiB after", "live rows", "dead before", "dead after", "seconds"
        );
        let (mut b, mut a) = (0, 0);
        for t in &self.tables {
            b += t.before.total_bytes;
            a += t.after.total_bytes;
            let _ = writeln!(
                out,
                "{:<22} {:>11} {:>11} {:>12} {:>11} {:>11} {:>8.1}",
                t.table,
                mib(t.before.total_bytes),
                mib(t.after.total_bytes),
                t.after.live_rows,
                t.before.dead_rows,
                t.after.dead_rows,
                t.seconds
            );
        }
        let _ = writeln!(out, "{:<22} {:>11} {:>11}", "total", mib(b), mib(a));
        out
    }
}

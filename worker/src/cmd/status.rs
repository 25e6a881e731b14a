//! `status`: job counts by dataset/scenario/state (`waiting`: running, but waiting for a
//! `--max-db-loads` slot), rows, throughput, database load slots in use, recent failures.

use std::fmt::Write as _;

use crate::cli::StatusArgs;
use crate::config::DbConfig;
use crate::db;
use crate::error::JobError;
use crate::pipeline::throttle;

/// The advisory locks of one key of the throttle (`$1` = its prefix) in this database and
/// schema: `id` (the lock's second key), `granted`.
const ADVISORY: &str = "SELECT l.objid::int8 AS id, l.granted
     FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 2
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid::int8 = (hashtext($1::text || current_schema())::int8 & 4294967295)";

/// Renders the status report (text or JSON).
///
/// # Errors
/// Database errors (e.g. the schema is not migrated).
pub async fn run(dbc: &DbConfig, a: &StatusArgs) -> Result<String, JobError> {
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await?;
    // A running job waiting for a `--max-db-loads` slot holds its data source's marker lock
    // (pipeline::throttle): shown as `waiting`.
    let groups = client
        .query(
            &format!(
                "WITH w AS ({ADVISORY} AND l.granted)
                 SELECT d.name, s.name,
                        CASE WHEN ds.state = 'running' AND w.id IS NOT NULL THEN 'waiting'
                             ELSE ds.state END,
                        count(*)::bigint,
                        coalesce(sum(ds.rows_written), 0)::bigint,
                        coalesce(sum(ds.bytes_downloaded), 0)::bigint
                 FROM data_source ds
                 JOIN dataset d ON d.id = ds.dataset_id
                 JOIN scenario s ON s.id = ds.scenario_id
                 LEFT JOIN (SELECT DISTINCT id FROM w) w ON w.id = ds.id % 2147483647
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            &[&throttle::WAIT_KEY],
        )
        .await?;
    let slots = client
        .query_one(
            &format!("SELECT count(*) FILTER (WHERE l.granted)::bigint FROM ({ADVISORY}) l"),
            &[&throttle::LOAD_KEY],
        )
        .await?;
    let waiting = client
        .query_one(
            &format!("SELECT count(*)::bigint FROM ({ADVISORY} AND l.granted) l"),
            &[&throttle::WAIT_KEY],
        )
        .await?;
    let (slots_in_use, jobs_waiting): (i64, i64) = (slots.get(0), waiting.get(0));
    let thr = client
        .query_one(
            "SELECT count(*)::bigint,
                    coalesce(sum(rows_written), 0)::bigint,
                    coalesce(sum(load_ms), 0)::bigint,
                    coalesce(sum(download_ms), 0)::bigint,
                    coalesce(sum(decode_ms), 0)::bigint,
                    coalesce(extract(epoch FROM max(finished_at) - min(started_at)), 0)::float8,
                    count(*) FILTER (WHERE finished_at > now() - interval '1 hour')::bigint
             FROM data_source WHERE state = 'done'",
            &[],
        )
        .await?;
    let failures = client
        .query(
            // Failed attempts from the ledger: a job that failed on a data source that is
            // done (new locations or variables) is listed too.
            "SELECT d.name, s.name, m.name, ds.year, ds.attempts,
                    coalesce(l.error, ''), to_char(l.finished_at, 'YYYY-MM-DD HH24:MI:SS')
             FROM job_ledger l
             JOIN data_source ds ON ds.id = l.data_source_id
             JOIN dataset d ON d.id = ds.dataset_id
             JOIN scenario s ON s.id = ds.scenario_id
             JOIN climate_model m ON m.id = ds.model_id
             WHERE l.outcome = 'failed'
             ORDER BY l.finished_at DESC LIMIT $1",
            &[&a.failures.max(0)],
        )
        .await?;
    let (jobs, rows, load_ms, dl_ms, dec_ms, wall_s, last_hour): (
        i64,
        i64,
        i64,
        i64,
        i64,
        f64,
        i64,
    ) = (
        thr.get(0),
        thr.get(1),
        thr.get(2),
        thr.get(3),
        thr.get(4),
        thr.get(5),
        thr.get(6),
    );
    let rows_per_s_load = if load_ms > 0 {
        rows as f64 * 1000.0 / load_ms as f64
    } else {
        0.0
    };
    let jobs_per_h = if wall_s > 0.0 {
        jobs as f64 * 3600.0 / wall_s
    } else {
        0.0
    };

    if a.json {
        let v = serde_json::json!({
            "groups": groups.iter().map(|r| serde_json::json!({
                "dataset": r.get::<_, String>(0),
                "scenario": r.get::<_, String>(1),
                "state": r.get::<_, String>(2),
                "jobs": r.get::<_, i64>(3),
                "rows": r.get::<_, i64>(4),
                "bytes_downloaded": r.get::<_, i64>(5),
            })).collect::<Vec<_>>(),
            "done": {
                "jobs": jobs, "rows": rows, "load_ms": load_ms, "download_ms": dl_ms,
                "decode_ms": dec_ms, "rows_per_s_load": rows_per_s_load,
                "jobs_per_hour": jobs_per_h, "done_last_hour": last_hour,
            },
            "load_slots": {"in_use": slots_in_use, "jobs_waiting": jobs_waiting},
            "failures": failures.iter().map(|r| serde_json::json!({
                "dataset": r.get::<_, String>(0),
                "scenario": r.get::<_, String>(1),
                "model": r.get::<_, String>(2),
                "year": r.get::<_, i32>(3),
                "attempts": r.get::<_, i32>(4),
                "error": r.get::<_, String>(5),
            })).collect::<Vec<_>>(),
        });
        return Ok(format!("{v:#}\n"));
    }

    let mut out = String::new();
    let _ = writeln!(out, "schema {}", dbc.schema);
    let _ = writeln!(
        out,
        "{:<16} {:<11} {:<8} {:>7} {:>12} {:>12}",
        "dataset", "scenario", "state", "jobs", "rows", "MB in"
    );
    if groups.is_empty() {
        let _ = writeln!(out, "(no jobs yet)");
    }
    for r in &groups {
        let _ = writeln!(
            out,
            "{:<16} {:<11} {:<8} {:>7} {:>12} {:>12.1}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, i64>(3),
            r.get::<_, i64>(4),
            r.get::<_, i64>(5) as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "done: {jobs} jobs, {rows} rows; load {rows_per_s_load:.0} rows/s; \
         time in download {:.1} s, decode {:.1} s, load {:.1} s; {jobs_per_h:.1} jobs/h; \
         {last_hour} in the last hour",
        dl_ms as f64 / 1e3,
        dec_ms as f64 / 1e3,
        load_ms as f64 / 1e3
    );
    if slots_in_use > 0 || jobs_waiting > 0 {
        let _ = writeln!(
            out,
            "database load slots (--max-db-loads): {slots_in_use} in use, {jobs_waiting} jobs waiting"
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "failures (latest {}):", failures.len());
        for r in &failures {
            let _ = writeln!(
                out,
                "  {}/{}/{}/{} attempts={} at {}: {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, i32>(3),
                r.get::<_, i32>(4),
                r.get::<_, Option<String>>(6).unwrap_or_default(),
                r.get::<_, String>(5)
            );
        }
    }
    Ok(out)
}

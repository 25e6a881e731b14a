//! `doctor`: checks the target database before a load, recommends the parameters to set for it
//! (the runbook's "data-imports" parameter group) and says what to revert afterwards.
//!
//! Each check is `ok`, `warn` (works, but slower or riskier than it should be), `fail` (a
//! blocker: the load would not run or would fall over) or `info`. The command exits non-zero
//! when any check fails. Nothing is changed.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::catalog::Dataset;
use crate::cli::DoctorArgs;
use crate::config::DbConfig;
use crate::db;

/// Connections one `nexingest run` process may hold: its pool has `2 × jobs + 2` (the
/// consumer's pool size, `worker/src/cmd/run.rs`).
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

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Info => "info",
        }
    }
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

/// Validated `doctor` settings.
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

/// A `--cells` value: `all` (`None`) or a positive number of cells.
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

impl DoctorConfig {
    /// From flags.
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

/// A server setting: raw value, unit and context from `pg_settings`, display form from
/// `current_setting`.
#[derive(Debug, Clone)]
struct Setting {
    raw: String,
    unit: Option<String>,
    shown: String,
    context: String,
}

impl Setting {
    /// The value in the setting's base unit scaled to bytes (memory) or seconds (time).
    fn scaled(&self) -> Option<f64> {
        let v: f64 = self.raw.parse().ok()?;
        let k = match self.unit.as_deref() {
            None | Some("") => 1.0,
            Some("B") | Some("s") => 1.0,
            Some("kB") => 1024.0,
            Some("8kB") => 8192.0,
            Some("16MB") => 16.0 * 1048576.0,
            Some("MB") => 1048576.0,
            Some("ms") => 0.001,
            Some("min") => 60.0,
            Some(_) => return None,
        };
        Some(v * k)
    }
}

async fn settings(
    client: &impl GenericClient,
    names: &[&str],
) -> anyhow::Result<std::collections::HashMap<String, Setting>> {
    let rows = client
        .query(
            "SELECT name, setting, unit, current_setting(name), context
             FROM pg_settings WHERE name = ANY($1)",
            &[&names],
        )
        .await
        .context("reading pg_settings")?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                Setting {
                    raw: r.get(1),
                    unit: r.get(2),
                    shown: r.get(3),
                    context: r.get(4),
                },
            )
        })
        .collect())
}

fn gib(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} TiB", b / (1024.0 * 1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

/// Runs the checks.
///
/// # Errors
/// When the database cannot be reached or queried.
pub async fn run(dbc: &DbConfig, cfg: &DoctorConfig) -> anyhow::Result<DoctorReport> {
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    let c = &**client;
    let mut checks = Vec::new();
    let mut params = Vec::new();

    // Server version.
    let version_num: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let version: String = c
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    checks.push(Check {
        name: "server version",
        status: if version_num >= 140_000 {
            Status::Ok
        } else {
            Status::Fail
        },
        value: version.clone(),
        detail: if version_num >= 140_000 {
            "PostgreSQL 14 or later (lz4 column compression)".into()
        } else {
            "nexingest needs PostgreSQL 14 or later (lz4 column compression)".into()
        },
    });

    // TLS.
    let tls = c
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
                    coalesce(host(inet_server_addr()), 'local socket')",
            &[],
        )
        .await?;
    let (ssl, server): (bool, String) = (tls.get(0), tls.get(1));
    let local = server == "local socket" || server == "127.0.0.1" || server == "::1";
    checks.push(Check {
        name: "TLS",
        status: if ssl || local {
            Status::Ok
        } else {
            Status::Warn
        },
        value: format!(
            "{} (server {server})",
            if ssl { "in use" } else { "not in use" }
        ),
        detail: if ssl {
            "the connection is encrypted".into()
        } else if local {
            "a local connection needs no TLS".into()
        } else {
            "the connection is not encrypted: keep the database inside the VPC; an RDS \
             instance with rds.force_ssl=1 refuses it"
                .into()
        },
    });

    // Schema version.
    let migrations = dbc.schema.table("schema_migrations");
    let has_schema: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&migrations])
        .await?
        .get(0);
    let schema_version: Option<i32> = if has_schema {
        c.query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {migrations}"),
            &[],
        )
        .await?
        .get(0)
    } else {
        None
    };
    let latest = db::latest_version();
    checks.push(match schema_version {
        None => Check {
            name: "schema",
            status: Status::Fail,
            value: format!("{} missing", dbc.schema),
            detail: "run `nexingest migrate`".into(),
        },
        Some(v) if v < latest => Check {
            name: "schema",
            status: Status::Fail,
            value: format!("{} at version {v}, this binary needs {latest}", dbc.schema),
            detail: "run `nexingest migrate`".into(),
        },
        Some(v) if v > latest => Check {
            name: "schema",
            status: Status::Fail,
            value: format!(
                "{} at version {v}, newer than this binary ({latest})",
                dbc.schema
            ),
            detail: "use the nexingest release that migrated it".into(),
        },
        Some(v) => Check {
            name: "schema",
            status: Status::Ok,
            value: format!("{} at version {v} (latest)", dbc.schema),
            detail: String::new(),
        },
    });

    // Array column storage and compression.
    let cdy = dbc.schema.table("climate_data_year");
    let has_cdy: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&cdy])
        .await?
        .get(0);
    if has_cdy {
        let compression = if version_num >= 140_000 {
            // attcompression is a "char": 'l' lz4, 'p' pglz, '' the default.
            "CASE a.attcompression WHEN 'l' THEN 'lz4' WHEN 'p' THEN 'pglz' ELSE '' END"
        } else {
            "''::text"
        };
        let cols = c
            .query(
                &format!(
                    "SELECT a.attname::text, a.attstorage::text, {compression}
                     FROM pg_attribute a
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.atttypid = 'real[]'::regtype
                     ORDER BY a.attnum"
                ),
                &[&cdy],
            )
            .await?;
        let default_compression = if version_num >= 140_000 {
            c.query_one("SELECT current_setting('default_toast_compression')", &[])
                .await?
                .get::<_, String>(0)
        } else {
            "pglz".into()
        };
        let mut bad = Vec::new();
        for r in &cols {
            let (name, storage, comp): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let comp = if comp.is_empty() {
                default_compression.clone()
            } else {
                comp
            };
            let ok = storage == "e" || (storage == "x" && comp == "lz4");
            if !ok {
                bad.push(format!(
                    "{name} ({}, {comp})",
                    match storage.as_str() {
                        "x" => "extended",
                        "m" => "main",
                        "p" => "plain",
                        _ => "?",
                    }
                ));
            }
        }
        checks.push(Check {
            name: "array storage",
            status: if bad.is_empty() {
                Status::Ok
            } else {
                Status::Warn
            },
            value: if bad.is_empty() {
                format!("{} real[] columns EXTERNAL (or lz4)", cols.len())
            } else {
                format!("compressed: {}", bad.join(", "))
            },
            detail: if bad.is_empty() {
                "arrays are stored without pglz (migration 6: pr lz4, the rest EXTERNAL)".into()
            } else {
                "pglz compression of float arrays costs ~45% of COPY time and saves little: \
                 ALTER TABLE climate_data_year ALTER COLUMN … SET STORAGE EXTERNAL \
                 (pr: SET STORAGE EXTENDED, SET COMPRESSION lz4)"
                    .into()
            },
        });
    } else {
        checks.push(Check {
            name: "array storage",
            status: Status::Info,
            value: "no climate_data_year yet".into(),
            detail: "`nexingest migrate` creates it with EXTERNAL storage (pr: lz4)".into(),
        });
    }

    let s = settings(
        c,
        &[
            "max_connections",
            "superuser_reserved_connections",
            "max_wal_size",
            "checkpoint_timeout",
            "synchronous_commit",
            "autovacuum",
            "maintenance_work_mem",
            "autovacuum_vacuum_insert_threshold",
            "autovacuum_vacuum_insert_scale_factor",
            "fsync",
            "full_page_writes",
        ],
    )
    .await?;
    let get = |n: &str| {
        s.get(n)
            .cloned()
            .with_context(|| format!("setting {n} missing"))
    };

    // Connections.
    let max_conn = get("max_connections")?;
    let reserved = get("superuser_reserved_connections")?;
    let max_conn_n = max_conn.scaled().unwrap_or(0.0) as u64;
    let usable = max_conn_n.saturating_sub(reserved.scaled().unwrap_or(0.0) as u64);
    let others: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
               AND application_name <> 'nexingest'",
            &[],
        )
        .await?
        .get(0);
    let need = u64::from(cfg.workers) * worker_connections(cfg.worker_jobs);
    let others = others.max(0) as u64;
    let (status, detail) = if need > usable {
        (
            Status::Fail,
            format!(
                "{} workers × {} connections = {need} > {usable} usable \
                 (max_connections − superuser_reserved_connections): workers would fail to \
                 connect; raise max_connections or run fewer workers/--jobs",
                cfg.workers,
                worker_connections(cfg.worker_jobs)
            ),
        )
    } else if need + others > usable {
        (
            Status::Warn,
            format!(
                "{need} for the workers + {others} other clients now > {usable} usable: \
                 close other clients or raise max_connections"
            ),
        )
    } else {
        (
            Status::Ok,
            format!(
                "{} workers × {} connections (2 × --jobs {} + 2) = {need}, {others} other \
                 clients now, {usable} usable",
                cfg.workers,
                worker_connections(cfg.worker_jobs),
                cfg.worker_jobs
            ),
        )
    };
    checks.push(Check {
        name: "max_connections",
        status,
        value: max_conn.shown.clone(),
        detail,
    });
    let want_conn = need + others + reserved.scaled().unwrap_or(3.0) as u64 + 10;
    params.push(Param {
        name: "max_connections",
        now: max_conn.shown.clone(),
        load: want_conn.max(max_conn_n).to_string(),
        change: want_conn > max_conn_n,
        restart: max_conn.context == "postmaster",
        why: format!("{need} for the workers, the other clients, the reserved slots, 10 spare"),
    });

    // WAL and checkpoints.
    const WANT_WAL: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0;
    let wal = get("max_wal_size")?;
    let wal_b = wal.scaled().unwrap_or(0.0);
    checks.push(Check {
        name: "max_wal_size",
        status: if wal_b >= WANT_WAL / 2.0 {
            Status::Ok
        } else {
            Status::Warn
        },
        value: wal.shown.clone(),
        detail: if wal_b >= WANT_WAL / 2.0 {
            "checkpoints are spaced by time, not forced by COPY volume".into()
        } else {
            "bulk COPY fills it in seconds and forces a checkpoint each time (full-page \
             writes double the WAL); 16GB for the load"
                .into()
        },
    });
    params.push(Param {
        name: "max_wal_size",
        now: wal.shown.clone(),
        load: if wal_b >= WANT_WAL {
            wal.shown.clone()
        } else {
            "16GB".into()
        },
        change: wal_b < WANT_WAL,
        restart: wal.context == "postmaster",
        why: "fewer forced checkpoints during COPY (needs that much free disk for WAL)".into(),
    });
    const WANT_CKPT: f64 = 1800.0;
    let ckpt = get("checkpoint_timeout")?;
    let ckpt_s = ckpt.scaled().unwrap_or(0.0);
    checks.push(Check {
        name: "checkpoint_timeout",
        status: if ckpt_s >= 900.0 {
            Status::Ok
        } else {
            Status::Warn
        },
        value: ckpt.shown.clone(),
        detail: if ckpt_s >= 900.0 {
            "checkpoints at most every 15 min".into()
        } else {
            "frequent checkpoints repeat full-page writes for every page COPY touches; 30min \
             for the load"
                .into()
        },
    });
    params.push(Param {
        name: "checkpoint_timeout",
        now: ckpt.shown.clone(),
        load: if ckpt_s >= WANT_CKPT {
            ckpt.shown.clone()
        } else {
            "30min".into()
        },
        change: ckpt_s < WANT_CKPT,
        restart: ckpt.context == "postmaster",
        why: "with max_wal_size: checkpoints by time (crash recovery takes longer)".into(),
    });

    // synchronous_commit.
    let sc = get("synchronous_commit")?;
    let sc_on = !matches!(sc.shown.as_str(), "off" | "local");
    checks.push(Check {
        name: "synchronous_commit",
        status: if sc_on { Status::Ok } else { Status::Warn },
        value: sc.shown.clone(),
        detail: if sc_on {
            "a job commits once, so waiting for its WAL flush costs nothing measurable".into()
        } else {
            "a server crash can lose jobs that committed and whose messages were already \
             deleted (they stay `running`/`pending`: find them with `jobs --state stale`); \
             nexingest commits once per job, so `on` costs nothing measurable"
                .into()
        },
    });
    params.push(Param {
        name: "synchronous_commit",
        now: sc.shown.clone(),
        load: "on".into(),
        change: !sc_on,
        restart: false,
        why: "keep on: one commit per job".into(),
    });

    // Durability: a throwaway test cluster runs without it; a load target must not.
    let unsafe_off: Vec<String> = ["fsync", "full_page_writes"]
        .into_iter()
        .filter(|n| s.get(*n).is_some_and(|x| x.shown == "off"))
        .map(|n| format!("{n} = off"))
        .collect();
    checks.push(Check {
        name: "durability",
        status: if unsafe_off.is_empty() {
            Status::Ok
        } else {
            Status::Warn
        },
        value: if unsafe_off.is_empty() {
            "fsync and full_page_writes on".into()
        } else {
            unsafe_off.join(", ")
        },
        detail: if unsafe_off.is_empty() {
            String::new()
        } else {
            "a server crash can corrupt the database: for throwaway test clusters only".into()
        },
    });

    // Autovacuum.
    let av = get("autovacuum")?;
    let table_opts: Option<Vec<String>> = if has_cdy {
        c.query_one(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)",
            &[&cdy],
        )
        .await?
        .get(0)
    } else {
        None
    };
    let table_opts = table_opts.unwrap_or_default();
    let table_off = table_opts
        .iter()
        .any(|o| o.eq_ignore_ascii_case("autovacuum_enabled=false"));
    let insert_th = s
        .get("autovacuum_vacuum_insert_threshold")
        .map(|x| x.shown.clone());
    let insert_sf = s
        .get("autovacuum_vacuum_insert_scale_factor")
        .map(|x| x.shown.clone());
    checks.push(Check {
        name: "autovacuum",
        status: if av.shown == "on" && !table_off {
            Status::Ok
        } else {
            Status::Warn
        },
        value: format!(
            "autovacuum {}; climate_data_year {}; insert threshold {} + {} × rows",
            av.shown,
            if table_opts.is_empty() {
                "uses the defaults".to_owned()
            } else {
                table_opts.join(", ")
            },
            insert_th.as_deref().unwrap_or("-"),
            insert_sf.as_deref().unwrap_or("-"),
        ),
        detail: if av.shown == "on" && !table_off {
            "inserted rows are vacuumed and analyzed as the load goes; `nexingest finalize` \
             finishes the job"
                .into()
        } else {
            "nothing vacuums or analyzes the load's tables until `nexingest finalize`: run it \
             after the load and turn autovacuum back on"
                .into()
        },
    });
    let mwm = get("maintenance_work_mem")?;
    let mwm_b = mwm.scaled().unwrap_or(0.0);
    params.push(Param {
        name: "maintenance_work_mem",
        now: mwm.shown.clone(),
        load: if mwm_b >= 1024.0 * 1048576.0 {
            mwm.shown.clone()
        } else {
            "1GB".into()
        },
        change: mwm_b < 1024.0 * 1048576.0,
        restart: false,
        why: "faster VACUUM of the loaded tables (autovacuum and finalize)".into(),
    });

    // Sizes.
    let size = size(c, dbc, cfg, has_cdy).await?;
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
    checks.push(Check {
        name: "size",
        status: Status::Info,
        value,
        detail,
    });
    checks.push(load_time_check(&size));

    let failed = checks.iter().any(|c| c.status == Status::Fail);
    Ok(DoctorReport {
        checks,
        parameters: params,
        size,
        failed,
    })
}

async fn size(
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
async fn latest_bench(
    c: &impl GenericClient,
    dbc: &DbConfig,
) -> anyhow::Result<Option<BenchFigures>> {
    let table = dbc.schema.table("bench_result");
    let exists: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
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

fn hours(secs: f64) -> String {
    if secs >= 2.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} min", (secs / 60.0).ceil())
    }
}

/// The load-time estimate, from the latest bench.
fn load_time_check(size: &Size) -> Check {
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
    let figures = format!(
        "bench of {}: {} job{} of {} cells at once, {:.0} rows/s, {:.0} B/row on disk, {:.0} \
         WAL B/row",
        b.measured_at,
        b.concurrent_jobs,
        if b.concurrent_jobs == 1 { "" } else { "s" },
        b.cells_per_job,
        b.rows_per_second,
        b.bytes_per_row,
        b.wal_bytes_per_row
    );
    let mut detail = format!(
        "the database's rate with {} COPY{} at once; with more (workers × --worker-jobs, or \
         --max-db-loads) it is faster only until the database's CPU or disk is the limit: \
         bench with --jobs = the load's --max-db-loads",
        b.concurrent_jobs,
        if b.concurrent_jobs == 1 { "" } else { "s" }
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

impl DoctorReport {
    /// What `doctor` prints.
    pub fn render(&self, json: bool) -> String {
        if json {
            return format!("{:#}\n", serde_json::json!(self));
        }
        let mut out = String::new();
        let _ = writeln!(out, "checks:");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  [{:<4}] {:<18} {}",
                c.status.as_str(),
                c.name,
                c.value
            );
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
        let n_fail = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let n_warn = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        let _ = writeln!(
            out,
            "{}: {n_fail} blockers, {n_warn} warnings",
            if self.failed { "NOT READY" } else { "ready" }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_scale_to_bytes_and_seconds() {
        let s = |raw: &str, unit: Option<&str>| Setting {
            raw: raw.into(),
            unit: unit.map(String::from),
            shown: String::new(),
            context: String::new(),
        };
        assert_eq!(s("1024", Some("MB")).scaled(), Some(1024.0 * 1048576.0));
        assert_eq!(s("300", Some("s")).scaled(), Some(300.0));
        assert_eq!(s("65536", Some("kB")).scaled(), Some(65536.0 * 1024.0));
        assert_eq!(s("100", None).scaled(), Some(100.0));
        assert_eq!(s("on", None).scaled(), None);
        assert_eq!(worker_connections(2), 6);
        assert_eq!(modelled_row_bytes(3), 170 + 3 * 1660);
    }
}

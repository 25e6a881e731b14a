//! The server and schema checks of [`super::inspect`]: each takes an open connection (or the
//! server [`Settings`] read once) and hands on a [`Check`], with the [`Param`] to set for the
//! load where the check is about one.

use std::collections::HashMap;

use anyhow::Context;
use tokio_postgres::GenericClient;

use super::{Check, DoctorConfig, Param, Status, worker_connections};
use crate::config::DbConfig;
use crate::db;

/// `max_wal_size` for the load: 16 GB.
pub const WANT_WAL: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0;
/// `checkpoint_timeout` for the load: 30 min.
const WANT_CKPT: f64 = 1800.0;

/// The settings the checks read.
const SETTINGS: [&str; 11] = [
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
];

/// A server setting: raw value, unit and context from `pg_settings`, display form from
/// `current_setting`.
#[derive(Debug, Clone)]
pub struct Setting {
    /// `pg_settings.setting`, in the setting's base unit.
    pub raw: String,
    /// `pg_settings.unit` (`kB`, `8kB`, `MB`, `ms`, `s`, `min`, …).
    pub unit: Option<String>,
    /// `current_setting(name)`: the value as the server shows it (`1GB`, `5min`).
    pub shown: String,
    /// `pg_settings.context`: `postmaster` needs a restart.
    pub context: String,
}

impl Setting {
    /// The value in the setting's base unit scaled to bytes (memory) or seconds (time).
    pub fn scaled(&self) -> Option<f64> {
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

    /// Whether changing it needs a server restart.
    fn restart(&self) -> bool {
        self.context == "postmaster"
    }
}

/// The server settings the checks need, read once.
#[derive(Debug, Clone)]
pub struct Settings(HashMap<String, Setting>);

impl Settings {
    /// Reads them from `pg_settings`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn read(c: &impl GenericClient) -> anyhow::Result<Self> {
        let rows = c
            .query(
                "SELECT name, setting, unit, current_setting(name), context
                 FROM pg_settings WHERE name = ANY($1)",
                &[&&SETTINGS[..]],
            )
            .await
            .context("reading pg_settings")?;
        Ok(Settings(
            rows.iter()
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
                .collect(),
        ))
    }

    /// One setting.
    ///
    /// # Errors
    /// When the server does not have it.
    pub fn get(&self, name: &str) -> anyhow::Result<&Setting> {
        self.0
            .get(name)
            .with_context(|| format!("setting {name} missing"))
    }

    /// A setting's shown value, when the server has it.
    fn shown(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.shown.as_str())
    }
}

/// Whether a relation exists (`to_regclass`).
///
/// # Errors
/// Database errors.
pub async fn table_exists(c: &impl GenericClient, table: &str) -> anyhow::Result<bool> {
    Ok(c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0))
}

/// The server version (`server_version_num`) and its check: 14 or later.
///
/// # Errors
/// Database errors.
pub async fn server_version(c: &impl GenericClient) -> anyhow::Result<(i32, Check)> {
    let version_num: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let version: String = c
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    let ok = version_num >= 140_000;
    let check = Check {
        name: "server version",
        status: if ok { Status::Ok } else { Status::Fail },
        value: version,
        detail: if ok {
            "PostgreSQL 14 or later (lz4 column compression)".into()
        } else {
            "nexingest needs PostgreSQL 14 or later (lz4 column compression)".into()
        },
    };
    Ok((version_num, check))
}

/// Whether this connection is encrypted (a local one needs not be).
///
/// # Errors
/// Database errors.
pub async fn tls(c: &impl GenericClient) -> anyhow::Result<Check> {
    let tls = c
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
                    coalesce(host(inet_server_addr()), 'local socket')",
            &[],
        )
        .await?;
    let (ssl, server): (bool, String) = (tls.get(0), tls.get(1));
    let local = server == "local socket" || server == "127.0.0.1" || server == "::1";
    Ok(Check {
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
    })
}

/// Whether the schema is migrated to this binary's version.
///
/// # Errors
/// Database errors.
pub async fn schema(c: &impl GenericClient, dbc: &DbConfig) -> anyhow::Result<Check> {
    let migrations = dbc.schema.table("schema_migrations");
    let schema_version: Option<i32> = if table_exists(c, &migrations).await? {
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
    let migrate = || "run `nexingest migrate`".to_owned();
    Ok(match schema_version {
        None => Check {
            name: "schema",
            status: Status::Fail,
            value: format!("{} missing", dbc.schema),
            detail: migrate(),
        },
        Some(v) if v < latest => Check {
            name: "schema",
            status: Status::Fail,
            value: format!("{} at version {v}, this binary needs {latest}", dbc.schema),
            detail: migrate(),
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
    })
}

/// Whether the `real[]` columns of `climate_data_year` (`cdy`, when `has_cdy`) are stored
/// without pglz: EXTERNAL, or compressed with lz4.
///
/// # Errors
/// Database errors.
pub async fn array_storage(
    c: &impl GenericClient,
    cdy: &str,
    has_cdy: bool,
    version_num: i32,
) -> anyhow::Result<Check> {
    if !has_cdy {
        return Ok(Check {
            name: "array storage",
            status: Status::Info,
            value: "no climate_data_year yet".into(),
            detail: "`nexingest migrate` creates it with EXTERNAL storage (pr: lz4)".into(),
        });
    }
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
    Ok(Check {
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
    })
}

/// Whether `max_connections` holds the planned fleet's pools and the other clients now.
///
/// # Errors
/// Database errors; a setting missing.
pub async fn connections(
    c: &impl GenericClient,
    s: &Settings,
    cfg: &DoctorConfig,
) -> anyhow::Result<(Check, Param)> {
    let max_conn = s.get("max_connections")?;
    let reserved = s.get("superuser_reserved_connections")?;
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
    let per_worker = worker_connections(cfg.worker_jobs);
    let need = u64::from(cfg.workers) * per_worker;
    let others = others.max(0) as u64;
    let (status, detail) = if need > usable {
        (
            Status::Fail,
            format!(
                "{} workers × {per_worker} connections = {need} > {usable} usable \
                 (max_connections − superuser_reserved_connections): workers would fail to \
                 connect; raise max_connections or run fewer workers/--jobs",
                cfg.workers,
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
                "{} workers × {per_worker} connections (2 × --jobs {} + 2) = {need}, {others} \
                 other clients now, {usable} usable",
                cfg.workers, cfg.worker_jobs
            ),
        )
    };
    let want_conn = need + others + reserved.scaled().unwrap_or(3.0) as u64 + 10;
    Ok((
        Check {
            name: "max_connections",
            status,
            value: max_conn.shown.clone(),
            detail,
        },
        Param {
            name: "max_connections",
            now: max_conn.shown.clone(),
            load: want_conn.max(max_conn_n).to_string(),
            change: want_conn > max_conn_n,
            restart: max_conn.restart(),
            why: format!("{need} for the workers, the other clients, the reserved slots, 10 spare"),
        },
    ))
}

/// Whether `max_wal_size` spaces checkpoints by time rather than by COPY volume.
///
/// # Errors
/// The setting missing.
pub fn max_wal_size(s: &Settings) -> anyhow::Result<(Check, Param)> {
    let wal = s.get("max_wal_size")?;
    let wal_b = wal.scaled().unwrap_or(0.0);
    let ok = wal_b >= WANT_WAL / 2.0;
    Ok((
        Check {
            name: "max_wal_size",
            status: if ok { Status::Ok } else { Status::Warn },
            value: wal.shown.clone(),
            detail: if ok {
                "checkpoints are spaced by time, not forced by COPY volume".into()
            } else {
                "bulk COPY fills it in seconds and forces a checkpoint each time (full-page \
                 writes double the WAL); 16GB for the load"
                    .into()
            },
        },
        Param {
            name: "max_wal_size",
            now: wal.shown.clone(),
            load: if wal_b >= WANT_WAL {
                wal.shown.clone()
            } else {
                "16GB".into()
            },
            change: wal_b < WANT_WAL,
            restart: wal.restart(),
            why: "fewer forced checkpoints during COPY (needs that much free disk for WAL)".into(),
        },
    ))
}

/// Whether `checkpoint_timeout` keeps checkpoints at most every 15 min.
///
/// # Errors
/// The setting missing.
pub fn checkpoint_timeout(s: &Settings) -> anyhow::Result<(Check, Param)> {
    let ckpt = s.get("checkpoint_timeout")?;
    let ckpt_s = ckpt.scaled().unwrap_or(0.0);
    let ok = ckpt_s >= 900.0;
    Ok((
        Check {
            name: "checkpoint_timeout",
            status: if ok { Status::Ok } else { Status::Warn },
            value: ckpt.shown.clone(),
            detail: if ok {
                "checkpoints at most every 15 min".into()
            } else {
                "frequent checkpoints repeat full-page writes for every page COPY touches; 30min \
                 for the load"
                    .into()
            },
        },
        Param {
            name: "checkpoint_timeout",
            now: ckpt.shown.clone(),
            load: if ckpt_s >= WANT_CKPT {
                ckpt.shown.clone()
            } else {
                "30min".into()
            },
            change: ckpt_s < WANT_CKPT,
            restart: ckpt.restart(),
            why: "with max_wal_size: checkpoints by time (crash recovery takes longer)".into(),
        },
    ))
}

/// Whether `synchronous_commit` is on (one commit per job: it costs nothing measurable).
///
/// # Errors
/// The setting missing.
pub fn synchronous_commit(s: &Settings) -> anyhow::Result<(Check, Param)> {
    let sc = s.get("synchronous_commit")?;
    let sc_on = !matches!(sc.shown.as_str(), "off" | "local");
    Ok((
        Check {
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
        },
        Param {
            name: "synchronous_commit",
            now: sc.shown.clone(),
            load: "on".into(),
            change: !sc_on,
            restart: false,
            why: "keep on: one commit per job".into(),
        },
    ))
}

/// Whether `fsync` and `full_page_writes` are on: a throwaway test cluster runs without them;
/// a load target must not.
pub fn durability(s: &Settings) -> Check {
    let unsafe_off: Vec<String> = ["fsync", "full_page_writes"]
        .into_iter()
        .filter(|n| s.shown(n) == Some("off"))
        .map(|n| format!("{n} = off"))
        .collect();
    Check {
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
    }
}

/// Whether autovacuum runs on `climate_data_year` (`cdy`) during the load, and
/// `maintenance_work_mem` for the vacuums after it.
///
/// # Errors
/// Database errors; a setting missing.
pub async fn autovacuum(
    c: &impl GenericClient,
    s: &Settings,
    cdy: &str,
    has_cdy: bool,
) -> anyhow::Result<(Check, Param)> {
    let av = s.get("autovacuum")?;
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
    let on = av.shown == "on" && !table_off;
    let check = Check {
        name: "autovacuum",
        status: if on { Status::Ok } else { Status::Warn },
        value: format!(
            "autovacuum {}; climate_data_year {}; insert threshold {} + {} × rows",
            av.shown,
            if table_opts.is_empty() {
                "uses the defaults".to_owned()
            } else {
                table_opts.join(", ")
            },
            s.shown("autovacuum_vacuum_insert_threshold").unwrap_or("-"),
            s.shown("autovacuum_vacuum_insert_scale_factor")
                .unwrap_or("-"),
        ),
        detail: if on {
            "inserted rows are vacuumed and analyzed as the load goes; `nexingest finalize` \
             finishes the job"
                .into()
        } else {
            "nothing vacuums or analyzes the load's tables until `nexingest finalize`: run it \
             after the load and turn autovacuum back on"
                .into()
        },
    };
    let mwm = s.get("maintenance_work_mem")?;
    let mwm_b = mwm.scaled().unwrap_or(0.0);
    let param = Param {
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
    };
    Ok((check, param))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(raw: &str, unit: Option<&str>, shown: &str) -> Setting {
        Setting {
            raw: raw.into(),
            unit: unit.map(String::from),
            shown: shown.into(),
            context: String::new(),
        }
    }

    #[test]
    fn settings_scale_to_bytes_and_seconds() {
        let s = |raw: &str, unit: Option<&str>| setting(raw, unit, "");
        assert_eq!(s("1024", Some("MB")).scaled(), Some(1024.0 * 1048576.0));
        assert_eq!(s("300", Some("s")).scaled(), Some(300.0));
        assert_eq!(s("65536", Some("kB")).scaled(), Some(65536.0 * 1024.0));
        assert_eq!(s("100", None).scaled(), Some(100.0));
        assert_eq!(s("on", None).scaled(), None);
    }

    #[test]
    fn settings_checks_without_a_server() {
        let s = Settings(
            [
                ("max_wal_size", setting("1024", Some("MB"), "1GB")),
                ("checkpoint_timeout", setting("1800", Some("s"), "30min")),
                ("synchronous_commit", setting("off", None, "off")),
                ("fsync", setting("off", None, "off")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        );
        let (c, p) = max_wal_size(&s).unwrap();
        assert_eq!(
            (c.status, p.load.as_str(), p.change),
            (Status::Warn, "16GB", true)
        );
        let (c, p) = checkpoint_timeout(&s).unwrap();
        assert_eq!((c.status, p.change), (Status::Ok, false));
        let (c, p) = synchronous_commit(&s).unwrap();
        assert_eq!(
            (c.status, p.load.as_str(), p.change),
            (Status::Warn, "on", true)
        );
        let c = durability(&s);
        assert_eq!((c.status, c.value.as_str()), (Status::Warn, "fsync = off"));
        assert!(s.get("autovacuum").is_err());
    }
}

//! Connections, the embedded versioned migrations, and the seed rows.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::catalog::DATASETS;
use crate::config::{DbConfig, Schema};
use crate::error::JobError;
use crate::tls::{self, ConnectSettings};

/// One embedded migration.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "job_identity",
        sql: include_str!("../migrations/0002_job_identity.sql"),
    },
    Migration {
        version: 3,
        name: "historic",
        sql: include_str!("../migrations/0003_historic.sql"),
    },
    Migration {
        version: 4,
        name: "heartbeat",
        sql: include_str!("../migrations/0004_heartbeat.sql"),
    },
    Migration {
        version: 5,
        name: "bench_result",
        sql: include_str!("../migrations/0005_bench_result.sql"),
    },
    Migration {
        version: 6,
        name: "column_storage",
        sql: include_str!("../migrations/0006_column_storage.sql"),
    },
];

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Default `statement_timeout` of the worker's sessions: no query but a load's COPY (which sets
/// the job timeout for itself) or a migration should take this long; a query stuck behind a lock
/// or a hung server fails as transient (57014) instead of hanging the job.
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A connection pool whose sessions use the configured schema (`search_path`), over TLS as the
/// URL's `sslmode`/`sslrootcert` say (see [`crate::tls`]), with timeouts on connecting, waiting
/// for a pooled connection, and every statement.
///
/// # Errors
/// When the URL does not parse, its `sslrootcert` cannot be read, or the pool cannot be built.
pub fn pool(cfg: &DbConfig, size: usize) -> Result<Pool, JobError> {
    let (mut pg, tls) = settings(&cfg.url)?;
    // The schema name is validated to [a-z0-9_], so it needs no escaping in the option. Every
    // statement is bounded (a COPY sets its own, longer, limit; `migrate` lifts it).
    pg.options(format!(
        "-c search_path={} -c statement_timeout={}",
        cfg.schema.name(),
        STATEMENT_TIMEOUT.as_millis()
    ));
    let mgr = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(120)))
        .create_timeout(Some(std::time::Duration::from_secs(30)))
        .recycle_timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .map_err(|e| JobError::Database {
            message: format!("connection pool: {e}"),
            code: None,
            transient: false,
        })
}

/// One connection outside a pool (tests, benchmarks, tools), with the same URL handling and TLS
/// as [`pool`]; the connection task is spawned on the current runtime.
///
/// # Errors
/// As [`pool`], and connection errors (with the TLS hints of [`JobError`]'s conversion).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, JobError> {
    let (pg, tls) = settings(url)?;
    let (client, conn) = pg.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// The tokio-postgres configuration (defaults filled in) and the TLS connector of a URL.
fn settings(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), JobError> {
    let config_error = |e: crate::config::ConfigError| JobError::Database {
        message: format!("database URL: {e}"),
        code: None,
        transient: false,
    };
    let ConnectSettings {
        config: mut pg,
        tls,
    } = tls::parse_database_url(url).map_err(config_error)?;
    if pg.get_application_name().is_none() {
        pg.application_name("nexingest");
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(std::time::Duration::from_secs(10));
    }
    pg.keepalives_idle(std::time::Duration::from_secs(30));
    tracing::debug!(sslmode = %tls.mode, sslrootcert = ?tls.root_cert, "database TLS");
    let connector = tls.connector().map_err(config_error)?;
    Ok((pg, connector))
}

/// What `migrate` did.
#[derive(Debug, Clone, Default)]
pub struct MigrateReport {
    /// Versions applied now.
    pub applied: Vec<i32>,
    /// Schema version after the run.
    pub version: i32,
    /// Seed rows inserted now (datasets + models + scenarios + links).
    pub seeded: u64,
}

/// Creates the schema if needed, applies pending migrations and seeds the name tables, all
/// in one transaction under an advisory lock (concurrent `migrate`s wait for each other).
///
/// # Errors
/// Database errors; a database newer than this binary is an error.
pub async fn migrate(pool: &Pool, schema: &Schema) -> Result<MigrateReport, JobError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('nexingest.migrate.' || $1::text))",
        &[&schema.name()],
    )
    .await?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         SET LOCAL statement_timeout = 0;
         CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > latest_version() {
        return Err(JobError::Database {
            message: format!(
                "schema {schema} is at version {current}, newer than this binary ({})",
                latest_version()
            ),
            code: None,
            transient: false,
        });
    }
    let mut report = MigrateReport::default();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        report.applied.push(m.version);
    }
    report.seeded = seed(&tx).await?;
    tx.commit().await?;
    report.version = latest_version();
    Ok(report)
}

/// Inserts the catalog's datasets, models, scenarios and their links (idempotent).
async fn seed(tx: &tokio_postgres::Transaction<'_>) -> Result<u64, JobError> {
    let mut n = 0;
    for d in DATASETS {
        n += tx
            .execute(
                "INSERT INTO dataset (name, description) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&d.name(), &d.description()],
            )
            .await?;
        let models: Vec<&str> = d.models();
        n += tx
            .execute(
                "INSERT INTO climate_model (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
                &[&models],
            )
            .await?;
        n += tx
            .execute(
                "INSERT INTO dataset_model (dataset_id, model_id)
                 SELECT d.id, m.id FROM dataset d, climate_model m
                 WHERE d.name = $1 AND m.name = ANY($2::text[])
                 ON CONFLICT DO NOTHING",
                &[&d.name(), &models],
            )
            .await?;
        for (s, first, last) in d.scenarios() {
            n += tx
                .execute(
                    "INSERT INTO scenario (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                    &[s],
                )
                .await?;
            n += tx
                .execute(
                    "INSERT INTO dataset_scenario (dataset_id, scenario_id, first_year, last_year)
                     SELECT d.id, s.id, $3, $4 FROM dataset d, scenario s
                     WHERE d.name = $1 AND s.name = $2
                     ON CONFLICT (dataset_id, scenario_id)
                     DO UPDATE SET first_year = EXCLUDED.first_year, last_year = EXCLUDED.last_year
                     WHERE (dataset_scenario.first_year, dataset_scenario.last_year)
                           IS DISTINCT FROM (EXCLUDED.first_year, EXCLUDED.last_year)",
                    &[&d.name(), s, first, last],
                )
                .await?;
        }
    }
    Ok(n)
}

/// The ids of a job's dataset, model and scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogIds {
    /// `dataset.id`.
    pub dataset: i32,
    /// `climate_model.id`.
    pub model: i32,
    /// `scenario.id`.
    pub scenario: i32,
}

/// Looks up the ids of (dataset, model, scenario) by name.
///
/// # Errors
/// `InvalidMessage` when a name is not seeded (run `migrate`), or database errors.
pub async fn catalog_ids(
    client: &impl tokio_postgres::GenericClient,
    dataset: &str,
    model: &str,
    scenario: &str,
) -> Result<CatalogIds, JobError> {
    let row = client
        .query_opt(
            "SELECT d.id, m.id, s.id
             FROM dataset d
             JOIN dataset_model dm ON dm.dataset_id = d.id
             JOIN climate_model m ON m.id = dm.model_id AND m.name = $2
             JOIN dataset_scenario ds ON ds.dataset_id = d.id
             JOIN scenario s ON s.id = ds.scenario_id AND s.name = $3
             WHERE d.name = $1",
            &[&dataset, &model, &scenario],
        )
        .await?;
    match row {
        Some(r) => Ok(CatalogIds {
            dataset: r.get(0),
            model: r.get(1),
            scenario: r.get(2),
        }),
        None => Err(JobError::InvalidMessage(format!(
            "{dataset}/{scenario}/{model} is not in the database catalog (run `nexingest migrate`)"
        ))),
    }
}

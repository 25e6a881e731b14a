//! The bench's side of the server: takes an admin connection to the database; checks that the
//! role may create the scratch schema, names leftovers of killed runs, reads the settings that
//! change what a load costs, drops the scratch schema and records a [`BenchReport`] in the main
//! schema's `bench_result` (for [`crate::doctor`]).

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use super::{BenchReport, SCRATCH_PREFIX};
use crate::config::Schema;

/// Fails with the fix when the role may not create a schema in the database.
///
/// # Errors
/// Database errors; the role may not create schemas.
pub async fn check_create_schema(c: &tokio_postgres::Client) -> anyhow::Result<()> {
    let r = c
        .query_one(
            "SELECT has_database_privilege(current_database(), 'CREATE'),
                    current_user::text, current_database()::text",
            &[],
        )
        .await
        .context("checking the CREATE privilege on the database")?;
    let (ok, user, database): (bool, String, String) = (r.get(0), r.get(1), r.get(2));
    if !ok {
        bail!(
            "role \"{user}\" may not create schemas in database \"{database}\" (bench loads \
             into a scratch schema it drops afterwards): GRANT CREATE ON DATABASE \"{database}\" \
             TO \"{user}\", or run bench as a role that may"
        );
    }
    Ok(())
}

/// Scratch schemas left by bench runs that were killed.
///
/// # Errors
/// Database errors.
pub async fn leftover_schemas(c: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1",
            &[&SCRATCH_PREFIX],
        )
        .await
        .context("listing scratch schemas")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The settings that change what a load costs, by name (`fsync`, `full_page_writes`,
/// `wal_level`, `synchronous_commit`, `max_wal_size`, `wal_compression`,
/// `default_toast_compression`).
///
/// # Errors
/// Database errors.
pub async fn settings(c: &tokio_postgres::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let names = [
        "fsync",
        "full_page_writes",
        "wal_level",
        "synchronous_commit",
        "max_wal_size",
        "wal_compression",
        "default_toast_compression",
    ];
    let rows = c
        .query(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1)",
            &[&&names[..]],
        )
        .await
        .context("reading pg_settings")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Drops the scratch schema (waiting up to a minute for the locks of an abandoned load).
///
/// # Errors
/// Database errors, with the statement to drop it by hand.
pub async fn drop_schema(c: &tokio_postgres::Client, scratch: &Schema) -> anyhow::Result<()> {
    c.batch_execute(&format!(
        "SET statement_timeout = '120s'; SET lock_timeout = '60s';
         SET client_min_messages = warning;
         DROP SCHEMA IF EXISTS {scratch} CASCADE"
    ))
    .await
    .with_context(|| {
        format!(
            "dropping the scratch schema {scratch}: drop it by hand with DROP SCHEMA {scratch} \
             CASCADE"
        )
    })
}

/// Records the report in the main schema's `bench_result`, when the schema has it.
/// Returns where it was recorded, or why not.
///
/// # Errors
/// Database errors.
pub async fn save(
    c: &tokio_postgres::Client,
    schema: &Schema,
    r: &BenchReport,
) -> anyhow::Result<String> {
    let table = schema.table("bench_result");
    let exists: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(format!(
            "not recorded: schema {schema} has no bench_result table (run `nexingest migrate`, \
             then bench again, for `doctor` to use the figures)"
        ));
    }
    let json = serde_json::to_string(r)?;
    let id: i64 = c
        .query_one(
            &format!(
                "INSERT INTO {table} (dataset, variables, cells_per_job, concurrent_jobs,
                     rows_loaded, wall_seconds, rows_per_second, bytes_per_row,
                     wal_bytes_per_row, report)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)
                 RETURNING id"
            ),
            &[
                &r.dataset,
                &r.variables,
                &(r.cells_per_job as i64),
                &(r.concurrent_jobs as i32),
                &(r.rows as i64),
                &r.wall_seconds,
                &r.rows_per_second,
                &r.bytes_per_row,
                &r.wal_bytes_per_row,
                &json,
            ],
        )
        .await
        .with_context(|| format!("recording the result in {table}"))?
        .get(0);
    Ok(format!(
        "recorded in {table} (id {id}); `nexingest doctor` uses it"
    ))
}

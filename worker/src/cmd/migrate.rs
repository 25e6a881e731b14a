//! `migrate`: create/upgrade the schema and seed the catalog.

use crate::config::DbConfig;
use crate::db::{self, MigrateReport};
use crate::error::JobError;

/// Applies pending migrations and seeds.
///
/// # Errors
/// Database errors.
pub async fn run(db: &DbConfig) -> Result<MigrateReport, JobError> {
    let pool = db::pool(db, 1)?;
    let r = db::migrate(&pool, &db.schema).await?;
    // `nexingest migrate` prints the report; the log line is for embedders.
    tracing::debug!(schema = %db.schema, version = r.version, applied = ?r.applied, "migrated");
    Ok(r)
}

//! `ingest`: the pipeline on local files.

use crate::cli::IngestArgs;
use crate::config::{DbConfig, PipelineConfig};

/// Runs one local job.
///
/// # Errors
/// Any failure.
pub async fn run(_db: &DbConfig, _p: &PipelineConfig, _a: &IngestArgs) -> anyhow::Result<bool> {
    anyhow::bail!("not yet")
}

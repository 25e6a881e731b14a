//! `run`: the SQS consumer.

use std::future::Future;

use crate::config::RunConfig;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Jobs loaded.
    pub done: u64,
    /// Duplicate deliveries of finished jobs, dropped.
    pub skipped: u64,
    /// Permanent failures recorded.
    pub failed: u64,
    /// Messages released at shutdown or after transient failures.
    pub released: u64,
    /// Invalid messages.
    pub rejected: u64,
}

/// Consumes the queue until `shutdown` resolves (or, with `until_empty`, the queue is empty).
///
/// # Errors
/// Startup failures (queue, database).
pub async fn run(
    _cfg: RunConfig,
    _shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    anyhow::bail!("not yet")
}

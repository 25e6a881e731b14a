//! The SQS queue consumer (DESIGN §5), as a library: `nexingest run` is this with flags and
//! signals wired in, and tests drive [`run`] with any shutdown future.
//!
//! - [`run`] (this module): the receive loop, capacity (`--jobs`), `--until-empty`, and the
//!   drain after shutdown;
//! - `delivery`: one message from parse to delete or release: resolve it into a job, take
//!   the memory share, run its attempts ([`crate::pipeline::Pipeline::run_attempt`], shared
//!   with `ingest`) with retries, decide the message's fate;
//! - `visibility`: the heartbeat, release with backoff, delete;
//! - `report`: each delivery's one log line and metrics record.
//!
//! Behaviour:
//! - Long-polls (`--wait-time`, 20 s) for up to the free capacity (`--jobs` minus jobs in
//!   flight); each job also takes its share of the memory budget before decoding.
//! - Each in-flight message gets a heartbeat that extends its visibility every third of
//!   `--visibility-timeout`; if an extension fails the job is aborted and rolled back.
//! - A message is deleted only after its transaction commits. A finished job delivered again
//!   is recognised from `data_source` and deleted without reloading (unless
//!   `update_existing`).
//! - Transient errors are retried with jittered exponential backoff (backon); permanent ones
//!   are recorded on `data_source` and the message is left for SQS to redrive to the DLQ.
//! - On shutdown: stop receiving, let jobs finish until `--drain-timeout`, then roll back the
//!   rest and make their messages visible again at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::aws::{self, error_chain};
use crate::config::{AwsConfig, DbConfig, PipelineConfig, QueueRef};
use crate::message::LocationSource;
use crate::metrics::{Metrics, MetricsFormat};
use crate::pipeline::Pipeline;
use crate::{db, queue};

mod delivery;
mod report;
mod visibility;

use report::Outcome;
pub use visibility::release_visibility;

/// Validated `run` settings (built from flags by `nexingest run`; it lives here, not in
/// [`crate::config`], because it holds a domain value, the S3-event jobs' [`LocationSource`]).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Database.
    pub db: DbConfig,
    /// AWS.
    pub aws: AwsConfig,
    /// Queue.
    pub queue: QueueRef,
    /// Pipeline.
    pub pipeline: PipelineConfig,
    /// Max jobs in flight.
    pub jobs: usize,
    /// Visibility each heartbeat extends to.
    pub visibility_timeout: Duration,
    /// Long-poll wait.
    pub wait_time: Duration,
    /// Drain deadline after SIGTERM.
    pub drain_timeout: Duration,
    /// Stop when empty.
    pub until_empty: bool,
    /// Attempts for transient failures per delivery.
    pub max_attempts: usize,
    /// Visibility after a permanent failure.
    pub failed_visibility: Duration,
    /// Release visibility after the first transient failure of a message; it doubles with
    /// each receive (jittered), up to [`RunConfig::retry_visibility_max`].
    pub retry_visibility: Duration,
    /// Cap of the transient release visibility.
    pub retry_visibility_max: Duration,
    /// This worker's name in the ledger (host/pid).
    pub worker_id: String,
    /// Metrics output.
    pub metrics: MetricsFormat,
    /// CloudWatch namespace of the metrics.
    pub metrics_namespace: String,
    /// Location source of S3-event jobs.
    pub event_locations: LocationSource,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Jobs loaded.
    pub done: u64,
    /// Duplicate deliveries of finished jobs, dropped.
    pub skipped: u64,
    /// Permanent failures recorded (message left for the DLQ).
    pub failed: u64,
    /// Messages released (shutdown, lost visibility, transient failures after retries).
    pub released: u64,
    /// Invalid messages (nothing written; left for the DLQ).
    pub rejected: u64,
    /// Messages that are no job (S3's test event), deleted.
    pub ignored: u64,
}

/// What every delivery of a run shares.
struct Ctx {
    cfg: RunConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    url: String,
    pipeline: Pipeline,
    budget: Arc<Semaphore>,
    budget_mb: u32,
    metrics: Metrics,
}

/// Consumes the queue until `shutdown` resolves (or, with `until_empty`, until a receive
/// finds the queue empty with nothing in flight), then drains.
///
/// # Errors
/// Startup failures (queue URL, database connection, schema not migrated).
pub async fn run(cfg: RunConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<RunSummary> {
    let clients = aws::clients(&cfg.aws).await;
    let url = queue::resolve_url(&clients.sqs, &cfg.queue).await?;
    // Per job: its load and the background insert of a first job's cells; and two spare.
    let pool = db::pool(&cfg.db, cfg.jobs * 2 + 2)?;
    {
        let client = pool.get().await.context("connecting to the database")?;
        let v: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .with_context(|| {
                format!(
                    "schema {} is not migrated (run `nexingest migrate`)",
                    cfg.db.schema
                )
            })?
            .get(0);
        if v < db::latest_version() {
            anyhow::bail!(
                "schema {} is at version {v}; run `nexingest migrate`",
                cfg.db.schema
            );
        }
    }
    let budget_mb = u32::try_from(cfg.pipeline.memory_budget >> 20)
        .unwrap_or(u32::MAX)
        .max(1);
    let ctx = Arc::new(Ctx {
        pipeline: Pipeline::new(
            pool,
            cfg.db.schema.clone(),
            cfg.pipeline.clone(),
            Some(clients.s3.clone()),
            cfg.worker_id.clone(),
        ),
        sqs: clients.sqs,
        s3: clients.s3,
        url,
        budget: Arc::new(Semaphore::new(budget_mb as usize)),
        budget_mb,
        metrics: Metrics::stdout(cfg.metrics, &cfg.metrics_namespace, &cfg.worker_id),
        cfg,
    });
    info!(
        queue = %ctx.url,
        jobs = ctx.cfg.jobs,
        memory_budget_mb = budget_mb,
        max_db_loads = ctx.cfg.pipeline.max_db_loads,
        worker = %ctx.cfg.worker_id,
        "worker started"
    );

    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut summary = RunSummary::default();
    let tally = |s: &mut RunSummary, o: Outcome| match o {
        Outcome::Done => s.done += 1,
        Outcome::Skipped => s.skipped += 1,
        Outcome::Failed => s.failed += 1,
        Outcome::Released => s.released += 1,
        Outcome::Rejected => s.rejected += 1,
        Outcome::Ignored => s.ignored += 1,
    };
    let started = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut receive_errors = 0u32;

    loop {
        let free = ctx.cfg.jobs.saturating_sub(tasks.len());
        if free == 0 {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(r) = tasks.join_next() => tally(&mut summary, joined(r)),
            }
            continue;
        }
        // A job that ends during this poll may release its message; only a poll that started
        // with nothing in flight proves the queue empty.
        let had_in_flight = !tasks.is_empty();
        let receive = ctx
            .sqs
            .receive_message()
            .queue_url(&ctx.url)
            .max_number_of_messages(free.min(10) as i32)
            .wait_time_seconds(ctx.cfg.wait_time.as_secs() as i32)
            .visibility_timeout(ctx.cfg.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send();
        let received = tokio::select! {
            _ = &mut shutdown => break,
            r = receive => r,
        };
        match received {
            Ok(out) => {
                receive_errors = 0;
                let msgs = out.messages.unwrap_or_default();
                if msgs.is_empty() {
                    // Reap whatever finished meanwhile.
                    while let Some(r) = tasks.try_join_next() {
                        tally(&mut summary, joined(r));
                    }
                    if ctx.cfg.until_empty && tasks.is_empty() && !had_in_flight {
                        info!("queue empty; stopping (--until-empty)");
                        break;
                    }
                    if ctx.cfg.until_empty && !tasks.is_empty() {
                        // Wait for something in flight to finish before polling again.
                        tokio::select! {
                            _ = &mut shutdown => break,
                            Some(r) = tasks.join_next() => tally(&mut summary, joined(r)),
                        }
                    }
                    continue;
                }
                for m in msgs {
                    let ctx = Arc::clone(&ctx);
                    let cancel = cancel_rx.clone();
                    tasks.spawn(async move { delivery::handle(ctx, m, cancel).await });
                }
            }
            Err(e) => {
                receive_errors += 1;
                let delay = Duration::from_millis((500u64 << receive_errors.min(6)).min(30_000));
                warn!(error = %error_chain(&e), retry_in_ms = delay.as_millis() as u64, "receive failed");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        while let Some(r) = tasks.try_join_next() {
            tally(&mut summary, joined(r));
        }
    }

    // Drain: no more receives; let jobs finish until the deadline, then cancel the rest.
    if !tasks.is_empty() {
        info!(
            in_flight = tasks.len(),
            deadline_s = ctx.cfg.drain_timeout.as_secs(),
            "draining"
        );
        let deadline = tokio::time::sleep(ctx.cfg.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = tasks.join_next() => match r {
                    Some(r) => tally(&mut summary, joined(r)),
                    None => break,
                },
                _ = &mut deadline => {
                    warn!(in_flight = tasks.len(), "drain deadline reached; rolling back and releasing the rest");
                    let _ = cancel_tx.send(true);
                    break;
                }
            }
        }
        // Cancelled jobs release their messages (bounded by short timeouts inside).
        let hard = tokio::time::sleep(Duration::from_secs(8));
        tokio::pin!(hard);
        loop {
            tokio::select! {
                r = tasks.join_next() => match r {
                    Some(r) => tally(&mut summary, joined(r)),
                    None => break,
                },
                _ = &mut hard => {
                    error!(in_flight = tasks.len(), "jobs did not stop in time; aborting them");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }
    info!(
        done = summary.done,
        skipped = summary.skipped,
        failed = summary.failed,
        released = summary.released,
        rejected = summary.rejected,
        ignored = summary.ignored,
        "worker stopped"
    );
    ctx.metrics.finish(started.elapsed());
    Ok(summary)
}

fn joined(r: Result<Outcome, tokio::task::JoinError>) -> Outcome {
    r.unwrap_or_else(|e| {
        error!(error = %e, "job task failed");
        Outcome::Released
    })
}

//! `run`: the SQS consumer (DESIGN §5).
//!
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::types::{Message as SqsMessage, MessageSystemAttributeName};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use crate::aws::{self, error_chain};
use crate::config::RunConfig;
use crate::error::JobError;
use crate::message::{self, JobSpec};
use crate::metrics::{JobMetrics, Metrics};
use crate::pipeline::state::Started;
use crate::pipeline::{self, Attempt, CommitGate, Inputs, Pipeline, Prepared};
use crate::{db, queue};

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

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Skipped,
    Failed,
    Released,
    Rejected,
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Released => "released",
            Outcome::Rejected => "rejected",
            Outcome::Ignored => "ignored",
        }
    }
}

/// What one delivery did: its one log line and its metrics.
struct Report {
    outcome: Outcome,
    loaded: Option<pipeline::Loaded>,
    data_source: Option<i64>,
    reason: Option<String>,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1e3
}

impl Report {
    fn new(outcome: Outcome) -> Self {
        Report {
            outcome,
            loaded: None,
            data_source: None,
            reason: None,
        }
    }

    fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    fn data_source(mut self, id: i64) -> Self {
        self.data_source = Some(id);
        self
    }

    /// The delivery's one line at the default level (phases are at `debug`).
    fn log(&self) {
        let outcome = self.outcome.as_str();
        let reason = self.reason.as_deref().unwrap_or("");
        match (self.outcome, &self.loaded) {
            (Outcome::Done, Some(l)) => info!(
                outcome,
                data_source = l.data_source_id,
                rows = l.rows,
                new = l.rows_new,
                updated = l.rows_updated,
                mb = (l.bytes as f64 / 1e5).round() / 10.0,
                download_s = secs(l.download_ms),
                decode_s = secs(l.decode_ms),
                load_s = secs(l.load_ms),
                slot_wait_s = secs(l.slot_wait_ms),
                unmatched = l.unmatched,
                "job done"
            ),
            (Outcome::Skipped, _) => info!(
                outcome,
                data_source = self.data_source,
                "job already done; delivery dropped"
            ),
            (Outcome::Ignored, _) => info!(outcome, reason, "not a job; deleted"),
            (Outcome::Failed, _) => error!(outcome, reason, "job failed permanently"),
            (Outcome::Rejected, _) => warn!(outcome, reason, "message rejected"),
            _ => warn!(outcome, reason, "job released"),
        }
    }

    fn metrics(
        &self,
        spec: Option<&JobSpec>,
        message_id: &str,
        receive_count: Option<i32>,
        queue_wait_s: Option<f64>,
        took: Duration,
    ) -> JobMetrics {
        let l = self.loaded.clone().unwrap_or_default();
        JobMetrics {
            outcome: self.outcome.as_str(),
            dataset: spec.map(|s| s.dataset.name().to_owned()),
            scenario: spec.map(|s| s.scenario.to_owned()),
            model: spec.map(|s| s.model.to_owned()),
            year: spec.map(|s| s.year),
            data_source: self.data_source,
            message_id: Some(message_id.to_owned()),
            receive_count,
            object: spec.and_then(|s| s.object.as_ref()).map(|o| o.identity()),
            reason: self.reason.clone(),
            rows: l.rows,
            rows_new: l.rows_new,
            rows_updated: l.rows_updated,
            bytes: l.bytes,
            download_s: secs(l.download_ms),
            decode_s: secs(l.decode_ms),
            load_s: secs(l.load_ms),
            slot_wait_s: secs(l.slot_wait_ms),
            queue_wait_s,
            job_s: took.as_secs_f64(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
                    tasks.spawn(async move { handle(ctx, m, cancel).await });
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

/// Handles one delivery from parse to delete/release; logs its one line and its metrics.
async fn handle(ctx: Arc<Ctx>, m: SqsMessage, cancel: watch::Receiver<bool>) -> Outcome {
    let received = Instant::now();
    let message_id = m.message_id().unwrap_or("?").to_owned();
    let attrs = m.attributes();
    let attr = |name: MessageSystemAttributeName| attrs.and_then(|a| a.get(&name));
    let receive_count: Option<i32> =
        attr(MessageSystemAttributeName::ApproximateReceiveCount).and_then(|v| v.parse().ok());
    // How long the message waited in the queue (since it was first sent).
    let queue_wait_s = attr(MessageSystemAttributeName::SentTimestamp)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|sent| now_ms().saturating_sub(sent) as f64 / 1e3);
    let body = m.body().unwrap_or("");
    let receipt = m.receipt_handle();
    let span =
        info_span!("job", message_id = %message_id, receive_count, job = tracing::field::Empty);
    async move {
        let (spec, report) = match receipt {
            Some(receipt) => deliver(&ctx, body, receipt, &message_id, receive_count, cancel).await,
            None => (
                None,
                Report::new(Outcome::Rejected).because("message without receipt handle"),
            ),
        };
        report.log();
        ctx.metrics.job(&report.metrics(
            spec.as_ref(),
            &message_id,
            receive_count,
            queue_wait_s,
            received.elapsed(),
        ));
        report.outcome
    }
    .instrument(span)
    .await
}

/// Parses and processes one delivery.
async fn deliver(
    ctx: &Arc<Ctx>,
    body: &str,
    receipt: &str,
    message_id: &str,
    receive_count: Option<i32>,
    cancel: watch::Receiver<bool>,
) -> (Option<JobSpec>, Report) {
    let parsed = (|| parse(ctx, body))
        .retry(backoff(ctx.cfg.max_attempts))
        .sleep(tokio::time::sleep)
        .when(JobError::is_transient)
        .await;
    let spec = match parsed {
        Ok(Parsed::Job(s)) => *s,
        Ok(Parsed::TestEvent) => {
            // S3 sends one when a bucket's notifications are configured: nothing to do.
            delete(ctx, receipt).await;
            return (
                None,
                Report::new(Outcome::Ignored).because("s3:TestEvent deleted"),
            );
        }
        Err(e) if e.is_transient() => {
            let vis = release_visibility(&ctx.cfg, receive_count, message_id);
            set_visibility(ctx, receipt, vis).await;
            return (
                None,
                Report::new(Outcome::Released).because(format!(
                    "could not resolve the message: {e}; visible again in {} s",
                    vis.as_secs()
                )),
            );
        }
        Err(e) => {
            // Nothing is written for an invalid message; SQS moves it to the DLQ after
            // maxReceiveCount receives.
            set_visibility(ctx, receipt, ctx.cfg.failed_visibility).await;
            return (None, Report::new(Outcome::Rejected).because(e.to_string()));
        }
    };
    tracing::Span::current().record("job", tracing::field::display(spec.id()));
    let report = process(ctx, &spec, receipt, message_id, receive_count, cancel).await;
    (Some(spec), report)
}

/// A message, as the consumer handles it.
enum Parsed {
    /// A job (native, old-system or from an S3 event).
    Job(Box<JobSpec>),
    /// S3's test event: deleted.
    TestEvent,
}

async fn parse(ctx: &Ctx, body: &str) -> Result<Parsed, JobError> {
    match message::parse(body, &ctx.cfg.aws)? {
        message::Message::Native(s) => Ok(Parsed::Job(Box::new(s))),
        message::Message::Legacy(l) => {
            let client = ctx.pipeline.pool().get().await?;
            Ok(Parsed::Job(Box::new(
                message::resolve_legacy(&**client, &l).await?,
            )))
        }
        message::Message::S3Object(ev) => Ok(Parsed::Job(Box::new(
            ev.job(ctx.cfg.event_locations.clone()),
        ))),
        message::Message::S3TestEvent => Ok(Parsed::TestEvent),
    }
}

fn backoff(max_attempts: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(max_attempts.saturating_sub(1))
}

/// The visibility a message gets when it is released after a transient failure: the base
/// doubled per earlier receive, capped, then jittered down to between half and all of it
/// (so the messages of one outage do not all come back at once).
pub fn release_visibility(cfg: &RunConfig, receive_count: Option<i32>, seed: &str) -> Duration {
    let n = receive_count.unwrap_or(1).clamp(1, 31) as u32;
    let full = cfg
        .retry_visibility
        .saturating_mul(1u32 << (n - 1).min(20))
        .min(cfg.retry_visibility_max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let h = pipeline::plan::fnv1a(seed.bytes().chain(nanos.to_le_bytes()));
    let frac = (h % 1024) as f64 / 1023.0;
    full.mul_f64(0.5 + 0.5 * frac).max(Duration::from_secs(1))
}

async fn process(
    ctx: &Arc<Ctx>,
    spec: &JobSpec,
    receipt: &str,
    message_id: &str,
    receive_count: Option<i32>,
    mut cancel: watch::Receiver<bool>,
) -> Report {
    let attempt = Attempt {
        message_id: Some(message_id.to_owned()),
        receive_count,
        ..Attempt::default()
    };

    // Heartbeat for the whole handling, including waits for budget, load slots and retries.
    let lost = Arc::new(Notify::new());
    let data_source = Arc::new(std::sync::OnceLock::new());
    let heartbeat = tokio::spawn(heartbeat(
        Arc::clone(ctx),
        receipt.to_owned(),
        Arc::clone(&attempt.gate),
        Arc::clone(&lost),
        Arc::clone(&data_source),
    ));
    let _stop_heartbeat = AbortOnDrop(heartbeat);
    let release = || release_visibility(&ctx.cfg, receive_count, message_id);

    // The data source, and for an S3 event whether its object changed since it was loaded.
    let prepared = (|| async {
        let p = ctx.pipeline.prepare(spec).await?;
        let changed = ctx.pipeline.object_job(spec, &p).await?;
        Ok::<_, JobError>((p, changed))
    })
    .retry(backoff(ctx.cfg.max_attempts))
    .sleep(tokio::time::sleep)
    .when(JobError::is_transient)
    .await;
    let (prepared, changed) = match prepared {
        Ok(p) => p,
        Err(e) if e.is_transient() => {
            let vis = release();
            set_visibility(ctx, receipt, vis).await;
            return Report::new(Outcome::Released).because(format!(
                "database unavailable: {e}; visible again in {} s",
                vis.as_secs()
            ));
        }
        Err(e) => {
            set_visibility(ctx, receipt, ctx.cfg.failed_visibility).await;
            return Report::new(Outcome::Rejected).because(e.to_string());
        }
    };
    let spec = changed.as_ref().unwrap_or(spec);
    let ds = prepared.data_source_id;
    let _ = data_source.set(ds);

    let work = async {
        // Plan (location source, identity) and drop a job that is done.
        let plan = (|| ctx.pipeline.plan(spec, &prepared))
            .retry(backoff(ctx.cfg.max_attempts))
            .sleep(tokio::time::sleep)
            .when(JobError::is_transient)
            .await
            .map_err(|e| (e, None, false))?;
        if ctx
            .pipeline
            .is_done(spec, &prepared, &plan)
            .await
            .map_err(|e| (e, Some(plan.clone()), false))?
        {
            return Ok((None, plan));
        }
        let need = (pipeline::estimate_bytes(spec) >> 20).clamp(1, ctx.budget_mb as u64) as u32;
        // Held until the job ends, cut to the decoded blocks once they are decoded.
        let permit = Arc::clone(&ctx.budget)
            .acquire_many_owned(need)
            .await
            .map_err(|_| (JobError::Cancelled, Some(plan.clone()), false))?;
        attempt.memory.hold(permit);
        let bucket = pipeline::bucket_for(spec, &ctx.cfg.aws);
        let inputs = Inputs::S3 {
            client: ctx.s3.clone(),
            bucket,
        };
        // Attempts within this delivery: each is recorded on the ledger; a transient failure
        // is tried again after a jittered backoff, reusing the files already downloaded.
        let mut delays = backoff(ctx.cfg.max_attempts).build();
        loop {
            let started = Started::now();
            let n = ctx
                .pipeline
                .begin_attempt(&prepared)
                .await
                .map_err(|e| (e, Some(plan.clone()), false))?;
            let r = timeout_excluding(
                ctx.cfg.pipeline.job_timeout,
                &attempt.slot_wait_ms,
                ctx.pipeline
                    .execute(spec, &prepared, &plan, &inputs, &attempt),
            )
            .await
            .unwrap_or(Err(JobError::TimedOut(
                ctx.cfg.pipeline.job_timeout.as_secs(),
            )));
            match r {
                Ok(l) => return Ok((Some(l), plan)),
                Err(e) => {
                    let retry = e.is_transient() && !e.is_abort();
                    let delay = if retry { delays.next() } else { None };
                    record(
                        ctx,
                        spec,
                        &prepared,
                        Some(&plan),
                        &e,
                        !e.is_transient(),
                        &attempt,
                        Some(n),
                        started,
                    )
                    .await;
                    match delay {
                        Some(d) => {
                            warn!(error = %e, attempt = n, retry_in_ms = d.as_millis() as u64, "transient failure; retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => return Err((e, Some(plan), true)),
                    }
                }
            }
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = lost.notified() => Err((JobError::VisibilityLost("visibility extension failed".into()), None, false)),
        _ = cancelled(&mut cancel) => Err((JobError::Cancelled, None, false)),
    };
    drop(_stop_heartbeat);
    attempt.memory.release();

    match result {
        Ok((None, plan))
        | Ok((
            Some(pipeline::Loaded {
                superseded: true, ..
            }),
            plan,
        )) => {
            if let Err(e) = ctx
                .pipeline
                .record_skip(spec, &prepared, Some(&plan), &attempt)
                .await
            {
                warn!(error = %e, "could not record the skip");
            }
            delete(ctx, receipt).await;
            Report::new(Outcome::Skipped).data_source(ds)
        }
        Ok((Some(l), _)) => {
            delete(ctx, receipt).await;
            Report {
                loaded: Some(l),
                ..Report::new(Outcome::Done).data_source(ds)
            }
        }
        // An attempt's own failure is on the ledger already; anything else is recorded now.
        Err((e, plan, recorded)) => {
            if !recorded {
                record(
                    ctx,
                    spec,
                    &prepared,
                    plan.as_ref(),
                    &e,
                    !e.is_transient(),
                    &attempt,
                    None,
                    Started::now(),
                )
                .await;
            }
            let report = |o: Outcome, why: String| Report::new(o).data_source(ds).because(why);
            if e.is_abort() {
                // Release first: another worker may take the job at once.
                set_visibility(ctx, receipt, Duration::ZERO).await;
                report(
                    Outcome::Released,
                    format!("{e}; rolled back and released at once"),
                )
            } else if e.is_transient() {
                let vis = release();
                set_visibility(ctx, receipt, vis).await;
                report(
                    Outcome::Released,
                    format!(
                        "{e}; transient failure persisted, visible again in {} s",
                        vis.as_secs()
                    ),
                )
            } else {
                set_visibility(ctx, receipt, ctx.cfg.failed_visibility).await;
                report(
                    Outcome::Failed,
                    format!("{e}; left for the dead-letter queue"),
                )
            }
        }
    }
}

/// Runs `fut` for at most `limit`, not counting the time its attempts spend waiting for a
/// database load slot (`waited_ms` grows while they wait). `None` when the limit passed.
async fn timeout_excluding<T>(
    limit: Duration,
    waited_ms: &AtomicU64,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let mut counted = waited_ms.load(Ordering::Relaxed);
    let mut deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = tokio::time::sleep_until(deadline) => {
                let w = waited_ms.load(Ordering::Relaxed);
                if w <= counted {
                    return None;
                }
                deadline += Duration::from_millis(w - counted);
                counted = w;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    ctx: &Ctx,
    spec: &JobSpec,
    p: &Prepared,
    plan: Option<&pipeline::JobPlan>,
    e: &JobError,
    permanent: bool,
    attempt: &Attempt,
    attempt_no: Option<i32>,
    started: Started,
) {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        ctx.pipeline
            .record_failure(spec, p, plan, e, permanent, attempt, attempt_no, started),
    )
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(error = %err, "could not record the failure"),
        Err(_) => warn!("recording the failure timed out"),
    }
}

async fn cancelled(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extends the message's visibility every third of the timeout. A failed extension is
/// retried with backoff while the current visibility lasts; once the receipt handle is known
/// to be gone (or the visibility ran out) the job's [`CommitGate`] is closed and the job
/// woken, unless its commit has already begun.
async fn heartbeat(
    ctx: Arc<Ctx>,
    receipt: String,
    gate: Arc<CommitGate>,
    lost: Arc<Notify>,
    data_source: Arc<std::sync::OnceLock<i64>>,
) {
    let vis = ctx.cfg.visibility_timeout;
    let every = (vis / 3).max(Duration::from_millis(500));
    // Stop trying this long before the visibility runs out.
    let margin = (vis / 10).min(Duration::from_secs(5));
    let mut valid_until = tokio::time::Instant::now() + vis;
    let give_up = |why: &str| {
        if gate.lose() {
            error!(
                reason = why,
                "message lost; aborting the job (it will roll back)"
            );
            lost.notify_one();
        } else {
            warn!(
                reason = why,
                "message lost while committing; a redelivery will find the job done"
            );
        }
    };
    loop {
        tokio::time::sleep(every).await;
        let mut delay = Duration::from_millis(200);
        loop {
            let left = valid_until.saturating_duration_since(tokio::time::Instant::now());
            if left <= margin {
                give_up("visibility ran out before an extension succeeded");
                return;
            }
            let r = tokio::time::timeout(
                (left - margin).min(Duration::from_secs(10)),
                ctx.sqs
                    .change_message_visibility()
                    .queue_url(&ctx.url)
                    .receipt_handle(&receipt)
                    .visibility_timeout(vis.as_secs() as i32)
                    .send(),
            )
            .await;
            match r {
                Ok(Ok(_)) => {
                    valid_until = tokio::time::Instant::now() + vis;
                    tracing::debug!(visibility_s = vis.as_secs(), "visibility extended");
                    if let Some(&id) = data_source.get() {
                        ctx.pipeline.beat(id).await;
                    }
                    break;
                }
                Ok(Err(e)) if receipt_gone(&e) => {
                    error!(error = %error_chain(&e), "visibility extension refused");
                    give_up("receipt handle no longer valid");
                    return;
                }
                Ok(Err(e)) => {
                    warn!(error = %error_chain(&e), retry_in_ms = delay.as_millis() as u64, "visibility extension failed; retrying");
                }
                Err(_) => {
                    warn!(
                        retry_in_ms = delay.as_millis() as u64,
                        "visibility extension timed out; retrying"
                    );
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(every / 2);
        }
    }
}

/// Whether SQS says the receipt handle (or the queue) is gone for good.
fn receipt_gone<R>(e: &aws_sdk_sqs::error::SdkError<ChangeMessageVisibilityError, R>) -> bool {
    let Some(se) = e.as_service_error() else {
        return false;
    };
    se.is_receipt_handle_is_invalid()
        || se.is_message_not_inflight()
        || se.is_queue_does_not_exist()
        || matches!(
            se.code(),
            Some(
                "ReceiptHandleIsInvalid"
                    | "InvalidParameterValue"
                    | "AWS.SimpleQueueService.NonExistentQueue"
                    | "QueueDoesNotExist"
                    | "MessageNotInflight"
            )
        )
}

async fn delete(ctx: &Ctx, receipt: &str) {
    let r = (|| {
        ctx.sqs
            .delete_message()
            .queue_url(&ctx.url)
            .receipt_handle(receipt)
            .send()
    })
    .retry(backoff(3))
    .sleep(tokio::time::sleep)
    .await;
    if let Err(e) = r {
        // The job is committed; a redelivery is recognised as done and dropped.
        warn!(error = %error_chain(&e), "could not delete the message");
    }
}

async fn set_visibility(ctx: &Ctx, receipt: &str, vis: Duration) {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        ctx.sqs
            .change_message_visibility()
            .queue_url(&ctx.url)
            .receipt_handle(receipt)
            .visibility_timeout(vis.as_secs() as i32)
            .send(),
    )
    .await;
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %error_chain(&e), "could not change the message's visibility"),
        Err(_) => warn!("changing the message's visibility timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_visibility_grows_with_receives_and_is_capped() {
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "nexingest",
            "--database-url",
            "postgres://u@h/d",
            "run",
            "--queue-name",
            "q",
        ])
        .unwrap();
        let crate::cli::Command::Run(r) = &cli.command else {
            unreachable!()
        };
        let cfg = RunConfig::from_args(&cli.global, r).unwrap();
        assert_eq!(cfg.retry_visibility, Duration::from_secs(30));
        for (n, full) in [
            (1, 30),
            (2, 60),
            (3, 120),
            (4, 240),
            (5, 480),
            (6, 900),
            (30, 900),
        ] {
            for seed in ["a", "b", "c", "d"] {
                let v = release_visibility(&cfg, Some(n), seed);
                assert!(
                    v <= Duration::from_secs(full) && v >= Duration::from_secs(full) / 2,
                    "receive {n}: {v:?} not in [{}/2, {full}] s",
                    full
                );
            }
        }
        assert!(release_visibility(&cfg, None, "x") <= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn the_job_timeout_does_not_count_waits_for_a_load_slot() {
        let waited = Arc::new(AtomicU64::new(0));
        let limit = Duration::from_millis(150);
        // 400 ms, most of it counted as waiting for a slot (generously, so a loaded machine's
        // late timers do not matter): within 150 ms of work.
        let w = Arc::clone(&waited);
        let waits = async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                w.fetch_add(100, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            "done"
        };
        assert_eq!(timeout_excluding(limit, &waited, waits).await, Some("done"));
        // 400 ms of work without waiting: timed out.
        let busy = tokio::time::sleep(Duration::from_millis(400));
        assert_eq!(timeout_excluding(limit, &waited, busy).await, None);
    }
}

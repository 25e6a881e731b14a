//! One delivery, from parse to delete or release: the message resolved into a job, the job's
//! data source and plan, its memory share, its attempts with retries (each through
//! [`Pipeline::run_attempt`](crate::pipeline::Pipeline::run_attempt)), and the message's fate:
//! deleted once committed (or found done), released with backoff after a transient failure,
//! left for the dead-letter queue after a permanent one, released at once when aborted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message as SqsMessage, MessageSystemAttributeName};
use backon::{BackoffBuilder, Retryable};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, info_span, warn};

use super::Ctx;
use super::report::{Outcome, Report};
use super::visibility::{
    AbortOnDrop, backoff, cancelled, delete, heartbeat, release_visibility, set_visibility,
};
use crate::error::JobError;
use crate::message::{self, JobSpec};
use crate::pipeline::state::Started;
use crate::pipeline::{self, Attempt, Inputs, attempt::Failed};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Handles one delivery from parse to delete/release; logs its one line and its metrics.
pub(super) async fn handle(ctx: Arc<Ctx>, m: SqsMessage, cancel: watch::Receiver<bool>) -> Outcome {
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

/// A parsed job: its data source, plan, memory share and attempts; the message's fate.
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
        let limit = Some(ctx.cfg.pipeline.job_timeout);
        loop {
            match ctx
                .pipeline
                .run_attempt(spec, &prepared, &plan, &inputs, &attempt, limit)
                .await
            {
                Ok(l) => return Ok((Some(l), plan)),
                Err(Failed {
                    error: e,
                    attempt_no: None,
                }) => return Err((e, Some(plan), false)),
                Err(Failed {
                    error: e,
                    attempt_no: Some(n),
                }) => {
                    let retry = e.is_transient() && !e.is_abort();
                    match if retry { delays.next() } else { None } {
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
                ctx.pipeline
                    .record_failure_logged(
                        spec,
                        &prepared,
                        plan.as_ref(),
                        &e,
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

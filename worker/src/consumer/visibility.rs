//! The message's visibility: the heartbeat that keeps it ours while its job runs, release
//! with backoff, delete, and the retry policy of the consumer's calls.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{Notify, watch};
use tracing::{error, warn};

use super::{Ctx, RunConfig};
use crate::aws::error_chain;
use crate::pipeline::{self, CommitGate};

/// The consumer's retry policy within one delivery: jittered exponential, 0.5–30 s.
pub(super) fn backoff(max_attempts: usize) -> ExponentialBuilder {
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

/// Resolves once the run cancels its jobs (drain deadline).
pub(super) async fn cancelled(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Aborts the task (the heartbeat) when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extends the message's visibility every third of the timeout. A failed extension is
/// retried with backoff while the current visibility lasts; once the receipt handle is known
/// to be gone (or the visibility ran out) the job's [`CommitGate`] is closed and the job
/// woken, unless its commit has already begun.
pub(super) async fn heartbeat(
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

/// Deletes a committed (or done) job's message, with retries.
pub(super) async fn delete(ctx: &Ctx, receipt: &str) {
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

/// Sets the message's visibility (release: 0 or a backoff; failed: `--failed-visibility`).
pub(super) async fn set_visibility(ctx: &Ctx, receipt: &str, vis: Duration) {
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

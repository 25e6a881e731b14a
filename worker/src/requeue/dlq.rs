//! The dead-letter queue's redrive ([`super::Mode::FromDlq`]): takes the settings and the
//! dead-letter queue, moves its messages to the queue — each deleted only after it was sent —
//! and hands on a [`RequeueReport`] of how many moved.

use anyhow::{Context, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use super::{RequeueConfig, RequeueReport};
use crate::config::QueueRef;
use crate::{aws, queue};

/// Moves up to `max_messages` (`None`: all) from `dlq` to the queue, 10 at a time; a dry run
/// receives and lists them, then makes them visible again.
///
/// # Errors
/// SQS failures; the dead-letter queue is the queue itself.
pub async fn redrive(
    cfg: &RequeueConfig,
    dlq: &QueueRef,
    max_messages: Option<usize>,
) -> anyhow::Result<RequeueReport> {
    let clients = aws::clients(&cfg.aws).await;
    let sqs = &clients.sqs;
    let url = queue::resolve_url(sqs, cfg.queue()?).await?;
    let dlq_url = queue::resolve_url(sqs, dlq).await.context("--from-dlq")?;
    if url == dlq_url {
        bail!("--from-dlq names the queue itself");
    }
    let mut report = RequeueReport::default();
    let mut seen: Vec<String> = Vec::new();
    let mut held: Vec<String> = Vec::new();
    loop {
        let want = max_messages.map_or(10, |m| m.saturating_sub(report.sent).min(10));
        if want == 0 {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(&dlq_url)
            .max_number_of_messages(want as i32)
            .wait_time_seconds(1)
            .visibility_timeout(120)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("sqs ReceiveMessage: {}", aws::error_chain(&e)))?;
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            break;
        }
        if cfg.dry_run {
            let mut fresh = 0;
            for m in &msgs {
                let id = m.message_id().unwrap_or_default().to_owned();
                if let Some(h) = m.receipt_handle() {
                    held.push(h.to_owned());
                }
                if seen.contains(&id) {
                    continue;
                }
                fresh += 1;
                report
                    .dry_run_bodies
                    .push(m.body().unwrap_or_default().to_owned());
                seen.push(id);
                report.sent += 1;
            }
            if fresh == 0 {
                break;
            }
            continue;
        }
        let bodies: Vec<String> = msgs
            .iter()
            .map(|m| m.body().unwrap_or_default().to_owned())
            .collect();
        // Send first; only what was sent is deleted. On a failure nothing of this batch is
        // deleted: the messages become visible in the dead-letter queue again.
        let sent = queue::send_all(sqs, &url, &bodies).await.with_context(|| {
            format!(
                "sending to the queue ({} messages moved before; this batch stays in the \
                 dead-letter queue)",
                report.sent
            )
        })?;
        report.sent += sent;
        let entries: Vec<DeleteMessageBatchRequestEntry> = msgs
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        match sqs
            .delete_message_batch()
            .queue_url(&dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => report.delete_failed += out.failed().len(),
            Err(e) => {
                tracing::warn!(error = %aws::error_chain(&e), "deleting redriven messages from the dead-letter queue failed");
                report.delete_failed += msgs.len();
            }
        }
        tracing::info!(
            moved = sent,
            total = report.sent,
            "redriven from the dead-letter queue"
        );
    }
    // A dry run made what it received invisible: make it visible again.
    for h in held {
        let _ = sqs
            .change_message_visibility()
            .queue_url(&dlq_url)
            .receipt_handle(h)
            .visibility_timeout(0)
            .send()
            .await;
    }
    Ok(report)
}

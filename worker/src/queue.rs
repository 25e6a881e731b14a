//! SQS helpers: resolve or create the queue (with its dead-letter queue), send batches.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

use crate::aws::error_chain;
use crate::config::QueueRef;

/// An SQS failure.
#[derive(Debug, thiserror::Error)]
#[error("sqs {op}: {message}")]
pub struct QueueError {
    /// Operation.
    pub op: &'static str,
    /// SDK error chain.
    pub message: String,
}

fn qerr(op: &'static str, e: impl std::error::Error + 'static) -> QueueError {
    QueueError {
        op,
        message: error_chain(&e),
    }
}

/// The queue URL for a configured queue.
///
/// # Errors
/// When the queue does not exist or SQS fails.
pub async fn resolve_url(sqs: &Client, q: &QueueRef) -> Result<String, QueueError> {
    match q {
        QueueRef::Url(u) => Ok(u.clone()),
        QueueRef::Name(n) => {
            let out = sqs
                .get_queue_url()
                .queue_name(n)
                .send()
                .await
                .map_err(|e| qerr("GetQueueUrl", e))?;
            out.queue_url().map(str::to_owned).ok_or(QueueError {
                op: "GetQueueUrl",
                message: format!("no URL for queue {n}"),
            })
        }
    }
}

/// Creates (or updates) a queue and its dead-letter queue: the queue's redrive policy moves a
/// message to the DLQ after `max_receive_count` receives. Idempotent. Returns (queue URL,
/// DLQ URL).
///
/// # Errors
/// SQS failures.
pub async fn create_with_dlq(
    sqs: &Client,
    name: &str,
    dlq_name: &str,
    max_receive_count: u32,
    visibility_timeout: u32,
) -> Result<(String, String), QueueError> {
    let dlq_url = sqs
        .create_queue()
        .queue_name(dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| qerr("CreateQueue", e))?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let arn = queue_attribute(sqs, &dlq_url, QueueAttributeName::QueueArn)
        .await?
        .ok_or(QueueError {
            op: "GetQueueAttributes",
            message: format!("no QueueArn for {dlq_name}"),
        })?;
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| qerr("CreateQueue", e))?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": max_receive_count.to_string(),
    })
    .to_string();
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout.to_string(),
        )
        .send()
        .await
        .map_err(|e| qerr("SetQueueAttributes", e))?;
    Ok((url, dlq_url))
}

/// One attribute of a queue.
///
/// # Errors
/// SQS failures.
pub async fn queue_attribute(
    sqs: &Client,
    url: &str,
    name: QueueAttributeName,
) -> Result<Option<String>, QueueError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .map_err(|e| qerr("GetQueueAttributes", e))?;
    Ok(out.attributes().and_then(|a| a.get(&name)).cloned())
}

/// Sends bodies with `SendMessageBatch`, 10 per call, retrying entries that failed through
/// no fault of the sender. Returns how many were sent.
///
/// # Errors
/// SQS failures, or entries that keep failing.
pub async fn send_all(sqs: &Client, url: &str, bodies: &[String]) -> Result<usize, QueueError> {
    let mut sent = 0;
    for chunk in bodies.chunks(10) {
        let mut pending: HashMap<String, &String> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        for attempt in 0..4 {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            let entries: Vec<_> = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id.as_str())
                        .message_body(body.as_str())
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| qerr("SendMessageBatch", e))?;
            for ok in out.successful() {
                if pending.remove(ok.id()).is_some() {
                    sent += 1;
                }
            }
            if let Some(f) = out.failed().iter().find(|f| f.sender_fault()) {
                return Err(QueueError {
                    op: "SendMessageBatch",
                    message: format!("{}: {}", f.code(), f.message().unwrap_or("")),
                });
            }
        }
        if !pending.is_empty() {
            return Err(QueueError {
                op: "SendMessageBatch",
                message: format!("{} entries kept failing", pending.len()),
            });
        }
    }
    Ok(sent)
}

//! S3 input: resolving a job's keys, parallel ranged downloads to a temp dir, small objects.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use futures_util::{StreamExt, TryStreamExt, stream};
use tracing::debug;

use crate::aws::error_chain;
use crate::catalog::Dataset;
use crate::error::JobError;

/// Sorts an SDK error into not-found / transient / permanent.
pub fn classify<E>(
    bucket: &str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> JobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (status, code) = match &e {
        SdkError::ServiceError(se) => (
            Some(se.raw().status().as_u16()),
            se.err().code().map(str::to_owned),
        ),
        SdkError::ResponseError(r) => (Some(r.raw().status().as_u16()), None),
        _ => (None, None),
    };
    if status == Some(404) || matches!(code.as_deref(), Some("NoSuchKey" | "NotFound")) {
        return JobError::NotFound {
            bucket: bucket.into(),
            key: key.into(),
        };
    }
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            status.is_some_and(|s| s >= 500 || s == 429 || s == 408)
                || matches!(
                    code.as_deref(),
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                    )
                )
        }
        _ => false,
    };
    JobError::S3 {
        bucket: bucket.into(),
        key: key.into(),
        message: error_chain(&e),
        transient,
    }
}

/// The key of one variable's file for a job. For NEX-GDDP-CMIP6 the variable's directory is
/// listed and the newest version of the year's file is taken (`_v2.0` over `_v1.1` over none).
///
/// # Errors
/// `NotFound` when no file for the year exists; S3 errors.
pub async fn resolve_key(
    s3: &Client,
    bucket: &str,
    d: Dataset,
    scenario: &str,
    model: &str,
    year: i32,
    var: &str,
) -> Result<String, JobError> {
    let Some(dir) = d.key_dir(scenario, model, var) else {
        return Ok(d.key(scenario, model, year, var));
    };
    let mut best: Option<(u32, String)> = None;
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&dir)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify(bucket, &dir, e))?;
        for obj in page.contents() {
            let Some(k) = obj.key() else { continue };
            if let Some(rank) = d.key_matches(k, scenario, model, year, var)
                && best.as_ref().is_none_or(|(r, _)| rank > *r)
            {
                best = Some((rank, k.to_owned()));
            }
        }
    }
    best.map(|(_, k)| k).ok_or_else(|| JobError::NotFound {
        bucket: bucket.into(),
        key: d.key(scenario, model, year, var),
    })
}

/// Downloads an object to `dest` with parallel ranged GETs of `part` bytes, `concurrency` at
/// a time, and checks the size. Returns the byte count.
///
/// # Errors
/// S3 errors (classified), a size mismatch (transient: the object changed or a read was
/// cut), local I/O errors.
pub async fn download(
    s3: &Client,
    bucket: &str,
    key: &str,
    dest: &Path,
    part: u64,
    concurrency: usize,
) -> Result<u64, JobError> {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(bucket, key, e))?;
    let size = head
        .content_length()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let etag = head.e_tag().map(str::to_owned);
    if size == 0 {
        return Err(JobError::Decode {
            file: format!("s3://{bucket}/{key}"),
            message: "object is empty".into(),
        });
    }
    let file = File::create(dest)?;
    file.set_len(size)?;
    let file = Arc::new(file);
    let part = part.max(1);
    let ranges: Vec<(u64, u64)> = (0..size.div_ceil(part))
        .map(|i| (i * part, ((i + 1) * part).min(size) - 1))
        .collect();
    debug!(bucket, key, size, parts = ranges.len(), "download");
    let written: u64 = stream::iter(ranges)
        .map(|(start, end)| {
            let file = Arc::clone(&file);
            let etag = etag.clone();
            async move {
                let mut req = s3
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .range(format!("bytes={start}-{end}"));
                if let Some(t) = etag {
                    req = req.if_match(t);
                }
                let resp = req.send().await.map_err(|e| classify(bucket, key, e))?;
                let mut body = resp.body;
                let mut off = start;
                while let Some(chunk) = body.try_next().await.map_err(|e| JobError::S3 {
                    bucket: bucket.into(),
                    key: key.into(),
                    message: format!("reading body: {}", error_chain(&e)),
                    transient: true,
                })? {
                    if off + chunk.len() as u64 > end + 1 {
                        return Err(size_mismatch(bucket, key, "range returned too many bytes"));
                    }
                    file.write_all_at(&chunk, off)?;
                    off += chunk.len() as u64;
                }
                if off != end + 1 {
                    return Err(size_mismatch(bucket, key, "range returned too few bytes"));
                }
                Ok::<u64, JobError>(end + 1 - start)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    if written != size || file.metadata()?.len() != size {
        return Err(size_mismatch(bucket, key, "size differs from HEAD"));
    }
    Ok(size)
}

fn size_mismatch(bucket: &str, key: &str, what: &str) -> JobError {
    JobError::S3 {
        bucket: bucket.into(),
        key: key.into(),
        message: what.into(),
        transient: true,
    }
}

/// Reads a small object into memory (GeoJSON), refusing objects above `max` bytes.
///
/// # Errors
/// S3 errors; `Input` when the object is too large.
pub async fn get_small(
    s3: &Client,
    bucket: &str,
    key: &str,
    max: u64,
) -> Result<Vec<u8>, JobError> {
    let resp = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(bucket, key, e))?;
    if resp.content_length().is_some_and(|n| n as u64 > max) {
        return Err(JobError::Input(format!(
            "s3://{bucket}/{key} is larger than {max} bytes"
        )));
    }
    let bytes = resp.body.collect().await.map_err(|e| JobError::S3 {
        bucket: bucket.into(),
        key: key.into(),
        message: error_chain(&e),
        transient: true,
    })?;
    Ok(bytes.into_bytes().to_vec())
}

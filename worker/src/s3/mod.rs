//! S3 input: resolving a job's keys, parallel ranged downloads to a temp dir, objects read by
//! ranges while they decode ([`ranges`]), small objects.
//!
//! Every call is bounded by the client's timeouts ([`crate::aws::clients`]); a download body,
//! which the SDK's call timeouts do not cover, is bounded here too: each ranged GET (request
//! and body) by [`AwsTimeouts::transfer_deadline`] of its size, and each wait for the next
//! bytes by the read timeout. Timeouts are transient errors naming the timeout and its flag.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use tracing::debug;

use crate::aws::{TimeoutKind, error_chain, s3_timeouts, secs};
use crate::catalog::Dataset;
use crate::config::AwsTimeouts;
use crate::error::JobError;

pub mod ranges;
pub use ranges::ObjectRanges;

/// Sorts an SDK error into not-found / transient / permanent; an object replaced mid-read
/// (`If-Match` failed, 412) is transient: another attempt reads the new object.
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
    if code.as_deref() == Some("NoSuchBucket") {
        return JobError::NoSuchBucket {
            bucket: bucket.into(),
        };
    }
    if status == Some(404) || matches!(code.as_deref(), Some("NoSuchKey" | "NotFound")) {
        return JobError::NotFound {
            bucket: bucket.into(),
            key: key.into(),
        };
    }
    if status == Some(412) || code.as_deref() == Some("PreconditionFailed") {
        return JobError::S3 {
            bucket: bucket.into(),
            key: key.into(),
            message: "the object changed while it was being read (its ETag no longer matches \
                      the one first read); the next attempt reads the new object from the start"
                .into(),
            transient: true,
        };
    }
    let denied = match code.as_deref() {
        Some(c) => c == "AccessDenied",
        // A HEAD's 403 has no body, so the SDK has no code or message to show.
        None => status == Some(403),
    };
    if denied {
        return JobError::S3 {
            bucket: bucket.into(),
            key: key.into(),
            message: format!(
                "access denied (HTTP 403{}): with --s3-no-sign-request only public objects \
                 can be read; otherwise the credentials need s3:GetObject and s3:ListBucket",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ),
            transient: false,
        };
    }
    let chain = error_chain(&e);
    let timeout = match &e {
        SdkError::TimeoutError(_) => {
            Some(TimeoutKind::of_error_chain(&chain).unwrap_or(TimeoutKind::Operation))
        }
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            Some(TimeoutKind::of_error_chain(&chain).unwrap_or(TimeoutKind::Read))
        }
        SdkError::ServiceError(_) => None,
        _ => TimeoutKind::of_error_chain(&chain),
    };
    if let Some(kind) = timeout {
        return JobError::S3 {
            bucket: bucket.into(),
            key: key.into(),
            message: kind.message(&chain),
            transient: true,
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
        message: chain,
        transient,
    }
}

/// The next chunk of a body, waiting at most the read timeout for it.
async fn next_chunk(
    body: &mut ByteStream,
    t: &AwsTimeouts,
    bucket: &str,
    key: &str,
    what: &str,
) -> Result<Option<Bytes>, JobError> {
    match tokio::time::timeout(t.read, body.try_next()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(e)) => {
            let chain = error_chain(&e);
            Err(JobError::S3 {
                bucket: bucket.into(),
                key: key.into(),
                message: match TimeoutKind::of_error_chain(&chain) {
                    Some(kind) => kind.message(&format!("reading {what}: {chain}")),
                    None => format!("reading {what}: {chain}"),
                },
                transient: true,
            })
        }
        Err(_) => Err(JobError::S3 {
            bucket: bucket.into(),
            key: key.into(),
            message: TimeoutKind::Read
                .message(&format!("reading {what}: no data for {}", secs(t.read))),
            transient: true,
        }),
    }
}

/// Runs one body transfer of `bytes` bytes (request included) within
/// [`AwsTimeouts::transfer_deadline`].
async fn within_deadline<T>(
    t: &AwsTimeouts,
    bytes: u64,
    bucket: &str,
    key: &str,
    what: &str,
    f: impl Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    let deadline = t.transfer_deadline(bytes);
    tokio::time::timeout(deadline, f)
        .await
        .unwrap_or_else(|_| Err(deadline_passed(deadline, bucket, key, what)))
}

fn deadline_passed(deadline: std::time::Duration, bucket: &str, key: &str, what: &str) -> JobError {
    JobError::S3 {
        bucket: bucket.into(),
        key: key.into(),
        message: TimeoutKind::Operation.message(&format!(
            "{what} not downloaded within {} (the operation timeout + 1 s per {} KiB)",
            secs(deadline),
            AwsTimeouts::MIN_TRANSFER_RATE / 1024
        )),
        transient: true,
    }
}

/// The key of one variable's file for a job. NEX-GDDP and LOCA keys follow their template
/// and are not looked up; for NEX-GDDP-CMIP6 the variable's [`Dataset::list_prefix`] is
/// listed and [`pick_key`] takes the newest version of the year's file (`_v2.0` over `_v1.1`
/// over none, any grid label).
///
/// # Errors
/// `NotFound` when no file for the year exists; `NoSuchBucket`; S3 errors.
pub async fn resolve_key(
    s3: &Client,
    bucket: &str,
    d: Dataset,
    scenario: &str,
    model: &str,
    year: i32,
    var: &str,
) -> Result<String, JobError> {
    if d.key_dir(scenario, model, var).is_none() {
        return Ok(d.key(scenario, model, year, var));
    }
    let keys = list_keys(s3, bucket, &d.list_prefix(scenario, model, var)).await?;
    pick_key(
        d,
        scenario,
        model,
        year,
        var,
        keys.iter().map(String::as_str),
    )
    .map(str::to_owned)
    .ok_or_else(|| JobError::NotFound {
        bucket: bucket.into(),
        key: d.key(scenario, model, year, var),
    })
}

/// Among listed keys (of [`Dataset::list_prefix`], or any superset), the one a job of `year`
/// reads for `var`: the template's key, or for NEX-GDDP-CMIP6 the newest version of the year's
/// file on any grid label. `None` when the year has no file. The one rule behind both
/// [`resolve_key`] (the worker) and the producer's input check (`enqueue --check-inputs`).
pub fn pick_key<'a>(
    d: Dataset,
    scenario: &str,
    model: &str,
    year: i32,
    var: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(u32, &'a str)> = None;
    for k in keys {
        if let Some(rank) = d.key_matches(k, scenario, model, year, var)
            && best.is_none_or(|(r, _)| rank > r)
        {
            best = Some((rank, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Every key under `prefix` (all pages of `ListObjectsV2`).
///
/// # Errors
/// `NoSuchBucket` when the bucket does not exist; S3 errors (classified, keyed by the
/// prefix).
pub async fn list_keys(s3: &Client, bucket: &str, prefix: &str) -> Result<Vec<String>, JobError> {
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| match classify(bucket, prefix, e) {
            // A listing's only 404 is the bucket's (a prefix with no keys lists empty).
            JobError::NotFound { bucket, .. } => JobError::NoSuchBucket { bucket },
            other => other,
        })?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    Ok(keys)
}

/// The size and ETag of a non-empty object.
///
/// # Errors
/// S3 errors (classified); `Decode` for an empty object.
pub(crate) async fn head(
    s3: &Client,
    bucket: &str,
    key: &str,
) -> Result<(u64, Option<String>), JobError> {
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
    if size == 0 {
        return Err(JobError::Decode {
            file: format!("s3://{bucket}/{key}"),
            message: "object is empty".into(),
        });
    }
    Ok((size, head.e_tag().map(str::to_owned)))
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
    let (size, etag) = head(s3, bucket, key).await?;
    let file = File::create(dest)?;
    file.set_len(size)?;
    let file = Arc::new(file);
    let part = part.max(1);
    let ranges: Vec<(u64, u64)> = (0..size.div_ceil(part))
        .map(|i| (i * part, ((i + 1) * part).min(size) - 1))
        .collect();
    debug!(bucket, key, size, parts = ranges.len(), "download");
    let t = s3_timeouts(s3);
    let written: u64 = stream::iter(ranges)
        .map(|(start, end)| {
            let file = Arc::clone(&file);
            let etag = etag.as_deref();
            async move {
                let what = format!("bytes {start}-{end}");
                let mut sink = |off: u64, b: &[u8]| file.write_all_at(b, off);
                get_part(s3, bucket, key, etag, &mut sink, (start, end), &t, &what).await
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

/// How many times one part of a download asks again for the rest of its range after its
/// body failed or stalled mid-way.
pub const PART_RESUMES: u32 = 3;

/// Where [`get_part`] puts the bytes of its range: `(file offset, bytes)`, in order.
pub(crate) type PartSink<'a> = dyn FnMut(u64, &[u8]) -> std::io::Result<()> + Send + 'a;

/// One part of a download into `sink` (its place in a file, or memory): a ranged GET; when its body fails or
/// stalls mid-way (a read error or the read timeout, after some bytes arrived), a GET of the
/// part's remaining bytes only
/// (same ETag), up to [`PART_RESUMES`] times, so what has arrived is never fetched again. Each
/// GET has [`AwsTimeouts::transfer_deadline`] of the bytes it asks for; a GET that misses it
/// (a link too slow, not a broken one) ends the part. Returns the byte count.
#[allow(clippy::too_many_arguments)]
async fn get_part(
    s3: &Client,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
    sink: &mut PartSink<'_>,
    (start, end): (u64, u64),
    t: &AwsTimeouts,
    what: &str,
) -> Result<u64, JobError> {
    let mut off = start;
    let mut resumes = 0;
    loop {
        let from = off;
        let deadline = t.transfer_deadline(end + 1 - off);
        let get = get_range(s3, bucket, key, etag, &mut *sink, (&mut off, end), t, what);
        let Ok(r) = tokio::time::timeout(deadline, get).await else {
            return Err(deadline_passed(deadline, bucket, key, what));
        };
        match r {
            Ok(()) => return Ok(end + 1 - start),
            // Only a body that got somewhere before it broke is resumed: a request refused
            // outright (an object replaced: 412; errors the SDK has already retried) ends the
            // part.
            Err(e) if e.is_transient() && off > from && resumes < PART_RESUMES => {
                resumes += 1;
                let delay = std::time::Duration::from_millis(100 << resumes);
                debug!(bucket, key, part = what, from = off, error = %e, resume = resumes, "part cut; asking for the rest");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One ranged GET of `bytes=*off-end` into `sink`, advancing `off` past every byte written.
#[allow(clippy::too_many_arguments)]
async fn get_range(
    s3: &Client,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
    sink: &mut PartSink<'_>,
    (off, end): (&mut u64, u64),
    t: &AwsTimeouts,
    what: &str,
) -> Result<(), JobError> {
    let resp = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={}-{end}", *off))
        .set_if_match(etag.map(str::to_owned))
        .send()
        .await
        .map_err(|e| classify(bucket, key, e))?;
    let mut body = resp.body;
    while let Some(chunk) = next_chunk(&mut body, t, bucket, key, what).await? {
        if *off + chunk.len() as u64 > end + 1 {
            return Err(size_mismatch(bucket, key, "range returned too many bytes"));
        }
        sink(*off, &chunk)?;
        *off += chunk.len() as u64;
    }
    if *off != end + 1 {
        return Err(size_mismatch(bucket, key, "range returned too few bytes"));
    }
    Ok(())
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
    let t = s3_timeouts(s3);
    within_deadline(&t, max, bucket, key, "object", async {
        let resp = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(bucket, key, e))?;
        if resp.content_length().is_some_and(|n| n as u64 > max) {
            return Err(too_large(bucket, key, max));
        }
        let mut body = resp.body;
        let mut out = Vec::new();
        while let Some(chunk) = next_chunk(&mut body, &t, bucket, key, "body").await? {
            if (out.len() + chunk.len()) as u64 > max {
                return Err(too_large(bucket, key, max));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    })
    .await
}

fn too_large(bucket: &str, key: &str, max: u64) -> JobError {
    JobError::Input(format!("s3://{bucket}/{key} is larger than {max} bytes"))
}

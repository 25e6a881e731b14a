//! Stage 3: each variable's file, from S3 or a local path.
//!
//! From S3 a file is normally read by ranges while it decodes ([`ObjectRanges`]: no temp file,
//! only the chunks the job's cells need); files that cannot be read that way (NetCDF-3, other
//! filters, ...) and every file under `--download-to-disk` are downloaded whole (resolved key,
//! parallel ranged GETs, size checked) into a temp dir. A delivery keeps what it downloaded in
//! a [`FetchCache`], so an in-process retry after a transient failure (a database failover
//! mid-COPY, say) does not download a whole-grid job's ~600 MB again. The files go when the
//! delivery ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nexdecode::{DecodeError, GridFile, RemoteFile};
use tracing::{debug, info};

use super::{Inputs, Pipeline};
use crate::error::JobError;
use crate::message::JobSpec;
use crate::s3::{self, ObjectRanges, ranges::RangeOptions};

/// Where a fetched file's bytes are.
pub enum Input {
    /// On disk (local, or downloaded whole).
    File(PathBuf),
    /// In S3, opened (chunk index and metadata read), its chunks read by ranges as the decode
    /// needs them.
    Opened {
        /// The open file.
        file: Box<GridFile>,
        /// Its bytes.
        src: Arc<ObjectRanges>,
    },
}

/// Most bytes a file read by ranges fetches ahead of its decode (counted in the job's memory
/// grant, [`super::estimate_bytes`]).
pub const STREAM_WINDOW: u64 = 96 << 20;

/// Files up to this size are read whole (metadata and chunks at once): at 400 Mbps and 20 ms a
/// round trip, one more round trip costs about 1 MB of transfer.
pub const READ_WHOLE_BELOW: u64 = 4 << 20;

/// A fetched file.
pub struct Fetched {
    /// Where it is.
    pub input: Input,
    /// Bytes downloaded now (0 when local, reused, or read by ranges: those count as they
    /// arrive).
    pub bytes: u64,
    /// Its size in S3 (what downloading it whole fetches); 0 when local.
    pub size: u64,
    /// Its name for logs and `data_source_variable.source` (`s3://…` or the path).
    pub source: String,
}

/// Files a delivery has downloaded and checked, by variable, in a temporary directory that
/// is removed with the cache.
#[derive(Debug, Default)]
pub struct FetchCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    dir: Option<tempfile::TempDir>,
    files: HashMap<&'static str, (PathBuf, u64, String)>,
}

impl FetchCache {
    /// The cache's directory (created under `work_dir` on first use).
    fn dir(&self, work_dir: &Path) -> Result<PathBuf, JobError> {
        let mut g = self.inner.lock().expect("fetch cache");
        if g.dir.is_none() {
            let d = tempfile::Builder::new()
                .prefix("nexingest-")
                .tempdir_in(work_dir)
                .map_err(|e| {
                    JobError::Io(std::io::Error::new(
                        e.kind(),
                        format!(
                            "temp dir in {}: {e} (set --work-dir / NEXINGEST_WORK_DIR)",
                            work_dir.display()
                        ),
                    ))
                })?;
            g.dir = Some(d);
        }
        Ok(g.dir.as_ref().expect("set above").path().to_owned())
    }

    /// A complete earlier download of `var`, if its file is still there with its size.
    fn get(&self, var: &str) -> Option<(PathBuf, u64, String)> {
        let g = self.inner.lock().expect("fetch cache");
        let (p, size, src) = g.files.get(var)?;
        let ok = std::fs::metadata(p).is_ok_and(|m| m.len() == *size);
        ok.then(|| (p.clone(), *size, src.clone()))
    }

    fn put(&self, var: &'static str, path: PathBuf, size: u64, source: String) {
        let mut g = self.inner.lock().expect("fetch cache");
        g.files.insert(var, (path, size, source));
    }

    /// How many files are kept.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("fetch cache").files.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
/// The error of a file read by ranges: a fetch that failed under the decoder keeps its own
/// classification (transient, say); anything else is the file's.
pub(crate) fn ranges_err(src: &ObjectRanges, label: &str, e: DecodeError) -> JobError {
    if let DecodeError::Fetch { .. } = e
        && let Some(fetch) = src.take_error()
    {
        return fetch;
    }
    JobError::Decode {
        file: label.to_owned(),
        message: e.to_string(),
    }
}

impl Pipeline {
    /// Fetches one variable's file: the local path, a download kept from an earlier attempt
    /// of this delivery, or a new S3 download into the delivery's cache.
    pub(crate) async fn fetch(
        &self,
        spec: &JobSpec,
        inputs: &Inputs,
        var: &'static str,
        cache: &FetchCache,
    ) -> Result<Fetched, JobError> {
        match inputs {
            Inputs::Local(map) => {
                let p = map
                    .get(var)
                    .ok_or_else(|| JobError::Input(format!("no input file for variable {var}")))?;
                Ok(Fetched {
                    input: Input::File(p.clone()),
                    bytes: 0,
                    size: 0,
                    source: p.display().to_string(),
                })
            }
            Inputs::S3 { client, bucket } => {
                if let Some((path, size, source)) = cache.get(var) {
                    debug!(var, source = %source, "reusing the file of an earlier attempt");
                    return Ok(Fetched {
                        input: Input::File(path),
                        bytes: 0,
                        size,
                        source,
                    });
                }
                let key = match &spec.object {
                    // An S3 event names the exact object.
                    Some(o) if o.variable == var => o.key.clone(),
                    _ => {
                        s3::resolve_key(
                            client,
                            bucket,
                            spec.dataset,
                            spec.scenario,
                            spec.model,
                            spec.year,
                            var,
                        )
                        .await?
                    }
                };
                if self.cfg.stream {
                    let opts = RangeOptions {
                        concurrency: self.cfg.download_concurrency,
                        gap: self.cfg.range_gap,
                        max_request: self.cfg.download_part,
                        window: STREAM_WINDOW,
                        whole_below: READ_WHOLE_BELOW,
                    };
                    let src = Arc::new(ObjectRanges::open(client, bucket, &key, opts).await?);
                    let url = src.url();
                    let remote: Arc<dyn RemoteFile> = src.clone();
                    let span = tracing::Span::current();
                    let name = url.clone();
                    let opened = tokio::task::spawn_blocking(move || {
                        span.in_scope(|| GridFile::open_remote(remote, &name, var))
                    })
                    .await
                    .map_err(|e| JobError::Data(format!("opening {url} failed: {e}")))?;
                    return match opened {
                        Ok(file) => Ok(Fetched {
                            size: src.size(),
                            source: url,
                            input: Input::Opened {
                                file: Box::new(file),
                                src,
                            },
                            bytes: 0,
                        }),
                        Err(DecodeError::UnsupportedStorage { detail, .. }) => {
                            info!(var, file = %url, reason = %detail, "reading the whole file");
                            let mut whole = self.download(client, bucket, &key, var, cache).await?;
                            whole.bytes += src.fetched();
                            Ok(whole)
                        }
                        Err(e) => Err(ranges_err(&src, &url, e)),
                    };
                }
                self.download(client, bucket, &key, var, cache).await
            }
        }
    }

    /// Downloads `key` whole into the delivery's cache (for variable `var`).
    pub(crate) async fn download(
        &self,
        client: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        var: &'static str,
        cache: &FetchCache,
    ) -> Result<Fetched, JobError> {
        let name = key.rsplit('/').next().unwrap_or(var);
        let path = cache.dir(&self.cfg.work_dir)?.join(name);
        let t = Instant::now();
        let bytes = s3::download(
            client,
            bucket,
            key,
            &path,
            self.cfg.download_part,
            self.cfg.download_concurrency,
        )
        .await?;
        debug!(var, key = %key, bytes, ms = t.elapsed().as_millis() as u64, "downloaded");
        let source = format!("s3://{bucket}/{key}");
        cache.put(var, path.clone(), bytes, source.clone());
        Ok(Fetched {
            input: Input::File(path),
            bytes,
            size: bytes,
            source,
        })
    }
}

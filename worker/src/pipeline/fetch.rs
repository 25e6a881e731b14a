//! Stage 3: each variable's file, from S3 (resolved key, parallel ranged GETs, size checked)
//! or a local path. A delivery keeps what it downloaded in a [`FetchCache`], so an in-process
//! retry after a transient failure (a database failover mid-COPY, say) does not download a
//! whole-grid job's ~600 MB again. The files go when the delivery ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use tracing::debug;

use super::{Inputs, Pipeline};
use crate::error::JobError;
use crate::message::JobSpec;
use crate::s3;

/// A fetched file.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// Bytes downloaded now (0 when local or reused).
    pub bytes: u64,
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
    fn get(&self, var: &str) -> Option<(PathBuf, String)> {
        let g = self.inner.lock().expect("fetch cache");
        let (p, size, src) = g.files.get(var)?;
        let ok = std::fs::metadata(p).is_ok_and(|m| m.len() == *size);
        ok.then(|| (p.clone(), src.clone()))
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
                    path: p.clone(),
                    bytes: 0,
                    source: p.display().to_string(),
                })
            }
            Inputs::S3 { client, bucket } => {
                if let Some((path, source)) = cache.get(var) {
                    debug!(var, source = %source, "reusing the file of an earlier attempt");
                    return Ok(Fetched {
                        path,
                        bytes: 0,
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
                let name = key.rsplit('/').next().unwrap_or(var);
                let path = cache.dir(&self.cfg.work_dir)?.join(name);
                let t = Instant::now();
                let bytes = s3::download(
                    client,
                    bucket,
                    &key,
                    &path,
                    self.cfg.download_part,
                    self.cfg.download_concurrency,
                )
                .await?;
                debug!(var, key = %key, bytes, ms = t.elapsed().as_millis() as u64, "downloaded");
                let source = format!("s3://{bucket}/{key}");
                cache.put(var, path.clone(), bytes, source.clone());
                Ok(Fetched {
                    path,
                    bytes,
                    source,
                })
            }
        }
    }
}

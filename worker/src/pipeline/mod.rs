//! The job pipeline, one module per stage of a job, in the order a job runs them:
//!
//! 1. [`state`]: find or create the job's `data_source` (race-free), the state machine, the
//!    ledger (one entry per attempt), the identity check that drops a job that is done;
//! 2. [`plan`]: the message's location source resolved into what to load (all data cells,
//!    points, polygons) and the job's identity key;
//! 3. [`fetch`]: each variable's file, from S3 or a local path, kept for in-process retries;
//! 4. [`decode`]: nexdecode on blocking threads (rayon inside), variable *i + 1* downloading
//!    while variable *i* decodes; the union of the variables' cells;
//! 5. [`cells`]: `map_cell` ids (cached per process);
//! 6. [`load`]: one transaction, under one of the fleet's load slots ([`throttle`], with
//!    `--max-db-loads`): which of the job's cells are new, lack a variable or are complete;
//!    COPY (append, fill or replace only the job's cells and variables), the locations, the
//!    `data_source` state and the ledger entry; commit only while the message is still ours.
//!
//! [`Pipeline::execute`] runs stages 3–6 for a planned job; a failed attempt leaves the
//! database as it was (apart from its own ledger entry). [`attempt`] holds one delivery's
//! context and [`Pipeline::run_attempt`], which `run` (with retries) and `ingest` share: start
//! the attempt on the ledger, execute it within the job timeout, record its failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deadpool_postgres::Pool;

use crate::catalog::Dataset;
use crate::config::{PipelineConfig, Schema};
use crate::error::JobError;
use crate::message::{JobSpec, LocationSource};

pub mod attempt;
pub mod cells;
pub mod decode;
pub mod fetch;
pub mod load;
pub mod plan;
pub mod state;
pub mod throttle;

pub use attempt::{Attempt, CommitGate, MemoryGrant};
pub use decode::KeptDecode;
pub use fetch::FetchCache;
pub use plan::{CellPlan, JobPlan};
pub use state::{JobState, Prepared};

/// Where a job's files come from.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// S3: the dataset's key templates in `bucket`.
    S3 {
        /// Client.
        client: aws_sdk_s3::Client,
        /// Bucket.
        bucket: String,
    },
    /// Local files, one per variable.
    Local(BTreeMap<String, PathBuf>),
}

/// Progress events (for `ingest`'s bars; the consumer logs instead).
#[derive(Debug, Clone)]
pub enum Event {
    /// A variable's file is being fetched.
    Fetching(&'static str),
    /// A variable's file is local now.
    Fetched(&'static str, u64),
    /// A variable is being decoded.
    Decoding(&'static str),
    /// A variable was decoded into this many cells.
    Decoded(&'static str, usize),
    /// COPY starts for this many rows.
    Loading(u64),
    /// Rows encoded so far.
    Rows(u64),
    /// Committed.
    Committed(u64),
    /// Every database load slot is taken (`--max-db-loads`): waiting for one.
    WaitingForSlot,
}

/// Receives [`Event`]s.
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, e: Event);
}

/// What a successful attempt did.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// `data_source.id`.
    pub data_source_id: i64,
    /// Rows written (new cells appended, plus existing rows filled or replaced).
    pub rows: u64,
    /// New rows appended.
    pub rows_new: u64,
    /// Existing rows of the job's cells whose columns were filled in or replaced.
    pub rows_updated: u64,
    /// Cells of the job that already held all its variables (left untouched).
    pub cells_skipped: u64,
    /// Bytes fetched from S3 (0 for local files and files reused from an earlier attempt).
    pub bytes: u64,
    /// Sizes of the job's files in S3: what downloading them whole fetches (`bytes` is less when
    /// reading by ranges left chunks out).
    pub file_bytes: u64,
    /// Bytes of the binary COPY stream sent to the server.
    pub copy_bytes: u64,
    /// Wall time in downloads (overlapping decode).
    pub download_ms: u64,
    /// Wall time in decode.
    pub decode_ms: u64,
    /// Wall time of the load transaction.
    pub load_ms: u64,
    /// Wall time waiting for a database load slot before the load transaction.
    pub slot_wait_ms: u64,
    /// Locations without a data cell (recorded with a NULL cell, never dropped).
    pub unmatched: usize,
    /// True when another delivery finished the same job while this one worked (nothing
    /// written).
    pub superseded: bool,
}

/// The pipeline: pool, schema, settings, optional S3, and a `map_cell` id cache.
pub struct Pipeline {
    pool: Pool,
    schema: Schema,
    cfg: PipelineConfig,
    s3: Option<aws_sdk_s3::Client>,
    worker_id: String,
    cells: cells::CellCache,
    slots: Option<throttle::LoadSlots>,
}

/// MiB a job keeps of its memory share beyond its decoded blocks (row index, COPY buffers).
const DECODED_SLACK_MB: u32 = 128;

/// Bytes a job needs at most: its decoded grids (all variables held at once) and the bytes of
/// one file read by ranges ahead of its decode ([`fetch::STREAM_WINDOW`]).
pub fn estimate_bytes(spec: &JobSpec) -> u64 {
    let per_var = match spec.locations {
        LocationSource::All | LocationSource::Boundary(_) => spec.dataset.grid_cells() * 366 * 4,
        _ => 64 << 20,
    };
    per_var * spec.variables.len() as u64 + fetch::STREAM_WINDOW
}

impl Pipeline {
    /// A pipeline over a pool whose sessions use `schema`.
    pub fn new(
        pool: Pool,
        schema: Schema,
        cfg: PipelineConfig,
        s3: Option<aws_sdk_s3::Client>,
        worker_id: String,
    ) -> Self {
        Pipeline {
            pool,
            schema,
            s3,
            slots: cfg.max_db_loads.map(throttle::LoadSlots::new),
            cfg,
            worker_id,
            cells: cells::CellCache::default(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Runs one attempt of a planned job: fetch, decode, cells, load and commit.
    ///
    /// # Errors
    /// Any [`JobError`]; nothing of the attempt is committed then.
    pub async fn execute(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: &JobPlan,
        inputs: &Inputs,
        attempt: &Attempt,
    ) -> Result<Loaded, JobError> {
        let started = state::Started::now();
        let decoded = match &plan.cells {
            // Every location of a `cities` job already has its rows: nothing to read.
            CellPlan::Points(pts) if pts.coords.is_empty() => decode::Decoded::empty(),
            _ => {
                self.fetch_and_decode(spec, plan, inputs, attempt, p.ids.dataset)
                    .await?
            }
        };
        attempt.decoded.keep(&plan.cells, &decoded);
        // From here on the job holds its decoded blocks (and the rows' index), no more.
        let held_mb = (decoded.bytes_held() >> 20) as u32 + DECODED_SLACK_MB;
        let mb = attempt.memory.shrink_to(held_mb);
        tracing::debug!(memory_mb = mb, "memory share cut to the decoded blocks");
        if attempt.gate.is_lost() {
            return Err(JobError::VisibilityLost(
                "visibility could not be extended; stopped before loading".into(),
            ));
        }
        let r = self.load(spec, p, plan, decoded, attempt, started).await;
        if r.is_err() {
            attempt.gate.reopen();
        }
        r
    }
}

/// The bucket of a job: its allowed override, else the dataset's configured bucket.
pub fn bucket_for(spec: &JobSpec, aws: &crate::config::AwsConfig) -> String {
    spec.bucket
        .clone()
        .unwrap_or_else(|| aws.bucket(spec.dataset).to_owned())
}

/// Finds a job's local files among paths (files or directories): by the dataset's file name
/// for the job, or a file named `{var}.nc`.
///
/// # Errors
/// `Input` when a variable has no file.
pub fn local_inputs(
    spec: &JobSpec,
    paths: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, JobError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                let rd = std::fs::read_dir(&d)
                    .map_err(|e| JobError::Input(format!("{}: {e}", d.display())))?;
                for entry in rd.flatten() {
                    let ep = entry.path();
                    if ep.is_dir() {
                        stack.push(ep);
                    } else {
                        files.push(ep);
                    }
                }
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(JobError::Input(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
    }
    let mut out = BTreeMap::new();
    for &var in &spec.variables {
        let want = spec.dataset.key(spec.scenario, spec.model, spec.year, var);
        let want_name = want.rsplit('/').next().unwrap_or(&want).to_owned();
        let dir_key = |f: &PathBuf| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let key = format!(
                "{}{name}",
                spec.dataset
                    .key_dir(spec.scenario, spec.model, var)
                    .unwrap_or_default()
            );
            spec.dataset
                .key_matches(&key, spec.scenario, spec.model, spec.year, var)
        };
        let found =
            files
                .iter()
                .filter(|f| f.file_name().and_then(|n| n.to_str()) == Some(want_name.as_str()))
                .chain(
                    files
                        .iter()
                        .filter(|f| spec.dataset == Dataset::NexGddpCmip6 && dir_key(f).is_some()),
                )
                .chain(files.iter().filter(|f| {
                    f.file_name().and_then(|n| n.to_str()) == Some(&format!("{var}.nc"))
                }))
                .next()
                .ok_or_else(|| {
                    JobError::Input(format!("no input file for {var} (expected {want_name})"))
                })?;
        out.insert(var.to_owned(), found.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::MemoryGrant;

    #[tokio::test]
    async fn a_memory_share_cut_to_the_decoded_blocks_gives_the_rest_back() {
        let budget = Arc::new(Semaphore::new(6144));
        let grant = MemoryGrant::default();
        grant.hold(Arc::clone(&budget).acquire_many_owned(3618).await.unwrap());
        assert_eq!(budget.available_permits(), 6144 - 3618);
        // A second whole-grid job does not fit until the first is decoded ...
        assert!(Arc::clone(&budget).try_acquire_many_owned(3618).is_err());
        assert_eq!(grant.shrink_to(1800), 1800);
        assert_eq!(budget.available_permits(), 6144 - 1800);
        // ... then it does; a larger "cut" holds on to what it has.
        let second = Arc::clone(&budget).try_acquire_many_owned(3618).unwrap();
        assert_eq!(grant.shrink_to(4000), 1800);
        drop(second);
        grant.release();
        assert_eq!(budget.available_permits(), 6144);
        assert_eq!(grant.shrink_to(10), 0, "nothing held after release");
    }
}

//! The job pipeline: inputs (S3 or local) → decode (nexdecode, blocking threads, rayon) →
//! one transaction holding the COPY of the job's rows (pgcopy, replace by `data_source_id`),
//! the `data_source` state and the ledger entry.
//!
//! Overlap: while variable *i* decodes, variable *i + 1* downloads; rows are encoded on a
//! blocking thread and streamed into COPY buffer by buffer while later rows are still being
//! encoded (pgcopy). A failed attempt leaves the database as it was, apart from the recorded
//! job state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deadpool_postgres::Pool;
use nexdecode::{
    CellIndex, CellSelection, DecodeOptions, Grid, GridFile, LocationMatch, YearBlock,
};
use pgcopy::{
    ColumnType, Columns, CopyBuffer, EncodeError, LoaderConfig, Strategy, Table, Validity,
};
use tracing::{debug, info, warn};

use crate::catalog::{self, Dataset};
use crate::cmd::import_locations;
use crate::config::{PipelineConfig, Schema};
use crate::db::{self, CatalogIds};
use crate::error::JobError;
use crate::locations::{self, PointOptions, Polygon};
use crate::message::{JobSpec, LocationSource};
use crate::s3;

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
}

/// Receives [`Event`]s.
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, e: Event);
}

/// One attempt's context.
#[derive(Clone, Default)]
pub struct Attempt {
    /// SQS message id (ledger).
    pub message_id: Option<String>,
    /// SQS receive count (ledger).
    pub receive_count: Option<i32>,
    /// Set when the attempt must not commit (visibility lost, shutdown).
    pub abort: Arc<AtomicBool>,
    /// Progress receiver.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Attempt {
    fn emit(&self, e: Event) {
        if let Some(o) = &self.observer {
            o.event(e);
        }
    }
}

/// A job's `data_source` row and whether it is already done.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    /// Catalog ids.
    pub ids: CatalogIds,
    /// `data_source.id`.
    pub data_source_id: i64,
    /// Whether the job is already done and the spec does not ask to update.
    pub already_done: bool,
    /// Successful loads recorded in the ledger when prepared: a larger count at load time
    /// means another delivery finished the job meanwhile.
    pub done_before: i64,
}

/// What a successful attempt did.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// `data_source.id`.
    pub data_source_id: i64,
    /// Rows written.
    pub rows: u64,
    /// Rows replaced (deleted first).
    pub rows_replaced: u64,
    /// Bytes fetched from S3 (0 for local files).
    pub bytes: u64,
    /// Wall time in downloads (overlapping decode).
    pub download_ms: u64,
    /// Wall time in decode.
    pub decode_ms: u64,
    /// Wall time of the load transaction.
    pub load_ms: u64,
    /// Locations without a data cell (recorded with a NULL cell, never dropped).
    pub unmatched: usize,
    /// True when another delivery finished the job while this one worked (nothing written).
    pub superseded: bool,
}

/// Cache of `map_cell` ids per (dataset, lat, lon).
#[derive(Debug, Default)]
struct CellCache {
    ids: HashMap<(i32, u64, u64), i64>,
}

/// The pipeline: pool, schema, settings, optional S3, and a `map_cell` id cache.
pub struct Pipeline {
    pool: Pool,
    schema: Schema,
    cfg: PipelineConfig,
    s3: Option<aws_sdk_s3::Client>,
    worker_id: String,
    cells: Mutex<CellCache>,
}

/// Decoded inputs of one job.
struct Decoded {
    grid: Grid,
    blocks: Vec<YearBlock>,
    /// Locations (`location.id`) and where they landed, for point sources.
    matches: Vec<(i64, LocationMatch)>,
    sources: Vec<String>,
    bytes: u64,
    download_ms: u64,
    decode_ms: u64,
}

/// Which cells to decode, before the grid is known.
#[derive(Debug, Clone)]
enum Plan {
    All,
    Points(Vec<(f64, f64)>),
    Polygons(Vec<Polygon>),
}

fn decode_err(file: &str, e: impl std::fmt::Display) -> JobError {
    JobError::Decode {
        file: file.to_owned(),
        message: e.to_string(),
    }
}

fn join_err(e: tokio::task::JoinError) -> JobError {
    JobError::Data(format!("decode task failed: {e}"))
}

/// Bytes of decoded grid a job needs at most (all variables held at once).
pub fn estimate_bytes(spec: &JobSpec) -> u64 {
    let per_var = match spec.locations {
        LocationSource::All | LocationSource::Boundary(_) => spec.dataset.grid_cells() * 366 * 4,
        _ => 64 << 20,
    };
    per_var * spec.variables.len() as u64
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
            cfg,
            s3,
            worker_id,
            cells: Mutex::new(CellCache::default()),
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

    /// Finds or creates the job's `data_source` row and tells whether it is already done.
    ///
    /// # Errors
    /// `InvalidMessage` when the catalog lacks the names; database errors.
    pub async fn prepare(&self, spec: &JobSpec) -> Result<Prepared, JobError> {
        let client = self.pool.get().await?;
        let ids =
            db::catalog_ids(&**client, spec.dataset.name(), spec.model, spec.scenario).await?;
        let row = client
            .query_one(
                "WITH ins AS (
                     INSERT INTO data_source (dataset_id, model_id, scenario_id, year)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (dataset_id, model_id, scenario_id, year) DO NOTHING
                     RETURNING id, state)
                 SELECT id, state FROM ins
                 UNION ALL
                 SELECT id, state FROM data_source
                 WHERE dataset_id = $1 AND model_id = $2 AND scenario_id = $3 AND year = $4
                 LIMIT 1",
                &[&ids.dataset, &ids.model, &ids.scenario, &spec.year],
            )
            .await?;
        let state: String = row.get(1);
        let data_source_id: i64 = row.get(0);
        let done_before: i64 = client
            .query_one(
                "SELECT count(*) FROM job_ledger WHERE data_source_id = $1 AND outcome = 'done'",
                &[&data_source_id],
            )
            .await?
            .get(0);
        Ok(Prepared {
            ids,
            data_source_id,
            already_done: state == "done" && !spec.update_existing,
            done_before,
        })
    }

    /// Marks an attempt as started (`running`, attempts + 1). Returns false, changing
    /// nothing, when another delivery finished the job since [`Pipeline::prepare`] (and the
    /// spec does not ask to update).
    ///
    /// # Errors
    /// Database errors.
    pub async fn mark_running(&self, spec: &JobSpec, p: &Prepared) -> Result<bool, JobError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE data_source SET state = 'running', attempts = attempts + 1,
                        started_at = now(), finished_at = NULL
                 WHERE id = $1 AND (state <> 'done' OR $2)",
                &[&p.data_source_id, &spec.update_existing],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records the end of an attempt that did not load: `failed` (permanent, with a ledger
    /// entry) or back to `pending` (transient or released), keeping the error for `status`.
    /// Rows of an earlier successful load are untouched.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_failure(
        &self,
        p: &Prepared,
        err: &JobError,
        permanent: bool,
        attempt: &Attempt,
        started: chrono_like::Started,
    ) -> Result<(), JobError> {
        let client = self.pool.get().await?;
        let state = if permanent { "failed" } else { "pending" };
        let msg = err.to_string();
        client
            .execute(
                "UPDATE data_source SET state = $2, last_error = $3, finished_at = now()
                 WHERE id = $1",
                &[&p.data_source_id, &state, &msg],
            )
            .await?;
        if permanent {
            client
                .execute(
                    "INSERT INTO job_ledger (data_source_id, message_id, receive_count, worker,
                                             outcome, started_at, error)
                     VALUES ($1, $2, $3, $4, 'failed', to_timestamp($5), $6)",
                    &[
                        &p.data_source_id,
                        &attempt.message_id,
                        &attempt.receive_count,
                        &self.worker_id,
                        &started.0,
                        &msg,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// Records a duplicate delivery of a finished job (ledger `skipped`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_skip(&self, p: &Prepared, attempt: &Attempt) -> Result<(), JobError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO job_ledger (data_source_id, message_id, receive_count, worker,
                                         outcome, started_at)
                 VALUES ($1, $2, $3, $4, 'skipped', now())",
                &[
                    &p.data_source_id,
                    &attempt.message_id,
                    &attempt.receive_count,
                    &self.worker_id,
                ],
            )
            .await?;
        Ok(())
    }

    /// Runs one attempt: fetch, decode, load and commit.
    ///
    /// # Errors
    /// Any [`JobError`]; nothing of the attempt is committed then.
    pub async fn execute(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        inputs: &Inputs,
        attempt: &Attempt,
    ) -> Result<Loaded, JobError> {
        let started = chrono_like::Started::now();
        let plan = self.plan(spec).await?;
        let decoded = self
            .fetch_and_decode(spec, inputs, plan, attempt, p.ids.dataset)
            .await?;
        if attempt.abort.load(Ordering::SeqCst) {
            return Err(JobError::Cancelled);
        }
        self.load(spec, p, decoded, attempt, started).await
    }

    /// Resolves the location source into a plan (points from the `location` table or a
    /// GeoJSON document, polygons for a boundary).
    async fn plan(&self, spec: &JobSpec) -> Result<Plan, JobError> {
        match &spec.locations {
            LocationSource::All => Ok(Plan::All),
            LocationSource::Cities(source) => {
                let pts = self.location_points(source.as_deref()).await?;
                if pts.is_empty() {
                    return Err(JobError::Data(format!(
                        "location source {} holds no locations (run import-locations)",
                        spec.locations
                    )));
                }
                Ok(Plan::Points(
                    pts.into_iter().map(|(_, la, lo)| (la, lo)).collect(),
                ))
            }
            LocationSource::GeoJson(res) => {
                let doc = import_locations::fetch(res, self.s3.as_ref()).await?;
                let pts = locations::read_points(&doc, &PointOptions::default())
                    .map_err(|e| JobError::Data(format!("{res}: {e}")))?;
                for b in &pts.bad {
                    warn!(source = %res, index = b.index, reason = %b.reason, "bad GeoJSON feature skipped");
                }
                if pts.locations.is_empty() {
                    return Err(JobError::Data(format!("{res}: no valid point features")));
                }
                let source = res.to_string();
                {
                    let mut client = self.pool.get().await?;
                    let tx = client.transaction().await?;
                    import_locations::upsert(&*tx, &source, &pts.locations).await?;
                    tx.commit().await?;
                }
                let pts = self.location_points(Some(&source)).await?;
                Ok(Plan::Points(
                    pts.into_iter().map(|(_, la, lo)| (la, lo)).collect(),
                ))
            }
            LocationSource::Boundary(res) => {
                let doc = import_locations::fetch(res, self.s3.as_ref()).await?;
                let polys = locations::read_polygons(&doc)
                    .map_err(|e| JobError::Data(format!("{res}: {e}")))?;
                Ok(Plan::Polygons(polys))
            }
        }
    }

    /// `(id, lat, lon)` of the locations of one source (or all), ordered by id.
    async fn location_points(
        &self,
        source: Option<&str>,
    ) -> Result<Vec<(i64, f64, f64)>, JobError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, lat, lon FROM location WHERE $1::text IS NULL OR source = $1 ORDER BY id",
                &[&source],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Fetches one variable's file: S3 download into `dir`, or the local path.
    async fn fetch(
        &self,
        spec: &JobSpec,
        inputs: &Inputs,
        var: &'static str,
        dir: &std::path::Path,
    ) -> Result<(PathBuf, u64, String, bool), JobError> {
        match inputs {
            Inputs::Local(map) => {
                let p = map
                    .get(var)
                    .ok_or_else(|| JobError::Input(format!("no input file for variable {var}")))?;
                Ok((p.clone(), 0, p.display().to_string(), false))
            }
            Inputs::S3 { client, bucket } => {
                let key = s3::resolve_key(
                    client,
                    bucket,
                    spec.dataset,
                    spec.scenario,
                    spec.model,
                    spec.year,
                    var,
                )
                .await?;
                let name = key.rsplit('/').next().unwrap_or(var);
                let path = dir.join(name);
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
                Ok((path, bytes, format!("s3://{bucket}/{key}"), true))
            }
        }
    }

    async fn fetch_and_decode(
        &self,
        spec: &JobSpec,
        inputs: &Inputs,
        plan: Plan,
        attempt: &Attempt,
        dataset_id: i32,
    ) -> Result<Decoded, JobError> {
        let tmp = tempfile::Builder::new()
            .prefix("nexingest-")
            .tempdir_in(&self.cfg.work_dir)
            .map_err(|e| {
                JobError::Io(std::io::Error::new(
                    e.kind(),
                    format!("temp dir in {}: {e}", self.cfg.work_dir.display()),
                ))
            })?;
        let opts = DecodeOptions {
            data_radius_km: self.cfg.search_radius_km,
            single_year_file: true,
            ..DecodeOptions::default()
        };
        let vars = &spec.variables;
        let mut out = Decoded {
            grid: Grid::new(vec![0.0], vec![0.0]).map_err(JobError::Data)?,
            blocks: Vec::with_capacity(vars.len()),
            matches: Vec::new(),
            sources: Vec::with_capacity(vars.len()),
            bytes: 0,
            download_ms: 0,
            decode_ms: 0,
        };
        let mut selection: Option<CellSelection> = None;
        let location_ids: Vec<i64> = match (&plan, &spec.locations) {
            (Plan::Points(_), LocationSource::Cities(src)) => self
                .location_points(src.as_deref())
                .await?
                .into_iter()
                .map(|(id, _, _)| id)
                .collect(),
            (Plan::Points(_), LocationSource::GeoJson(res)) => self
                .location_points(Some(&res.to_string()))
                .await?
                .into_iter()
                .map(|(id, _, _)| id)
                .collect(),
            _ => Vec::new(),
        };

        attempt.emit(Event::Fetching(vars[0]));
        let t = Instant::now();
        let mut fetched = Some(self.fetch(spec, inputs, vars[0], tmp.path()).await?);
        out.download_ms += t.elapsed().as_millis() as u64;
        for (i, &var) in vars.iter().enumerate() {
            let (path, bytes, source, remove) = fetched.take().expect("fetched ahead");
            attempt.emit(Event::Fetched(var, bytes));
            attempt.emit(Event::Decoding(var));
            out.bytes += bytes;
            out.sources.push(source.clone());
            let year = spec.year;
            let opts = opts.clone();
            let sel = selection.clone();
            let plan_i = if i == 0 { Some(plan.clone()) } else { None };
            let dpath = path.clone();
            let decode = async move {
                let t = Instant::now();
                let r = tokio::task::spawn_blocking(move || {
                    decode_one(&dpath, &source, var, year, &opts, sel, plan_i)
                })
                .await
                .map_err(join_err)?;
                Ok::<_, JobError>((r?, t.elapsed().as_millis() as u64))
            };
            // While the second variable decodes, read the first one's cells' `map_cell` ids into
            // the cache (read only: nothing is written before every file has decoded); the load
            // finds them there and inserts only cells the table does not have yet.
            let warm_coords: Option<Vec<(f64, f64)>> = (i == 1).then(|| {
                out.blocks[0]
                    .cells
                    .iter()
                    .map(|&c| out.grid.coords(c))
                    .collect()
            });
            let warm = async {
                if let Some(coords) = warm_coords {
                    let t = Instant::now();
                    self.map_cell_ids(dataset_id, &coords, true).await?;
                    info!(job = %spec.id(), phase = "map_cell_prefetch", cells = coords.len(), ms = t.elapsed().as_millis() as u64, "phase");
                }
                Ok::<_, JobError>(())
            };
            let (decoded, next) = if i + 1 < vars.len() {
                attempt.emit(Event::Fetching(vars[i + 1]));
                let next = async {
                    let t = Instant::now();
                    let r = self.fetch(spec, inputs, vars[i + 1], tmp.path()).await?;
                    Ok::<_, JobError>((r, t.elapsed().as_millis() as u64))
                };
                let (d, (n, ms), ()) = tokio::try_join!(decode, next, warm)?;
                out.download_ms += ms;
                (d, Some(n))
            } else {
                let (d, ()) = tokio::try_join!(decode, warm)?;
                (d, None)
            };
            fetched = next;
            if remove {
                let _ = std::fs::remove_file(&path);
            }
            let ((grid, block, sel_out, matches), ms) = decoded;
            out.decode_ms += ms;
            info!(job = %spec.id(), phase = "decode", var, cells = block.len(), ms, "phase");
            attempt.emit(Event::Decoded(var, block.len()));
            if i == 0 {
                out.grid = grid;
                selection = Some(sel_out);
                if let Some(m) = matches {
                    out.matches = location_ids.iter().copied().zip(m).collect();
                }
            } else if grid != out.grid {
                return Err(JobError::Data(format!(
                    "{var} is on a different grid than {}",
                    vars[0]
                )));
            }
            if let Some(first) = out.blocks.first()
                && first.days() != block.days()
            {
                return Err(JobError::Data(format!(
                    "{var}: day count differs between variables"
                )));
            }
            debug!(job = %spec.id(), var, cells = block.len(), "decoded");
            out.blocks.push(block);
        }
        Ok(out)
    }

    /// `map_cell` ids for cells (in order), inserting missing ones (own short transaction;
    /// cells are shared reference data). Ids are cached per process: for many cells (a
    /// whole-grid job) the dataset's whole `map_cell` is read into the cache in one round trip
    /// (three arrays), since every job of the dataset shares that grid.
    ///
    /// With `read_only`, nothing is inserted and the returned ids of cells not yet in the
    /// table are 0: this is the prefetch that overlaps a decode, and a job whose later file
    /// turns out corrupt must not have written anything.
    async fn map_cell_ids(
        &self,
        dataset_id: i32,
        coords: &[(f64, f64)],
        read_only: bool,
    ) -> Result<Vec<i64>, JobError> {
        let key = |&(la, lo): &(f64, f64)| (dataset_id, la.to_bits(), lo.to_bits());
        // Caches the (ids, lats, lons) arrays of a `map_cell` query row.
        let remember = |row: &tokio_postgres::Row| {
            let (ids, lats, lons): (Vec<i64>, Vec<f64>, Vec<f64>) =
                (row.get(0), row.get(1), row.get(2));
            let mut cache = self.cells.lock().expect("cell cache");
            cache.ids.reserve(ids.len());
            for ((id, la), lo) in ids.into_iter().zip(lats).zip(lons) {
                cache.ids.insert(key(&(la, lo)), id);
            }
        };
        let mut ids = vec![0i64; coords.len()];
        let lookup = |ids: &mut [i64], todo: &[usize]| -> Vec<usize> {
            let cache = self.cells.lock().expect("cell cache");
            let mut missing = Vec::new();
            for &i in todo {
                match cache.ids.get(&key(&coords[i])) {
                    Some(&id) => ids[i] = id,
                    None => missing.push(i),
                }
            }
            missing
        };
        let all: Vec<usize> = (0..coords.len()).collect();
        let mut missing = lookup(&mut ids, &all);
        if missing.is_empty() {
            return Ok(ids);
        }
        let client = self.pool.get().await?;
        if missing.len() >= BULK_CELLS {
            let row = client
                .query_one(
                    "SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(lat), '{}'),
                            coalesce(array_agg(lon), '{}')
                     FROM map_cell WHERE dataset_id = $1",
                    &[&dataset_id],
                )
                .await?;
            remember(&row);
            missing = lookup(&mut ids, &missing);
            if missing.is_empty() {
                return Ok(ids);
            }
        }
        if read_only {
            return Ok(ids);
        }
        // Insert the missing cells; those another worker inserted meanwhile are read back.
        let lats: Vec<f64> = missing.iter().map(|&i| coords[i].0).collect();
        let lons: Vec<f64> = missing.iter().map(|&i| coords[i].1).collect();
        let row = client
            .query_one(
                "WITH ins AS (
                     INSERT INTO map_cell (dataset_id, lat, lon)
                     SELECT $1, la, lo FROM unnest($2::float8[], $3::float8[]) AS t(la, lo)
                     ON CONFLICT (dataset_id, lat, lon) DO NOTHING
                     RETURNING id, lat, lon)
                 SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(lat), '{}'),
                        coalesce(array_agg(lon), '{}')
                 FROM ins",
                &[&dataset_id, &lats, &lons],
            )
            .await?;
        remember(&row);
        missing = lookup(&mut ids, &missing);
        if missing.is_empty() {
            return Ok(ids);
        }
        let lats: Vec<f64> = missing.iter().map(|&i| coords[i].0).collect();
        let lons: Vec<f64> = missing.iter().map(|&i| coords[i].1).collect();
        let rows = client
            .query(
                "SELECT m.id FROM unnest($2::float8[], $3::float8[]) WITH ORDINALITY AS t(la, lo, n)
                 JOIN map_cell m ON m.dataset_id = $1 AND m.lat = t.la AND m.lon = t.lo
                 ORDER BY t.n",
                &[&dataset_id, &lats, &lons],
            )
            .await?;
        if rows.len() != missing.len() {
            return Err(JobError::Data(format!(
                "map_cell: {} of {} cells resolved",
                rows.len(),
                missing.len()
            )));
        }
        let mut cache = self.cells.lock().expect("cell cache");
        for (&i, r) in missing.iter().zip(&rows) {
            ids[i] = r.get(0);
            cache.ids.insert(key(&coords[i]), ids[i]);
        }
        Ok(ids)
    }

    async fn load(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        d: Decoded,
        attempt: &Attempt,
        started: chrono_like::Started,
    ) -> Result<Loaded, JobError> {
        let rows = Rows::new(&d.blocks, !matches!(spec.locations, LocationSource::All))?;
        let coords: Vec<(f64, f64)> = rows.cells.iter().map(|&c| d.grid.coords(c)).collect();
        let tm = Instant::now();
        let ids = self.map_cell_ids(p.ids.dataset, &coords, false).await?;
        info!(job = %spec.id(), phase = "map_cell", cells = ids.len(), ms = tm.elapsed().as_millis() as u64, "phase");

        // Where each location landed (NULL cell = unmatched), shared reference data too.
        let mut unmatched = 0;
        if !d.matches.is_empty() {
            let by_cell: HashMap<CellIndex, i64> = rows
                .cells
                .iter()
                .copied()
                .zip(ids.iter().copied())
                .collect();
            let mut loc_ids = Vec::with_capacity(d.matches.len());
            let mut cell_ids: Vec<Option<i64>> = Vec::with_capacity(d.matches.len());
            let mut dists: Vec<Option<f32>> = Vec::with_capacity(d.matches.len());
            for (loc, m) in &d.matches {
                loc_ids.push(*loc);
                let cid = m.cell.and_then(|c| by_cell.get(&c).copied());
                if cid.is_none() {
                    unmatched += 1;
                    warn!(job = %spec.id(), location = loc, lat = m.lat, lon = m.lon, "location has no data cell within the search radius");
                }
                cell_ids.push(cid);
                dists.push(cid.map(|_| m.distance_km as f32));
            }
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO location_cell (location_id, dataset_id, map_cell_id, distance_km)
                     SELECT l, $1, c, d FROM unnest($2::int8[], $3::int8[], $4::float4[]) AS t(l, c, d)
                     ON CONFLICT (location_id, dataset_id) DO UPDATE
                        SET map_cell_id = EXCLUDED.map_cell_id, distance_km = EXCLUDED.distance_km",
                    &[&p.ids.dataset, &loc_ids, &cell_ids, &dists],
                )
                .await?;
        }

        let vars: Vec<&'static str> = spec.variables.clone();
        let mut cols: Vec<(String, ColumnType)> = vec![
            ("data_source_id".into(), ColumnType::Int8),
            ("map_cell_id".into(), ColumnType::Int8),
        ];
        for v in &vars {
            let c = catalog::variable_column(v)
                .ok_or_else(|| JobError::InvalidMessage(format!("variable {v}")))?;
            cols.push((c.to_owned(), ColumnType::Float4Array));
        }
        let table = Table::new(
            Some(self.schema.name()),
            "climate_data_year",
            Columns::new(cols),
        )
        .map_err(load_err)?;
        let meta: Vec<(String, String, &'static str, String)> = d
            .blocks
            .iter()
            .zip(&d.sources)
            .map(|(b, src)| {
                (
                    b.variable.clone(),
                    b.units.clone().unwrap_or_default(),
                    b.calendar.name(),
                    src.clone(),
                )
            })
            .collect();
        let total = rows.cells.len() as u64;
        attempt.emit(Event::Loading(total));

        let t = Instant::now();
        let mut guard = Detach::new(self.pool.get().await?);
        let tx = guard.client().transaction().await?;
        // Serialise concurrent loads of the same job with a transaction-level advisory lock
        // (not a row lock: recording a failure must not wait for a stuck COPY), then check
        // whether another delivery finished the job meanwhile.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('nexingest.job.' || current_schema()),
                                          ($1::bigint % 2147483647)::int)",
            &[&p.data_source_id],
        )
        .await?;
        let done_now: i64 = tx
            .query_one(
                "SELECT count(*) FROM job_ledger WHERE data_source_id = $1 AND outcome = 'done'",
                &[&p.data_source_id],
            )
            .await?
            .get(0);
        if done_now > p.done_before && !spec.update_existing {
            info!(job = %spec.id(), "another delivery finished this job meanwhile; nothing written");
            drop(tx);
            guard.keep();
            return Ok(Loaded {
                data_source_id: p.data_source_id,
                superseded: true,
                ..Loaded::default()
            });
        }

        let counter = Arc::new(AtomicU64::new(0));
        let source = RowSource::new(
            d.blocks,
            rows,
            ids,
            p.data_source_id,
            Arc::clone(&counter),
            attempt.observer.clone(),
        );
        let lcfg = LoaderConfig {
            timeout: Some(self.cfg.job_timeout),
            ..LoaderConfig::default()
        };
        let tc = Instant::now();
        let stats = pgcopy::load(
            &tx,
            &table,
            &Strategy::replace_key("data_source_id", p.data_source_id),
            source,
            &lcfg,
        )
        .await
        .map_err(load_err)?;
        info!(
            job = %spec.id(),
            phase = "copy",
            rows = stats.rows_copied,
            mb = stats.bytes_sent / 1_000_000,
            ms = tc.elapsed().as_millis() as u64,
            "phase"
        );
        tx.execute(
            "DELETE FROM data_source_variable WHERE data_source_id = $1",
            &[&p.data_source_id],
        )
        .await?;
        for (v, u, cal, src) in &meta {
            tx.execute(
                "INSERT INTO data_source_variable (data_source_id, variable, units, calendar, source)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&p.data_source_id, v, u, cal, src],
            )
            .await?;
        }
        let load_ms = t.elapsed().as_millis() as u64;
        let rows_written = stats.rows_copied as i64;
        let var_names: Vec<String> = vars.iter().map(|v| (*v).to_owned()).collect();
        tx.execute(
            "UPDATE data_source SET state = 'done', rows_written = $2, variables = $3,
                    location_source = $4, bytes_downloaded = $5, download_ms = $6,
                    decode_ms = $7, load_ms = $8, finished_at = now(), last_error = NULL
             WHERE id = $1",
            &[
                &p.data_source_id,
                &rows_written,
                &var_names,
                &spec.locations.to_string(),
                &(d.bytes as i64),
                &(d.download_ms as i64),
                &(d.decode_ms as i64),
                &(load_ms as i64),
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO job_ledger (data_source_id, message_id, receive_count, worker, outcome,
                                     rows_written, started_at)
             VALUES ($1, $2, $3, $4, 'done', $5, to_timestamp($6))",
            &[
                &p.data_source_id,
                &attempt.message_id,
                &attempt.receive_count,
                &self.worker_id,
                &rows_written,
                &started.0,
            ],
        )
        .await?;
        if attempt.abort.load(Ordering::SeqCst) {
            // Dropping the transaction rolls it back.
            return Err(JobError::VisibilityLost(
                "visibility could not be extended; rolled back instead of committing".into(),
            ));
        }
        let tc = Instant::now();
        tx.commit().await?;
        info!(job = %spec.id(), phase = "commit", ms = tc.elapsed().as_millis() as u64, "phase");
        guard.keep();
        attempt.emit(Event::Committed(stats.rows_copied));
        Ok(Loaded {
            data_source_id: p.data_source_id,
            rows: stats.rows_copied,
            rows_replaced: stats.rows_deleted,
            bytes: d.bytes,
            download_ms: d.download_ms,
            decode_ms: d.decode_ms,
            load_ms: t.elapsed().as_millis() as u64,
            unmatched,
            superseded: false,
        })
    }
}

/// Holds the load's pooled connection. Unless [`Detach::keep`] is called (after commit), the
/// connection is taken out of the pool when dropped: an abandoned COPY may keep the server
/// busy for a while, and the ROLLBACK queued behind it must not delay the next user of the
/// pool (e.g. recording the failure).
struct Detach {
    client: Option<deadpool_postgres::Client>,
    keep: bool,
}

impl Detach {
    fn new(client: deadpool_postgres::Client) -> Self {
        Detach {
            client: Some(client),
            keep: false,
        }
    }

    fn client(&mut self) -> &mut deadpool_postgres::Client {
        self.client.as_mut().expect("client present until drop")
    }

    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        if !self.keep
            && let Some(c) = self.client.take()
        {
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

fn load_err(e: pgcopy::LoadError) -> JobError {
    JobError::Database {
        transient: e.is_retryable(),
        code: e.sqlstate().map(|c| c.code().to_owned()),
        message: {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                let t = inner.to_string();
                if !s.contains(&t) {
                    s.push_str(": ");
                    s.push_str(&t);
                }
                src = inner.source();
            }
            s
        },
    }
}

type DecodeOut = (Grid, YearBlock, CellSelection, Option<Vec<LocationMatch>>);

/// Opens and decodes one variable's file (blocking; rayon inside nexdecode). The first
/// variable resolves the plan into a cell selection that the others reuse.
fn decode_one(
    path: &std::path::Path,
    label: &str,
    var: &str,
    year: i32,
    opts: &DecodeOptions,
    selection: Option<CellSelection>,
    plan: Option<Plan>,
) -> Result<DecodeOut, JobError> {
    let t = Instant::now();
    let f = GridFile::open_variable(path, var).map_err(|e| decode_err(label, e))?;
    info!(
        phase = "open",
        var,
        ms = t.elapsed().as_millis() as u64,
        "phase"
    );
    let grid = f.grid().clone();
    let mut matches = None;
    let sel = match (selection, plan) {
        (Some(s), _) => s,
        (None, Some(Plan::All)) | (None, None) => CellSelection::AllData,
        (None, Some(Plan::Points(pts))) => {
            let m = f
                .locate(year, &pts, opts)
                .map_err(|e| decode_err(label, e))?;
            let mut cells: Vec<CellIndex> = m.iter().filter_map(|m| m.cell).collect();
            cells.sort_unstable();
            cells.dedup();
            matches = Some(m);
            CellSelection::Cells(cells)
        }
        (None, Some(Plan::Polygons(polys))) => CellSelection::Cells(boundary_cells(&grid, &polys)),
    };
    let t = Instant::now();
    let mut block = f
        .decode_year(year, &sel, opts)
        .map_err(|e| decode_err(label, e))?;
    shrink_block(&mut block);
    info!(
        phase = "decode_year",
        var,
        cells = block.len(),
        ms = t.elapsed().as_millis() as u64,
        "phase"
    );
    // Later variables decode the same selection: every data cell of their own (rows are the
    // union, NULL arrays where a variable has no data), or the cells the first one resolved.
    let reuse = sel.clone();
    Ok((grid, block, reuse, matches))
}

/// Gives the block's spare capacity back to the allocator (for large blocks `realloc` shrinks
/// the mapping in place). An all-data block may be compacted inside a whole-grid allocation;
/// holding three of those would keep ~2.4× the data cells' memory resident for the whole load.
fn shrink_block(b: &mut YearBlock) {
    if !b.values.is_standard_layout() {
        return;
    }
    let shape = b.values.dim();
    let n = shape.0 * shape.1;
    let (mut v, offset) = std::mem::take(&mut b.values).into_raw_vec_and_offset();
    let offset = offset.unwrap_or(0);
    if offset > 0 {
        v.drain(..offset);
    }
    v.truncate(n);
    v.shrink_to_fit();
    b.values = ndarray::Array2::from_shape_vec(shape, v).expect("standard layout, same shape");
}

/// Cells of `grid` a set of polygons touches (cell bounds halfway to the neighbours).
fn boundary_cells(grid: &Grid, polys: &[Polygon]) -> Vec<CellIndex> {
    let lat = grid.lat();
    let lon = grid.lon();
    let bounds = |axis: &[f64], i: usize| -> (f64, f64) {
        let n = axis.len();
        if n == 1 {
            return (axis[0] - 0.5, axis[0] + 0.5);
        }
        let a = if i > 0 {
            (axis[i - 1] + axis[i]) / 2.0
        } else {
            axis[0] - (axis[1] - axis[0]) / 2.0
        };
        let b = if i + 1 < n {
            (axis[i] + axis[i + 1]) / 2.0
        } else {
            axis[n - 1] + (axis[n - 1] - axis[n - 2]) / 2.0
        };
        (a.min(b), a.max(b))
    };
    // Polygons in the grid's longitude convention.
    let polys: Vec<Polygon> = polys
        .iter()
        .map(|p| {
            p.iter()
                .map(|r| r.iter().map(|&(x, y)| (grid.normalize_lon(x), y)).collect())
                .collect()
        })
        .collect();
    let (x0, x1, y0, y1) = locations::bbox(&polys);
    let mut out = Vec::new();
    for (i, _) in lat.iter().enumerate() {
        let (la0, la1) = bounds(lat, i);
        if la1 < y0 || la0 > y1 {
            continue;
        }
        for (j, _) in lon.iter().enumerate() {
            let (lo0, lo1) = bounds(lon, j);
            if lo1 < x0 || lo0 > x1 {
                continue;
            }
            if polys
                .iter()
                .any(|p| locations::touches_cell(p, lo0, lo1, la0, la1))
            {
                out.push(CellIndex { lat: i, lon: j });
            }
        }
    }
    out
}

/// The union of the blocks' cells and, per variable, each union cell's row (or none).
struct Rows {
    cells: Vec<CellIndex>,
    /// `None` when every block holds exactly `cells`.
    index: Option<Vec<Vec<u32>>>,
}

const NO_ROW: u32 = u32::MAX;

/// From this many uncached cells on, [`Pipeline::map_cell_ids`] reads the dataset's whole
/// `map_cell` into the cache first (one round trip instead of a lookup per cell).
const BULK_CELLS: usize = 10_000;

impl Rows {
    fn new(blocks: &[YearBlock], drop_empty: bool) -> Result<Rows, JobError> {
        let first = &blocks[0].cells;
        let mut rows = if blocks.iter().all(|b| &b.cells == first) {
            Rows {
                cells: first.clone(),
                index: None,
            }
        } else {
            let mut cells: Vec<CellIndex> = blocks
                .iter()
                .flat_map(|b| b.cells.iter().copied())
                .collect();
            cells.sort_unstable();
            cells.dedup();
            let index = blocks
                .iter()
                .map(|b| {
                    cells
                        .iter()
                        .map(|c| b.row_of(*c).map_or(NO_ROW, |r| r as u32))
                        .collect()
                })
                .collect();
            Rows {
                cells,
                index: Some(index),
            }
        };
        // A cell missing on every day of every variable is not a data cell. (All-data
        // selections hold data cells only, so only explicit cell lists need the check.)
        if u32::try_from(rows.cells.len()).is_err() {
            return Err(JobError::Data("too many cells".into()));
        }
        if !drop_empty {
            return Ok(rows);
        }
        let keep: Vec<bool> = (0..rows.cells.len())
            .map(|k| {
                blocks.iter().enumerate().any(|(v, b)| {
                    let r = rows.row(v, k);
                    r != NO_ROW && b.values.row(r as usize).iter().any(|x| !x.is_nan())
                })
            })
            .collect();
        if keep.iter().any(|k| !k) {
            let n = rows.cells.len();
            let mut index: Vec<Vec<u32>> = (0..blocks.len())
                .map(|v| (0..n).map(|k| rows.row(v, k)).collect())
                .collect();
            let cells = rows
                .cells
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| *c)
                .collect();
            for col in &mut index {
                *col = col
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(r, _)| *r)
                    .collect();
            }
            rows = Rows {
                cells,
                index: Some(index),
            };
        }
        Ok(rows)
    }

    #[inline]
    fn row(&self, var: usize, k: usize) -> u32 {
        match &self.index {
            None => k as u32,
            Some(ix) => ix[var][k],
        }
    }
}

/// Encodes one row per union cell: data_source_id, map_cell_id, one array per variable.
struct RowSource {
    blocks: Vec<YearBlock>,
    rows: Rows,
    ids: Vec<i64>,
    data_source_id: i64,
    next: usize,
    counter: Arc<AtomicU64>,
    observer: Option<Arc<dyn Observer>>,
    scratch: Vec<f32>,
}

impl RowSource {
    fn new(
        blocks: Vec<YearBlock>,
        rows: Rows,
        ids: Vec<i64>,
        data_source_id: i64,
        counter: Arc<AtomicU64>,
        observer: Option<Arc<dyn Observer>>,
    ) -> Self {
        let blocks = blocks
            .into_iter()
            .map(|mut b| {
                if !b.values.is_standard_layout() {
                    b.values = b.values.as_standard_layout().into_owned();
                }
                b
            })
            .collect();
        RowSource {
            blocks,
            rows,
            ids,
            data_source_id,
            next: 0,
            counter,
            observer,
            scratch: Vec::new(),
        }
    }
}

impl pgcopy::RowSource for RowSource {
    fn write_next(&mut self, buf: &mut CopyBuffer) -> Result<bool, EncodeError> {
        let k = self.next;
        if k >= self.rows.cells.len() {
            if let Some(o) = &self.observer {
                o.event(Event::Rows(k as u64));
            }
            return Ok(false);
        }
        self.next += 1;
        let mut w = buf.row();
        w.int8(self.data_source_id)?.int8(self.ids[k])?;
        for (v, b) in self.blocks.iter().enumerate() {
            let r = self.rows.row(v, k);
            if r == NO_ROW {
                w.null()?;
            } else {
                let row = b.values.row(r as usize);
                match row.as_slice() {
                    Some(s) => w.float4_array(s, Validity::NanIsNull)?,
                    None => {
                        self.scratch.clear();
                        self.scratch.extend(row.iter());
                        w.float4_array(&self.scratch, Validity::NanIsNull)?
                    }
                };
            }
        }
        w.finish()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(4096)
            && let Some(o) = &self.observer
        {
            o.event(Event::Rows(n));
        }
        Ok(true)
    }
}

/// Seconds since the Unix epoch as `f64`, for `to_timestamp($n)` parameters.
pub mod chrono_like {
    /// When an attempt started.
    #[derive(Debug, Clone, Copy)]
    pub struct Started(pub f64);

    impl Started {
        /// Now.
        pub fn now() -> Self {
            Started(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            )
        }
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

//! Stage 5: cells. `map_cell` ids of the job's cells, inserting the missing ones in their
//! own short transactions (cells are shared reference data of a dataset: a cell row without
//! climate rows is harmless, and every job of the dataset shares them). Ids are cached per
//! process; a whole-grid job reads the dataset's whole `map_cell` in one round trip.
//!
//! A dataset's first whole-grid job inserts its ~384k cells while its COPY runs
//! ([`Pipeline::cell_ids_streamed`]): a background task inserts them in batches of
//! [`INSERT_BATCH`] and publishes each batch's ids, and the COPY's encoder waits for the id of
//! the row it is about to send ([`CellIds::get`]), so the inserts overlap the COPY instead of
//! preceding it. Each batch is `INSERT … ON CONFLICT DO NOTHING RETURNING` followed by a read
//! of the cells another worker inserted meanwhile, so concurrent first jobs agree on the ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracing::debug;

use super::Pipeline;
use crate::error::JobError;

/// From this many uncached cells on, [`Pipeline::map_cell_ids`] reads the dataset's whole
/// `map_cell` into the cache first (one round trip instead of a lookup per cell), and
/// [`Pipeline::cell_ids_streamed`] inserts the missing cells while the COPY runs.
const BULK_CELLS: usize = 10_000;

/// Cells per `INSERT` statement (and transaction) of the background insert: small enough
/// that the COPY's first rows wait only for one batch.
const INSERT_BATCH: usize = 8_192;

/// (dataset, lat bits, lon bits) → `map_cell.id`.
type CellMap = HashMap<(i32, u64, u64), i64>;

/// Cache of `map_cell` ids per (dataset, lat bits, lon bits), shared with background inserts.
#[derive(Debug, Default)]
pub struct CellCache {
    ids: Arc<Mutex<CellMap>>,
}

fn key(dataset_id: i32, &(la, lo): &(f64, f64)) -> (i32, u64, u64) {
    (dataset_id, la.to_bits(), lo.to_bits())
}

/// Where a background insert of cells stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Running,
    Done,
    Failed,
}

/// Ids shared between the background insert (writer) and the COPY's encoder (reader).
#[derive(Debug)]
struct Shared {
    /// Id per job cell; 0 while being inserted (identity ids start at 1).
    ids: Vec<AtomicI64>,
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn set(&self, p: Progress) {
        let mut g = self.progress.lock().expect("cell progress");
        if *g == Progress::Running {
            *g = p;
        }
        self.changed.notify_all();
    }
}

/// Marks the insert failed unless it finished (also when its task panics or is dropped), so
/// a waiting encoder never waits forever.
struct FailUnlessDone(Arc<Shared>);

impl Drop for FailUnlessDone {
    fn drop(&mut self) {
        self.0.set(Progress::Failed);
    }
}

/// The `map_cell` ids of a job's cells, in the job's order: known now, or (a dataset's first
/// whole-grid job) arriving from a background insert while the load runs.
#[derive(Debug)]
pub(crate) struct CellIds {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<Result<(), JobError>>>,
}

/// A cheap handle on [`CellIds`] for the COPY's (blocking) encoder thread.
#[derive(Debug, Clone)]
pub(crate) struct CellIdReader(Arc<Shared>);

impl CellIds {
    /// Ids all known already.
    pub(crate) fn ready(ids: Vec<i64>) -> Self {
        CellIds {
            shared: Arc::new(Shared {
                ids: ids.into_iter().map(AtomicI64::new).collect(),
                progress: Mutex::new(Progress::Done),
                changed: Condvar::new(),
            }),
            task: None,
        }
    }

    /// The ids known so far, 0 for cells still being inserted (new cells: no climate row can
    /// refer to them yet).
    pub(crate) fn known(&self) -> Vec<i64> {
        self.shared
            .ids
            .iter()
            .map(|i| i.load(Ordering::Acquire))
            .collect()
    }

    /// A handle for the encoder.
    pub(crate) fn reader(&self) -> CellIdReader {
        CellIdReader(Arc::clone(&self.shared))
    }

    /// Waits for the background insert (if any) to finish.
    ///
    /// # Errors
    /// The insert's error; the job's transaction must then roll back.
    pub(crate) async fn finish(mut self) -> Result<(), JobError> {
        match self.task.take() {
            None => Ok(()),
            Some(t) => t
                .await
                .map_err(|e| JobError::Data(format!("map_cell insert task failed: {e}")))?,
        }
    }
}

impl CellIdReader {
    /// The id of job cell `k`, waiting (blocking the thread) while it is being inserted;
    /// `None` when the insert failed (the load then ends and reports that error).
    pub(crate) fn get(&self, k: usize) -> Option<i64> {
        let s = &*self.0;
        let id = s.ids[k].load(Ordering::Acquire);
        if id != 0 {
            return Some(id);
        }
        let mut g = s.progress.lock().expect("cell progress");
        loop {
            let id = s.ids[k].load(Ordering::Acquire);
            if id != 0 {
                return Some(id);
            }
            if *g != Progress::Running {
                return None;
            }
            g = s.changed.wait(g).expect("cell progress");
        }
    }
}

/// Inserts cells (`ON CONFLICT DO NOTHING`) and returns their ids in order, reading back
/// those another worker inserted first (its insert is waited for by the `ON CONFLICT`);
/// caches them.
async fn insert_cells(
    client: &tokio_postgres::Client,
    cache: &Mutex<CellMap>,
    dataset_id: i32,
    coords: &[(f64, f64)],
) -> Result<Vec<i64>, JobError> {
    let lats: Vec<f64> = coords.iter().map(|c| c.0).collect();
    let lons: Vec<f64> = coords.iter().map(|c| c.1).collect();
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
    let (ids, ins_lats, ins_lons): (Vec<i64>, Vec<f64>, Vec<f64>) =
        (row.get(0), row.get(1), row.get(2));
    let inserted: HashMap<(i32, u64, u64), i64> = ids
        .into_iter()
        .zip(ins_lats.into_iter().zip(ins_lons))
        .map(|(id, c)| (key(dataset_id, &c), id))
        .collect();
    let mut out: Vec<i64> = coords
        .iter()
        .map(|c| inserted.get(&key(dataset_id, c)).copied().unwrap_or(0))
        .collect();
    let others: Vec<usize> = (0..coords.len()).filter(|&i| out[i] == 0).collect();
    if !others.is_empty() {
        let lats: Vec<f64> = others.iter().map(|&i| coords[i].0).collect();
        let lons: Vec<f64> = others.iter().map(|&i| coords[i].1).collect();
        let rows = client
            .query(
                "SELECT m.id FROM unnest($2::float8[], $3::float8[]) WITH ORDINALITY AS t(la, lo, n)
                 JOIN map_cell m ON m.dataset_id = $1 AND m.lat = t.la AND m.lon = t.lo
                 ORDER BY t.n",
                &[&dataset_id, &lats, &lons],
            )
            .await?;
        if rows.len() != others.len() {
            return Err(JobError::Data(format!(
                "map_cell: {} of {} cells resolved",
                rows.len(),
                others.len()
            )));
        }
        for (&i, r) in others.iter().zip(&rows) {
            out[i] = r.get(0);
        }
    }
    let mut cache = cache.lock().expect("cell cache");
    cache.reserve(coords.len());
    for (c, &id) in coords.iter().zip(&out) {
        cache.insert(key(dataset_id, c), id);
    }
    Ok(out)
}

impl Pipeline {
    /// `map_cell` ids for cells (in order), inserting missing ones (own short transaction;
    /// cells are shared reference data). Ids are cached per process: for many cells (a
    /// whole-grid job) the dataset's whole `map_cell` is read into the cache in one round trip
    /// (three arrays), since every job of the dataset shares that grid.
    ///
    /// With `read_only`, nothing is inserted and the returned ids of cells not yet in the
    /// table are 0: this is the prefetch that overlaps a decode, and a job whose later file
    /// turns out corrupt must not have written anything.
    pub(crate) async fn map_cell_ids(
        &self,
        dataset_id: i32,
        coords: &[(f64, f64)],
        read_only: bool,
    ) -> Result<Vec<i64>, JobError> {
        let mut ids = vec![0i64; coords.len()];
        let lookup = |ids: &mut [i64], todo: &[usize]| -> Vec<usize> {
            let cache = self.cells.ids.lock().expect("cell cache");
            let mut missing = Vec::new();
            for &i in todo {
                match cache.get(&key(dataset_id, &coords[i])) {
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
            let (got, lats, lons): (Vec<i64>, Vec<f64>, Vec<f64>) =
                (row.get(0), row.get(1), row.get(2));
            {
                let mut cache = self.cells.ids.lock().expect("cell cache");
                cache.reserve(got.len());
                for ((id, la), lo) in got.into_iter().zip(lats).zip(lons) {
                    cache.insert(key(dataset_id, &(la, lo)), id);
                }
            }
            missing = lookup(&mut ids, &missing);
            if missing.is_empty() {
                return Ok(ids);
            }
        }
        if read_only {
            return Ok(ids);
        }
        let todo: Vec<(f64, f64)> = missing.iter().map(|&i| coords[i]).collect();
        let got = insert_cells(&client, &self.cells.ids, dataset_id, &todo).await?;
        for (&i, id) in missing.iter().zip(got) {
            ids[i] = id;
        }
        Ok(ids)
    }

    /// Like [`Pipeline::map_cell_ids`], but when many cells are missing (a dataset's first
    /// whole-grid job) they are inserted by a background task in batches while the caller
    /// loads, in the cells' order; [`CellIds::get`] waits for each id and
    /// [`CellIds::finish`] for the task.
    ///
    /// # Errors
    /// Database errors of the lookup (the insert's own errors come from
    /// [`CellIds::finish`]).
    pub(crate) async fn cell_ids_streamed(
        &self,
        dataset_id: i32,
        coords: &[(f64, f64)],
    ) -> Result<CellIds, JobError> {
        let known = self.map_cell_ids(dataset_id, coords, true).await?;
        let missing: Vec<usize> = (0..known.len()).filter(|&i| known[i] == 0).collect();
        if missing.len() < BULK_CELLS {
            let ids = if missing.is_empty() {
                known
            } else {
                self.map_cell_ids(dataset_id, coords, false).await?
            };
            return Ok(CellIds::ready(ids));
        }
        let shared = Arc::new(Shared {
            ids: known.into_iter().map(AtomicI64::new).collect(),
            progress: Mutex::new(Progress::Running),
            changed: Condvar::new(),
        });
        let todo: Vec<(f64, f64)> = missing.iter().map(|&i| coords[i]).collect();
        let pool = self.pool.clone();
        let cache = Arc::clone(&self.cells.ids);
        let publish = FailUnlessDone(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let t = Instant::now();
            let client = pool.get().await?;
            for (batch, at) in todo.chunks(INSERT_BATCH).zip(missing.chunks(INSERT_BATCH)) {
                let got = insert_cells(&client, &cache, dataset_id, batch).await?;
                let s = &publish.0;
                for (&i, id) in at.iter().zip(got) {
                    s.ids[i].store(id, Ordering::Release);
                }
                // Wake the encoder (under the lock, so a waiter cannot miss it).
                let _g = s.progress.lock().expect("cell progress");
                s.changed.notify_all();
            }
            publish.0.set(Progress::Done);
            debug!(
                phase = "map_cell_insert",
                cells = todo.len(),
                ms = t.elapsed().as_millis() as u64,
                "phase"
            );
            Ok(())
        });
        Ok(CellIds {
            shared,
            task: Some(task),
        })
    }
}

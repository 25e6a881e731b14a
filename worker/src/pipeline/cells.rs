//! Stage 5: cells. `map_cell` ids of the job's cells, inserting the missing ones in their
//! own short transaction (cells are shared reference data of a dataset: a cell row without
//! climate rows is harmless, and every job of the dataset shares them). Ids are cached per
//! process; a whole-grid job reads the dataset's whole `map_cell` in one round trip.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Pipeline;
use crate::error::JobError;

/// From this many uncached cells on, [`Pipeline::map_cell_ids`] reads the dataset's whole
/// `map_cell` into the cache first (one round trip instead of a lookup per cell).
const BULK_CELLS: usize = 10_000;

/// Cache of `map_cell` ids per (dataset, lat bits, lon bits).
#[derive(Debug, Default)]
pub struct CellCache {
    ids: Mutex<HashMap<(i32, u64, u64), i64>>,
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
        let key = |&(la, lo): &(f64, f64)| (dataset_id, la.to_bits(), lo.to_bits());
        // Caches the (ids, lats, lons) arrays of a `map_cell` query row.
        let remember = |row: &tokio_postgres::Row| {
            let (ids, lats, lons): (Vec<i64>, Vec<f64>, Vec<f64>) =
                (row.get(0), row.get(1), row.get(2));
            let mut cache = self.cells.ids.lock().expect("cell cache");
            cache.reserve(ids.len());
            for ((id, la), lo) in ids.into_iter().zip(lats).zip(lons) {
                cache.insert(key(&(la, lo)), id);
            }
        };
        let mut ids = vec![0i64; coords.len()];
        let lookup = |ids: &mut [i64], todo: &[usize]| -> Vec<usize> {
            let cache = self.cells.ids.lock().expect("cell cache");
            let mut missing = Vec::new();
            for &i in todo {
                match cache.get(&key(&coords[i])) {
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
        let mut cache = self.cells.ids.lock().expect("cell cache");
        for (&i, r) in missing.iter().zip(&rows) {
            ids[i] = r.get(0);
            cache.insert(key(&coords[i]), ids[i]);
        }
        Ok(ids)
    }
}

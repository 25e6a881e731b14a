//! Stage 6: load, in one transaction.
//!
//! 0. With `--max-db-loads`, one of the fleet's load slots ([`super::throttle`]), held until
//!    the transaction has committed or rolled back.
//! 1. A transaction-level advisory lock on the data source serialises its loads; then the
//!    identity check again (for an S3-event job: this version of its object): if another
//!    delivery finished this job meanwhile, nothing is written
//!    ([`super::Loaded::superseded`]).
//! 2. The job's cells are sorted against the data source's rows: **new** cells (no row) are
//!    appended; cells whose row **lacks** one of the job's variables get it filled in
//!    (`coalesce`, other columns untouched); cells whose row already holds all the job's
//!    variables are **skipped** (not encoded, not sent). With `update_existing`, existing rows
//!    of the job's cells get the job's variables' columns replaced, nothing else. No row
//!    outside the job's cells is ever touched.
//! 3. The locations of a point job (a GeoJSON's points imported here, so a failed job leaves
//!    none behind) and where each landed (`location_cell`), the variables' units, the
//!    `data_source` state (`done`) and the ledger entry.
//! 4. Commit, only if the [`super::CommitGate`] still allows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nexdecode::{CellIndex, YearBlock};
use pgcopy::{
    ColumnType, Columns, CopyBuffer, EncodeError, LoaderConfig, Strategy, Table, Validity,
};
use tracing::{debug, warn};

use super::cells::{CellIdReader, CellIds};
use super::decode::{Decoded, NO_ROW, Rows};
use super::plan::{self, CellPlan, JobPlan, PointIds};
use super::state::{self, JobState, LedgerEntry, Outcome, Prepared, Started};
use super::{Attempt, Event, Loaded, Observer, Pipeline};
use crate::catalog;
use crate::error::JobError;
use crate::locations::import as import_locations;
use crate::message::JobSpec;

/// Up to this many cells, a load looks up its cells' existing rows by id.
const FEW_CELLS: usize = 10_000;

impl Pipeline {
    /// Loads a decoded job (see the module docs).
    pub(crate) async fn load(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: &JobPlan,
        d: Decoded,
        attempt: &Attempt,
        started: Started,
    ) -> Result<Loaded, JobError> {
        let rows = if d.blocks.is_empty() {
            None
        } else {
            Some(Rows::new(&d.blocks, !matches!(plan.cells, CellPlan::All))?)
        };
        let cells: &[CellIndex] = rows.as_ref().map_or(&[], |r| &r.cells);
        let coords: Vec<(f64, f64)> = cells.iter().map(|&c| d.grid.coords(c)).collect();
        let tm = Instant::now();
        // Without locations to record, a dataset's first job inserts its cells while the
        // COPY runs (ids of cells being inserted are 0 in `ids` until then).
        let cell_ids = if d.matches.is_empty() {
            self.cell_ids_streamed(p.ids.dataset, &coords).await?
        } else {
            CellIds::ready(self.map_cell_ids(p.ids.dataset, &coords, false).await?)
        };
        let ids = cell_ids.known();
        debug!(
            phase = "map_cell",
            cells = ids.len(),
            ms = tm.elapsed().as_millis() as u64,
            "phase"
        );

        // Where each planned point landed (NULL cell = unmatched, reported and kept).
        let mut unmatched = 0;
        let mut examples = String::new();
        let by_cell: HashMap<CellIndex, i64> =
            cells.iter().copied().zip(ids.iter().copied()).collect();
        let landed: Vec<(Option<i64>, Option<f32>)> = d
            .matches
            .iter()
            .map(|m| {
                let cid = m.cell.and_then(|c| by_cell.get(&c).copied());
                if cid.is_none() {
                    unmatched += 1;
                    // nexdecode's reason (outside the grid, and how far; or no data nearby);
                    // a matched cell whose rows were all missing has no data either.
                    let reason = m.reason().map_or_else(
                        || nexdecode::MatchReason::NearestCellHasNoData.to_string(),
                        |r| r.to_string(),
                    );
                    debug!(
                        lat = m.lat,
                        lon = m.lon,
                        %reason,
                        "location has no data cell within the search radius"
                    );
                    if unmatched <= 3 {
                        use std::fmt::Write as _;
                        let sep = if examples.is_empty() { "" } else { "; " };
                        let _ = write!(examples, "{sep}({:.4},{:.4}): {reason}", m.lat, m.lon);
                    }
                }
                (cid, cid.map(|_| m.distance_km as f32))
            })
            .collect();
        if unmatched > 0 {
            // One line per job (each location at debug); they are kept with no cell.
            warn!(
                unmatched,
                first = %examples,
                "locations without a data cell within the search radius"
            );
        }

        let vars = plan.variables.clone();
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

        // The fleet's throttle: one of `--max-db-loads` slots for the whole transaction
        // (declared before the connection's guard, so it is released after it).
        let waited = attempt.slot_wait_ms.load(Ordering::Relaxed);
        let tw = Instant::now();
        let mut slot = match &self.slots {
            Some(slots) if rows.is_some() => Some(
                slots
                    .acquire(&self.pool, p.data_source_id, &attempt.slot_wait_ms, || {
                        attempt.emit(Event::WaitingForSlot)
                    })
                    .await?,
            ),
            _ => None,
        };
        let slot_wait_ms = if attempt.slot_wait_ms.load(Ordering::Relaxed) > waited {
            tw.elapsed().as_millis() as u64
        } else {
            0
        };

        let t = Instant::now();
        let mut guard = Detach::new(self.pool.get().await?);
        let tx = guard.client().transaction().await?;
        // Serialise concurrent loads of one data source with a transaction-level advisory
        // lock (not a row lock: recording a failure must not wait for a stuck COPY).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('nexingest.job.' || current_schema()),
                                          ($1::bigint % 2147483647)::int)",
            &[&p.data_source_id],
        )
        .await?;
        if let Some(s) = &mut slot {
            // A failed load keeps its slot until this server process is done with it.
            s.covers(tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0));
        }
        let done = match &spec.object {
            // An S3 object is processed once per version (key + ETag), whatever else ran.
            Some(o) => {
                state::object_versions(&*tx, p.data_source_id, o)
                    .await?
                    .same
            }
            None => {
                !spec.update_existing && state::identity_done(&*tx, p.data_source_id, plan).await?
            }
        };
        if done {
            debug!("another delivery finished this job meanwhile; nothing written");
            drop(tx);
            guard.keep();
            if let Some(s) = slot {
                s.release().await;
            }
            return Ok(Loaded {
                data_source_id: p.data_source_id,
                superseded: true,
                ..Loaded::default()
            });
        }

        // The data source's rows: which of the job's cells exist, and whether they hold all
        // of the job's variables.
        let present = plan::all_present_sql("y", &vars)?;
        // A few cells are looked up by id; many (a whole grid) read the data source's rows.
        let existing: HashMap<i64, bool> = if ids.len() <= FEW_CELLS {
            tx.query(
                &format!(
                    "SELECT y.map_cell_id, {present} FROM climate_data_year y
                     WHERE y.data_source_id = $1 AND y.map_cell_id = ANY($2)"
                ),
                &[&p.data_source_id, &ids],
            )
            .await?
        } else {
            tx.query(
                &format!(
                    "SELECT y.map_cell_id, {present} FROM climate_data_year y
                     WHERE y.data_source_id = $1"
                ),
                &[&p.data_source_id],
            )
            .await?
        }
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let (mut order, mut n_new, mut n_upd) = (Vec::with_capacity(ids.len()), 0u64, 0u64);
        for (k, id) in ids.iter().enumerate() {
            // A cell still being inserted (id 0) is new: no row can refer to it yet.
            match existing.get(id) {
                None => n_new += 1,
                Some(true) if !spec.update_existing => continue,
                Some(_) => n_upd += 1,
            }
            order.push(k as u32);
        }
        let skipped = ids.len() as u64 - n_new - n_upd;
        let strategy = if n_upd == 0 {
            Strategy::Append
        } else if spec.update_existing {
            Strategy::upsert(["data_source_id", "map_cell_id"])
        } else {
            Strategy::fill_nulls(["data_source_id", "map_cell_id"])
        };
        attempt.emit(Event::Loading(order.len() as u64));

        let mut copied = 0;
        let mut copy_bytes = 0;
        if let Some(rows) = rows
            && !order.is_empty()
        {
            let counter = Arc::new(AtomicU64::new(0));
            let source = RowSource::new(
                d.blocks,
                rows,
                order,
                cell_ids.reader(),
                p.data_source_id,
                Arc::clone(&counter),
                attempt.observer.clone(),
            );
            let lcfg = LoaderConfig {
                timeout: Some(self.cfg.job_timeout),
                ..LoaderConfig::default()
            };
            let tc = Instant::now();
            let stats = pgcopy::load(&tx, &table, &strategy, source, &lcfg)
                .await
                .map_err(load_err)?;
            copied = stats.rows_copied;
            copy_bytes = stats.bytes_sent;
            // The cells' insert ended the rows early if it failed: its error, and a rollback.
            cell_ids.finish().await?;
            debug!(
                phase = "copy",
                rows = stats.rows_copied,
                new = n_new,
                updated = n_upd,
                skipped,
                mb = stats.bytes_sent / 1_000_000,
                ms = tc.elapsed().as_millis() as u64,
                "phase"
            );
        } else {
            cell_ids.finish().await?;
        }

        // Locations: imported (GeoJSON points) and where each landed. Last in the
        // transaction, so their row locks are held only for the commit.
        if let CellPlan::Points(pts) = &plan.cells
            && !landed.is_empty()
        {
            let loc_ids: Vec<i64> = match &pts.ids {
                PointIds::Known(v) => v.clone(),
                PointIds::Import { source, locations } => {
                    import_locations::upsert(&*tx, source, locations).await?;
                    let ext: Vec<&str> = locations.iter().map(|l| l.external_id.as_str()).collect();
                    let found: HashMap<String, i64> = tx
                        .query(
                            "SELECT external_id, id FROM location
                             WHERE source = $1 AND external_id = ANY($2)",
                            &[source, &ext],
                        )
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    ext.iter()
                        .map(|e| {
                            found.get(*e).copied().ok_or_else(|| {
                                JobError::Data(format!("location {e} of {source} not imported"))
                            })
                        })
                        .collect::<Result<_, _>>()?
                }
            };
            let mut entries: Vec<(i64, Option<i64>, Option<f32>)> = loc_ids
                .into_iter()
                .zip(&landed)
                .map(|(l, &(c, dist))| (l, c, dist))
                .collect();
            entries.sort_unstable_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
            let l: Vec<i64> = entries.iter().map(|e| e.0).collect();
            let c: Vec<Option<i64>> = entries.iter().map(|e| e.1).collect();
            let dist: Vec<Option<f32>> = entries.iter().map(|e| e.2).collect();
            tx.execute(
                "INSERT INTO location_cell (location_id, dataset_id, map_cell_id, distance_km)
                 SELECT l, $1, c, d FROM unnest($2::int8[], $3::int8[], $4::float4[]) AS t(l, c, d)
                 ON CONFLICT (location_id, dataset_id) DO UPDATE
                    SET map_cell_id = EXCLUDED.map_cell_id, distance_km = EXCLUDED.distance_km
                    WHERE (location_cell.map_cell_id, location_cell.distance_km)
                          IS DISTINCT FROM (EXCLUDED.map_cell_id, EXCLUDED.distance_km)",
                &[&p.ids.dataset, &l, &c, &dist],
            )
            .await?;
        }

        for (v, u, cal, src) in &meta {
            tx.execute(
                "INSERT INTO data_source_variable (data_source_id, variable, units, calendar, source)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (data_source_id, variable) DO UPDATE
                    SET units = EXCLUDED.units, calendar = EXCLUDED.calendar,
                        source = EXCLUDED.source",
                &[&p.data_source_id, v, u, cal, src],
            )
            .await?;
        }
        let load_ms = t.elapsed().as_millis() as u64;
        tx.execute(
            "UPDATE data_source
             SET state = CASE WHEN state = ANY($9) THEN 'done' ELSE state END,
                 rows_written = rows_written + $2,
                 variables = ARRAY(SELECT DISTINCT unnest(variables || $3) ORDER BY 1),
                 location_source = $4, bytes_downloaded = $5, download_ms = $6,
                 decode_ms = $7, load_ms = $8, finished_at = clock_timestamp(),
                 last_error = NULL
             WHERE id = $1",
            &[
                &p.data_source_id,
                &(n_new as i64),
                &plan.variables_sorted(),
                &spec.locations.to_string(),
                &(d.bytes as i64),
                &(d.download_ms as i64),
                &(d.decode_ms as i64),
                &(load_ms as i64),
                &JobState::sources_of(JobState::Done),
            ],
        )
        .await?;
        self.ledger(
            &*tx,
            p,
            attempt,
            LedgerEntry {
                outcome: Outcome::Done,
                plan: Some(plan),
                spec,
                attempt_no: None,
                rows_written: n_new as i64,
                rows_updated: n_upd as i64,
                started,
                error: None,
            },
        )
        .await?;
        if !attempt.gate.begin_commit() {
            // Dropping the transaction rolls it back.
            return Err(JobError::VisibilityLost(
                "visibility could not be extended; rolled back instead of committing".into(),
            ));
        }
        let tc = Instant::now();
        tx.commit().await?;
        debug!(
            phase = "commit",
            ms = tc.elapsed().as_millis() as u64,
            "phase"
        );
        guard.keep();
        if let Some(s) = slot {
            s.release().await;
        }
        attempt.emit(Event::Committed(copied));
        Ok(Loaded {
            data_source_id: p.data_source_id,
            rows: n_new + n_upd,
            rows_new: n_new,
            rows_updated: n_upd,
            cells_skipped: skipped,
            bytes: d.bytes,
            file_bytes: d.file_bytes,
            copy_bytes,
            download_ms: d.download_ms,
            decode_ms: d.decode_ms,
            load_ms: t.elapsed().as_millis() as u64,
            slot_wait_ms,
            unmatched,
            superseded: false,
        })
    }
}

/// Encodes one row per listed union cell: data_source_id, map_cell_id, one array per
/// variable.
struct RowSource {
    blocks: Vec<YearBlock>,
    rows: Rows,
    /// Union cells to write, in order.
    order: Vec<u32>,
    ids: CellIdReader,
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
        order: Vec<u32>,
        ids: CellIdReader,
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
            order,
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
        let Some(&k) = self.order.get(self.next) else {
            if let Some(o) = &self.observer {
                o.event(Event::Rows(self.next as u64));
            }
            return Ok(false);
        };
        let k = k as usize;
        // Waits while the cell is being inserted; a failed insert ends the rows here (the
        // load reports its error and rolls back).
        let Some(id) = self.ids.get(k) else {
            return Ok(false);
        };
        self.next += 1;
        let mut w = buf.row();
        w.int8(self.data_source_id)?.int8(id)?;
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

//! Stage 4: decode. Each variable's file is opened and decoded by nexdecode on a blocking
//! thread (rayon inside) while the next variable downloads; the first variable resolves the
//! plan (points located, polygons rasterised) into the cells every variable decodes. The
//! variables' cells are then joined into one row per cell ([`Rows`]).

use std::time::Instant;

use std::sync::Arc;

use nexdecode::{
    CellIndex, CellSelection, DecodeError, DecodeOptions, Grid, GridFile, LocationMatch, YearBlock,
};
use tracing::debug;

use super::fetch::{self, Fetched, Input};
use super::plan::{self, CellPlan, JobPlan};
use super::{Attempt, Event, Inputs, Pipeline};
use crate::error::JobError;
use crate::message::JobSpec;

/// Decoded inputs of one job.
#[derive(Clone)]
pub(crate) struct Decoded {
    pub grid: Grid,
    pub blocks: Vec<YearBlock>,
    /// Where each planned point landed, in plan order (point jobs only).
    pub matches: Vec<LocationMatch>,
    pub sources: Vec<String>,
    pub bytes: u64,
    pub download_ms: u64,
    pub decode_ms: u64,
    /// Sizes of the job's files in S3 (0 for local files).
    pub file_bytes: u64,
    /// Some file was read by ranges (its bytes are gone once decoded).
    pub by_ranges: bool,
}

impl Decoded {
    /// Bytes the decoded values occupy (their allocations: spare capacity was given back).
    pub fn bytes_held(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| (b.values.len() * std::mem::size_of::<f32>()) as u64)
            .sum()
    }

    /// Nothing decoded (a job with no cells left to load).
    pub fn empty() -> Self {
        Decoded {
            grid: Grid::new(vec![0.0], vec![0.0]).expect("a one-cell grid"),
            blocks: Vec::new(),
            matches: Vec::new(),
            sources: Vec::new(),
            bytes: 0,
            download_ms: 0,
            decode_ms: 0,
            file_bytes: 0,
            by_ranges: false,
        }
    }
}

/// Decoded blocks of files read by ranges up to this size are kept for an in-process retry
/// (a city job's are a few MB); larger ones (a whole grid) are fetched again.
pub const KEEP_DECODED: u64 = 256 << 20;

/// What a delivery's files read by ranges decoded to (their bytes are gone once decoded), kept
/// so that an in-process retry needs neither those bytes again nor their decode. The files
/// downloaded whole are kept by [`super::FetchCache`].
#[derive(Default)]
pub struct KeptDecode(std::sync::Mutex<Option<(Vec<u64>, Decoded)>>);

impl std::fmt::Debug for KeptDecode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map(|g| g.is_some()).unwrap_or(false);
        f.debug_tuple("KeptDecode").field(&held).finish()
    }
}

/// What identifies a plan's cells (`None`: not worth comparing; nothing is kept).
fn plan_key(plan: &CellPlan) -> Option<Vec<u64>> {
    match plan {
        CellPlan::All => Some(Vec::new()),
        CellPlan::Points(p) => Some(
            std::iter::once(1)
                .chain(
                    p.coords
                        .iter()
                        .flat_map(|(a, b)| [a.to_bits(), b.to_bits()]),
                )
                .collect(),
        ),
        CellPlan::Polygons(_) => None,
    }
}

impl KeptDecode {
    /// Keeps what the files read by ranges decoded to for `plan`, when small enough.
    pub(crate) fn keep(&self, plan: &CellPlan, d: &Decoded) {
        if !d.by_ranges || d.bytes_held() > KEEP_DECODED {
            return;
        }
        if let Some(key) = plan_key(plan) {
            *self.0.lock().expect("kept decode") = Some((key, d.clone()));
        }
    }

    /// The decode kept for the same cells, with no bytes or time of its own.
    pub(crate) fn reuse(&self, plan: &CellPlan) -> Option<Decoded> {
        let key = plan_key(plan)?;
        let g = self.0.lock().expect("kept decode");
        let (k, d) = g.as_ref()?;
        (*k == key).then(|| Decoded {
            bytes: 0,
            download_ms: 0,
            decode_ms: 0,
            ..d.clone()
        })
    }
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

impl Pipeline {
    /// Fetches and decodes every variable of the job, fetching variable *i + 1* while *i*
    /// decodes; the first variable resolves the plan into the cells the others decode.
    pub(crate) async fn fetch_and_decode(
        &self,
        spec: &JobSpec,
        plan: &JobPlan,
        inputs: &Inputs,
        attempt: &Attempt,
        dataset_id: i32,
    ) -> Result<Decoded, JobError> {
        let opts = DecodeOptions {
            data_radius_km: self.cfg.search_radius_km,
            single_year_file: true,
            ..DecodeOptions::default()
        };
        if let Some(d) = attempt.decoded.reuse(&plan.cells) {
            debug!("reusing the decoded files of an earlier attempt");
            return Ok(d);
        }
        let vars = &spec.variables;
        let mut out = Decoded {
            grid: Grid::new(vec![0.0], vec![0.0]).map_err(JobError::Data)?,
            blocks: Vec::with_capacity(vars.len()),
            matches: Vec::new(),
            sources: Vec::with_capacity(vars.len()),
            bytes: 0,
            download_ms: 0,
            decode_ms: 0,
            file_bytes: 0,
            by_ranges: false,
        };
        let mut selection: Option<CellSelection> = None;
        attempt.emit(Event::Fetching(vars[0]));
        let t = Instant::now();
        let mut fetched = Some(self.fetch(spec, inputs, vars[0], &attempt.files).await?);
        out.download_ms += t.elapsed().as_millis() as u64;
        for (i, &var) in vars.iter().enumerate() {
            let Fetched {
                input,
                bytes,
                size,
                source,
            } = fetched.take().expect("fetched ahead");
            out.file_bytes += size;
            match input {
                Input::File(_) => attempt.emit(Event::Fetched(var, bytes)),
                Input::Opened { .. } => out.by_ranges = true,
            }
            attempt.emit(Event::Decoding(var));
            out.bytes += bytes;
            out.sources.push(source.clone());
            let year = spec.year;
            let opts = opts.clone();
            let sel = selection.clone();
            let plan_i = (i == 0).then(|| plan.cells.clone());
            // The decoder's own lines (nexdecode logs each decode at debug) belong to the job.
            let span = tracing::Span::current();
            let decode = async move {
                let t = Instant::now();
                let src = match &input {
                    Input::Opened { src, .. } => Some(Arc::clone(src)),
                    Input::File(_) => None,
                };
                let r = tokio::task::spawn_blocking(move || {
                    span.in_scope(|| decode_one(input, &source, var, year, &opts, sel, plan_i))
                })
                .await
                .map_err(join_err)?;
                // Read by ranges, the bytes arrive while it decodes.
                let fetched_now = src.map_or(0, |s| s.fetched());
                Ok::<_, JobError>((r?, fetched_now, t.elapsed().as_millis() as u64))
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
                    debug!(
                        phase = "map_cell_prefetch",
                        cells = coords.len(),
                        ms = t.elapsed().as_millis() as u64,
                        "phase"
                    );
                }
                Ok::<_, JobError>(())
            };
            let (decoded, next) = if i + 1 < vars.len() {
                attempt.emit(Event::Fetching(vars[i + 1]));
                let next = async {
                    let t = Instant::now();
                    let r = self
                        .fetch(spec, inputs, vars[i + 1], &attempt.files)
                        .await?;
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
            let ((grid, block, sel_out, matches), streamed, ms) = decoded;
            out.decode_ms += ms;
            if streamed > 0 {
                attempt.emit(Event::Fetched(var, streamed));
                out.bytes += streamed;
            }
            attempt.emit(Event::Decoded(var, block.len()));
            if i == 0 {
                out.grid = grid;
                selection = Some(sel_out);
                out.matches = matches.unwrap_or_default();
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
            out.blocks.push(block);
        }
        Ok(out)
    }
}

type DecodeOut = (Grid, YearBlock, CellSelection, Option<Vec<LocationMatch>>);

/// Opens (unless open already) and decodes one variable's file (blocking; rayon inside
/// nexdecode). The first variable resolves the plan into a cell selection that the others
/// reuse.
fn decode_one(
    input: Input,
    label: &str,
    var: &str,
    year: i32,
    opts: &DecodeOptions,
    selection: Option<CellSelection>,
    plan: Option<CellPlan>,
) -> Result<DecodeOut, JobError> {
    match input {
        Input::File(path) => {
            let f = GridFile::open_variable(&path, var).map_err(|e| decode_err(label, e))?;
            decode_opened(&f, year, opts, selection, plan).map_err(|e| decode_err(label, e))
        }
        Input::Opened { file, src } => decode_opened(&file, year, opts, selection, plan)
            .map_err(|e| fetch::ranges_err(&src, label, e)),
    }
}

/// Decodes one opened file: the plan resolved into cells (first variable) or the selection
/// the first variable resolved.
fn decode_opened(
    f: &GridFile,
    year: i32,
    opts: &DecodeOptions,
    selection: Option<CellSelection>,
    plan: Option<CellPlan>,
) -> Result<DecodeOut, DecodeError> {
    let grid = f.grid().clone();
    let mut matches = None;
    let mut located = None;
    let sel = match (selection, plan) {
        (Some(s), _) => s,
        (None, Some(CellPlan::All)) | (None, None) => CellSelection::AllData,
        (None, Some(CellPlan::Points(pts))) => {
            // One read of the file locates the points and decodes their cells.
            let (m, block) = f.locate_decode(year, &pts.coords, opts)?;
            let mut cells: Vec<CellIndex> = m.iter().filter_map(|m| m.cell).collect();
            cells.sort_unstable();
            cells.dedup();
            debug_assert_eq!(cells, block.cells);
            matches = Some(m);
            located = Some(block);
            CellSelection::Cells(cells)
        }
        (None, Some(CellPlan::Polygons(polys))) => {
            CellSelection::Cells(plan::boundary_cells(&grid, &polys))
        }
    };
    let mut block = match located {
        Some(b) => b,
        None => f.decode_year(year, &sel, opts)?,
    };
    shrink_block(&mut block);
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

/// The union of the blocks' cells and, per variable, each union cell's row (or none).
pub(crate) struct Rows {
    pub cells: Vec<CellIndex>,
    /// `None` when every block holds exactly `cells`.
    index: Option<Vec<Vec<u32>>>,
}

pub(crate) const NO_ROW: u32 = u32::MAX;

impl Rows {
    pub(crate) fn new(blocks: &[YearBlock], drop_empty: bool) -> Result<Rows, JobError> {
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
    pub(crate) fn row(&self, var: usize, k: usize) -> u32 {
        match &self.index {
            None => k as u32,
            Some(ix) => ix[var][k],
        }
    }
}

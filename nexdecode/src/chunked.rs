//! The chunked fast path: NetCDF-4 (HDF5) variables stored as `shuffle + deflate` chunks.
//!
//! HDF5 is asked only for the layout (chunk shape, filter pipeline, datatype and the chunk
//! index: address, stored size and filter mask of each chunk), always under the process-wide
//! HDF5/netCDF lock. The data itself normally never goes through HDF5: compressed chunks are
//! read with positioned reads, inflated with libdeflate and converted **in parallel with
//! rayon**, then transposed in cache-sized tiles into the cell-major output.
//!
//! # Many small chunks
//!
//! HDF5 1.10 has no way to list the chunk index in one pass (`H5Dchunk_iter` came with 1.14):
//! `H5Dget_chunk_info` (and `…_by_coord`) walk the index from its start on every call, so
//! reading all addresses is quadratic in the number of chunks — about 5 s of one core, under
//! the lock, for the 23,360 chunks (1 × 90 × 180) of a NEX-GDDP file, 2.5 times the parallel
//! inflate of the whole file. Above [`INDEX_MAX_CHUNKS`] chunks the fast path therefore asks
//! HDF5 only for each chunk's stored size (`H5Dget_chunk_storage_size`, one B-tree search) and,
//! batch by batch under the lock, for the compressed bytes themselves (`H5Dread_chunk`, a
//! B-tree search and a read, no filters), about 0.1 s for such a file; inflating and
//! converting stay parallel.
//!
//! Work proceeds in batches of time steps so that at most one batch of decompressed chunks
//! (about [`BATCH_BYTES`]) is held in memory besides the output itself.
//!
//! # Thread safety
//!
//! Debian's libhdf5 is not built thread-safe. The `netcdf` crate serialises every libnetcdf call
//! with `netcdf_sys::libnetcdf_lock`, which *is* `hdf5_metno_sys::LOCK` (netcdf-sys re-exports
//! it: `pub use hdf5_sys::LOCK as libnetcdf_lock`). hdf5-metno takes the same reentrant mutex in
//! every call (`h5lock!` → `hdf5_metno::sync::sync`). All HDF5 work here runs inside one
//! [`hdf5_metno::sync::sync`] closure, so HDF5 is never entered from two threads at once, and the
//! HDF5 handles are closed before the lock is released. The parallel part touches only a
//! `std::fs::File`, libdeflate and plain memory.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hdf5_metno as hdf5;
use hdf5_metno::filters::Filter;
use hdf5_metno_sys as hdf5_sys;
use libdeflater::{DecompressionError, Decompressor};
use ndarray::Array2;
use rayon::prelude::*;

use crate::block::{BlockRequest, ValueRule};
use crate::error::DecodeError;
use crate::h5index::{ChunkedVar, ElemType};
use crate::remote::RemoteFile;

/// Signature at the start of an HDF5 file (without a user block).
const HDF5_MAGIC: [u8; 8] = *b"\x89HDF\r\n\x1a\n";

/// Decompressed bytes held per batch (the last chunk row of a batch may exceed it).
pub(crate) const BATCH_BYTES: usize = 128 << 20;

/// Most time steps transposed together (one row of the transpose tile per step).
const MAX_BATCH_STEPS: usize = 32;

/// Output cells (rows) per transpose task.
const TILE_CELLS: usize = 256;

/// How many output rows ahead [`scatter`] prefetches.
const PREFETCH_ROWS: usize = 8;

/// `HADDR_UNDEF`: a chunk that has no storage.
const ADDR_UNDEF: u64 = u64::MAX;

/// Up to this many chunks, their addresses are read from the chunk index (quadratic in HDF5
/// 1.10: about 9 ns × n², some 40 ms at this count); above, chunks are read through
/// `H5Dread_chunk` ([`Direct`]).
pub(crate) const INDEX_MAX_CHUNKS: usize = 2048;

unsafe extern "C" {
    /// HDF5 ≥ 1.10.2 (public API; not declared by `hdf5-metno-sys`): the stored size of the
    /// chunk whose first element is at `offset`; 0 or an error when it has no storage.
    fn H5Dget_chunk_storage_size(
        dset_id: hdf5_sys::h5i::hid_t,
        offset: *const hdf5_sys::h5::hsize_t,
        chunk_bytes: *mut hdf5_sys::h5::hsize_t,
    ) -> hdf5_sys::h5::herr_t;
}

/// Which rows [`decode_chunked_into`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// One row per requested cell, in request order.
    Requested,
    /// Only the requested cells that hold at least one valid value on the requested steps, in
    /// request (ascending) order: the rows `drop_empty_rows` would keep, without ever writing
    /// the others.
    Valid,
}

/// Decodes `req` from `path` through the chunked fast path into a fresh `cells × days` block.
///
/// Returns `Ok(None)` when the variable is not eligible; see [`decode_chunked_into`].
///
/// # Errors
///
/// As [`decode_chunked_into`].
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn decode_chunked(
    path: &Path,
    req: &BlockRequest<'_>,
) -> Result<Option<Array2<f32>>, DecodeError> {
    let mut values = Vec::new();
    let mut cells = Vec::new();
    if !decode_chunked_into(path, req, None, Rows::Requested, &mut values, &mut cells)? {
        return Ok(None);
    }
    let out = Array2::from_shape_vec((cells.len(), req.days), values)
        .expect("output length is cells * days");
    Ok(Some(out))
}

/// Decodes `req` from `path` through the chunked fast path into `values` (`cells.len() × days`,
/// cell-major) and `cells` (the grid cells of the rows, see [`Rows`]).
///
/// Both vectors are overwritten and their allocations reused: when `values` already has the
/// capacity, no new memory is allocated or faulted for the output.
///
/// With `remote`, the chunks come from its [`RemoteFile`] (announced in decode order, then
/// taken batch by batch) and its layout is used instead of asking HDF5.
///
/// Returns `Ok(false)` (leaving both vectors untouched) when the variable is not eligible (not an
/// HDF5 file, not chunked, filters other than `[shuffle, deflate]` / `[deflate]`, not a 4-byte
/// float, a chunk without storage, or anything HDF5 cannot open); the caller then uses the
/// `netcdf`-crate path, which reads the same values.
///
/// # Errors
///
/// [`DecodeError::Corrupt`] (naming the variable and the chunk's first time index) when a chunk
/// of an eligible variable cannot be read (short read: truncated file), does not inflate, or
/// inflates to the wrong size. The vectors' contents are then unspecified.
pub(crate) fn decode_chunked_into(
    path: &Path,
    req: &BlockRequest<'_>,
    remote: Option<&Remote>,
    rows: Rows,
    values: &mut Vec<f32>,
    cells: &mut Vec<usize>,
) -> Result<bool, DecodeError> {
    let _span = tracing::debug_span!(
        "decode_chunked",
        var = req.var,
        cells = req.cells.len(),
        steps = req.steps.len(),
        ?rows
    )
    .entered();
    if !request_is_valid(req) {
        return Ok(false);
    }
    let probed;
    let file;
    let (layout, src) = match remote {
        Some(r) => {
            if r.layout.shape != req.shape {
                return Ok(false);
            }
            let src = Source {
                file: None,
                direct: None,
                remote: Some(r),
            };
            (&r.layout, src)
        }
        None => {
            if !has_hdf5_magic(path) {
                return Ok(false);
            }
            let Some(p) = hdf5::sync::sync(|| Layout::probe(path, req)) else {
                tracing::debug!(var = req.var, "chunked fast path not eligible");
                return Ok(false);
            };
            file = match File::open(path) {
                Ok(f) => f,
                Err(_) => return Ok(false),
            };
            probed = p;
            let src = Source {
                file: Some(&file),
                direct: probed.1.as_ref(),
                remote: None,
            };
            (&probed.0, src)
        }
    };
    let plan = Plan::new(req, layout);
    if !plan.chunks_present(layout) {
        tracing::debug!(
            var = req.var,
            "chunk without storage; using the netcdf path"
        );
        return Ok(false);
    }
    let mut out = Output {
        values,
        cells,
        main: 0,
        runs: Vec::new(),
        by_spatial: vec![Vec::new(); plan.spatial.len()],
        sp_rows: vec![0; plan.spatial.len()],
        started: false,
    };
    out.cells.clear();
    decode_into(&src, path, req, layout, &plan, rows, &mut out)?;
    if out.cells.is_empty() {
        // No rows (nothing requested, or no valid value): nothing was prepared.
        out.values.clear();
    }
    debug_assert_eq!(out.values.len(), out.cells.len() * req.days);
    Ok(true)
}

/// Asks the kernel to back a large, still untouched output buffer with transparent huge pages
/// (`MADV_HUGEPAGE`; THP is usually in `madvise` mode). The transpose writes every output row
/// once per batch, `days` floats apart: with 4 KiB pages that is a TLB miss every few rows and a
/// page fault per 4 KiB on first touch. Purely advisory: errors are ignored.
fn advise_huge_pages(buf: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(buf);
    if bytes < 4 * HUGE {
        return;
    }
    let start = buf.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end > aligned {
        // SAFETY: the range lies inside `buf`'s allocation; MADV_HUGEPAGE changes no contents.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

/// Rejects requests that break the [`BlockRequest`] contract (the netcdf path reports them).
fn request_is_valid(req: &BlockRequest<'_>) -> bool {
    let [nt, ny, nx] = req.shape;
    let ncell = ny.saturating_mul(nx);
    req.cells.windows(2).all(|w| w[0] < w[1])
        && req.cells.last().is_none_or(|&c| c < ncell)
        && req
            .steps
            .windows(2)
            .all(|w| w[0].time_index <= w[1].time_index)
        && req
            .steps
            .iter()
            .all(|s| s.time_index < nt && s.slot < req.days)
}

fn has_hdf5_magic(path: &Path) -> bool {
    let mut head = [0_u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == HDF5_MAGIC
}

/// Where one chunk's bytes are and which filters were applied to it.
#[derive(Debug, Clone, Copy)]
struct ChunkLoc {
    addr: u64,
    size: u64,
    /// HDF5 filter mask: bit `i` set = pipeline filter `i` was skipped for this chunk.
    mask: u32,
}

/// The HDF5 dataset, kept open to read chunks through `H5Dread_chunk` (more than
/// [`INDEX_MAX_CHUNKS`] chunks). Used only on the decoding thread, under the HDF5 lock; the
/// handles close (under the lock) on drop.
struct Direct {
    ds: hdf5::Dataset,
    _file: hdf5::File,
}

impl Direct {
    /// Reads the stored (filtered) bytes of the chunk whose first element is at `offset` into
    /// `raw` (resized to `size`), returning its filter mask. Must run under the HDF5 lock.
    fn read(&self, offset: [usize; 3], size: u64, raw: &mut Vec<u8>) -> Result<u32, String> {
        let size = usize::try_from(size).map_err(|_| "chunk size overflows".to_string())?;
        raw.resize(size, 0);
        let offset: [hdf5_sys::h5::hsize_t; 3] = offset.map(|o| o as _);
        let mut mask = 0_u32;
        // SAFETY: the dataset is open and has rank 3 (`offset` holds 3 coordinates); HDF5
        // writes the chunk's stored bytes into `raw`, which holds `size` bytes, the size
        // `H5Dget_chunk_storage_size` gave for this chunk through the same open dataset (the
        // same chunk index); the HDF5 lock is held.
        let rc = unsafe {
            hdf5_sys::h5d::H5Dread_chunk(
                self.ds.id(),
                hdf5_sys::h5p::H5P_DEFAULT,
                offset.as_ptr(),
                &mut mask,
                raw.as_mut_ptr().cast(),
            )
        };
        if rc < 0 {
            return Err(format!(
                "HDF5 cannot read the chunk at {offset:?} (truncated or corrupt file?)"
            ));
        }
        Ok(mask)
    }
}

/// A remote file opened for decoding: where its data variable's chunks are, and the source of
/// their bytes.
pub(crate) struct Remote {
    pub(crate) src: Arc<dyn RemoteFile>,
    pub(crate) layout: Layout,
    /// The metadata image, and the parts of it read while looking for the chunk index (sorted,
    /// merged): a chunk wholly inside one of them is already here (a small file's first read
    /// holds most of it).
    pub(crate) image: Arc<Vec<u8>>,
    pub(crate) held: Vec<Range<u64>>,
}

impl Remote {
    /// The bytes of `r` if they were read with the metadata.
    pub(crate) fn held(&self, r: &Range<u64>) -> Option<&[u8]> {
        let i = self.held.partition_point(|h| h.end < r.end);
        let h = self.held.get(i)?;
        (h.start <= r.start && r.end <= h.end)
            .then(|| &self.image[r.start as usize..r.end as usize])
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("size", &self.src.size())
            .field("layout", &self.layout)
            .finish()
    }
}

/// Where the compressed chunks come from.
struct Source<'a> {
    /// The file, for positioned reads at the chunk addresses.
    file: Option<&'a File>,
    /// Set when the chunks are read through HDF5 instead ([`Direct`]).
    direct: Option<&'a Direct>,
    /// Set when the chunks are read by ranges instead.
    remote: Option<&'a Remote>,
}

/// What HDF5 told us about the variable.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Variable shape `(t, y, x)`.
    shape: [usize; 3],
    /// Chunk shape `(t, y, x)`.
    chunk: [usize; 3],
    /// Number of chunks along each axis.
    grid: [usize; 3],
    /// Pipeline position of the shuffle filter, if any.
    shuffle_pos: Option<u32>,
    /// Pipeline position of the deflate filter.
    deflate_pos: u32,
    big_endian: bool,
    /// Chunk index, by linear chunk-grid position. When the chunks are read through
    /// [`Direct`], only `size` is known (`addr` is [`ADDR_UNDEF`], `mask` comes with the bytes).
    chunks: Vec<Option<ChunkLoc>>,
}

impl Layout {
    /// Reads the layout, with the open dataset when its chunks are to be read through HDF5
    /// ([`Direct`]); `None` when not eligible. Must run under the HDF5 lock.
    fn probe(path: &Path, req: &BlockRequest<'_>) -> Option<(Layout, Option<Direct>)> {
        let file = hdf5::File::open(path).ok()?;
        let ds = file.dataset(req.var).ok()?;
        if ds.shape() != req.shape || !ds.is_chunked() {
            return None;
        }
        let dtype = ds.dtype().ok()?;
        let is_f32 = matches!(
            dtype.to_descriptor().ok()?,
            hdf5::types::TypeDescriptor::Float(hdf5::types::FloatSize::U4)
        );
        let big_endian = match dtype.byte_order() {
            hdf5::datatype::ByteOrder::LittleEndian => false,
            hdf5::datatype::ByteOrder::BigEndian => true,
            _ => return None,
        };
        if !is_f32 || dtype.size() != 4 {
            return None;
        }
        let (shuffle_pos, deflate_pos) = match ds.filters().as_slice() {
            [Filter::Shuffle, Filter::Deflate(_)] => (Some(0), 1),
            [Filter::Deflate(_)] => (None, 0),
            _ => return None,
        };
        let chunk: [usize; 3] = ds.chunk()?.try_into().ok()?;
        if chunk.contains(&0) {
            return None;
        }
        let grid = [0, 1, 2].map(|d| req.shape[d].div_ceil(chunk[d]));
        let total = grid.iter().product::<usize>();
        let mut chunks = vec![None; total];
        let n = ds.num_chunks()?;
        let direct = n > INDEX_MAX_CHUNKS || force_direct();
        if direct {
            for (pos, slot) in chunks.iter_mut().enumerate() {
                let offset = chunk_offset(pos, &grid, &chunk).map(|o| o as hdf5_sys::h5::hsize_t);
                let mut size = 0;
                // SAFETY: `ds` is an open dataset of rank 3 (its shape matched `req.shape`),
                // `offset` holds 3 coordinates, `size` is a valid out-pointer; lock held.
                let rc = unsafe { H5Dget_chunk_storage_size(ds.id(), offset.as_ptr(), &mut size) };
                // HDF5 1.10 fails (rather than answering 0) for a chunk without storage.
                if rc >= 0 && size > 0 {
                    *slot = Some(ChunkLoc {
                        addr: ADDR_UNDEF,
                        size,
                        mask: 0,
                    });
                }
            }
        } else {
            for i in 0..n {
                let info = ds.chunk_info(i)?;
                if info.addr == ADDR_UNDEF {
                    continue;
                }
                let off: [usize; 3] =
                    [0, 1, 2].map(|d| info.offset.get(d).map_or(usize::MAX, |&o| o as usize));
                if (0..3).any(|d| !off[d].is_multiple_of(chunk[d]) || off[d] >= req.shape[d]) {
                    return None;
                }
                let pos = ((off[0] / chunk[0]) * grid[1] + off[1] / chunk[1]) * grid[2]
                    + off[2] / chunk[2];
                chunks[pos] = Some(ChunkLoc {
                    addr: info.addr,
                    size: info.size,
                    mask: info.filter_mask,
                });
            }
        }
        let layout = Layout {
            shape: req.shape,
            chunk,
            grid,
            shuffle_pos,
            deflate_pos,
            big_endian,
            chunks,
        };
        // Without `Direct`, `ds` and `file` close here, still under the lock.
        Some((layout, direct.then_some(Direct { ds, _file: file })))
    }

    /// The layout of a variable whose chunk index was read by [`h5index`]; `Err` says why
    /// the fast path cannot decode it.
    pub(crate) fn from_index(ix: &ChunkedVar) -> Result<Layout, String> {
        let dims = |v: &[u64], what: &str| -> Result<[usize; 3], String> {
            let d: Vec<usize> = v.iter().map(|&x| x as usize).collect();
            d.try_into()
                .map_err(|_| format!("{what} has {} dimensions, not 3", v.len()))
        };
        let shape = dims(&ix.shape, "the variable")?;
        let chunk = dims(&ix.chunk, "a chunk")?;
        if chunk.contains(&0) {
            return Err("a chunk dimension is 0".into());
        }
        let big_endian = match ix.elem {
            ElemType::Float {
                size: 4,
                big_endian,
            } => big_endian,
            other => return Err(format!("values are not 4-byte floats ({other:?})")),
        };
        let (shuffle_pos, deflate_pos) = match ix.filters.as_slice() {
            [2, 1] => (Some(0), 1),
            [1] => (None, 0),
            f => {
                return Err(format!(
                    "filters {f:?} (the fast path needs shuffle + deflate or deflate)"
                ));
            }
        };
        let grid = [0, 1, 2].map(|d| shape[d].div_ceil(chunk[d]));
        let mut chunks = vec![None; grid.iter().product()];
        for c in &ix.chunks {
            let off = dims(&c.offset, "a chunk offset")?;
            if (0..3).any(|d| !off[d].is_multiple_of(chunk[d]) || off[d] >= shape[d]) {
                return Err(format!("a chunk at {off:?} lies off the chunk grid"));
            }
            let pos =
                ((off[0] / chunk[0]) * grid[1] + off[1] / chunk[1]) * grid[2] + off[2] / chunk[2];
            chunks[pos] = Some(ChunkLoc {
                addr: c.addr,
                size: c.size,
                mask: c.mask,
            });
        }
        if chunks.iter().any(Option::is_none) {
            return Err("a chunk has no storage (never written)".into());
        }
        Ok(Layout {
            shape,
            chunk,
            grid,
            shuffle_pos,
            deflate_pos,
            big_endian,
            chunks,
        })
    }

    fn chunk_elems(&self) -> usize {
        self.chunk.iter().product()
    }
}

/// The first element of the chunk at linear chunk-grid position `pos`.
fn chunk_offset(pos: usize, grid: &[usize; 3], chunk: &[usize; 3]) -> [usize; 3] {
    let c = [
        pos / (grid[1] * grid[2]),
        pos / grid[2] % grid[1],
        pos % grid[2],
    ];
    [0, 1, 2].map(|d| c[d] * chunk[d])
}

#[cfg(test)]
thread_local! {
    /// Tests: read every chunk through [`Direct`], whatever the number of chunks.
    pub(crate) static FORCE_DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn force_direct() -> bool {
    #[cfg(test)]
    return FORCE_DIRECT.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

/// A maximal run of output cells whose values sit next to each other in one spatial chunk.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// First output row (index into `req.cells`).
    cell: usize,
    len: usize,
    /// Index into [`Plan::spatial`].
    spatial: usize,
    /// Element offset of the first cell inside one time plane of the chunk.
    off: usize,
    /// Position of the first cell among the listed cells of its spatial chunk (in list order):
    /// its column in a compact `steps × cells of that chunk` buffer.
    cpos: usize,
}

/// The selected time steps of one chunk row along time.
#[derive(Debug)]
struct TimeChunk {
    /// Chunk index along time.
    tc: usize,
    /// `(time index within the chunk, output slot)`.
    steps: Vec<(usize, usize)>,
}

/// Which chunks to read and which time steps go where; no HDF5 involved.
#[derive(Debug)]
struct Plan {
    /// Spatial chunk positions (`yc * grid_x + xc`) holding requested cells, ascending.
    spatial: Vec<usize>,
    time_chunks: Vec<TimeChunk>,
    /// Output slots no step writes (NaN).
    uncovered: Vec<usize>,
    /// Length of the longitude axis.
    nx: usize,
}

impl Plan {
    fn new(req: &BlockRequest<'_>, layout: &Layout) -> Plan {
        let nx = req.shape[2];
        let mut spatial: Vec<usize> = req
            .cells
            .iter()
            .map(|&g| spatial_pos(g, nx, layout).0)
            .collect();
        spatial.sort_unstable();
        spatial.dedup();
        let ct = layout.chunk[0];
        let mut time_chunks: Vec<TimeChunk> = Vec::new();
        let mut covered = vec![false; req.days];
        for st in req.steps {
            let tc = st.time_index / ct;
            let ti = st.time_index % ct;
            covered[st.slot] = true;
            match time_chunks.last_mut() {
                Some(t) if t.tc == tc => t.steps.push((ti, st.slot)),
                _ => time_chunks.push(TimeChunk {
                    tc,
                    steps: vec![(ti, st.slot)],
                }),
            }
        }
        let uncovered = (0..req.days).filter(|&d| !covered[d]).collect();
        Plan {
            spatial,
            time_chunks,
            uncovered,
            nx,
        }
    }

    /// The runs of `cells` (a subset of the requested cells, in any order): run `cell` fields
    /// index into `cells`.
    fn runs(&self, cells: &[usize], layout: &Layout) -> Vec<Run> {
        self.runs_counted(cells, layout).0
    }

    /// [`Plan::runs`], and how many of `cells` lie in each spatial chunk.
    fn runs_counted(&self, cells: &[usize], layout: &Layout) -> (Vec<Run>, Vec<usize>) {
        let mut runs: Vec<Run> = Vec::new();
        let mut count = vec![0_usize; self.spatial.len()];
        for (i, &g) in cells.iter().enumerate() {
            let (sp, off) = spatial_pos(g, self.nx, layout);
            let s = if self.spatial.len() == 1 {
                0
            } else {
                self.spatial.binary_search(&sp).expect("a requested cell")
            };
            match runs.last_mut() {
                Some(r) if r.spatial == s && r.off + r.len == off && r.cell + r.len == i => {
                    r.len += 1
                }
                _ => runs.push(Run {
                    cell: i,
                    len: 1,
                    spatial: s,
                    off,
                    cpos: count[s],
                }),
            }
            count[s] += 1;
        }
        (runs, count)
    }

    fn chunk_pos(&self, layout: &Layout, tc: usize, spatial: usize) -> usize {
        tc * layout.grid[1] * layout.grid[2] + self.spatial[spatial]
    }

    fn chunks_present(&self, layout: &Layout) -> bool {
        self.time_chunks.iter().all(|t| {
            (0..self.spatial.len())
                .all(|s| layout.chunks[self.chunk_pos(layout, t.tc, s)].is_some())
        })
    }
}

/// Spatial chunk position of flat grid cell `g` and its element offset inside one time plane of
/// that chunk.
#[inline]
fn spatial_pos(g: usize, nx: usize, layout: &Layout) -> (usize, usize) {
    let [_, cy, cx] = layout.chunk;
    let (y, x) = (g / nx, g % nx);
    ((y / cy) * layout.grid[2] + x / cx, (y % cy) * cx + x % cx)
}

/// The output being written: rows, their cells, and where their values come from.
struct Output<'v> {
    /// `cells.len() × days`, cell-major.
    values: &'v mut Vec<f32>,
    /// Grid cell of each row: the first `main` ascending, then (in [`Rows::Valid`] mode) cells
    /// found valid only in a later batch, in the order they were found.
    cells: &'v mut Vec<usize>,
    main: usize,
    /// [`Plan::runs`] of `cells`.
    runs: Vec<Run>,
    /// `runs` grouped by spatial chunk index.
    by_spatial: Vec<Vec<Run>>,
    /// Number of rows in each spatial chunk.
    sp_rows: Vec<usize>,
    /// Whether a batch has been written (rows added later must be NaN on earlier slots).
    started: bool,
}

impl Output<'_> {
    /// Appends rows for `new` (ascending, not yet present). The first rows added become the
    /// ascending main block, reusing `values`' allocation; later ones are appended, all NaN.
    fn add_rows(&mut self, new: &[usize], days: usize, plan: &Plan, layout: &Layout) {
        if new.is_empty() {
            return;
        }
        if self.cells.is_empty() {
            self.cells.extend_from_slice(new);
            self.main = new.len();
            prepare(self.values, new.len() * days);
            if self.started {
                self.values
                    .par_chunks_mut(days)
                    .for_each(|row| row.fill(f32::NAN));
            } else if !plan.uncovered.is_empty() {
                self.values.par_chunks_mut(days).for_each(|row| {
                    for &d in &plan.uncovered {
                        row[d] = f32::NAN;
                    }
                });
            }
        } else {
            let len = self.values.len() + new.len() * days;
            self.values.reserve_exact(new.len() * days);
            self.values.resize(len, f32::NAN);
            self.cells.extend_from_slice(new);
        }
        let (runs, count) = plan.runs_counted(self.cells, layout);
        self.by_spatial = vec![Vec::new(); plan.spatial.len()];
        for run in &runs {
            self.by_spatial[run.spatial].push(*run);
        }
        self.runs = runs;
        self.sp_rows = count;
    }

    /// Merges the rows appended after the main block into it, so that all rows are ascending.
    /// Needs memory for those rows once more; nothing happens when there are none.
    fn finish(&mut self, days: usize) {
        let (m, e) = (self.main, self.cells.len() - self.main);
        if e == 0 {
            return;
        }
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_unstable_by_key(|&j| self.cells[m + j]);
        let late: Vec<usize> = order.iter().map(|&j| self.cells[m + j]).collect();
        let mut rows: Vec<f32> = Vec::with_capacity(e * days);
        for &j in &order {
            rows.extend_from_slice(&self.values[(m + j) * days..][..days]);
        }
        // Backward merge: the destination row `k` is never below the main row it takes.
        let (mut i, mut j, mut k) = (m, e, m + e);
        while j > 0 {
            k -= 1;
            if i > 0 && self.cells[i - 1] > late[j - 1] {
                i -= 1;
                self.values.copy_within(i * days..(i + 1) * days, k * days);
                self.cells[k] = self.cells[i];
            } else {
                j -= 1;
                self.values[k * days..(k + 1) * days]
                    .copy_from_slice(&rows[j * days..(j + 1) * days]);
                self.cells[k] = late[j];
            }
        }
        self.main = self.cells.len();
    }
}

/// Makes `values` `len` long, reusing its allocation when it is large enough (the contents are
/// overwritten by the caller); otherwise a fresh zeroed allocation (untouched pages).
fn prepare(values: &mut Vec<f32>, len: usize) {
    if values.capacity() >= len {
        if values.len() >= len {
            values.truncate(len);
        } else {
            values.resize(len, 0.0);
        }
    } else {
        // Free the old buffer first: peak memory stays one output.
        *values = Vec::new();
        *values = vec![0.0; len];
        advise_huge_pages(values);
    }
}

/// Requested cells not (yet) known to hold a valid value ([`Rows::Valid`] mode).
struct Candidates {
    /// Ascending grid cells.
    cells: Vec<usize>,
    /// [`Plan::runs`] of `cells`, grouped by spatial chunk index.
    by_spatial: Vec<Vec<Run>>,
}

impl Candidates {
    fn new(cells: Vec<usize>, plan: &Plan, layout: &Layout) -> Candidates {
        let mut c = Candidates {
            cells,
            by_spatial: Vec::new(),
        };
        c.index(plan, layout);
        c
    }

    fn index(&mut self, plan: &Plan, layout: &Layout) {
        self.by_spatial = vec![Vec::new(); plan.spatial.len()];
        for run in plan.runs(&self.cells, layout) {
            self.by_spatial[run.spatial].push(run);
        }
    }

    /// Removes the candidates covered by `found` (ranges of indices into `cells`) and returns
    /// them, ascending, with the index into them of each former candidate (`usize::MAX` for
    /// those not taken).
    fn take<'a>(
        &mut self,
        found: impl Iterator<Item = &'a [(usize, usize)]> + Clone,
        plan: &Plan,
        layout: &Layout,
    ) -> (Vec<usize>, Vec<usize>) {
        if found.clone().all(<[_]>::is_empty) {
            return (Vec::new(), Vec::new());
        }
        let mut rank = vec![usize::MAX; self.cells.len()];
        for &(start, len) in found.flatten() {
            rank[start..start + len].fill(0);
        }
        let mut new = Vec::new();
        let mut k = 0;
        self.cells.retain(|&g| {
            let hit = rank[k] == 0;
            if hit {
                rank[k] = new.len();
                new.push(g);
            }
            k += 1;
            !hit
        });
        self.index(plan, layout);
        (new, rank)
    }
}

/// One step of a batch as the transpose sees it.
#[derive(Debug, Clone, Copy)]
struct BatchStep {
    /// Index into the batch's time chunks.
    k: usize,
    /// Index of the step among its time chunk's steps: its row in the [`JobBuf`] buffers.
    local: usize,
    slot: usize,
}

/// One decompressed chunk.
#[derive(Debug, Default)]
struct ChunkBuf {
    bytes: Vec<u8>,
    shuffled: bool,
}

/// What the inflate task of one chunk of a batch (time chunk `k`, spatial chunk `s`) leaves for
/// the transpose: compact, converted values, so that the transpose never reads the (much larger,
/// shuffled) decompressed chunk.
#[derive(Debug, Default)]
struct JobBuf {
    /// Clean values of the output rows of spatial chunk `s` on the steps of `k`:
    /// `steps × rows of s`, step-major, rows in output order (column = [`Run::cpos`]).
    vals: Vec<f32>,
    /// Candidate index ranges found valid in this chunk ([`Rows::Valid`]): sorted, disjoint.
    found: Vec<(usize, usize)>,
    /// Clean values of the `found` cells: `steps × found cells`, step-major.
    fvals: Vec<f32>,
    /// The next `vals` while rows are being added.
    spare: Vec<f32>,
    /// The chunk's stored bytes and filter mask, when read through [`Direct`].
    raw: Vec<u8>,
    raw_mask: u32,
}

thread_local! {
    /// Per-worker inflater and compressed-bytes buffer, reused across chunks and calls.
    static INFLATE: RefCell<(Decompressor, Vec<u8>)> = RefCell::new((Decompressor::new(), Vec::new()));
    /// Per-worker buffer a chunk is inflated into; converted right away, while in cache.
    static CHUNK: RefCell<ChunkBuf> = RefCell::new(ChunkBuf::default());
}

/// Idle batch buffer sets kept for the next decode.
const POOL_IDLE: usize = 2;

/// Batch buffers of finished decodes: a process decoding file after file reuses memory that is
/// already faulted in instead of allocating (and zero-filling) a new batch each time.
static POOL: Mutex<Vec<Vec<JobBuf>>> = Mutex::new(Vec::new());

/// One decode's batch buffers, taken from [`POOL`] and given back on drop.
struct BatchBufs(Vec<JobBuf>);

impl BatchBufs {
    fn take() -> BatchBufs {
        let bufs = POOL.lock().ok().and_then(|mut p| p.pop());
        BatchBufs(bufs.unwrap_or_default())
    }
}

impl Drop for BatchBufs {
    fn drop(&mut self) {
        let bufs = std::mem::take(&mut self.0);
        if let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_IDLE
        {
            pool.push(bufs);
        }
    }
}

/// One chunk of a batch to read.
#[derive(Debug, Clone, Copy)]
struct Job {
    loc: ChunkLoc,
    /// First time index of the chunk (for error messages).
    t0: usize,
    /// Index into the batch's time chunks.
    k: usize,
    /// Spatial chunk index.
    spatial: usize,
    /// Linear chunk-grid position.
    pos: usize,
}

fn decode_into(
    src: &Source<'_>,
    path: &Path,
    req: &BlockRequest<'_>,
    layout: &Layout,
    plan: &Plan,
    rows: Rows,
    out: &mut Output<'_>,
) -> Result<(), DecodeError> {
    let days = req.days;
    let mut candidates = match rows {
        Rows::Requested => {
            out.add_rows(req.cells, days, plan, layout);
            None
        }
        Rows::Valid => Some(Candidates::new(req.cells.to_vec(), plan, layout)),
    };
    if days == 0 || req.cells.is_empty() {
        return Ok(());
    }
    let chunk_bytes = layout.chunk_elems() * 4;
    let nsp = plan.spatial.len();
    let row_bytes = chunk_bytes * nsp;
    let kernel = Kernel::new(req.values);

    if let Some(remote) = src.remote {
        // Every chunk of the decode not read with the metadata, in the order the batches
        // below take them.
        let order: Vec<std::ops::Range<u64>> = plan
            .time_chunks
            .iter()
            .flat_map(|t| (0..nsp).map(move |s| plan.chunk_pos(layout, t.tc, s)))
            .map(|pos| {
                let loc = layout.chunks[pos].expect("checked");
                loc.addr..loc.addr + loc.size
            })
            .filter(|r| remote.held(r).is_none())
            .collect();
        remote.src.prefetch(&order);
    }
    let mut bufs = BatchBufs::take();
    let mut jobs: Vec<Job> = Vec::new();
    let mut steps: Vec<BatchStep> = Vec::new();
    let mut tcs = plan.time_chunks.as_slice();
    while !tcs.is_empty() {
        // Take time chunks while the batch stays within budget (at least one).
        let mut take = 0;
        let mut nsteps = 0;
        while take < tcs.len() {
            let more = tcs[take].steps.len();
            if take > 0 && ((take + 1) * row_bytes > BATCH_BYTES || nsteps + more > MAX_BATCH_STEPS)
            {
                break;
            }
            take += 1;
            nsteps += more;
        }
        let (batch, rest) = tcs.split_at(take);
        tcs = rest;

        jobs.clear();
        steps.clear();
        for (k, t) in batch.iter().enumerate() {
            for s in 0..nsp {
                let pos = plan.chunk_pos(layout, t.tc, s);
                let loc = layout.chunks[pos].expect("checked");
                jobs.push(Job {
                    loc,
                    t0: t.tc * layout.chunk[0],
                    k,
                    spatial: s,
                    pos,
                });
            }
            for (local, &(_, slot)) in t.steps.iter().enumerate() {
                steps.push(BatchStep { k, local, slot });
            }
        }
        let bufs = &mut bufs.0;
        if bufs.len() < jobs.len() {
            bufs.resize_with(jobs.len(), JobBuf::default);
        }
        let bufs = &mut bufs[..jobs.len()];
        let corrupt = |job: &Job, detail: String| DecodeError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "variable `{}`, chunk at time index {}: {detail}",
                req.var, job.t0
            ),
        };
        if let Some(direct) = src.direct {
            // The batch's stored chunks through HDF5, one after the other under its lock.
            hdf5::sync::sync(|| {
                bufs.iter_mut().zip(&jobs).try_for_each(|(jb, job)| {
                    let offset = chunk_offset(job.pos, &layout.grid, &layout.chunk);
                    jb.raw_mask = direct
                        .read(offset, job.loc.size, &mut jb.raw)
                        .map_err(|e| corrupt(job, e))?;
                    Ok::<(), DecodeError>(())
                })
            })?;
        }
        if let Some(remote) = src.remote {
            // The batch's chunks as they arrive (later ones are still being fetched meanwhile).
            for (jb, job) in bufs.iter_mut().zip(&jobs) {
                let r = job.loc.addr..job.loc.addr + job.loc.size;
                if let Some(held) = remote.held(&r) {
                    jb.raw.clear();
                    jb.raw.extend_from_slice(held);
                } else {
                    jb.raw = remote.src.take(r).map_err(|source| DecodeError::Fetch {
                        path: path.to_path_buf(),
                        what: format!("a chunk of `{}` at time index {}", req.var, job.t0),
                        source,
                    })?;
                }
                jb.raw_mask = job.loc.mask;
            }
        }
        let (file, direct_mode) = (src.file, src.direct.is_some() || src.remote.is_some());
        // Inflate each chunk into a per-worker buffer and, while it is still in cache, convert
        // the known rows' values into the job's compact buffer; in `Rows::Valid` mode also look
        // for valid values among the candidates and convert those found.
        let (by_spatial, sp_rows) = (&out.by_spatial, &out.sp_rows);
        bufs.par_iter_mut()
            .zip(jobs.par_iter())
            .try_for_each(|(jb, job)| {
                CHUNK.with(|cell| {
                    let buf = &mut *cell.borrow_mut();
                    let stored = direct_mode.then_some((jb.raw.as_slice(), jb.raw_mask));
                    read_chunk(file, layout, job.loc, stored, chunk_bytes, buf)
                        .map_err(|detail| corrupt(job, detail))?;
                    let tsteps = &batch[job.k].steps;
                    let w = sp_rows[job.spatial];
                    jb.vals.resize(tsteps.len() * w, 0.0);
                    let runs = &by_spatial[job.spatial];
                    convert_runs(&kernel, buf, layout, tsteps, runs, w, &mut jb.vals);
                    jb.found.clear();
                    jb.fvals.clear();
                    if let Some(c) = &candidates {
                        let cand = &c.by_spatial[job.spatial];
                        scan_valid(&kernel, buf, layout, tsteps, cand, &mut jb.found);
                        if !jb.found.is_empty() {
                            normalize_ranges(&mut jb.found);
                            let fruns = found_runs(&jb.found, cand);
                            let nf = jb.found.iter().map(|r| r.1).sum::<usize>();
                            jb.fvals.resize(tsteps.len() * nf, 0.0);
                            convert_runs(&kernel, buf, layout, tsteps, &fruns, nf, &mut jb.fvals);
                        }
                    }
                    Ok::<(), DecodeError>(())
                })
            })?;
        if let Some(c) = &mut candidates {
            let (new, rank) = c.take(bufs.iter().map(|b| b.found.as_slice()), plan, layout);
            if !new.is_empty() {
                tracing::trace!(cells = new.len(), "cells with data");
                let old_rows = out.cells.len();
                let old_sp = out.sp_rows.clone();
                out.add_rows(&new, days, plan, layout);
                add_found(bufs, &jobs, batch, out, old_rows, &old_sp, &rank);
            }
        }
        if !out.cells.is_empty() {
            transpose_batch(bufs, nsp, &steps, &out.runs, &out.sp_rows, days, out.values);
        }
        out.started = true;
    }
    out.finish(days);
    Ok(())
}

/// Converts the cells of `runs` on `steps` (time index in chunk, slot) of one decompressed
/// chunk into `dst[step * stride + run.cpos ..]`.
fn convert_runs(
    kernel: &Kernel,
    buf: &ChunkBuf,
    layout: &Layout,
    steps: &[(usize, usize)],
    runs: &[Run],
    stride: usize,
    dst: &mut [f32],
) {
    let plane_len = layout.chunk_elems();
    let plane = layout.chunk[1] * layout.chunk[2];
    for (local, &(ti, _)) in steps.iter().enumerate() {
        let row = &mut dst[local * stride..][..stride];
        for run in runs {
            let d = &mut row[run.cpos..][..run.len];
            kernel.decode(buf, plane_len, ti * plane + run.off, d, layout.big_endian);
        }
    }
}

/// Sorts ranges `(start, len)` and merges overlapping or touching ones.
fn normalize_ranges(r: &mut Vec<(usize, usize)>) {
    r.sort_unstable();
    let mut w = 0;
    for i in 0..r.len() {
        let (s, l) = r[i];
        if w > 0 && r[w - 1].0 + r[w - 1].1 >= s {
            let e = (r[w - 1].0 + r[w - 1].1).max(s + l);
            r[w - 1].1 = e - r[w - 1].0;
        } else {
            r[w] = (s, l);
            w += 1;
        }
    }
    r.truncate(w);
}

/// The parts of the candidate `runs` (one spatial chunk's, sorted) covered by `found` (sorted,
/// disjoint candidate index ranges), with `cpos` = position among the found cells.
fn found_runs(found: &[(usize, usize)], runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut p = 0;
    let mut j = 0;
    for &(start, len) in found {
        let end = start + len;
        while j < runs.len() && runs[j].cell + runs[j].len <= start {
            j += 1;
        }
        let mut i = j;
        while i < runs.len() && runs[i].cell < end {
            let r = runs[i];
            let a = r.cell.max(start);
            let b = (r.cell + r.len).min(end);
            if a < b {
                out.push(Run {
                    cell: a,
                    len: b - a,
                    spatial: r.spatial,
                    off: r.off + (a - r.cell),
                    cpos: p,
                });
                p += b - a;
            }
            i += 1;
        }
    }
    out
}

/// After `out.add_rows` of newly found cells: widens every job's compact buffer to the new rows
/// of its spatial chunk, with the values the job converted for the cells it found and NaN for the
/// others (a candidate not found by a job has no valid value on that job's steps).
fn add_found(
    bufs: &mut [JobBuf],
    jobs: &[Job],
    batch: &[TimeChunk],
    out: &Output<'_>,
    old_rows: usize,
    old_sp: &[usize],
    rank: &[usize],
) {
    // Column of each new row in its spatial chunk's compact buffer.
    let mut new_col = vec![0_usize; out.cells.len() - old_rows];
    let first = out.runs.partition_point(|r| r.cell + r.len <= old_rows);
    for run in &out.runs[first..] {
        for r in run.cell.max(old_rows)..run.cell + run.len {
            new_col[r - old_rows] = run.cpos + (r - run.cell);
        }
    }
    bufs.par_iter_mut()
        .zip(jobs.par_iter())
        .for_each(|(jb, job)| {
            let ns = batch[job.k].steps.len();
            let (o, w) = (old_sp[job.spatial], out.sp_rows[job.spatial]);
            if o == w {
                return;
            }
            jb.spare.clear();
            jb.spare.resize(ns * w, f32::NAN);
            for l in 0..ns {
                jb.spare[l * w..][..o].copy_from_slice(&jb.vals[l * o..][..o]);
            }
            let nf = jb.found.iter().map(|r| r.1).sum::<usize>();
            let mut p = 0;
            for &(start, len) in &jb.found {
                for c in start..start + len {
                    let col = new_col[rank[c]];
                    for l in 0..ns {
                        jb.spare[l * w + col] = jb.fvals[l * nf + p];
                    }
                    p += 1;
                }
            }
            std::mem::swap(&mut jb.vals, &mut jb.spare);
        });
}

/// Looks for valid values (not NaN after `kernel`) of the candidate `runs` on the `steps` (time
/// index in chunk, slot) of one decompressed chunk; appends the ranges of candidate indices that
/// have one to `found`.
fn scan_valid(
    kernel: &Kernel,
    buf: &ChunkBuf,
    layout: &Layout,
    steps: &[(usize, usize)],
    runs: &[Run],
    found: &mut Vec<(usize, usize)>,
) {
    const N: usize = 256;
    let plane_len = layout.chunk_elems();
    let plane = layout.chunk[1] * layout.chunk[2];
    // Stored bytes of the fill value, one per shuffle plane: a block of exactly these is
    // missing without decoding it (anything else goes through `kernel`).
    let fill_bytes = match kernel {
        Kernel::Fill(f) if buf.shuffled && !layout.big_endian => Some(f.to_bits().to_le_bytes()),
        _ => None,
    };
    let mut tmp = [0.0_f32; N];
    for run in runs {
        for &(ti, _) in steps {
            let e0 = ti * plane + run.off;
            let mut i = 0;
            while i < run.len {
                if let Some(fb) = fill_bytes {
                    i += fill_prefix(&buf.bytes, plane_len, e0 + i, run.len - i, fb);
                    if i == run.len {
                        break;
                    }
                }
                let n = (run.len - i).min(if fill_bytes.is_some() { 64 } else { N });
                let t = &mut tmp[..n];
                kernel.decode(buf, plane_len, e0 + i, t, layout.big_endian);
                // Branch-free "any valid" over the block (the common case: none).
                if t.iter().fold(false, |any, v| any | !v.is_nan()) {
                    let mut k = 0;
                    while k < n {
                        if t[k].is_nan() {
                            k += 1;
                            continue;
                        }
                        let s = k;
                        while k < n && !t[k].is_nan() {
                            k += 1;
                        }
                        let start = run.cell + i + s;
                        match found.last_mut() {
                            Some(last) if last.0 + last.1 == start => last.1 += k - s,
                            _ => found.push((start, k - s)),
                        }
                    }
                }
                i += n;
            }
        }
    }
}

/// How many leading elements (a multiple of 16, at most `n`) starting at element `e0` of a
/// shuffled chunk have exactly the stored bytes `fb` (one per plane). SSE2: four 16-byte
/// compares per 16 elements.
#[cfg(target_arch = "x86_64")]
#[inline]
fn fill_prefix(bytes: &[u8], plane_len: usize, e0: usize, n: usize, fb: [u8; 4]) -> usize {
    use core::arch::x86_64::*;
    let n16 = n / 16 * 16;
    let planes = [0, 1, 2, 3].map(|k| &bytes[k * plane_len + e0..k * plane_len + e0 + n16]);
    let mut i = 0;
    // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16 bytes at `i + 16 <= n16`
    // of a plane slice of length `n16`, unaligned.
    unsafe {
        let f = fb.map(|b| _mm_set1_epi8(b as i8));
        while i < n16 {
            let eq =
                |k: usize| _mm_cmpeq_epi8(_mm_loadu_si128(planes[k].as_ptr().add(i).cast()), f[k]);
            let all = _mm_and_si128(_mm_and_si128(eq(0), eq(1)), _mm_and_si128(eq(2), eq(3)));
            if _mm_movemask_epi8(all) != 0xFFFF {
                break;
            }
            i += 16;
        }
    }
    i
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn fill_prefix(_: &[u8], _: usize, _: usize, _: usize, _: [u8; 4]) -> usize {
    0
}

/// Reads (from the file at `loc`, or takes the `stored` bytes and filter mask already read
/// through [`Direct`]), inflates (unless the chunk skipped deflate) and checks one chunk into
/// `buf`.
fn read_chunk(
    file: Option<&File>,
    layout: &Layout,
    loc: ChunkLoc,
    stored: Option<(&[u8], u32)>,
    chunk_bytes: usize,
    buf: &mut ChunkBuf,
) -> Result<(), String> {
    let mask = stored.map_or(loc.mask, |s| s.1);
    let skipped = |pos: u32| pos < 32 && mask & (1 << pos) != 0;
    buf.shuffled = layout.shuffle_pos.is_some_and(|p| !skipped(p));
    let deflated = !skipped(layout.deflate_pos);
    buf.bytes.resize(chunk_bytes, 0);
    let size = usize::try_from(loc.size).map_err(|_| "chunk size overflows".to_string())?;
    let short = |e: io::Error| {
        format!(
            "cannot read {size} bytes at offset {} (truncated file?): {e}",
            loc.addr
        )
    };
    if !deflated {
        if size != chunk_bytes {
            return Err(format!(
                "stored uncompressed chunk has {size} bytes, expected {chunk_bytes}"
            ));
        }
        return match stored {
            Some((raw, _)) => {
                buf.bytes.copy_from_slice(raw);
                Ok(())
            }
            None => file
                .expect("a file without stored bytes")
                .read_exact_at(&mut buf.bytes, loc.addr)
                .map_err(short),
        };
    }
    INFLATE.with(|cell| {
        let (inflater, compressed) = &mut *cell.borrow_mut();
        let compressed: &[u8] = match stored {
            Some((raw, _)) => raw,
            None => {
                compressed.resize(size, 0);
                file.expect("a file without stored bytes")
                    .read_exact_at(compressed, loc.addr)
                    .map_err(short)?;
                compressed
            }
        };
        match inflater.zlib_decompress(compressed, &mut buf.bytes) {
            Ok(n) if n == chunk_bytes => Ok(()),
            Ok(n) => Err(format!(
                "chunk inflates to {n} bytes, expected {chunk_bytes}"
            )),
            Err(DecompressionError::InsufficientSpace) => {
                Err(format!("chunk inflates to more than {chunk_bytes} bytes"))
            }
            Err(DecompressionError::BadData) => Err(match stored {
                Some(_) => format!("chunk of {size} bytes does not inflate"),
                None => format!(
                    "chunk of {size} bytes at offset {} does not inflate",
                    loc.addr
                ),
            }),
        }
    })
}

/// Scatters one batch of compact converted values ([`JobBuf::vals`]) into the cell-major output,
/// in parallel over tiles of output rows; `runs` say where each row's values are.
fn transpose_batch(
    bufs: &[JobBuf],
    nsp: usize,
    steps: &[BatchStep],
    runs: &[Run],
    sp_rows: &[usize],
    days: usize,
    out: &mut [f32],
) {
    let nsteps = steps.len();
    out.par_chunks_mut(TILE_CELLS * days)
        .enumerate()
        .for_each_init(
            || vec![0.0_f32; TILE_CELLS * MAX_BATCH_STEPS.max(nsteps)],
            |tmp, (tile, rows)| {
                let c0 = tile * TILE_CELLS;
                let c1 = c0 + rows.len() / days;
                let first = runs.partition_point(|r| r.cell + r.len <= c0);
                for run in &runs[first..] {
                    if run.cell >= c1 {
                        break;
                    }
                    let a = run.cell.max(c0);
                    let b = (run.cell + run.len).min(c1);
                    let col = run.cpos + (a - run.cell);
                    let len = b - a;
                    let w = sp_rows[run.spatial];
                    for (s, st) in steps.iter().enumerate() {
                        let src = &bufs[st.k * nsp + run.spatial].vals[st.local * w + col..][..len];
                        tmp[s * TILE_CELLS + (a - c0)..][..len].copy_from_slice(src);
                    }
                }
                let n = c1 - c0;
                scatter(&tmp[..nsteps * TILE_CELLS], steps, rows, n, days);
            },
        );
}

/// `rows[i * days + steps[s].slot] = tmp[s * TILE_CELLS + i]`.
///
/// Output rows are `days` floats apart, so every row write misses the cache; the lines of the
/// rows [`PREFETCH_ROWS`] ahead are prefetched to keep many misses in flight.
#[inline]
fn scatter(tmp: &[f32], steps: &[BatchStep], rows: &mut [f32], n: usize, days: usize) {
    let lo = steps.iter().map(|s| s.slot).min().unwrap_or(0);
    let hi = steps.iter().map(|s| s.slot).max().unwrap_or(0);
    let base = rows.as_ptr();
    let prefetch = |i: usize| {
        let row = (i + PREFETCH_ROWS) * days;
        prefetch_line(base.wrapping_add(row + lo));
        prefetch_line(base.wrapping_add(row + (lo + hi) / 2));
        prefetch_line(base.wrapping_add(row + hi));
    };
    let consecutive = steps.windows(2).all(|w| w[1].slot == w[0].slot + 1);
    if consecutive {
        scatter_consecutive(tmp, steps.len(), lo, rows, n, days, prefetch);
    } else {
        for (i, row) in rows.chunks_exact_mut(days).take(n).enumerate() {
            prefetch(i);
            for (s, st) in steps.iter().enumerate() {
                row[st.slot] = tmp[s * TILE_CELLS + i];
            }
        }
    }
}

/// `rows[i * days + lo + s] = tmp[s * TILE_CELLS + i]` for `i < n`, `s < ns` (consecutive
/// slots). On x86-64, blocks of 4 rows × 4 steps are transposed in SSE registers, so each block
/// takes 4 loads and 4 stores of 4 floats instead of 16 scalar loads and stores; the last
/// `ns % 4` steps of a block are scalar while its rows are in cache. The last `n % 4` rows, and
/// every row on other targets, are scalar ([`scatter_row`]).
#[inline]
fn scatter_consecutive(
    tmp: &[f32],
    ns: usize,
    lo: usize,
    rows: &mut [f32],
    n: usize,
    days: usize,
    prefetch: impl Fn(usize),
) {
    #[cfg(target_arch = "x86_64")]
    let done = {
        use core::arch::x86_64::*;
        assert!(n <= TILE_CELLS && ns * TILE_CELLS <= tmp.len());
        assert!(lo + ns <= days && n * days <= rows.len());
        let (n4, s4) = (n / 4 * 4, ns / 4 * 4);
        let src = tmp.as_ptr();
        let mut i = 0;
        while i < n4 {
            for k in 0..4 {
                prefetch(i + k);
            }
            // Taken afresh for each block: the scalar edges below reborrow `rows`.
            let dst = rows.as_mut_ptr();
            // SAFETY: SSE is part of the x86-64 baseline. Loads read `tmp[s * TILE_CELLS + i ..
            // + 4]` with `s < ns` and `i + 4 <= n <= TILE_CELLS`, inside `tmp` (asserted above);
            // stores write `rows[(i + k) * days + lo + s .. + 4]` with `i + k < n` and
            // `lo + s + 4 <= lo + ns <= days`, inside `rows` (asserted above). Unaligned
            // loads/stores are used throughout.
            unsafe {
                let mut s = 0;
                while s < s4 {
                    let r0 = _mm_loadu_ps(src.add(s * TILE_CELLS + i));
                    let r1 = _mm_loadu_ps(src.add((s + 1) * TILE_CELLS + i));
                    let r2 = _mm_loadu_ps(src.add((s + 2) * TILE_CELLS + i));
                    let r3 = _mm_loadu_ps(src.add((s + 3) * TILE_CELLS + i));
                    let t0 = _mm_unpacklo_ps(r0, r1);
                    let t1 = _mm_unpackhi_ps(r0, r1);
                    let t2 = _mm_unpacklo_ps(r2, r3);
                    let t3 = _mm_unpackhi_ps(r2, r3);
                    let d = dst.add(i * days + lo + s);
                    _mm_storeu_ps(d, _mm_movelh_ps(t0, t2));
                    _mm_storeu_ps(d.add(days), _mm_movehl_ps(t2, t0));
                    _mm_storeu_ps(d.add(2 * days), _mm_movelh_ps(t1, t3));
                    _mm_storeu_ps(d.add(3 * days), _mm_movehl_ps(t3, t1));
                    s += 4;
                }
            }
            if s4 < ns {
                for k in i..i + 4 {
                    scatter_row(tmp, &mut rows[k * days + lo..][..ns], k, s4);
                }
            }
            i += 4;
        }
        n4
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for i in done..n {
        prefetch(i);
        scatter_row(tmp, &mut rows[i * days + lo..][..ns], i, 0);
    }
}

/// `row[s] = tmp[s * TILE_CELLS + i]` for `s` in `s0..row.len()`: output row `i`'s steps.
#[inline(always)]
fn scatter_row(tmp: &[f32], row: &mut [f32], i: usize, s0: usize) {
    for (s, d) in row.iter_mut().enumerate().skip(s0) {
        *d = tmp[s * TILE_CELLS + i];
    }
}

/// Hints the CPU to fetch the cache line holding `p` (never faults, whatever the address).
#[inline(always)]
fn prefetch_line(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is only a hint: it reads nothing and cannot fault, so any address,
    // even one outside the buffer, is fine.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Raw → clean conversion, specialised for the common rules.
#[derive(Debug)]
enum Kernel {
    /// No fill/missing value, no scale/offset: NaN stays NaN (canonicalised like `apply`).
    Plain,
    /// One fill value, no scale/offset (the real files: 1e20).
    Fill(f32),
    /// Anything else: `ValueRule::apply`.
    General(ValueRule),
}

impl Kernel {
    fn new(rule: &ValueRule) -> Kernel {
        let mut specials: Vec<f32> = rule
            .fill
            .into_iter()
            .chain(rule.missing.iter().copied())
            .filter(|v| !v.is_nan())
            .collect();
        specials.sort_by(f32::total_cmp);
        specials.dedup_by(|a, b| a == b);
        if rule.scale != 1.0 || rule.offset != 0.0 {
            return Kernel::General(rule.clone());
        }
        match specials.as_slice() {
            [] => Kernel::Plain,
            [f] => Kernel::Fill(*f),
            _ => Kernel::General(rule.clone()),
        }
    }

    /// Decodes `dst.len()` consecutive elements starting at element `e0` of `buf`.
    #[inline]
    fn decode(&self, buf: &ChunkBuf, plane_len: usize, e0: usize, dst: &mut [f32], be: bool) {
        match (self, buf.shuffled, be) {
            (Kernel::Plain, true, false) => {
                let done = unshuffle_simd(&buf.bytes, plane_len, e0, dst, None);
                unshuffle::<false>(&buf.bytes, plane_len, e0 + done, &mut dst[done..], plain)
            }
            (Kernel::Fill(f), true, false) => {
                let f = *f;
                let done = unshuffle_simd(&buf.bytes, plane_len, e0, dst, Some(f));
                unshuffle::<false>(&buf.bytes, plane_len, e0 + done, &mut dst[done..], |v| {
                    fill(v, f)
                })
            }
            (Kernel::Plain, false, false) => interleaved::<false>(&buf.bytes, e0, dst, plain),
            (Kernel::Fill(f), false, false) => {
                let f = *f;
                interleaved::<false>(&buf.bytes, e0, dst, |v| fill(v, f))
            }
            (k, true, false) => unshuffle::<false>(&buf.bytes, plane_len, e0, dst, |v| k.apply(v)),
            (k, false, false) => interleaved::<false>(&buf.bytes, e0, dst, |v| k.apply(v)),
            (k, true, true) => unshuffle::<true>(&buf.bytes, plane_len, e0, dst, |v| k.apply(v)),
            (k, false, true) => interleaved::<true>(&buf.bytes, e0, dst, |v| k.apply(v)),
        }
    }

    #[inline]
    fn apply(&self, v: f32) -> f32 {
        match self {
            Kernel::Plain => plain(v),
            Kernel::Fill(f) => fill(v, *f),
            Kernel::General(rule) => rule.apply(v),
        }
    }
}

#[inline(always)]
fn plain(v: f32) -> f32 {
    if v.is_nan() { f32::NAN } else { v }
}

#[inline(always)]
fn fill(v: f32, f: f32) -> f32 {
    if v.is_nan() || v == f { f32::NAN } else { v }
}

/// [`unshuffle`] of little-endian floats with [`plain`] (`fill == None`) or [`fill`], 16
/// elements at a time with SSE2 (baseline on x86-64): four 16-byte plane loads, two rounds of
/// byte/word interleaving, NaN-or-fill → canonical NaN by mask. Returns how many leading
/// elements of `dst` it wrote (a multiple of 16); the caller finishes the tail.
#[cfg(target_arch = "x86_64")]
#[inline]
fn unshuffle_simd(
    bytes: &[u8],
    plane_len: usize,
    e0: usize,
    dst: &mut [f32],
    fill: Option<f32>,
) -> usize {
    use core::arch::x86_64::*;
    let n = dst.len() / 16 * 16;
    let planes = [0, 1, 2, 3].map(|k| &bytes[k * plane_len + e0..k * plane_len + e0 + n]);
    let dst = &mut dst[..n];
    // SAFETY: SSE2 is part of the x86-64 baseline. Every load reads 16 bytes at `i < n` from a
    // plane slice of length `n` (a multiple of 16), every store writes 4 floats at
    // `i + 4k + 4 <= n` into `dst` of length `n`; unaligned loads/stores are used throughout.
    unsafe {
        let nan = _mm_set1_ps(f32::NAN);
        // A NaN "fill" never compares equal, which makes the fill test a no-op (`plain`).
        let fv = _mm_set1_ps(fill.unwrap_or(f32::NAN));
        let out = dst.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let b0 = _mm_loadu_si128(planes[0].as_ptr().add(i).cast());
            let b1 = _mm_loadu_si128(planes[1].as_ptr().add(i).cast());
            let b2 = _mm_loadu_si128(planes[2].as_ptr().add(i).cast());
            let b3 = _mm_loadu_si128(planes[3].as_ptr().add(i).cast());
            let lo01 = _mm_unpacklo_epi8(b0, b1);
            let hi01 = _mm_unpackhi_epi8(b0, b1);
            let lo23 = _mm_unpacklo_epi8(b2, b3);
            let hi23 = _mm_unpackhi_epi8(b2, b3);
            let words = [
                _mm_unpacklo_epi16(lo01, lo23),
                _mm_unpackhi_epi16(lo01, lo23),
                _mm_unpacklo_epi16(hi01, hi23),
                _mm_unpackhi_epi16(hi01, hi23),
            ];
            for (k, w) in words.into_iter().enumerate() {
                let v = _mm_castsi128_ps(w);
                let bad = _mm_or_ps(_mm_cmpunord_ps(v, v), _mm_cmpeq_ps(v, fv));
                let r = _mm_or_ps(_mm_and_ps(bad, nan), _mm_andnot_ps(bad, v));
                _mm_storeu_ps(out.add(i + 4 * k), r);
            }
            i += 16;
        }
    }
    n
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn unshuffle_simd(_: &[u8], _: usize, _: usize, _: &mut [f32], _: Option<f32>) -> usize {
    0
}

/// Shuffled chunk: byte `k` of element `e` is at `k * plane_len + e`.
#[inline(always)]
fn unshuffle<const BE: bool>(
    bytes: &[u8],
    plane_len: usize,
    e0: usize,
    dst: &mut [f32],
    f: impl Fn(f32) -> f32,
) {
    let n = dst.len();
    let p0 = &bytes[e0..e0 + n];
    let p1 = &bytes[plane_len + e0..plane_len + e0 + n];
    let p2 = &bytes[2 * plane_len + e0..2 * plane_len + e0 + n];
    let p3 = &bytes[3 * plane_len + e0..3 * plane_len + e0 + n];
    for i in 0..n {
        let b = [p0[i], p1[i], p2[i], p3[i]];
        let u = if BE {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        dst[i] = f(f32::from_bits(u));
    }
}

/// Unshuffled chunk: element `e` is bytes `4e..4e+4`.
#[inline(always)]
fn interleaved<const BE: bool>(bytes: &[u8], e0: usize, dst: &mut [f32], f: impl Fn(f32) -> f32) {
    let src = &bytes[4 * e0..4 * (e0 + dst.len())];
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        let b = [b[0], b[1], b[2], b[3]];
        let u = if BE {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        *d = f(f32::from_bits(u));
    }
}

#[cfg(test)]
mod tests;

//! Shared helpers for the nexingest benchmarks (`cargo bench -p nexingest-benches`).
#![warn(missing_docs)]

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Directory for generated benchmark inputs: `<workspace>/target/bench-data` (shared by all
/// target dirs, generated once).
pub fn bench_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("bench-data")
}

/// The variable of [`full_grid_file`].
pub const FULL_GRID_VAR: &str = "tasmax";

/// Shape of [`full_grid_file`]: one year (2015, 365 days) of the NEX-GDDP-CMIP6 grid.
pub const FULL_GRID_SHAPE: [usize; 3] = [365, 600, 1440];

/// A full-size NEX-GDDP-CMIP6 variable-year (`365 × 600 × 1440` f32, chunks `1 × 600 × 1440`,
/// shuffle + deflate 5, 1e20 fill over the synthetic continents' oceans, smooth quantised land
/// values), written by the fixtures generator into [`bench_data_dir`] if absent.
///
/// # Panics
///
/// If the file cannot be written.
pub fn full_grid_file() -> PathBuf {
    let spec = fixtures::GridSpec::nex_gddp_cmip6_full_grid(
        FULL_GRID_VAR,
        "ssp585",
        "ACCESS-CM2",
        "r1i1p1f1",
        2015,
        fixtures::Calendar::Standard,
    );
    assert_eq!(spec.shape(), FULL_GRID_SHAPE);
    generated(&spec)
}

/// Shape of [`nex_gddp_full_grid_file`]: one year (2015, 365 days) of the NEX-GDDP grid.
pub const NEX_GDDP_GRID_SHAPE: [usize; 3] = [365, 720, 1440];

/// A full-size NEX-GDDP (CMIP5) variable-year in the real files' small-chunk layout
/// (`365 × 720 × 1440` f32, chunks `1 × 90 × 180` — 64 per day, 23,360 in all — shuffle +
/// deflate 5, float `lat`/`lon`, 1e20 over the synthetic oceans, dithered values), written by
/// the fixtures generator into [`bench_data_dir`] if absent. Variable [`FULL_GRID_VAR`].
///
/// # Panics
///
/// If the file cannot be written.
pub fn nex_gddp_full_grid_file() -> PathBuf {
    let spec = fixtures::GridSpec::nex_gddp_full_grid(FULL_GRID_VAR, "rcp45", "ACCESS1-0", 2015);
    assert_eq!(spec.shape(), NEX_GDDP_GRID_SHAPE);
    generated(&spec)
}

/// Writes `spec` into [`bench_data_dir`] under its file name unless it is already there (under a
/// private name first, then renamed); returns its path.
///
/// # Panics
///
/// If the file cannot be written.
pub fn generated(spec: &fixtures::GridSpec) -> PathBuf {
    let dir = bench_data_dir();
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    let path = dir.join(spec.file_name());
    if !path.exists() {
        eprintln!("generating {} (once) ...", path.display());
        // Write under a private name, then rename: concurrent runs never see a partial file.
        let tmp = dir.join(format!(".{}.{}", spec.file_name(), std::process::id()));
        fixtures::write_grid(&tmp, spec).expect("write the benchmark grid");
        std::fs::rename(&tmp, &path).expect("rename the benchmark grid");
    }
    path
}

/// One stored chunk: file offset and compressed size.
#[derive(Debug, Clone, Copy)]
pub struct RawChunk {
    /// Byte offset in the file.
    pub addr: u64,
    /// Compressed size in bytes.
    pub size: usize,
}

/// The stored chunks of `var` (from the HDF5 chunk index) and the decompressed chunk size.
///
/// # Panics
///
/// If the variable is missing or not chunked.
pub fn raw_chunks(path: &Path, var: &str) -> (Vec<RawChunk>, usize) {
    hdf5_metno::sync::sync(|| {
        let file = hdf5_metno::File::open(path).expect("open with HDF5");
        let ds = file.dataset(var).expect("dataset");
        let chunk_bytes = ds.chunk().expect("chunked").iter().product::<usize>() * 4;
        let n = ds.num_chunks().expect("chunk count");
        let chunks = (0..n)
            .map(|i| {
                let info = ds.chunk_info(i).expect("chunk info");
                RawChunk {
                    addr: info.addr,
                    size: info.size as usize,
                }
            })
            .collect();
        (chunks, chunk_bytes)
    })
}

/// The inflate limit: positioned read + zlib inflate (libdeflate) of every chunk, in parallel
/// over chunks on all rayon threads, output discarded (one reused buffer per worker). Returns
/// the number of decompressed bytes.
///
/// # Panics
///
/// On a read or inflate error.
pub fn raw_inflate_all(file: &File, chunks: &[RawChunk], chunk_bytes: usize) -> usize {
    thread_local! {
        static BUFS: RefCell<(libdeflater::Decompressor, Vec<u8>, Vec<u8>)> =
            RefCell::new((libdeflater::Decompressor::new(), Vec::new(), Vec::new()));
    }
    chunks
        .par_iter()
        .map(|c| {
            BUFS.with(|b| {
                let (inflater, compressed, out) = &mut *b.borrow_mut();
                compressed.resize(c.size, 0);
                out.resize(chunk_bytes, 0);
                file.read_exact_at(compressed, c.addr).expect("read chunk");
                inflater
                    .zlib_decompress(compressed, out)
                    .expect("inflate chunk")
            })
        })
        .sum()
}

/// CPU time (user + system, all threads) this process has used so far, in seconds
/// (`getrusage(RUSAGE_SELF)`). On a shared machine the ratio of two CPU times moves much less
/// with the load than the ratio of two wall times.
pub fn cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain data; all-zero is a valid value, and `getrusage` fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Peak resident set size of this process so far (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current resident set size (`VmRSS`), in bytes.
pub fn current_rss() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` 5); returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

//! Decode benchmark on one full-size NEX-GDDP-CMIP6 variable-year (365 × 600 × 1440 f32,
//! chunks 1 × 600 × 1440, shuffle + deflate 5, 1e20 over the oceans), all in one run:
//!
//! - `inflate_limit`: positioned read + libdeflate inflate of the same chunks on all cores
//!   (rayon over chunks, output discarded) — the ceiling for any decoder;
//! - `chunked`: `GridFile::decode_year` with `ReadPath::Chunked`, all 864,000 cells → a
//!   cell-major `864000 × 365` block;
//! - `netcdf`: the same request with `ReadPath::Netcdf` (libnetcdf, process-wide lock).
//!
//! It then prints the ratios that DESIGN §7 states targets for (from the medians of this run, so
//! a noisy shared machine affects all three alike) and the peak RSS of each decode.
//!
//! Run: `cargo bench -p nexingest-benches --bench decode` (the input is generated once into
//! `target/bench-data/`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nexdecode::{CellIndex, CellSelection, DecodeOptions, GridFile, ReadPath};
use nexingest_benches as nb;

/// Per-iteration times (seconds) of each benchmark, for the ratios.
static TIMES: Mutex<Option<HashMap<&'static str, Vec<f64>>>> = Mutex::new(None);

fn record(name: &'static str, per_iter: f64) {
    let mut t = TIMES.lock().unwrap();
    t.get_or_insert_with(HashMap::new)
        .entry(name)
        .or_default()
        .push(per_iter);
}

fn median(name: &str) -> f64 {
    let t = TIMES.lock().unwrap();
    let mut v = t
        .as_ref()
        .and_then(|m| m.get(name))
        .cloned()
        .unwrap_or_default();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn all_cells() -> CellSelection {
    let [_, ny, nx] = nb::FULL_GRID_SHAPE;
    CellSelection::Cells(
        (0..ny)
            .flat_map(|lat| (0..nx).map(move |lon| CellIndex { lat, lon }))
            .collect(),
    )
}

fn decode(path: &Path, cells: &CellSelection, read_path: ReadPath) -> nexdecode::YearBlock {
    let file = GridFile::open(path).expect("open the benchmark grid");
    let options = DecodeOptions {
        read_path,
        ..DecodeOptions::default()
    };
    file.decode_year(2015, cells, &options)
        .expect("decode the benchmark grid")
}

/// Peak RSS growth while `f` runs (VmHWM reset first), in MiB.
fn peak_rss_of<T>(f: impl FnOnce() -> T) -> Option<f64> {
    if !nb::reset_peak_rss() {
        return None;
    }
    let before = nb::current_rss()?;
    let out = f();
    let peak = nb::peak_rss()?;
    drop(out);
    Some((peak.saturating_sub(before)) as f64 / (1 << 20) as f64)
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();

    let path = nb::full_grid_file();
    let (chunks, chunk_bytes) = nb::raw_chunks(&path, nb::FULL_GRID_VAR);
    let raw_bytes = (chunks.len() * chunk_bytes) as u64;
    let file = std::fs::File::open(&path).expect("open the benchmark grid");
    let cells = all_cells();
    let threads = rayon::current_num_threads();

    let mut group = c.benchmark_group("decode_365x600x1440");
    group.throughput(Throughput::Bytes(raw_bytes));
    group.bench_function("inflate_limit", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                assert_eq!(
                    nb::raw_inflate_all(&file, &chunks, chunk_bytes) as u64,
                    raw_bytes
                );
            }
            let d = t.elapsed();
            record("inflate_limit", d.as_secs_f64() / iters as f64);
            d
        })
    });
    for (name, read_path) in [("chunked", ReadPath::Chunked), ("netcdf", ReadPath::Netcdf)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let block = decode(&path, &cells, read_path);
                    total += t.elapsed();
                    // Freeing 1.26 GB is not part of decoding.
                    assert_eq!(block.values.dim(), (864_000, 365));
                    drop(block);
                }
                record(name, total.as_secs_f64() / iters as f64);
                total
            })
        });
    }
    group.finish();

    let rss_fast = peak_rss_of(|| decode(&path, &cells, ReadPath::Chunked));
    let rss_netcdf = peak_rss_of(|| decode(&path, &cells, ReadPath::Netcdf));

    let (a, b, c_) = (median("inflate_limit"), median("chunked"), median("netcdf"));
    let gbps = |s: f64| raw_bytes as f64 / s / 1e9;
    println!();
    println!(
        "decode 365x600x1440 f32 ({:.2} GB raw, {} chunks, {threads} rayon threads), medians of this run:",
        raw_bytes as f64 / 1e9,
        chunks.len()
    );
    println!(
        "  (a) inflate limit (pread + libdeflate, all cores): {a:.3} s  {:.2} GB/s",
        gbps(a)
    );
    println!(
        "  (b) chunked fast path, all cells -> cell-major:    {b:.3} s  {:.2} GB/s",
        gbps(b)
    );
    println!(
        "  (c) netcdf-crate path, same request:               {c_:.3} s  {:.2} GB/s",
        gbps(c_)
    );
    println!(
        "  (b)/(a) throughput ratio: {:.2}  (DESIGN §7 target >= 0.7)",
        a / b
    );
    println!("  (c)/(b) time ratio (fast path speed-up): {:.2}", c_ / b);
    let mib = |r: Option<f64>| r.map_or("n/a".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "  peak RSS growth: chunked {}, netcdf {} (output block alone: {:.0} MiB)",
        mib(rss_fast),
        mib(rss_netcdf),
        raw_bytes as f64 / (1 << 20) as f64
    );

    c.final_summary();
}

//! Decode benchmark on one full-size NEX-GDDP-CMIP6 variable-year (365 × 600 × 1440 f32,
//! chunks 1 × 600 × 1440, shuffle + deflate 5, 1e20 over the oceans), all in one run:
//!
//! - `first_alldata` (not a criterion benchmark): the very first `CellSelection::AllData` decode
//!   of this process, before anything else has run, i.e. what a fresh worker process pays once;
//! - (a) `inflate_limit`: positioned read + libdeflate inflate of the same chunks on all cores
//!   (rayon over chunks, output discarded) — the ceiling for any decoder;
//! - (b1) `chunked_all_cells`: `GridFile::decode_year` with `ReadPath::Chunked`, all 864,000
//!   cells → a fresh cell-major `864000 × 365` block;
//! - (b2) `chunked_alldata_cold`: `decode_year` with `CellSelection::AllData` (the worker's
//!   workload: only the data cells), a fresh block each time;
//! - (b3) `chunked_alldata_warm`: the same through `GridFile::decode_year_into` into one reused
//!   `YearBlock`, as a worker decoding job after job does;
//! - (c) `netcdf_alldata`: the AllData request with `ReadPath::Netcdf` (libnetcdf, process-wide
//!   lock).
//!
//! It then prints the throughput ratios vs (a) that DESIGN §7 states a target for (throughput =
//! raw decompressed bytes of the whole grid / time; from the medians of this run, so a noisy
//! shared machine affects all alike), the same ratios of CPU time (user + system, all threads;
//! they move much less with the machine's load) and the peak RSS growth of each decode.
//!
//! A second group does the same for the NEX-GDDP (CMIP5) small-chunk layout: a 365 × 720 × 1440
//! file in chunks of 1 × 90 × 180 (64 per day, 23,360 in all), reported against its own
//! inflate limit (a′) of those chunks: (b2′) `AllData` cold, (b3′) `AllData` warm.
//!
//! Run: `cargo bench -p nexingest-benches --bench decode` (the inputs are generated once into
//! `target/bench-data/`); `-- small_chunks` runs only the NEX-GDDP group.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nexdecode::{CellIndex, CellSelection, DecodeOptions, GridFile, ReadPath, YearBlock};
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

fn options(read_path: ReadPath) -> DecodeOptions {
    DecodeOptions {
        read_path,
        ..DecodeOptions::default()
    }
}

/// The year of both benchmark files.
const YEAR: i32 = 2015;

fn decode(path: &Path, cells: &CellSelection, read_path: ReadPath) -> YearBlock {
    let file = GridFile::open(path).expect("open the benchmark grid");
    file.decode_year(YEAR, cells, &options(read_path))
        .expect("decode the benchmark grid")
}

fn decode_into(path: &Path, read_path: ReadPath, block: &mut YearBlock) {
    let file = GridFile::open(path).expect("open the benchmark grid");
    file.decode_year_into(YEAR, &CellSelection::AllData, &options(read_path), block)
        .expect("decode the benchmark grid")
}

/// Times `iters` runs of `f` (only `f`; dropping its output is not part of decoding).
/// Also records the CPU time per iteration under `cpu_name`.
fn time_fresh(
    (name, cpu_name): (&'static str, &'static str),
    iters: u64,
    f: impl Fn() -> YearBlock,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut cpu = 0.0;
    for _ in 0..iters {
        let (t, c) = (Instant::now(), nb::cpu_seconds());
        let block = f();
        total += t.elapsed();
        cpu += nb::cpu_seconds() - c;
        assert!(block.len() > 300_000 && block.days() == 365);
        drop(block);
    }
    record(name, total.as_secs_f64() / iters as f64);
    record(cpu_name, cpu / iters as f64);
    total
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
    let path = nb::full_grid_file();
    // Before anything else touches memory: the first decode of a fresh process.
    let t = Instant::now();
    let first = decode(&path, &CellSelection::AllData, ReadPath::Chunked);
    let first_s = t.elapsed().as_secs_f64();
    let data_cells = first.len();
    drop(first);

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();

    let (chunks, chunk_bytes) = nb::raw_chunks(&path, nb::FULL_GRID_VAR);
    let raw_bytes = (chunks.len() * chunk_bytes) as u64;
    let file = std::fs::File::open(&path).expect("open the benchmark grid");
    let cells = all_cells();
    let threads = rayon::current_num_threads();

    let mut group = c.benchmark_group("decode_365x600x1440");
    group.throughput(Throughput::Bytes(raw_bytes));
    group.bench_function("inflate_limit", |b| {
        b.iter_custom(|iters| {
            let (t, cpu) = (Instant::now(), nb::cpu_seconds());
            for _ in 0..iters {
                assert_eq!(
                    nb::raw_inflate_all(&file, &chunks, chunk_bytes) as u64,
                    raw_bytes
                );
            }
            let d = t.elapsed();
            record("inflate_limit", d.as_secs_f64() / iters as f64);
            record(
                "inflate_limit_cpu",
                (nb::cpu_seconds() - cpu) / iters as f64,
            );
            d
        })
    });
    group.bench_function("chunked_all_cells", |b| {
        b.iter_custom(|iters| {
            time_fresh(
                ("chunked_all_cells", "chunked_all_cells_cpu"),
                iters,
                || decode(&path, &cells, ReadPath::Chunked),
            )
        })
    });
    group.bench_function("chunked_alldata_cold", |b| {
        b.iter_custom(|iters| {
            time_fresh(
                ("chunked_alldata_cold", "chunked_alldata_cold_cpu"),
                iters,
                || decode(&path, &CellSelection::AllData, ReadPath::Chunked),
            )
        })
    });
    let mut warm = YearBlock::default();
    decode_into(&path, ReadPath::Chunked, &mut warm);
    group.bench_function("chunked_alldata_warm", |b| {
        b.iter_custom(|iters| {
            let (t, cpu) = (Instant::now(), nb::cpu_seconds());
            for _ in 0..iters {
                decode_into(&path, ReadPath::Chunked, &mut warm);
            }
            let d = t.elapsed();
            assert_eq!(warm.len(), data_cells);
            record("chunked_alldata_warm", d.as_secs_f64() / iters as f64);
            record(
                "chunked_alldata_warm_cpu",
                (nb::cpu_seconds() - cpu) / iters as f64,
            );
            d
        })
    });
    group.bench_function("netcdf_alldata", |b| {
        b.iter_custom(|iters| {
            time_fresh(("netcdf_alldata", "netcdf_alldata_cpu"), iters, || {
                decode(&path, &CellSelection::AllData, ReadPath::Netcdf)
            })
        })
    });
    group.finish();

    // The NEX-GDDP (CMIP5) small-chunk layout, against its own inflate limit.
    let ng_path = nb::nex_gddp_full_grid_file();
    let t = Instant::now();
    let (ng_chunks, ng_chunk_bytes) = nb::raw_chunks(&ng_path, nb::FULL_GRID_VAR);
    let ng_index_s = t.elapsed().as_secs_f64();
    let ng_raw = (ng_chunks.len() * ng_chunk_bytes) as u64;
    let ng_file = std::fs::File::open(&ng_path).expect("open the NEX-GDDP benchmark grid");
    let ng_stored: u64 = ng_chunks.iter().map(|c| c.size as u64).sum();
    let mut group = c.benchmark_group("decode_365x720x1440_small_chunks");
    group.throughput(Throughput::Bytes(ng_raw));
    group.bench_function("inflate_limit", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                assert_eq!(
                    nb::raw_inflate_all(&ng_file, &ng_chunks, ng_chunk_bytes) as u64,
                    ng_raw
                );
            }
            let d = t.elapsed();
            record("ng_inflate_limit", d.as_secs_f64() / iters as f64);
            d
        })
    });
    group.bench_function("chunked_alldata_cold", |b| {
        b.iter_custom(|iters| {
            time_fresh(
                ("ng_chunked_alldata_cold", "ng_chunked_alldata_cold_cpu"),
                iters,
                || decode(&ng_path, &CellSelection::AllData, ReadPath::Chunked),
            )
        })
    });
    let mut ng_warm = YearBlock::default();
    decode_into(&ng_path, ReadPath::Chunked, &mut ng_warm);
    let ng_cells = ng_warm.len();
    group.bench_function("chunked_alldata_warm", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                decode_into(&ng_path, ReadPath::Chunked, &mut ng_warm);
            }
            let d = t.elapsed();
            assert_eq!(ng_warm.len(), ng_cells);
            record("ng_chunked_alldata_warm", d.as_secs_f64() / iters as f64);
            d
        })
    });
    group.finish();
    drop(ng_warm);

    let rss_all = peak_rss_of(|| decode(&path, &cells, ReadPath::Chunked));
    let rss_cold = peak_rss_of(|| decode(&path, &CellSelection::AllData, ReadPath::Chunked));
    let rss_warm = peak_rss_of(|| decode_into(&path, ReadPath::Chunked, &mut warm));
    let rss_netcdf = peak_rss_of(|| decode(&path, &CellSelection::AllData, ReadPath::Netcdf));
    let block_mib = (warm.len() * warm.days() * 4) as f64 / (1 << 20) as f64;
    drop(warm);

    let a = median("inflate_limit");
    let a_cpu = median("inflate_limit_cpu");
    let gbps = |s: f64| raw_bytes as f64 / s / 1e9;
    let mib = |r: Option<f64>| r.map_or("n/a".to_string(), |m| format!("{m:.0} MiB"));
    println!();
    println!(
        "decode 365x600x1440 f32 ({:.2} GB raw, {} chunks, {threads} rayon threads, {data_cells} \
         data cells), medians of this run; ratio = throughput vs (a), DESIGN §7 target >= 0.7:",
        raw_bytes as f64 / 1e9,
        chunks.len()
    );
    println!(
        "  (a)  inflate limit (pread + libdeflate, all cores): {a:.3} s  {:.2} GB/s  CPU {a_cpu:.3} s \
         (CPU ratio = CPU time of (a) / CPU time; load average now {})",
        gbps(a),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for (label, name, rss) in [
        (
            "(b1) fast path, all 864,000 cells, fresh block: ",
            "chunked_all_cells",
            rss_all,
        ),
        (
            "(b2) fast path, AllData, fresh block (cold):    ",
            "chunked_alldata_cold",
            rss_cold,
        ),
        (
            "(b3) fast path, AllData, reused block (warm):   ",
            "chunked_alldata_warm",
            rss_warm,
        ),
        (
            "(c)  netcdf path, AllData:                      ",
            "netcdf_alldata",
            rss_netcdf,
        ),
    ] {
        let t = median(name);
        let cpu = median(&format!("{name}_cpu"));
        println!(
            "  {label} {t:.3} s  {:.2} GB/s  ratio {:.2}  CPU {cpu:.3} s, CPU ratio {:.2}  peak \
             RSS growth {}",
            gbps(t),
            a / t,
            a_cpu / cpu,
            mib(rss)
        );
    }
    println!(
        "  first AllData decode of this process (fast path): {first_s:.3} s  ratio {:.2}",
        a / first_s
    );
    println!(
        "  (c)/(b2) time ratio (fast path speed-up): {:.2}",
        median("netcdf_alldata") / median("chunked_alldata_cold")
    );
    println!(
        "  AllData block alone: {block_mib:.0} MiB; full-grid block: {:.0} MiB",
        raw_bytes as f64 / (1 << 20) as f64
    );

    let a = median("ng_inflate_limit");
    println!();
    println!(
        "decode 365x720x1440 f32, NEX-GDDP small chunks 1x90x180 ({:.2} GB raw, {} chunks of \
         {} KB, {:.1} KB stored on average, {ng_cells} data cells; HDF5 chunk index read by \
         position, as the fast path did before, in {:.2} s), ratio = throughput vs (a'):",
        ng_raw as f64 / 1e9,
        ng_chunks.len(),
        ng_chunk_bytes / 1000,
        ng_stored as f64 / ng_chunks.len() as f64 / 1e3,
        ng_index_s,
    );
    println!(
        "  (a')  inflate limit (pread + libdeflate, all cores): {a:.3} s  {:.2} GB/s",
        ng_raw as f64 / a / 1e9
    );
    for (label, name) in [
        (
            "(b2') fast path, AllData, fresh block (cold):    ",
            "ng_chunked_alldata_cold",
        ),
        (
            "(b3') fast path, AllData, reused block (warm):   ",
            "ng_chunked_alldata_warm",
        ),
    ] {
        let t = median(name);
        println!(
            "  {label} {t:.3} s  {:.2} GB/s  ratio {:.2}",
            ng_raw as f64 / t / 1e9,
            a / t
        );
    }

    c.final_summary();
}

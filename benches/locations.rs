//! Location mode: the decode of a points job — 1,000 random CONUS points over the three
//! full-size NEX-GDDP-CMIP6 files of `benches/e2e.rs` (`tasmin`, `tasmax`, `pr`, 365 × 600 × 1440
//! f32, chunks 1 × 600 × 1440) — against the all-core raw inflate of the same three files
//! (DESIGN §7: ≤ 1.2×, cold and warm).
//!
//! The job is what the worker's decode stage (`worker/src/pipeline/decode.rs`, `decode_one`)
//! does for a points plan, with the worker's options (`data_radius_km` 50, `single_year_file`):
//! the first variable's file is opened and its points located and decoded in one call
//! (`GridFile::locate_decode`); the other two decode the cells it resolved
//! (`GridFile::decode_year` of `CellSelection::Cells`). For comparison, `locate+decode` is the
//! same job the way the worker did it before `locate_decode` (`GridFile::locate`, then
//! `decode_year` of the first variable's cells).
//!
//! - **cold**: a fresh process (this bench binary spawned again with `LOCBENCH_CHILD` set) runs
//!   the job once as the first thing it does; the time is taken inside the child from before
//!   the first open (rayon's pool, HDF5 and netCDF initialisation included) and, separately,
//!   by the parent around the whole child process (exec and exit included);
//! - **warm**: the same job again in this process;
//! - **inflate**: `pread` + libdeflate of every chunk of the three files on all cores
//!   (`raw_inflate_all`, output discarded).
//!
//! Repetitions alternate inflate, cold, warm and warm `locate+decode` (`LOC_REPS`, default 5);
//! the ratios are of the medians of this run. Run:
//!
//! ```sh
//! cargo bench -p nexingest-benches --bench locations     # LOC_REPS=5, LOC_POINTS=1000
//! ```
//!
//! The inputs are generated once into `target/bench-data/` (≈ 13 s each).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nexdecode::{CellIndex, CellSelection, DecodeOptions, GridFile, LocationMatch};
use nexingest_benches as nb;

const VARS: [&str; 3] = ["tasmin", "tasmax", "pr"];
const YEAR: i32 = 2015;
/// The worker's default `--search-radius-km`.
const RADIUS_KM: f64 = 50.0;

/// The three files of `benches/e2e.rs`, generated once.
fn input_files() -> Vec<PathBuf> {
    VARS.iter()
        .map(|var| {
            nb::generated(&fixtures::GridSpec::nex_gddp_cmip6_full_grid(
                var,
                "ssp585",
                "ACCESS-CM2",
                "r1i1p1f1",
                YEAR,
                fixtures::Calendar::Standard,
            ))
        })
        .collect()
}

fn options() -> DecodeOptions {
    DecodeOptions {
        data_radius_km: RADIUS_KM,
        single_year_file: true,
        ..DecodeOptions::default()
    }
}

/// What a job run gives back: the matches, the decoded rows, and per-step seconds.
struct JobRun {
    matches: Vec<LocationMatch>,
    rows: usize,
    /// open (all three), locate (first variable, with its decode when combined), decode of the
    /// other variables.
    phases: [f64; 3],
}

/// The worker's points job: locate + decode the first variable, decode the others' cells.
/// `combined`: through `locate_decode` (the worker's path); otherwise `locate` + `decode_year`.
fn job(paths: &[PathBuf], points: &[(f64, f64)], combined: bool) -> JobRun {
    let opts = options();
    let mut phases = [0.0; 3];
    let mut cells: Vec<CellIndex> = Vec::new();
    let mut matches = Vec::new();
    let mut rows = 0;
    for (i, (path, var)) in paths.iter().zip(VARS).enumerate() {
        let t = Instant::now();
        let f = GridFile::open_variable(path, var).expect("open");
        phases[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let block = if i == 0 {
            let block = if combined {
                let (m, block) = f.locate_decode(YEAR, points, &opts).expect("locate_decode");
                matches = m;
                block
            } else {
                matches = f.locate(YEAR, points, &opts).expect("locate");
                cells_of(&matches, &mut cells);
                f.decode_year(YEAR, &CellSelection::Cells(cells.clone()), &opts)
                    .expect("decode")
            };
            cells_of(&matches, &mut cells);
            phases[1] += t.elapsed().as_secs_f64();
            block
        } else {
            let b = f
                .decode_year(YEAR, &CellSelection::Cells(cells.clone()), &opts)
                .expect("decode");
            phases[2] += t.elapsed().as_secs_f64();
            b
        };
        assert_eq!(block.cells, cells, "{var}: rows are the matched cells");
        rows += block.len();
    }
    JobRun {
        matches,
        rows,
        phases,
    }
}

/// The matched cells, sorted, without duplicates (as the worker makes its selection).
fn cells_of(m: &[LocationMatch], out: &mut Vec<CellIndex>) {
    out.clear();
    out.extend(m.iter().filter_map(|m| m.cell));
    out.sort_unstable();
    out.dedup();
}

fn points_count() -> usize {
    std::env::var("LOC_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The child: the job once, first thing in a fresh process; prints `secs open locate decode`.
fn child(paths: &[PathBuf]) {
    let points = nb::conus_points(points_count());
    let t = Instant::now();
    let r = job(paths, &points, true);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "cold {secs:.6} {:.6} {:.6} {:.6} {:.6} {}",
        r.phases[0],
        r.phases[1],
        r.phases[2],
        nb::cpu_seconds(),
        r.rows
    );
}

/// Spawns the child; returns (seconds inside, seconds around the process, phases, the child's
/// CPU seconds).
fn cold(exe: &Path) -> (f64, f64, [f64; 3], f64) {
    let t = Instant::now();
    let out = Command::new(exe)
        .env("LOCBENCH_CHILD", "1")
        .output()
        .expect("spawn the cold child");
    let outer = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "child failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("cold "))
        .unwrap_or_else(|| panic!("child printed no result: {text}"));
    let f: Vec<f64> = line[5..]
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    (f[0], outer, [f[1], f[2], f[3]], f[4])
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let paths = input_files();
    if std::env::var_os("LOCBENCH_CHILD").is_some() {
        child(&paths);
        return;
    }
    let reps: usize = std::env::var("LOC_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let exe = std::env::current_exe().expect("this bench's path");
    let points = nb::conus_points(points_count());
    let raw: Vec<_> = paths
        .iter()
        .zip(VARS)
        .map(|(p, var)| {
            let (chunks, chunk_bytes) = nb::raw_chunks(p, var);
            (std::fs::File::open(p).expect("open"), chunks, chunk_bytes)
        })
        .collect();
    // (wall, CPU) seconds.
    let inflate = || {
        let (t, cpu) = (Instant::now(), nb::cpu_seconds());
        for (file, chunks, chunk_bytes) in &raw {
            nb::raw_inflate_all(file, chunks, *chunk_bytes);
        }
        (t.elapsed().as_secs_f64(), nb::cpu_seconds() - cpu)
    };
    println!("load average before: {}", load_average());
    // Page cache and this process's pools, before anything is timed.
    inflate();
    let first = job(&paths, &points, true);
    let n = first.matches.len();
    let matched = first.matches.iter().filter(|m| m.is_matched()).count();
    let substituted = first.matches.iter().filter(|m| m.substituted).count();
    let old = job(&paths, &points, false);
    let key = |m: &LocationMatch| (m.cell, m.nearest, m.substituted, m.distance_km.to_bits());
    assert!(
        old.matches
            .iter()
            .map(key)
            .eq(first.matches.iter().map(key)),
        "both paths locate alike"
    );
    assert_eq!(old.rows, first.rows);

    let (mut a, mut c_in, mut c_out, mut w, mut w_old) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut a_cpu, mut c_cpu, mut w_cpu) = (vec![], vec![], vec![]);
    let mut c_phases = vec![];
    let mut w_phases = vec![];
    for rep in 0..reps {
        let (wall, cpu) = inflate();
        a.push(wall);
        a_cpu.push(cpu);
        let (inner, outer, ph, cpu) = cold(&exe);
        c_cpu.push(cpu);
        c_in.push(inner);
        c_out.push(outer);
        c_phases.push(ph);
        let (t, cpu) = (Instant::now(), nb::cpu_seconds());
        let r = job(&paths, &points, true);
        w.push(t.elapsed().as_secs_f64());
        w_cpu.push(nb::cpu_seconds() - cpu);
        w_phases.push(r.phases);
        let t = Instant::now();
        job(&paths, &points, false);
        w_old.push(t.elapsed().as_secs_f64());
        eprintln!(
            "rep {rep}: inflate {:.3} s, cold {inner:.3} s ({outer:.3} s process), warm {:.3} s, \
             warm locate+decode {:.3} s; load {}",
            a[rep],
            w[rep],
            w_old[rep],
            load_average()
        );
    }
    let a_m = median(&a);
    let phase = |v: &[[f64; 3]], k: usize| median(&v.iter().map(|p| p[k]).collect::<Vec<_>>());
    println!();
    println!(
        "location mode: {n} points ({matched} matched, {substituted} substituted, radius \
         {RADIUS_KM} km), {} rows per variable, 3 files; medians of {reps} repetitions, ratio = \
         time / (a), DESIGN §7 target <= 1.2; {} rayon threads; load average after: {}",
        first.rows / 3,
        rayon::current_num_threads(),
        load_average()
    );
    let a_cpu_m = median(&a_cpu);
    println!(
        "  (a) raw inflate of the 3 files, all cores:   {a_m:.3} s  ratio 1.00  (CPU {a_cpu_m:.3} s)"
    );
    for (label, t, ph) in [
        (
            "cold: fresh process, job time:              ",
            median(&c_in),
            Some(&c_phases),
        ),
        (
            "cold: fresh process, whole process:         ",
            median(&c_out),
            None,
        ),
        (
            "warm: locate_decode + decode_year × 2:      ",
            median(&w),
            Some(&w_phases),
        ),
        (
            "warm: before, locate + decode_year × 3:     ",
            median(&w_old),
            None,
        ),
    ] {
        let phases = ph.map_or(String::new(), |p| {
            format!(
                "  (open {:.3}, locate+decode first {:.3}, decode others {:.3})",
                phase(p, 0),
                phase(p, 1),
                phase(p, 2)
            )
        });
        println!("  {label} {t:.3} s  ratio {:.2}{phases}", t / a_m);
    }
    let (cc, wc) = (median(&c_cpu), median(&w_cpu));
    println!(
        "  CPU time: cold, whole child process {cc:.3} s  ratio {:.2}; warm job {wc:.3} s  ratio \
         {:.2} (to the CPU time of (a))",
        cc / a_cpu_m,
        wc / a_cpu_m
    );
}

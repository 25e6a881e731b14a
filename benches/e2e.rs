//! End to end: one NEX-GDDP-CMIP6 job (all data cells of a 365 × 600 × 1440 grid, `tasmin`,
//! `tasmax`, `pr`) through the real `nexingest ingest` release binary, files on disk → rows
//! committed, against `psql \copy … (FORMAT binary)` of the same rows from a file into an
//! identical table (DESIGN §7: job ≤ 1.15× psql; peak memory ≤ 3 GB per job).
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench e2e          # E2E_REPS=3 by default
//! ```
//!
//! The bench first runs `cargo build --release -p worker` (same target dir) and spawns
//! `<target>/release/nexingest` (override with `E2E_NEXINGEST=PATH`). The three input files
//! are generated once into `target/bench-data/` (≈ 13 s each). Each run migrates a fresh schema
//! (`nexingest_e2e`), runs the first job on an empty database (the job also creates the
//! grid's `map_cell` rows), exports its rows with `psql \copy (SELECT …) TO … (FORMAT binary)`,
//! then alternates `E2E_REPS` times between a steady-state job (`map_cell` populated, job tables
//! truncated, a fresh process) and `psql \copy` of the exported rows into a truncated
//! `CREATE TABLE … (LIKE climate_data_year INCLUDING ALL)` (same columns, storage, keys and
//! indexes). Wall times include process start; peak RSS is the child's `ru_maxrss` (`wait4`).

use std::path::{Path, PathBuf};

use nexingest_benches::cmip6_job;
use nexingest_benches::{Db, Measured, bench_data_dir, gib, measure, median, strip_ansi};

const SCHEMA: &str = "nexingest_e2e";

fn run_job(bin: &Path, db: &Db, files: &[PathBuf]) -> Measured {
    let m = measure(
        &mut cmip6_job::ingest(bin, db, SCHEMA, "E2E_LOG", files),
        "nexingest ingest",
    );
    assert!(
        m.stdout.contains(" rows ("),
        "ingest did not load:\n{}\n{}",
        m.stdout,
        m.stderr
    );
    m
}

fn psql_copy(db: &Db, file: &Path) -> Measured {
    db.sql(&format!("TRUNCATE {SCHEMA}.psql_copy; CHECKPOINT"));
    measure(
        &mut cmip6_job::psql_copy_cmd(db, &format!("{SCHEMA}.psql_copy"), file),
        "psql \\copy",
    )
}

/// The job's own summary line and its phase log lines.
fn job_report(m: &Measured) -> String {
    let mut s = String::new();
    for l in m.stdout.lines().filter(|l| l.contains(" rows (")) {
        s.push_str("    ");
        s.push_str(l.trim());
        s.push('\n');
    }
    for l in m.stderr.lines().filter(|l| l.contains("phase")) {
        s.push_str("    ");
        s.push_str(strip_ansi(l).trim());
        s.push('\n');
    }
    s
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let reps: usize = std::env::var("E2E_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let db = Db::for_bench();
    let bin = nexingest_benches::nexingest_bin("E2E_NEXINGEST");
    let files = cmip6_job::input_files();
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    eprintln!(
        "inputs: {} files, {:.0} MB; binary {}",
        files.len(),
        bytes as f64 / 1e6,
        bin.display()
    );

    // Fresh schema.
    db.sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"));
    measure(
        cmip6_job::nexingest(&bin, &db, SCHEMA, "E2E_LOG").arg("migrate"),
        "nexingest migrate",
    );

    // First job on an empty database (creates the grid's map_cell rows).
    eprintln!("first job (empty database) ...");
    let first = run_job(&bin, &db, &files);
    let rows = db.count(SCHEMA, "climate_data_year");
    let cells = db.count(SCHEMA, "map_cell");
    eprintln!(
        "  {:.2} s, peak RSS {:.2} GiB, {rows} rows, {cells} map_cell",
        first.secs,
        gib(first.peak_rss)
    );

    // The same rows as a binary COPY file, and the baseline table.
    let rows_file = bench_data_dir().join(format!(".e2e-rows-{}.pgcopy", std::process::id()));
    let file_bytes = cmip6_job::export_rows(&db, SCHEMA, &rows_file);
    db.sql(&format!(
        "CREATE TABLE {SCHEMA}.psql_copy (LIKE {SCHEMA}.climate_data_year INCLUDING ALL)"
    ));

    let mut job_s = Vec::new();
    let mut psql_s = Vec::new();
    let mut job_rss = Vec::new();
    let mut last_job = None;
    let mut psql_first = None;
    for rep in 0..reps {
        let order_job_first = rep % 2 == 0;
        for step in 0..2 {
            if (step == 0) == order_job_first {
                cmip6_job::reset_jobs(&db, SCHEMA);
                eprintln!("rep {}: steady-state job ...", rep + 1);
                let m = run_job(&bin, &db, &files);
                assert_eq!(db.count(SCHEMA, "climate_data_year"), rows, "job row count");
                eprintln!("  {:.2} s, peak RSS {:.2} GiB", m.secs, gib(m.peak_rss));
                job_s.push(m.secs);
                job_rss.push(m.peak_rss);
                last_job = Some(m);
            } else {
                eprintln!("rep {}: psql \\copy ...", rep + 1);
                let m = psql_copy(&db, &rows_file);
                assert_eq!(db.count(SCHEMA, "psql_copy"), rows, "psql row count");
                eprintln!("  {:.2} s", m.secs);
                psql_s.push(m.secs);
                psql_first.get_or_insert(m.secs);
            }
        }
    }
    let _ = std::fs::remove_file(&rows_file);
    db.sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"));

    let pm = median(&psql_s);
    let jm = median(&job_s);
    let max_rss = job_rss.iter().copied().max().unwrap_or(0);
    println!();
    println!(
        "e2e: one NEX-GDDP-CMIP6 job, {} × 600 × 1440, {} ({:.0} MB of files), {rows} rows, \
         {:.0} MB binary COPY stream; {reps} interleaved reps",
        365,
        cmip6_job::VARS.join("/"),
        bytes as f64 / 1e6,
        file_bytes as f64 / 1e6
    );
    println!();
    println!("| run | job s | psql \\copy s | job / psql | job peak RSS GiB |");
    println!("|---|---:|---:|---:|---:|");
    for (i, ((j, p), r)) in job_s.iter().zip(&psql_s).zip(&job_rss).enumerate() {
        println!(
            "| steady rep {} | {j:.2} | {p:.2} | {:.2} | {:.2} |",
            i + 1,
            j / p,
            gib(*r)
        );
    }
    println!(
        "| **steady state, median** | **{jm:.2}** | **{pm:.2}** | **{:.2}** | **{:.2}** (max) |",
        jm / pm,
        gib(max_rss)
    );
    println!(
        "| first job, empty database (vs psql median) | {:.2} | {pm:.2} | {:.2} | {:.2} |",
        first.secs,
        first.secs / pm,
        gib(first.peak_rss)
    );
    println!();
    let t_ratio = jm / pm <= 1.15;
    let t_rss = max_rss.max(first.peak_rss) <= 3_000_000_000;
    println!(
        "target job ≤ 1.15× psql (steady state): {}; peak RSS ≤ 3 GB: {}",
        if t_ratio { "holds" } else { "NOT met" },
        if t_rss { "holds" } else { "NOT met" }
    );
    println!();
    println!("first job:\n{}", job_report(&first));
    if let Some(m) = &last_job {
        println!("last steady-state job:\n{}", job_report(m));
    }
}

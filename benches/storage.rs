//! Array storage per variable: the same `climate_data_year` rows loaded with `psql \copy … (FORMAT
//! binary)` into tables that differ only in each array column's storage, `EXTERNAL`
//! (out of line, uncompressed) or lz4 (`EXTENDED` + `COMPRESSION lz4`), alternating, in one run,
//! on the benchmark cluster ([`Db::for_bench`]). Reports per choice: load time (median, min),
//! table size (`pg_total_relation_size`, heap + TOAST + indexes), WAL written, and per column the
//! stored bytes (`sum(pg_column_size)`) and the share of values the server stored compressed.
//!
//! The rows are a real job's: the three full-size NEX-GDDP-CMIP6 files of the end-to-end
//! benchmark (`tasmin`, `tasmax`, `pr`, 365 × 600 × 1440, generated once into
//! `target/bench-data/`), decoded with `nexdecode`, every `STORAGE_BENCH_STEP`th data cell
//! (default 3: ~144,000 rows spread over the whole grid), encoded once with `pgcopy` into a file.
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench storage
//! # STORAGE_BENCH_STEP=3 STORAGE_BENCH_REPS=3 (defaults); STORAGE_BENCH_STEP=1: every data cell
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use nexdecode::{CellSelection, DecodeOptions, GridFile};
use nexingest_benches::cmip6_job::{VARS, input_files};
use nexingest_benches::{Db, bench_data_dir, env_or, median};
use pgcopy::{ColumnType, Columns, CopyBuffer, Validity};

const YEAR: i32 = 2015;
const SCHEMA: &str = "nexingest_storage_bench";
const COLUMNS: &str = "data_source_id, map_cell_id, tasmin, tasmax, pr";

/// One array column's storage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Choice {
    /// `SET STORAGE EXTERNAL`: out of line, never compressed.
    External,
    /// `SET STORAGE EXTENDED, SET COMPRESSION lz4`: compressed when it pays, then out of line
    /// if the row is still too big.
    Lz4,
}

impl Choice {
    fn sql(self, col: &str) -> String {
        match self {
            Choice::External => format!("ALTER COLUMN {col} SET STORAGE EXTERNAL"),
            Choice::Lz4 => {
                format!(
                    "ALTER COLUMN {col} SET STORAGE EXTENDED, ALTER COLUMN {col} SET COMPRESSION lz4"
                )
            }
        }
    }
    fn name(self) -> &'static str {
        match self {
            Choice::External => "EXTERNAL",
            Choice::Lz4 => "lz4",
        }
    }
}

/// The storage of `tasmin`, `tasmax`, `pr` in one table.
type Layout = [Choice; 3];

const LAYOUTS: [(&str, Layout); 4] = [
    ("all EXTERNAL", [Choice::External; 3]),
    (
        "pr lz4, temperatures EXTERNAL",
        [Choice::External, Choice::External, Choice::Lz4],
    ),
    (
        "temperatures lz4, pr EXTERNAL",
        [Choice::Lz4, Choice::Lz4, Choice::External],
    ),
    ("all lz4", [Choice::Lz4; 3]),
];

/// Decodes the files, keeps every `step`th data cell, writes the binary COPY stream to `out`.
/// Returns the number of rows.
fn write_rows(files: &[PathBuf], step: usize, out: &std::path::Path) -> usize {
    let mut blocks = Vec::new();
    for f in files {
        let file = GridFile::open(f).expect("open a benchmark file");
        let mut block = file
            .decode_year(YEAR, &CellSelection::AllData, &DecodeOptions::default())
            .expect("decode a benchmark file");
        let keep: Vec<usize> = (0..block.cells.len()).step_by(step).collect();
        block.values = block.values.select(ndarray::Axis(0), &keep);
        block.cells = keep.iter().map(|&i| block.cells[i]).collect();
        blocks.push(block);
    }
    assert!(
        blocks.windows(2).all(|w| w[0].cells == w[1].cells),
        "the three files have the same data cells"
    );
    let columns = Columns::new([
        ("data_source_id", ColumnType::Int8),
        ("map_cell_id", ColumnType::Int8),
        ("tasmin", ColumnType::Float4Array),
        ("tasmax", ColumnType::Float4Array),
        ("pr", ColumnType::Float4Array),
    ]);
    let mut buf = CopyBuffer::with_capacity(&columns, 1 << 21);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out).unwrap());
    let rows = blocks[0].cells.len();
    for r in 0..rows {
        {
            let mut row = buf.row();
            row.int8(1).unwrap().int8(r as i64 + 1).unwrap();
            for b in &blocks {
                let s = b.values.row(r);
                row.float4_array(s.as_slice().expect("row-major block"), Validity::NanIsNull)
                    .unwrap();
            }
            row.finish().unwrap();
        }
        if buf.len() >= 1 << 20 {
            w.write_all(&buf.take()).unwrap();
        }
    }
    w.write_all(&buf.finish()).unwrap();
    w.flush().unwrap();
    rows
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One measured load.
#[derive(Default, Clone)]
struct Sample {
    secs: f64,
    total: u64,
    heap: u64,
    toast: u64,
    wal: u64,
    /// Per column: stored bytes, share stored compressed.
    cols: [(u64, f64); 3],
}

fn create(db: &Db, layout: &Layout) {
    let alters: Vec<String> = VARS.iter().zip(layout).map(|(v, c)| c.sql(v)).collect();
    // climate_data_year's shape (0001_schema.sql): bigint keys, primary key, map_cell index.
    db.sql(&format!(
        "DROP TABLE IF EXISTS {SCHEMA}.cdy; \
         CREATE TABLE {SCHEMA}.cdy (data_source_id bigint NOT NULL, map_cell_id bigint NOT NULL, \
         tasmin real[], tasmax real[], pr real[], PRIMARY KEY (data_source_id, map_cell_id)); \
         CREATE INDEX ON {SCHEMA}.cdy (map_cell_id); \
         ALTER TABLE {SCHEMA}.cdy {}; CHECKPOINT",
        alters.join(", ")
    ));
}

fn load(db: &Db, file: &std::path::Path, rows: usize) -> Sample {
    let lsn0 = db.sql("SELECT pg_current_wal_lsn()");
    let started = Instant::now();
    db.sql(&format!(
        "\\copy {SCHEMA}.cdy ({COLUMNS}) FROM '{}' (FORMAT binary)",
        file.display()
    ));
    let secs = started.elapsed().as_secs_f64();
    let stats = db.sql(&format!(
        "SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn, pg_total_relation_size(c.oid), \
         pg_relation_size(c.oid), coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0), \
         (SELECT count(*) FROM {SCHEMA}.cdy) \
         FROM pg_class c WHERE c.oid = '{SCHEMA}.cdy'::regclass"
    ));
    let f: Vec<u64> = stats
        .split('|')
        .map(|x| x.parse().expect("number"))
        .collect();
    assert_eq!(f[4], rows as u64, "every row loaded");
    let mut cols = [(0, 0.0); 3];
    for (i, v) in VARS.iter().enumerate() {
        let s = db.sql(&format!(
            "SELECT sum(pg_column_size({v})), \
             avg((pg_column_compression({v}) IS NOT NULL)::int) FROM {SCHEMA}.cdy"
        ));
        let (bytes, share) = s.split_once('|').expect("two fields");
        cols[i] = (bytes.parse().unwrap(), share.parse().unwrap());
    }
    Sample {
        secs,
        wal: f[0],
        total: f[1],
        heap: f[2],
        toast: f[3],
        cols,
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn main() {
    let db = Db::for_bench();
    let lz4 = db.sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    );
    assert_eq!(
        lz4, "t",
        "this server has no lz4 (PostgreSQL ≥ 14 built --with-lz4 is needed)"
    );
    let step: usize = env_or("STORAGE_BENCH_STEP", 3);
    let reps: usize = env_or("STORAGE_BENCH_REPS", 3);
    let files = input_files();
    let dir = tempfile::tempdir_in(bench_data_dir()).expect("tempdir");
    let stream = dir.path().join("rows.pgcopy");
    let t = Instant::now();
    let rows = write_rows(&files, step, &stream);
    let bytes = std::fs::metadata(&stream).unwrap().len();
    eprintln!(
        "rows: {rows} (every {step}th data cell), {:.0} MiB binary COPY stream, decoded and encoded in {:.1}s",
        mib(bytes),
        t.elapsed().as_secs_f64()
    );
    db.sql(&format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
    ));
    let load_before = load_average();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); LAYOUTS.len()];
    // Round-robin over the layouts so drift in machine load hits them alike.
    for rep in 0..reps {
        for (k, (name, layout)) in LAYOUTS.iter().enumerate() {
            create(&db, layout);
            let s = load(&db, &stream, rows);
            eprintln!(
                "  rep {rep} {name:<30} {:.2}s {:.0} MiB (load average {})",
                s.secs,
                mib(s.total),
                load_average()
            );
            samples[k].push(s);
        }
    }
    db.sql(&format!("DROP SCHEMA {SCHEMA} CASCADE"));
    let load_after = load_average();

    println!("\ndatabase: {}", db.describe());
    println!(
        "{rows} rows (every {step}th data cell of the e2e job), {reps} reps alternating; \
         load average {load_before} before, {load_after} after\n"
    );
    println!(
        "| tasmin / tasmax / pr | median s | min s | × all EXTERNAL (median) | table MiB | heap MiB | TOAST MiB | WAL MiB | tasmin MiB | tasmax MiB | pr MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let base = median(&samples[0].iter().map(|s| s.secs).collect::<Vec<_>>());
    for ((_, layout), ss) in LAYOUTS.iter().zip(&samples) {
        let secs: Vec<f64> = ss.iter().map(|s| s.secs).collect();
        let med = median(&secs);
        let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let s = &ss[0]; // sizes are the same on every rep
        let col = |i: usize| {
            let (b, share) = s.cols[i];
            let raw = samples[0][0].cols[i].0;
            format!(
                "{:.0} ({:.2}×, {:.0}% compressed)",
                mib(b),
                b as f64 / raw as f64,
                share * 100.0
            )
        };
        println!(
            "| {} / {} / {} | {med:.2} | {min:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            layout[0].name(),
            layout[1].name(),
            layout[2].name(),
            med / base,
            mib(s.total),
            mib(s.heap),
            mib(s.toast),
            mib(s.wal),
            col(0),
            col(1),
            col(2),
        );
    }
    println!("\nrerun: cargo bench -p nexingest-benches --bench storage");
}

//! A fleet against one database: 1, 2 and 3 worker processes (`nexingest run --jobs 1
//! --until-empty`, one whole-grid NEX-GDDP-CMIP6 job each, in moto S3 + SQS) against the one
//! benchmark cluster, next to 1, 2 and 3 concurrent `psql \copy … (FORMAT binary)` streams
//! of the same rows; aggregate rows/s, and per job the WAL bytes, the table bytes and the
//! database server's CPU seconds: the figures the README sizes a database from.
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench fleet    # FLEET_MAX=3 processes, FLEET_REPS=1
//! ```
//!
//! Setup as the `run` benchmark ([`nexingest_benches::QueueBench`]: `map_cell` populated,
//! the rows file of the baselines). For each count n, alternating which comes first: n jobs
//! enqueued and n workers started at once (job tables emptied and `CHECKPOINT` before), and
//! n `psql \copy` streams started at once into n empty tables. Wall time from the first spawn
//! until the last process exits. Server CPU is the postmaster's and its children's
//! user + system time from `/proc` (the benchmark must run on the database's machine).

use nexingest_benches::cmip6_job::{self, MODELS};
use nexingest_benches::{QueueBench, env_or, gib, load_average, measure_all, median};

const SCHEMA: &str = "nexingest_fleet";

/// One measured configuration.
#[derive(Default)]
struct Figures {
    secs: Vec<f64>,
    wal: Vec<f64>,
    cpu: Vec<f64>,
    table: Vec<f64>,
    rss: u64,
    load: String,
}

impl Figures {
    fn add(&mut self, secs: f64, wal: u64, cpu: Option<f64>, table: u64, rss: u64) {
        self.secs.push(secs);
        self.wal.push(wal as f64);
        if let Some(c) = cpu {
            self.cpu.push(c);
        }
        self.table.push(table as f64);
        self.rss = self.rss.max(rss);
        self.load = load_average();
    }
}

fn main() {
    let max: usize = env_or("FLEET_MAX", 3usize).clamp(1, MODELS.len());
    let reps: usize = env_or("FLEET_REPS", 1usize).max(1);
    let b = QueueBench::new(
        "fleet",
        SCHEMA,
        &MODELS[..max],
        max,
        "FLEET_NEXINGEST",
        "FLEET_LOG",
    );
    let db = &b.db;
    let mut workers: Vec<Figures> = (0..max).map(|_| Figures::default()).collect();
    let mut psql: Vec<Figures> = (0..max).map(|_| Figures::default()).collect();
    for rep in 0..reps {
        for n in 1..=max {
            for step in 0..2 {
                if (step + n + rep) % 2 == 0 {
                    cmip6_job::reset_jobs(db, SCHEMA);
                    b.aws.enqueue_cmip6(&MODELS[..n]);
                    eprintln!("{n} worker(s) ...");
                    let mark = db.mark();
                    let mut cmds: Vec<_> = (0..n).map(|_| b.run_cmd(1)).collect();
                    let m = measure_all(&mut cmds, "nexingest run", true);
                    let (wal, cpu) = (db.wal_bytes_since(&mark), db.cpu_secs_since(&mark));
                    assert_eq!(
                        db.count(SCHEMA, "climate_data_year"),
                        b.rows * n as u64,
                        "the workers loaded every job\n{}",
                        m.stderr
                    );
                    let table = db.total_bytes(SCHEMA, "climate_data_year");
                    eprintln!("  {:.2} s", m.secs);
                    workers[n - 1].add(m.secs, wal, cpu, table, m.peak_rss);
                    cmip6_job::reset_jobs(db, SCHEMA);
                } else {
                    b.reset_copies(max);
                    eprintln!("{n} psql \\copy stream(s) ...");
                    let mark = db.mark();
                    let mut cmds: Vec<_> = (0..n).map(|k| b.psql_copy_cmd(k)).collect();
                    let m = measure_all(&mut cmds, "psql \\copy", false);
                    let (wal, cpu) = (db.wal_bytes_since(&mark), db.cpu_secs_since(&mark));
                    let table = b.copies_bytes(n);
                    eprintln!("  {:.2} s", m.secs);
                    psql[n - 1].add(m.secs, wal, cpu, table, 0);
                }
            }
        }
    }
    b.reset_copies(max);

    println!();
    println!(
        "fleet: n processes at once, one whole-grid NEX-GDDP-CMIP6 job each ({} rows, {:.0} MB \
         binary COPY stream); database: {}; {reps} rep(s), medians",
        b.rows,
        b.file_bytes as f64 / 1e6,
        db.describe()
    );
    println!();
    println!(
        "| n | what | s | rows/s | × 1 stream's rows/s | worker / psql time | WAL GB per job | table GB per job | server CPU s per job | peak RSS GiB | load avg after |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let rate = |f: &Figures, n: usize| (b.rows * n as u64) as f64 / median(&f.secs);
    let base = rate(&psql[0], 1);
    for n in 1..=max {
        for (what, f) in [("workers", &workers[n - 1]), ("psql streams", &psql[n - 1])] {
            let per_job = |v: &[f64]| median(v) / n as f64;
            let cpu = if f.cpu.is_empty() {
                "n/a".to_owned()
            } else {
                format!("{:.1}", per_job(&f.cpu))
            };
            println!(
                "| {n} | {what} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {cpu} | {} | {} |",
                median(&f.secs),
                rate(f, n),
                rate(f, n) / base,
                median(&f.secs) / median(&psql[n - 1].secs),
                per_job(&f.wal) / 1e9,
                per_job(&f.table) / 1e9,
                if f.rss > 0 {
                    format!("{:.2}", gib(f.rss))
                } else {
                    String::new()
                },
                f.load
            );
        }
    }
}

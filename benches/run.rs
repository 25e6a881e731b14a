//! `run` throughput: a queue of whole-grid NEX-GDDP-CMIP6 jobs (the `e2e` job's files under 4
//! model names, in moto S3, one SQS message each) through the real `nexingest run
//! --until-empty --jobs 2` release binary, against `psql \copy … (FORMAT binary)` of the same
//! rows, 4 times: one after another, and two at a time (DESIGN §7: the queue ≤ 1.05× the
//! `psql \copy` time of all its rows, memory within the budget).
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench run      # RUN_REPS=1, RUN_JOBS=4, RUN_WORKER_JOBS=2
//! ```
//!
//! Setup ([`nexingest_benches::QueueBench`]): the files are uploaded under the model names, a
//! fresh schema is migrated and one `ingest` of the job fills `map_cell` (so the measured jobs
//! are steady state, as almost every job of a real run) and gives the rows file of the
//! baselines. Each repetition then rotates the order of: the worker (job tables emptied,
//! `CHECKPOINT`, messages sent, the process timed from start to exit, peak RSS by `wait4`), the
//! same with `--jobs 1` (the jobs one after another, for reference), `psql \copy` of the rows
//! file into `RUN_JOBS` empty tables one after another, and the same two tables at a time. Wall times include process start; the worker's also the S3 downloads
//! from moto. The worker's per-phase lines (debug) are printed for the last repetition.

use nexingest_benches::cmip6_job::{self, MODELS};
use nexingest_benches::{QueueBench, env_or, gib, load_average, measure, measure_all, median};

const SCHEMA: &str = "nexingest_run";

/// Seconds, server figures and peak RSS of one measured stretch.
struct Stretch {
    secs: f64,
    wal: u64,
    cpu: Option<f64>,
    rss: u64,
}

fn main() {
    let reps: usize = env_or("RUN_REPS", 1usize).max(1);
    let jobs: usize = env_or("RUN_JOBS", 4usize).clamp(1, MODELS.len());
    let worker_jobs: usize = env_or("RUN_WORKER_JOBS", 2usize).max(1);
    let budget_mb: u64 = env_or("NEXINGEST_MEMORY_BUDGET_MB", 6144u64);
    let models = &MODELS[..jobs];
    let b = QueueBench::new("run", SCHEMA, models, jobs, "RUN_NEXINGEST", "RUN_LOG");
    let db = &b.db;
    eprintln!(
        "{jobs} jobs of {} rows ({:.0} MB binary COPY stream each)",
        b.rows,
        b.file_bytes as f64 / 1e6
    );

    let mut worker = Vec::new();
    let mut serial = Vec::new();
    let mut seq = Vec::new();
    let mut two = Vec::new();
    let mut last_stderr = String::new();
    let mut loads = Vec::new();
    // The worker with `n` jobs at once: its figures and its log.
    let run_worker = |n: usize, rep: usize| -> (Stretch, String) {
        cmip6_job::reset_jobs(db, SCHEMA);
        b.aws.enqueue_cmip6(models);
        eprintln!("rep {}: nexingest run --jobs {n} ...", rep + 1);
        let mark = db.mark();
        let m = measure(&mut b.run_cmd(n), "nexingest run");
        let s = Stretch {
            secs: m.secs,
            wal: db.wal_bytes_since(&mark),
            cpu: db.cpu_secs_since(&mark),
            rss: m.peak_rss,
        };
        assert_eq!(
            db.count(SCHEMA, "climate_data_year"),
            b.rows * jobs as u64,
            "the worker loaded every job\n{}",
            m.stderr
        );
        eprintln!("  {:.2} s, peak RSS {:.2} GiB", s.secs, gib(s.rss));
        cmip6_job::reset_jobs(db, SCHEMA);
        (s, m.stderr)
    };
    // `psql \copy` into the `jobs` tables, `at_once` at a time.
    let run_psql = |at_once: usize, rep: usize| -> Stretch {
        b.reset_copies(jobs);
        eprintln!(
            "rep {}: {jobs} × psql \\copy, {at_once} at a time ...",
            rep + 1
        );
        let mark = db.mark();
        let t = std::time::Instant::now();
        for group in (0..jobs).collect::<Vec<_>>().chunks(at_once) {
            let mut cmds: Vec<_> = group.iter().map(|&k| b.psql_copy_cmd(k)).collect();
            measure_all(&mut cmds, "psql \\copy", false);
        }
        let s = Stretch {
            secs: t.elapsed().as_secs_f64(),
            wal: db.wal_bytes_since(&mark),
            cpu: db.cpu_secs_since(&mark),
            rss: 0,
        };
        eprintln!("  {:.2} s", s.secs);
        s
    };
    for rep in 0..reps {
        // Rotate which comes first.
        for step in 0..4 {
            match (step + rep) % 4 {
                0 => {
                    let (s, log) = run_worker(worker_jobs, rep);
                    worker.push(s);
                    last_stderr = log;
                }
                1 => seq.push(run_psql(1, rep)),
                2 => serial.push(run_worker(1, rep).0),
                _ => two.push(run_psql(2, rep)),
            }
            loads.push(load_average());
        }
    }
    b.reset_copies(jobs);

    let med = |v: &[Stretch]| median(&v.iter().map(|s| s.secs).collect::<Vec<_>>());
    let (wm, sm, tm) = (med(&worker), med(&seq), med(&two));
    let rss = worker.iter().map(|s| s.rss).max().unwrap_or(0);
    let rows = b.rows * jobs as u64;
    let cpu = |v: &[Stretch]| {
        let c: Vec<f64> = v.iter().filter_map(|s| s.cpu).collect();
        if c.is_empty() {
            "n/a".to_owned()
        } else {
            format!("{:.1}", median(&c))
        }
    };
    let wal = |v: &[Stretch]| {
        median(&v.iter().map(|s| s.wal as f64).collect::<Vec<_>>()) / jobs as f64 / 1e9
    };
    println!();
    println!(
        "run: {jobs} whole-grid NEX-GDDP-CMIP6 jobs ({} rows, {:.0} MB binary COPY stream each) \
         via moto S3 + SQS; database: {}; {reps} rep(s), medians; load average during the \
         run: {}",
        b.rows,
        b.file_bytes as f64 / 1e6,
        db.describe(),
        loads.join(" / ")
    );
    println!();
    println!(
        "| what | s | rows/s | × psql one after another | × psql two at a time | WAL GB per job | server CPU s | peak RSS GiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| `nexingest run --until-empty --jobs {worker_jobs}` | {wm:.2} | {:.0} | **{:.2}** | {:.2} | {:.2} | {} | {:.2} |",
        rows as f64 / wm,
        wm / sm,
        wm / tm,
        wal(&worker),
        cpu(&worker),
        gib(rss)
    );
    let rm = med(&serial);
    println!(
        "| `nexingest run --until-empty --jobs 1` (reference) | {rm:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} |",
        rows as f64 / rm,
        rm / sm,
        rm / tm,
        wal(&serial),
        cpu(&serial),
        gib(serial.iter().map(|s| s.rss).max().unwrap_or(0))
    );
    println!(
        "| {jobs} × `psql \\copy`, one after another | {sm:.2} | {:.0} | 1.00 | {:.2} | {:.2} | {} | |",
        rows as f64 / sm,
        sm / tm,
        wal(&seq),
        cpu(&seq)
    );
    println!(
        "| {jobs} × `psql \\copy`, two at a time | {tm:.2} | {:.0} | {:.2} | 1.00 | {:.2} | {} | |",
        rows as f64 / tm,
        tm / sm,
        wal(&two),
        cpu(&two)
    );
    println!();
    let budget = (budget_mb + 1024) << 20;
    println!(
        "target run ≤ 1.05× {jobs} × psql \\copy: {} ({:.2}×); peak RSS ≤ budget {budget_mb} MB + 1 GB: {} ({:.2} GiB)",
        if wm / sm <= 1.05 { "met" } else { "NOT met" },
        wm / sm,
        if rss <= budget { "met" } else { "NOT met" },
        gib(rss)
    );
    println!();
    println!("worker phases (last repetition):");
    for l in last_stderr
        .lines()
        .filter(|l| l.contains("phase") || l.contains("loaded") || l.contains("job "))
    {
        println!("    {}", nexingest_benches::strip_ansi(l).trim());
    }
}

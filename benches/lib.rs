//! Shared helpers for the nexingest benchmarks (`cargo bench -p nexingest-benches`).
#![warn(missing_docs)]

pub mod fleetsim;

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// `n` pseudo-random points in the CONUS bounding box (24.5–49.4° N, 124.8–66.9° W), fixed
/// seed: the cities of the location-mode and link benchmarks.
pub fn conus_points(n: usize) -> Vec<(f64, f64)> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1_u64 << 53) as f64
    };
    (0..n)
        .map(|_| (24.5 + 24.9 * next(), -124.8 + 57.9 * next()))
        .collect()
}

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
    generated_as(spec, &spec.file_name())
}

/// [`generated`] under another file name (a spec whose layout differs from its dataset's).
///
/// # Panics
///
/// If the file cannot be written.
pub fn generated_as(spec: &fixtures::GridSpec, name: &str) -> PathBuf {
    let dir = bench_data_dir();
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    let path = dir.join(name);
    if !path.exists() {
        eprintln!("generating {} (once) ...", path.display());
        // Write under a private name, then rename: concurrent runs never see a partial file.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        fixtures::write_grid(&tmp, spec).expect("write the benchmark grid");
        std::fs::rename(&tmp, &path).expect("rename the benchmark grid");
    }
    path
}

/// One stored chunk: where its data starts in the grid, file offset and compressed size.
#[derive(Debug, Clone, Copy)]
pub struct RawChunk {
    /// Index of its first element on each axis (time, lat, lon).
    pub origin: [u64; 3],
    /// Byte offset in the file.
    pub addr: u64,
    /// Compressed size in bytes.
    pub size: usize,
}

/// The stored chunks of `var` (from the HDF5 chunk index) and the decompressed chunk size.
/// See [`chunk_shape`] for the chunks' extent.
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
                let mut origin = [0; 3];
                for (o, v) in origin.iter_mut().zip(&info.offset) {
                    *o = *v;
                }
                RawChunk {
                    origin,
                    addr: info.addr,
                    size: info.size as usize,
                }
            })
            .collect();
        (chunks, chunk_bytes)
    })
}

/// The chunk shape of `var` (time, lat, lon).
///
/// # Panics
///
/// If the variable is missing or not chunked.
pub fn chunk_shape(path: &Path, var: &str) -> Vec<usize> {
    hdf5_metno::sync::sync(|| {
        let file = hdf5_metno::File::open(path).expect("open with HDF5");
        file.dataset(var)
            .expect("dataset")
            .chunk()
            .expect("chunked")
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

/// The workspace root (`benches/..`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// The environment variable `k` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(k: &str, default: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `<target>/release/nexingest`, built first with `cargo build --release -p worker` (a no-op
/// when up to date) in the same target dir; the environment variable `override_var`, when set,
/// names a binary to use instead.
///
/// # Panics
///
/// If the build fails.
pub fn nexingest_bin(override_var: &str) -> PathBuf {
    if let Ok(p) = std::env::var(override_var) {
        return PathBuf::from(p);
    }
    let ws = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| ws.join(t))
        .unwrap_or_else(|| ws.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building: cargo build --release -p worker (CARGO_TARGET_DIR={})",
        target.display()
    );
    let ok = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "worker"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&ws)
        .status()
        .expect("run cargo")
        .success();
    assert!(ok, "cargo build --release -p worker failed");
    target.join("release").join("nexingest")
}

/// Finished child processes: wall time until the last ended, the largest peak RSS, and their
/// outputs (concatenated in spawn order).
#[derive(Debug)]
pub struct Measured {
    /// Wall seconds from the first spawn until the last child ended.
    pub secs: f64,
    /// The largest child's peak RSS (`ru_maxrss`), bytes.
    pub peak_rss: u64,
    /// CPU seconds (user + system) of all the children.
    pub cpu_secs: f64,
    /// Standard output (empty when discarded).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Spawns one command and waits for it with `wait4` (for its `ru_maxrss`).
///
/// # Panics
///
/// If it cannot be spawned or does not exit with 0 (with its output in the message).
pub fn measure(cmd: &mut std::process::Command, what: &str) -> Measured {
    measure_all(std::slice::from_mut(cmd), what, true)
}

/// Spawns the commands at once (stdout to /dev/null unless `keep_stdout`) and waits for all with
/// `wait4`: the wall time is until the last ends, the peak RSS the largest child's.
///
/// # Panics
///
/// If one cannot be spawned or does not exit with 0 (with its output in the message).
#[allow(clippy::zombie_processes)] // reaped by `wait4`, which `Child` cannot see
pub fn measure_all(cmds: &mut [std::process::Command], what: &str, keep_stdout: bool) -> Measured {
    use std::process::Stdio;
    let dir = std::env::temp_dir();
    let t = std::time::Instant::now();
    let mut children = Vec::new();
    for (k, cmd) in cmds.iter_mut().enumerate() {
        let out_path = dir.join(format!(".nexingest-bench-{}-{k}.out", std::process::id()));
        let err_path = dir.join(format!(".nexingest-bench-{}-{k}.err", std::process::id()));
        let out: Stdio = if keep_stdout {
            File::create(&out_path).expect("stdout file").into()
        } else {
            Stdio::null()
        };
        let err = File::create(&err_path).expect("stderr file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
        children.push((child.id() as libc::pid_t, out_path, err_path));
    }
    let mut peak = 0;
    let mut cpu = 0.0;
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut failed = Vec::new();
    for (pid, out_path, err_path) in children {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain data; all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        assert_eq!(r, pid, "{what}: wait4: {}", std::io::Error::last_os_error());
        stdout.push_str(&std::fs::read_to_string(&out_path).unwrap_or_default());
        stderr.push_str(&std::fs::read_to_string(&err_path).unwrap_or_default());
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push(status);
        }
        // Linux reports ru_maxrss in KiB.
        peak = peak.max(ru.ru_maxrss as u64 * 1024);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        cpu += tv(ru.ru_utime) + tv(ru.ru_stime);
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(
        failed.is_empty(),
        "{what} failed ({failed:?}):\n{stdout}\n{stderr}"
    );
    Measured {
        secs,
        peak_rss: peak,
        cpu_secs: cpu,
        stdout,
        stderr,
    }
}

/// A database reached through `psql`.
#[derive(Debug, Clone)]
pub struct Db {
    /// Connection URL.
    pub url: String,
    /// The `psql` binary.
    pub psql: String,
}

impl Db {
    /// The benchmark database: `NEXINGEST_BENCH_DATABASE_URL`, the production-like cluster of
    /// `scripts/services.sh start-bench` (fsync, full_page_writes, synchronous_commit on,
    /// wal_level replica), unless `NEXINGEST_BENCH_CLUSTER=test` asks for the fast test cluster
    /// (`NEXINGEST_DATABASE_URL`). Prints which cluster and its durability settings.
    ///
    /// # Panics
    ///
    /// If the URL is not set or the server does not answer (with the command that fixes it).
    pub fn for_bench() -> Db {
        let psql = std::env::var("NEXINGEST_PSQL").unwrap_or_else(|_| "psql".into());
        let test = std::env::var("NEXINGEST_BENCH_CLUSTER").is_ok_and(|c| c == "test");
        let var = if test {
            "NEXINGEST_DATABASE_URL"
        } else {
            "NEXINGEST_BENCH_DATABASE_URL"
        };
        let url = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: run `scripts/services.sh start-bench && eval \"$(scripts/services.sh env)\"`")
        });
        let db = Db { url, psql };
        let ok = db
            .psql_cmd()
            .args(["-c", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "the database of {var} does not answer: start it with `scripts/services.sh start-bench` \
             (or set NEXINGEST_BENCH_CLUSTER=test to measure on the fast test cluster)"
        );
        eprintln!("database: {}", db.describe());
        db
    }

    /// `psql` with this database, quiet, unaligned, stopping at the first error.
    pub fn psql_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.psql);
        c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", &self.url]);
        c
    }

    /// Runs SQL (several statements allowed, or a psql meta-command), returns the output.
    ///
    /// # Panics
    ///
    /// If psql fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = self
            .psql_cmd()
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `count(*)` of `schema.table`.
    pub fn count(&self, schema: &str, table: &str) -> u64 {
        self.sql(&format!("SELECT count(*) FROM {schema}.{table}"))
            .parse()
            .expect("count")
    }

    /// The server's durability settings in one line, for the figures' captions:
    /// `production-like (fsync=on, …)` or `test cluster (fsync=off, …)`.
    pub fn describe(&self) -> String {
        let s = self.sql(
            "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings \
             WHERE name IN ('fsync','full_page_writes','synchronous_commit','wal_level','max_wal_size','shared_buffers')",
        );
        let prod = s.contains("fsync=on") && s.contains("synchronous_commit=on");
        format!(
            "{} ({s})",
            if prod {
                "production-like"
            } else {
                "test cluster, NOT production-like"
            }
        )
    }
}

/// The median (mean of the middle two for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Bytes in GiB.
pub fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// The text of a log line without its colour escapes (`ESC [ … m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The end-to-end job: one NEX-GDDP-CMIP6 year (all data cells of a 365 × 600 × 1440 grid,
/// `tasmin`, `tasmax`, `pr`), the input of the `e2e`, `run` and `fleet` benchmarks.
pub mod cmip6_job {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::Db;

    /// The job's variables.
    pub const VARS: [&str; 3] = ["tasmin", "tasmax", "pr"];
    /// Scenario.
    pub const SCENARIO: &str = "ssp585";
    /// The model the files are generated for.
    pub const MODEL: &str = "ACCESS-CM2";
    /// Its member.
    pub const MEMBER: &str = "r1i1p1f1";
    /// Year.
    pub const YEAR: i32 = 2015;
    /// The columns of its rows.
    pub const COLUMNS: &str = "data_source_id, map_cell_id, tasmin, tasmax, pr";
    /// Models whose names the `run` and `fleet` benchmarks give the same files (all with the
    /// three variables in the catalog).
    pub const MODELS: [&str; 6] = [
        "ACCESS-CM2",
        "ACCESS-ESM1-5",
        "BCC-CSM2-MR",
        "CanESM5",
        "EC-Earth3",
        "GFDL-ESM4",
    ];

    /// The job's three full-size files, generated once into [`bench_data_dir`] (private
    /// name, then rename: concurrent runs never see a partial file).
    ///
    /// # Panics
    /// If a file cannot be written.
    pub fn input_files() -> Vec<PathBuf> {
        VARS.iter()
            .map(|var| {
                super::generated(&fixtures::GridSpec::nex_gddp_cmip6_full_grid(
                    var,
                    SCENARIO,
                    MODEL,
                    MEMBER,
                    YEAR,
                    fixtures::Calendar::Standard,
                ))
            })
            .collect()
    }

    /// `nexingest` against `db` in `schema`, text logs at `info,worker=debug` (the per-phase
    /// lines) unless the environment variable `log_var` says otherwise.
    pub fn nexingest(bin: &Path, db: &Db, schema: &str, log_var: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("NEXINGEST_DATABASE_URL", &db.url)
            .env("NEXINGEST_SCHEMA", schema)
            .env("NEXINGEST_LOG_FORMAT", "text")
            .env(
                "NEXINGEST_LOG",
                std::env::var(log_var).unwrap_or_else(|_| "info,worker=debug".into()),
            )
            .env_remove("RUST_LOG");
        c
    }

    /// `nexingest ingest` of the job (model [`MODEL`]) from its local files.
    pub fn ingest(bin: &Path, db: &Db, schema: &str, log_var: &str, files: &[PathBuf]) -> Command {
        ingest_at(bin, db, schema, log_var, files, "all")
    }

    /// `nexingest ingest` of the job (model [`MODEL`]) from its local files for `locations`.
    pub fn ingest_at(
        bin: &Path,
        db: &Db,
        schema: &str,
        log_var: &str,
        files: &[PathBuf],
        locations: &str,
    ) -> Command {
        let mut c = nexingest(bin, db, schema, log_var);
        c.args([
            "ingest",
            "--dataset",
            "NEX-GDDP-CMIP6",
            "--scenario",
            SCENARIO,
            "--model",
            MODEL,
            "--year",
            &YEAR.to_string(),
            "--variables",
            &VARS.join(","),
            "--locations",
            locations,
            "--no-progress",
        ])
        .args(files);
        c
    }

    /// Writes the rows of `schema.climate_data_year` as one binary COPY file (what `psql
    /// \copy` loads in the baselines); returns its size in bytes.
    pub fn export_rows(db: &Db, schema: &str, file: &Path) -> u64 {
        db.sql(&format!(
            "\\copy (SELECT {COLUMNS} FROM {schema}.climate_data_year \
             ORDER BY data_source_id, map_cell_id) TO '{}' (FORMAT binary)",
            file.display()
        ));
        std::fs::metadata(file).map_or(0, |m| m.len())
    }

    /// `psql \copy table (COLUMNS) FROM file (FORMAT binary)`.
    pub fn psql_copy_cmd(db: &Db, table: &str, file: &Path) -> Command {
        let mut c = db.psql_cmd();
        c.arg("-c").arg(format!(
            "\\copy {table} ({COLUMNS}) FROM '{}' (FORMAT binary)",
            file.display()
        ));
        c
    }

    /// Empties the job tables of `schema` (keeps `map_cell`, the grid shared by all jobs) and
    /// checkpoints.
    pub fn reset_jobs(db: &Db, schema: &str) {
        db.sql(&format!(
            "TRUNCATE {schema}.climate_data_year, {schema}.data_source_variable, \
             {schema}.job_ledger, {schema}.data_source; CHECKPOINT"
        ));
    }
}

/// A bucket and a queue (with its dead-letter queue) on the local moto server
/// (`NEXINGEST_AWS_ENDPOINT_URL`, from `scripts/services.sh env`), for benchmarks of
/// `nexingest run`: the job's files uploaded under several model names, one message per job.
pub struct LocalAws {
    /// The moto endpoint.
    pub endpoint: String,
    /// The data bucket.
    pub bucket: String,
    /// The queue.
    pub queue_url: String,
    dlq_url: String,
    rt: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
}

/// The worker's AWS settings for one bucket at `endpoint`.
fn aws_config(endpoint: &str, bucket: &str) -> worker::config::AwsConfig {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    worker::config::AwsConfig {
        endpoint_url: Some(endpoint.to_owned()),
        nex_gddp_bucket: bucket.to_owned(),
        loca_bucket: bucket.to_owned(),
        cmip6_bucket: bucket.to_owned(),
        allowed_buckets: [bucket.to_owned()].into_iter().collect(),
        timeouts: worker::config::AwsTimeouts::default(),
        s3: worker::config::S3Access {
            region,
            no_sign_request: false,
        },
    }
}

impl LocalAws {
    /// A fresh bucket and queue named after `name` and this process.
    ///
    /// # Panics
    /// If `NEXINGEST_AWS_ENDPOINT_URL` is unset or moto does not answer.
    pub fn new(name: &str) -> LocalAws {
        let endpoint = std::env::var("NEXINGEST_AWS_ENDPOINT_URL").unwrap_or_else(|_| {
            panic!("NEXINGEST_AWS_ENDPOINT_URL is not set: run `scripts/services.sh start-bench && eval \"$(scripts/services.sh env)\"`")
        });
        let id = format!("{name}-{}", std::process::id());
        let bucket = format!("bench-{id}");
        let cfg = aws_config(&endpoint, &bucket);
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let (s3, sqs, queue_url, dlq_url) = rt.block_on(async {
            let c = worker::aws::clients(&cfg).await;
            c.s3.create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("create bucket on moto");
            let (q, dlq) = worker::queue::create_with_dlq(
                &c.sqs,
                &format!("q-{id}"),
                &format!("q-{id}-dlq"),
                3,
                300,
            )
            .await
            .expect("create queue on moto");
            (c.s3, c.sqs, q, dlq)
        });
        LocalAws {
            endpoint,
            bucket,
            queue_url,
            dlq_url,
            rt,
            s3,
            sqs,
        }
    }

    /// Uploads one file under `key`.
    ///
    /// # Panics
    /// If the upload fails.
    pub fn upload(&self, path: &Path, key: &str) {
        self.rt.block_on(async {
            let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
                .await
                .expect("read the file");
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .expect("upload to moto");
        });
    }

    /// Runs `f` on this value's Tokio runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// An S3 client of the bucket at another `endpoint` (a `linkproxy` in front of moto, say).
    pub fn s3_at(&self, endpoint: &str) -> aws_sdk_s3::Client {
        let cfg = aws_config(endpoint, &self.bucket);
        self.rt
            .block_on(async { worker::aws::clients(&cfg).await.s3 })
    }

    /// Uploads the [`cmip6_job`] files under `model`'s keys (the dataset's key template).
    ///
    /// # Panics
    /// If an upload fails.
    pub fn upload_cmip6_job(&self, model: &str, files: &[PathBuf]) {
        use worker::catalog::Dataset;
        for (var, path) in cmip6_job::VARS.iter().zip(files) {
            let key = Dataset::NexGddpCmip6.key(cmip6_job::SCENARIO, model, cmip6_job::YEAR, var);
            self.upload(path, &key);
        }
    }

    /// Sends one whole-grid job message per model (the native format of
    /// `worker/src/message.rs`).
    ///
    /// # Panics
    /// If a send fails.
    pub fn enqueue_cmip6(&self, models: &[&str]) {
        self.enqueue_cmip6_at(models, "all");
    }

    /// Sends one job message per model for `locations` (`all`, `cities`, …).
    ///
    /// # Panics
    /// If a send fails.
    pub fn enqueue_cmip6_at(&self, models: &[&str], locations: &str) {
        self.rt.block_on(async {
            for m in models {
                let body = format!(
                    r#"{{"dataset":"NEX-GDDP-CMIP6","scenario":"{}","model":"{m}","year":{},"variables":["tasmin","tasmax","pr"],"locations":"{locations}"}}"#,
                    cmip6_job::SCENARIO,
                    cmip6_job::YEAR
                );
                self.sqs
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(body)
                    .send()
                    .await
                    .expect("send a job message");
            }
        });
    }

    /// `nexingest run --until-empty --jobs <jobs>` on this queue and bucket (short long-poll so
    /// an empty queue ends it quickly); more flags with `.args`.
    pub fn run_cmd(
        &self,
        bin: &Path,
        db: &Db,
        schema: &str,
        log_var: &str,
        jobs: usize,
    ) -> std::process::Command {
        let mut c = cmip6_job::nexingest(bin, db, schema, log_var);
        c.env("NEXINGEST_AWS_ENDPOINT_URL", &self.endpoint).args([
            "run",
            "--queue-url",
            &self.queue_url,
            "--cmip6-bucket",
            &self.bucket,
            "--wait-time",
            "1",
            "--until-empty",
            "--jobs",
            &jobs.to_string(),
        ]);
        c
    }

    /// Deletes the objects, the bucket and the queues (moto keeps them in memory).
    pub fn delete(&self) {
        self.rt.block_on(async {
            if let Ok(list) = self.s3.list_objects_v2().bucket(&self.bucket).send().await {
                for o in list.contents() {
                    if let Some(k) = o.key() {
                        let _ = self
                            .s3
                            .delete_object()
                            .bucket(&self.bucket)
                            .key(k)
                            .send()
                            .await;
                    }
                }
            }
            let _ = self.s3.delete_bucket().bucket(&self.bucket).send().await;
            for q in [&self.queue_url, &self.dlq_url] {
                let _ = self.sqs.delete_queue().queue_url(q).send().await;
            }
        });
    }
}

/// Server-side figures of a stretch of work: WAL written and the server processes' CPU.
#[derive(Debug, Clone)]
pub struct ServerMark {
    lsn: String,
    cpu: Option<f64>,
}

impl Db {
    /// Marks the WAL position and the server's CPU time now.
    pub fn mark(&self) -> ServerMark {
        ServerMark {
            lsn: self.sql("SELECT pg_current_wal_lsn()"),
            cpu: self.server_cpu_secs(),
        }
    }

    /// WAL bytes written since `m`.
    pub fn wal_bytes_since(&self, m: &ServerMark) -> u64 {
        self.sql(&format!(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{}')::bigint",
            m.lsn
        ))
        .parse()
        .expect("wal bytes")
    }

    /// Server CPU seconds (user + system) since `m`, when the server runs on this machine.
    pub fn cpu_secs_since(&self, m: &ServerMark) -> Option<f64> {
        Some(self.server_cpu_secs()? - m.cpu?)
    }

    /// CPU seconds (user + system) of the server so far: the postmaster with its reaped
    /// children (`cutime`/`cstime`: backends that have exited) plus its live children, from
    /// `/proc`. `None` when the server is not a local process we can read.
    pub fn server_cpu_secs(&self) -> Option<f64> {
        let dir = self.sql("SHOW data_directory");
        let pid: u32 = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // Fields after the command name: state is field 3; utime 14, stime 15, cutime 16,
        // cstime 17 (1-based, as in proc(5)); ppid 4.
        let stat = |p: &str| -> Option<(u32, [u64; 4])> {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
            Some((n(4)? as u32, [n(14)?, n(15)?, n(16)?, n(17)?]))
        };
        let (_, own) = stat(&pid.to_string())?;
        let mut ticks: u64 = own.iter().sum();
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = e.file_name();
            let Some(p) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((ppid, t)) = stat(p)
                && ppid == pid
            {
                ticks += t[0] + t[1];
            }
        }
        Some(ticks as f64 / hz)
    }

    /// `pg_total_relation_size` of `schema.table` (heap, TOAST and indexes), bytes.
    pub fn total_bytes(&self, schema: &str, table: &str) -> u64 {
        self.sql(&format!(
            "SELECT pg_total_relation_size('{schema}.{table}')"
        ))
        .parse()
        .expect("relation size")
    }
}

/// The machine's load averages (1, 5, 15 min) as in `uptime`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The common setup of the queue benchmarks (`run`, `fleet`): the [`cmip6_job`] files under
/// `models` in a fresh moto bucket, a fresh migrated schema whose `map_cell` holds the grid
/// (one `ingest` of the job, whose rows become the binary COPY file of the `psql \copy`
/// baselines; job tables emptied again), and `copies` baseline tables
/// `psql_copy_0…` (`LIKE climate_data_year INCLUDING ALL`). Dropping it removes the schema,
/// the file, the bucket and the queues.
pub struct QueueBench {
    /// The database.
    pub db: Db,
    /// The release binary.
    pub bin: PathBuf,
    /// Bucket and queue.
    pub aws: LocalAws,
    /// The schema.
    pub schema: &'static str,
    /// Rows of one job.
    pub rows: u64,
    /// The rows of one job as a binary COPY file.
    pub rows_file: PathBuf,
    /// Its size.
    pub file_bytes: u64,
    /// Environment variable with the worker's log filter.
    pub log_var: &'static str,
}

impl QueueBench {
    /// Sets up (see the type's docs); `name` names the bucket and queue, `bin_var` may name
    /// another binary.
    ///
    /// # Panics
    /// If a service does not answer or a step fails.
    pub fn new(
        name: &str,
        schema: &'static str,
        models: &[&str],
        copies: usize,
        bin_var: &str,
        log_var: &'static str,
    ) -> QueueBench {
        let db = Db::for_bench();
        let bin = nexingest_bin(bin_var);
        let files = cmip6_job::input_files();
        let aws = LocalAws::new(name);
        eprintln!(
            "uploading the job's files under {} model names ...",
            models.len()
        );
        for m in models {
            aws.upload_cmip6_job(m, &files);
        }
        db.sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        measure(
            cmip6_job::nexingest(&bin, &db, schema, log_var).arg("migrate"),
            "nexingest migrate",
        );
        eprintln!("setup: one job fills map_cell and gives the baseline's rows ...");
        measure(
            &mut cmip6_job::ingest(&bin, &db, schema, log_var, &files),
            "nexingest ingest",
        );
        let rows = db.count(schema, "climate_data_year");
        let rows_file =
            bench_data_dir().join(format!(".{name}-rows-{}.pgcopy", std::process::id()));
        let file_bytes = cmip6_job::export_rows(&db, schema, &rows_file);
        cmip6_job::reset_jobs(&db, schema);
        for k in 0..copies {
            db.sql(&format!(
                "CREATE TABLE {schema}.psql_copy_{k} (LIKE {schema}.climate_data_year INCLUDING ALL)"
            ));
        }
        QueueBench {
            db,
            bin,
            aws,
            schema,
            rows,
            rows_file,
            file_bytes,
            log_var,
        }
    }

    /// `nexingest run --until-empty --jobs <jobs>` on the bench's queue.
    pub fn run_cmd(&self, jobs: usize) -> std::process::Command {
        self.aws
            .run_cmd(&self.bin, &self.db, self.schema, self.log_var, jobs)
    }

    /// `psql \copy` of the rows file into baseline table `k`.
    pub fn psql_copy_cmd(&self, k: usize) -> std::process::Command {
        cmip6_job::psql_copy_cmd(
            &self.db,
            &format!("{}.psql_copy_{k}", self.schema),
            &self.rows_file,
        )
    }

    /// Empties the baseline tables and checkpoints.
    pub fn reset_copies(&self, copies: usize) {
        let t: Vec<String> = (0..copies)
            .map(|k| format!("{}.psql_copy_{k}", self.schema))
            .collect();
        self.db
            .sql(&format!("TRUNCATE {}; CHECKPOINT", t.join(", ")));
    }

    /// `pg_total_relation_size` of baseline tables `0..copies` together.
    pub fn copies_bytes(&self, copies: usize) -> u64 {
        (0..copies)
            .map(|k| self.db.total_bytes(self.schema, &format!("psql_copy_{k}")))
            .sum()
    }
}

impl Drop for QueueBench {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.rows_file);
        let _ = self
            .db
            .psql_cmd()
            .arg("-c")
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .output();
        self.aws.delete();
    }
}

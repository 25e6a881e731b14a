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

/// The end-to-end job's variables, in column order.
pub const E2E_VARS: [&str; 3] = ["tasmin", "tasmax", "pr"];

/// The end-to-end job's three full-size NEX-GDDP-CMIP6 files (ACCESS-CM2 ssp585 r1i1p1f1 2015,
/// [`E2E_VARS`], `365 × 600 × 1440`, dithered), written by the fixtures generator into
/// [`bench_data_dir`] if absent.
///
/// # Panics
///
/// If a file cannot be written.
pub fn e2e_job_files() -> Vec<PathBuf> {
    E2E_VARS
        .iter()
        .map(|var| {
            generated(&fixtures::GridSpec::nex_gddp_cmip6_full_grid(
                var,
                "ssp585",
                "ACCESS-CM2",
                "r1i1p1f1",
                2015,
                fixtures::Calendar::Standard,
            ))
        })
        .collect()
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
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(
        failed.is_empty(),
        "{what} failed ({failed:?}):\n{stdout}\n{stderr}"
    );
    Measured {
        secs,
        peak_rss: peak,
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

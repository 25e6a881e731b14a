//! A worker at its network link: city jobs and a whole-grid job through a link-limited S3
//! (`linkproxy` in front of moto), the fleet model checked against 1–3 worker processes, and
//! the fleet's wall time for the NEX-GDDP-CMIP6 cities load predicted from the figures.
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench link    # LINK_MBPS=400 LINK_JOBS=6 LINK_LATENCY_MS=20
//! ```
//!
//! The link is [`linkproxy`] in front of moto (`scripts/moto_server.py`, which serves a ranged
//! GET by reading only its range, as S3 does), with `LINK_LATENCY_MS` added to each request.
//!
//! Setup as the `run` benchmark ([`nexingest_benches::QueueBench`]): the job's three
//! full-size NEX-GDDP-CMIP6 files (365 × 600 × 1440, whole-day chunks) under `LINK_JOBS`
//! model names in moto, `map_cell` populated; 1,000 CONUS points imported as `cities`.
//! Both ways of reading a file are measured in the same run: by ranges while it decodes (the
//! default) and downloaded whole first (`--download-to-disk`: the next file downloads while one
//! decodes).
//!
//! 1. **City queue** at two link rates, `run --until-empty --jobs 2` through the proxy: one rate
//!    where the link is the bound (`LINK_MBPS`), one where the cores are (no limit: moto's own
//!    rate). Per job: bytes fetched ÷ file bytes, and job time ÷ (bytes ÷ link rate); over the
//!    queue: the link's busy fraction (bytes ÷ rate ÷ wall).
//! 2. **Whole-grid job** at `LINK_MBPS`: its time ÷ max(transfer, decode + load measured alone
//!    by `ingest` of the local files), and ÷ (transfer + load alone), its floor: a row holds
//!    every variable of its cell, so no row can be written before the last file's last chunk
//!    has arrived. `LINK_ONLY=grid` runs the setup and this section only.
//! 3. **Fleet model** ([`nexingest_benches::fleetsim`]) from the measured per-job figures
//!    (bytes, CPU seconds of a city job's `ingest`, its load time, one job's fetch rate alone),
//!    predicting 1, 2 and 3 worker processes (`--jobs 1` each) sharing the link and the 2
//!    cores; then they run, and the ratio is printed.
//! 4. **What a city job fetches** of one variable's file in each layout (NEX-GDDP-CMIP6's
//!    whole-day chunks, NEX-GDDP's `1 × 90 × 180` tiles, the same grid in `30 × 72 × 144`), read
//!    by ranges through the link at `LINK_MBPS` (locate + decode the 1,000 points, in process):
//!    bytes fetched against the compressed bytes of the chunks that hold the points' cells (from
//!    the chunk index), and the time against those bytes ÷ the rate; beside it, the same
//!    through a whole download, then the decode.
//! 5. **Prediction**: the NEX-GDDP-CMIP6 cities load (jobs counted from the catalog) on 20
//!    m5.2xlarge (2.5 Gbps, 8 vCPU, `--jobs 4`, `--max-db-loads 4`), today's path and streaming.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linkproxy::{LinkConfig, LinkProxy, Stats};
use nexdecode::GridFile;
use nexingest_benches::cmip6_job::{self, MODELS};
use nexingest_benches::fleetsim::{Fleet, Host, JobCost, simulate};
use nexingest_benches::{QueueBench, env_or, load_average, measure, measure_all};
use worker::catalog::Dataset;
use worker::s3::ObjectRanges;
use worker::s3::ranges::RangeOptions;

const SCHEMA: &str = "nexingest_link";

/// Per-job figures from the ledger of the last run.
#[derive(Debug, Default, Clone, Copy)]
struct Ledger {
    jobs: u64,
    bytes: f64,
    download_s: f64,
    decode_s: f64,
    load_s: f64,
    job_s: f64,
}

fn ledger(b: &QueueBench) -> Ledger {
    let out = b.db.sql(&format!(
        "SELECT count(*), avg(bytes_downloaded), avg(download_ms) / 1e3, avg(decode_ms) / 1e3, \
         avg(load_ms) / 1e3, avg(extract(epoch FROM finished_at - started_at)) \
         FROM {SCHEMA}.data_source WHERE state = 'done'"
    ));
    let v: Vec<f64> = out.split('|').map(|x| x.parse().unwrap_or(0.0)).collect();
    Ledger {
        jobs: v[0] as u64,
        bytes: v[1],
        download_s: v[2],
        decode_s: v[3],
        load_s: v[4],
        job_s: v[5],
    }
}

/// Of one file: (file bytes, bytes of the chunks that hold a cell of `cells`, those chunks, all
/// chunks), from the HDF5 chunk index.
fn needed_chunks(
    path: &std::path::Path,
    var: &str,
    cells: &[nexdecode::CellIndex],
) -> (u64, u64, usize, usize) {
    let file_bytes = std::fs::metadata(path).expect("file").len();
    let shape = nexingest_benches::chunk_shape(path, var);
    let (cy, cx) = (shape[1] as u64, shape[2] as u64);
    let tiles: std::collections::HashSet<(u64, u64)> = cells
        .iter()
        .map(|c| (c.lat as u64 / cy, c.lon as u64 / cx))
        .collect();
    let (chunks, _) = nexingest_benches::raw_chunks(path, var);
    let needed: Vec<_> = chunks
        .iter()
        .filter(|c| tiles.contains(&(c.origin[1] / cy, c.origin[2] / cx)))
        .collect();
    let bytes = needed.iter().map(|c| c.size as u64).sum();
    (file_bytes, bytes, needed.len(), chunks.len())
}

/// A proxy in front of moto at `rate` (bytes/s; `None`: unlimited), on its own runtime.
struct Link {
    proxy: LinkProxy,
    _rt: tokio::runtime::Runtime,
}

impl Link {
    fn new(endpoint: &str, rate: Option<u64>) -> Link {
        let latency = Duration::from_millis(env_or("LINK_LATENCY_MS", 20u64));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("moto endpoint is http://ip:port");
        let cfg = LinkConfig {
            rate,
            latency,
            ..LinkConfig::default()
        };
        let proxy = rt
            .block_on(LinkProxy::start(addr, cfg))
            .expect("start the proxy");
        Link { proxy, _rt: rt }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.proxy.addr())
    }
}

/// Runs `n` worker processes (`--jobs k` each) on the queue through `link`; wall seconds and
/// what crossed the link.
fn run_through(b: &QueueBench, link: &Link, n: usize, k: usize, stream: bool) -> (f64, Stats) {
    let before = link.proxy.stats();
    let mut cmds: Vec<_> = (0..n)
        .map(|_| {
            let mut c = b.run_cmd(k);
            c.env("NEXINGEST_AWS_ENDPOINT_URL", link.endpoint());
            c.env(
                "NEXINGEST_DOWNLOAD_TO_DISK",
                if stream { "false" } else { "true" },
            );
            c
        })
        .collect();
    let m = measure_all(&mut cmds, "nexingest run", false);
    (m.secs, link.proxy.stats().since(&before))
}

/// One variable's file of a city job read through `link`: by ranges, then downloaded whole.
struct LayoutRun {
    file: u64,
    /// Compressed bytes of the chunks that hold a point's cell, those chunks, all chunks.
    needed: u64,
    k: usize,
    n: usize,
    fetched: u64,
    ranges_s: f64,
    whole_s: f64,
}

fn layout_run(b: &QueueBench, link: &Link, path: &Path, points: &[(f64, f64)]) -> LayoutRun {
    let var = nexingest_benches::FULL_GRID_VAR;
    let opts = nexdecode::DecodeOptions {
        data_radius_km: 50.0,
        single_year_file: true,
        ..Default::default()
    };
    let local = GridFile::open_variable(path, var).expect("open");
    let year = local.years()[0];
    let cells: Vec<_> = local
        .locate(year, points, &opts)
        .expect("locate")
        .iter()
        .filter_map(|m| m.cell)
        .collect();
    let (file, needed, k, n) = needed_chunks(path, var, &cells);
    drop(local);
    let key = format!("layouts/{}", path.file_name().unwrap().to_string_lossy());
    b.aws.upload(path, &key);
    let s3 = b.aws.s3_at(&link.endpoint());
    let ropts = RangeOptions {
        concurrency: 8,
        gap: 16 << 10,
        max_request: 16 << 20,
        window: worker::pipeline::fetch::STREAM_WINDOW,
        whole_below: worker::pipeline::fetch::READ_WHOLE_BELOW,
    };
    let t = Instant::now();
    let src = Arc::new(
        b.aws
            .block_on(ObjectRanges::open(&s3, &b.aws.bucket, &key, ropts))
            .expect("open by ranges"),
    );
    let f = GridFile::open_remote(src.clone(), &key, var).expect("readable by ranges");
    let (_, by_ranges) = f
        .locate_decode(year, points, &opts)
        .expect("decode by ranges");
    let ranges_s = t.elapsed().as_secs_f64();
    let fetched = src.fetched();
    drop(f);

    let tmp = nexingest_benches::bench_data_dir().join(format!(".whole-{}", std::process::id()));
    let t = Instant::now();
    b.aws
        .block_on(worker::s3::download(
            &s3,
            &b.aws.bucket,
            &key,
            &tmp,
            16 << 20,
            8,
        ))
        .expect("download");
    let f = GridFile::open_variable(&tmp, var).expect("open the download");
    let (_, whole) = f.locate_decode(year, points, &opts).expect("decode");
    let whole_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(&tmp).expect("remove the download");
    assert_eq!(by_ranges.cells, whole.cells);
    assert!(
        by_ranges
            .values
            .iter()
            .zip(whole.values.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "by ranges and whole decode the same values"
    );
    LayoutRun {
        file,
        needed,
        k,
        n,
        fetched,
        ranges_s,
        whole_s,
    }
}

unsafe extern "C" {
    /// libnetcdf: the chunk cache of variables created from now on.
    fn nc_set_chunk_cache(size: usize, nelems: usize, preemption: f32) -> std::ffi::c_int;
}

/// The NEX-GDDP full grid in `30 × 72 × 144` chunks (a month of a 10 × 10 tile per chunk),
/// generated once. The generator writes a day at a time: the chunk cache holds a month's row
/// of chunks so that each is compressed once.
fn tiles_30x72x144() -> PathBuf {
    let mut spec = fixtures::GridSpec::nex_gddp_full_grid(
        nexingest_benches::FULL_GRID_VAR,
        "rcp45",
        "ACCESS1-0",
        2015,
    );
    spec.storage = fixtures::Storage::Chunked {
        chunks: [30, 72, 144],
        shuffle: true,
        deflate: Some(5),
        classic_model: true,
    };
    // SAFETY: a plain setter of libnetcdf's defaults; nothing else uses libnetcdf now.
    unsafe { nc_set_chunk_cache(256 << 20, 1009, 0.75) };
    nexingest_benches::generated_as(&spec, "tasmax_nex_gddp_2015_chunks_30x72x144.nc")
}

/// A whole-grid run: by ranges or not, wall s, transfer s, wall ÷ max(transfer, alone), ledger.
type GridRun = (bool, f64, f64, f64, Ledger);

fn print_grid(mbps: f64, alone_s: f64, alone: &Ledger, grid: &[GridRun]) {
    println!(
        "\nwhole-grid job at {mbps:.0} Mbps (decode + load alone {alone_s:.1} s: decode {:.1} s, \
         load {:.1} s). A row holds every variable of its cell, and whole-day chunks complete no \
         cell before the last file's last day: the load cannot start before the transfer ends, \
         so the floor is transfer + load alone:\n",
        alone.decode_s, alone.load_s
    );
    println!(
        "| path | wall s | transfer s | wall ÷ max(transfer, decode + load) | wall ÷ (transfer + load alone) | job's download / decode / load s |"
    );
    println!("|---|---|---|---|---|---|");
    for (stream, secs, transfer, ratio, l) in grid {
        println!(
            "| {} | {secs:.1} | {transfer:.1} | {ratio:.2} | {:.2} | {:.1} / {:.1} / {:.1} |",
            if *stream {
                "by ranges"
            } else {
                "download, then decode"
            },
            secs / (transfer + alone.load_s),
            l.download_s,
            l.decode_s,
            l.load_s
        );
    }
}

fn mb(x: f64) -> f64 {
    x / 1e6
}

fn main() {
    let mbps: f64 = env_or("LINK_MBPS", 400.0);
    let njobs: usize = env_or("LINK_JOBS", 6usize).clamp(3, MODELS.len());
    // `LINK_ONLY=grid`: only the whole-grid job (section 2), to look at it again quickly.
    let only_grid = std::env::var("LINK_ONLY").is_ok_and(|v| v == "grid");
    let rate = LinkConfig::mbps(mbps).rate.expect("a rate");
    let models = &MODELS[..njobs];
    let b = QueueBench::new("link", SCHEMA, models, 0, "LINK_NEXINGEST", "LINK_LOG");
    let db = &b.db;
    let files = cmip6_job::input_files();
    let file_bytes: Vec<f64> = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("file").len() as f64)
        .collect();
    let job_bytes: f64 = file_bytes.iter().sum();

    // 1,000 CONUS points as the `cities` location source.
    let geojson = nexingest_benches::bench_data_dir().join("conus-1000.geojson");
    let features: Vec<String> = nexingest_benches::conus_points(1000)
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| {
            format!(
                r#"{{"type":"Feature","id":{i},"properties":{{"name":"p{i}"}},"geometry":{{"type":"Point","coordinates":[{lon},{lat}]}}}}"#
            )
        })
        .collect();
    std::fs::write(
        &geojson,
        format!(
            r#"{{"type":"FeatureCollection","features":[{}]}}"#,
            features.join(",")
        ),
    )
    .expect("write the points");
    measure(
        cmip6_job::nexingest(&b.bin, db, SCHEMA, b.log_var)
            .arg("import-locations")
            .arg(&geojson)
            .args(["--source", "cities"]),
        "nexingest import-locations",
    );

    // Alone, from local files: a city job's CPU and load time, the whole-grid job's time.
    cmip6_job::reset_jobs(db, SCHEMA);
    let city_alone = measure(
        &mut cmip6_job::ingest_at(&b.bin, db, SCHEMA, b.log_var, &files, "cities"),
        "nexingest ingest (cities)",
    );
    let city_ledger = ledger(&b);
    cmip6_job::reset_jobs(db, SCHEMA);
    let grid_alone = measure(
        &mut cmip6_job::ingest(&b.bin, db, SCHEMA, b.log_var, &files),
        "nexingest ingest (all)",
    );
    let grid_alone_ledger = ledger(&b);
    eprintln!(
        "alone, local files: city job {:.2} s ({:.2} CPU s, load {:.2} s); whole-grid job {:.2} s",
        city_alone.secs, city_alone.cpu_secs, city_ledger.load_s, grid_alone.secs
    );

    // 1. The city queue at the two rates.
    let mut rows = Vec::new();
    let mut fetch_cap = f64::INFINITY;
    for (r, stream) in [
        (Some(rate), true),
        (Some(rate), false),
        (None, true),
        (None, false),
    ] {
        if only_grid {
            break;
        }
        cmip6_job::reset_jobs(db, SCHEMA);
        b.aws.enqueue_cmip6_at(models, "cities");
        let link = Link::new(&b.aws.endpoint, r);
        let (secs, st) = run_through(&b, &link, 1, 2, stream);
        let l = ledger(&b);
        assert_eq!(l.jobs as usize, njobs, "every city job done");
        let eff_rate = r.map_or(st.bytes_down as f64 / secs, |x| x as f64);
        if r.is_none() && !stream {
            // One job's download alone is what the fleet model caps a job's fetch at.
            fetch_cap = l.bytes / l.download_s.max(1e-3);
        }
        rows.push(format!(
            "| {} | {} | {njobs} | {:.1} | {:.3} | {:.2} | {:.2} | {:.2} s / {:.2} s / {:.2} s | {} |",
            r.map_or("none (moto's rate)".to_string(), |x| format!(
                "{:.0} Mbps ({:.1} MB/s)",
                x as f64 * 8.0 / 1e6,
                mb(x as f64)
            )),
            if stream { "by ranges" } else { "download, then decode" },
            secs,
            st.bytes_down as f64 / (job_bytes * njobs as f64),
            l.job_s / (l.bytes / eff_rate),
            r.map_or(f64::NAN, |x| st.bytes_down as f64 / x as f64 / secs),
            l.download_s,
            l.decode_s,
            l.load_s,
            load_average()
        ));
    }

    // 2. One whole-grid job at the link-bound rate, both ways.
    let mut grid = Vec::new();
    for stream in [true, false] {
        cmip6_job::reset_jobs(db, SCHEMA);
        b.aws.enqueue_cmip6(&models[..1]);
        let link = Link::new(&b.aws.endpoint, Some(rate));
        let (secs, st) = run_through(&b, &link, 1, 1, stream);
        let transfer = st.bytes_down as f64 / rate as f64;
        grid.push((
            stream,
            secs,
            transfer,
            secs / transfer.max(grid_alone.secs),
            ledger(&b),
        ));
    }
    if only_grid {
        print_grid(mbps, grid_alone.secs, &grid_alone_ledger, &grid);
        return;
    }

    // 3. The fleet model against 1, 2, 3 processes (`--jobs 1` each) at the link-bound rate.
    let cpu_per_file = city_alone.cpu_secs / 3.0;
    let cost = JobCost {
        files: file_bytes.iter().map(|&b| (b, cpu_per_file)).collect(),
        db_s: city_ledger.load_s,
    };
    // A process's start (connect, resolve the queue) and its last empty receive.
    cmip6_job::reset_jobs(db, SCHEMA);
    let idle = Link::new(&b.aws.endpoint, None);
    let (overhead, _) = run_through(&b, &idle, 1, 1, true);
    let mut check = Vec::new();
    for n in 1..=3usize {
        let fleet = Fleet {
            hosts: 1,
            host: Host {
                link: rate as f64,
                cores: 2.0,
                jobs: n,
                job_fetch_cap: fetch_cap,
                decode_par: 2.0,
                overlap: true,
            },
            db_slots: 64,
            s3_rate: f64::INFINITY,
        };
        let p = simulate(&vec![cost.clone(); njobs], &fleet, 42);
        let predicted = p.wall_s + overhead;
        cmip6_job::reset_jobs(db, SCHEMA);
        b.aws.enqueue_cmip6_at(models, "cities");
        let link = Link::new(&b.aws.endpoint, Some(rate));
        let (secs, st) = run_through(&b, &link, n, 1, true);
        check.push(format!(
            "| {n} × `--jobs 1` | {njobs} | {predicted:.1} | {secs:.1} | {:.2} | {:.2} | {} | {} |",
            predicted / secs,
            st.bytes_down as f64 / rate as f64 / secs,
            p.bound(),
            load_average()
        ));
    }

    // 4. What a city job fetches of each layout, by ranges and whole.
    let points = nexingest_benches::conus_points(1000);
    let link = Link::new(&b.aws.endpoint, Some(rate));
    let mut needs = Vec::new();
    for (layout, path) in [
        (
            "NEX-GDDP-CMIP6, whole-day chunks 1 × 600 × 1440",
            files[1].clone(),
        ),
        (
            "NEX-GDDP, tiles 1 × 90 × 180",
            nexingest_benches::nex_gddp_full_grid_file(),
        ),
        ("NEX-GDDP grid, chunks 30 × 72 × 144", tiles_30x72x144()),
    ] {
        let r = layout_run(&b, &link, &path, &points);
        needs.push(format!(
            "| {layout} | {:.0} | {} of {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} |",
            mb(r.file as f64),
            r.k,
            r.n,
            mb(r.needed as f64),
            mb(r.fetched as f64),
            r.fetched as f64 / r.needed.max(1) as f64,
            r.ranges_s,
            r.ranges_s / (r.needed as f64 / rate as f64),
            r.whole_s,
            r.whole_s / r.ranges_s,
        ));
    }

    // 5. The NEX-GDDP-CMIP6 cities load on 20 m5.2xlarge.
    let d = Dataset::NexGddpCmip6;
    let years: usize = d
        .scenarios()
        .iter()
        .map(|(_, a, z)| (z - a + 1) as usize)
        .sum();
    let total_jobs = d.models().len() * years;
    let m5 = |overlap: bool| Fleet {
        hosts: 20,
        host: Host {
            link: 2.5e9 / 8.0,
            cores: 8.0,
            jobs: 4,
            // 8 parallel 16 MiB GETs at ~90 MB/s each (S3's per-connection rate).
            job_fetch_cap: 8.0 * 90e6,
            decode_par: 8.0,
            overlap,
        },
        db_slots: 4,
        // 5,500 GET/s per prefix × 16 MiB parts: far above the fleet's links.
        s3_rate: 5500.0 * 16.0 * 1048576.0,
    };
    let all = vec![cost.clone(); total_jobs];
    let today = simulate(&all, &m5(false), 42);
    let streaming = simulate(&all, &m5(true), 42);
    let floor = total_jobs as f64 * job_bytes / (20.0 * 2.5e9 / 8.0);

    println!("\n## link (generated NEX-GDDP-CMIP6 layout: whole-day chunks 1 × 600 × 1440)");
    println!("database: {}", db.describe());
    println!(
        "link: linkproxy in front of moto, {} ms added to each request",
        env_or("LINK_LATENCY_MS", 20u64)
    );
    println!(
        "job: 3 files, {:.0} MB in all; {njobs} city jobs of 1,000 CONUS points; each run by \
         ranges (default) and downloading whole first (--download-to-disk)\n",
        mb(job_bytes)
    );
    println!(
        "| link | path | jobs | wall s | bytes fetched ÷ file bytes | job time ÷ (bytes ÷ rate) | link busy | per job download / decode / load | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    print_grid(mbps, grid_alone.secs, &grid_alone_ledger, &grid);
    println!(
        "\nfleet model vs measured at {mbps:.0} Mbps (per job: {:.0} MB, {cpu_per_file:.2} CPU s \
         per file, load {:.2} s; one job's fetch alone {:.0} MB/s; process overhead {overhead:.1} s)\n",
        mb(job_bytes),
        cost.db_s,
        mb(fetch_cap)
    );
    println!(
        "| processes | jobs | predicted s | measured s | predicted ÷ measured | link busy | model's bound | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &check {
        println!("{r}");
    }
    println!(
        "\nwhat a city job (1,000 CONUS points, locate + decode) fetches of one variable's file, \
         by layout, at {mbps:.0} Mbps, in process:\n"
    );
    println!(
        "| layout | file MB | chunks holding a cell | their MB | fetched by ranges MB | fetched ÷ needed | by ranges s | ÷ (needed ÷ rate) | download, then decode s | ÷ by ranges |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &needs {
        println!("{r}");
    }
    println!(
        "\nNEX-GDDP-CMIP6 cities load: {total_jobs} jobs ({} models × {years} scenario-years), \
         {:.1} TB at this layout's {:.0} MB per job; 20 × m5.2xlarge (2.5 Gbps, 8 vCPU at this \
         machine's per-core speed), --jobs 4, --max-db-loads 4:",
        d.models().len(),
        total_jobs as f64 * job_bytes / 1e12,
        mb(job_bytes)
    );
    for (name, p) in [
        ("today (download, then decode)", &today),
        ("streaming (decode while the bytes arrive)", &streaming),
    ] {
        println!(
            "- {name}: {:.0} min; link busy {:.2}, cores {:.2}, database slots {:.2}; bound: {}",
            p.wall_s / 60.0,
            p.link_busy,
            p.cpu_busy,
            p.db_busy,
            p.bound()
        );
    }
    println!(
        "- the links' floor (bytes ÷ 20 × 2.5 Gbps): {:.0} min",
        floor / 60.0
    );
}

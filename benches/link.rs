//! A worker at its network link: city jobs and a whole-grid job through a link-limited S3
//! (`linkproxy` in front of moto), the fleet model checked against 1–3 worker processes, and
//! the fleet's wall time for the NEX-GDDP-CMIP6 cities load predicted from the figures.
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench link    # LINK_MBPS=400, LINK_JOBS=6
//! ```
//!
//! Setup as the `run` benchmark ([`nexingest_benches::QueueBench`]): the job's three
//! full-size NEX-GDDP-CMIP6 files (365 × 600 × 1440, whole-day chunks) under `LINK_JOBS`
//! model names in moto, `map_cell` populated; 1,000 CONUS points imported as `cities`.
//! The path measured is today's (each file downloaded whole, then decoded; the next file
//! downloads while one decodes).
//!
//! 1. **City queue** at two link rates, `run --until-empty --jobs 2` through the proxy: one rate
//!    where the link is the bound (`LINK_MBPS`), one where the cores are (no limit: moto's own
//!    rate). Per job: bytes fetched ÷ file bytes, and job time ÷ (bytes ÷ link rate); over the
//!    queue: the link's busy fraction (bytes ÷ rate ÷ wall).
//! 2. **Whole-grid job** at `LINK_MBPS`: its time ÷ max(transfer, decode + load measured alone
//!    by `ingest` of the local files).
//! 3. **Fleet model** ([`nexingest_benches::fleetsim`]) from the measured per-job figures
//!    (bytes, CPU seconds of a city job's `ingest`, its load time, one job's fetch rate alone),
//!    predicting 1, 2 and 3 worker processes (`--jobs 1` each) sharing the link and the 2
//!    cores; then they run, and the ratio is printed.
//! 4. **What a city job needs** of each layout (no transfer: from the chunk index): the bytes of
//!    the chunks that hold the 1,000 points' cells, against the file — what fetching only
//!    those chunks would save (whole-day chunks: nothing; NEX-GDDP's `1 × 90 × 180` tiles: most).
//! 5. **Prediction**: the NEX-GDDP-CMIP6 cities load (jobs counted from the catalog) on 20
//!    m5.2xlarge (2.5 Gbps, 8 vCPU, `--jobs 4`, `--max-db-loads 4`), today's path and streaming.

use linkproxy::{LinkConfig, LinkProxy, Stats};
use nexingest_benches::cmip6_job::{self, MODELS};
use nexingest_benches::fleetsim::{Fleet, Host, JobCost, simulate};
use nexingest_benches::{QueueBench, env_or, load_average, measure, measure_all};
use worker::catalog::Dataset;

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
fn run_through(b: &QueueBench, link: &Link, n: usize, k: usize) -> (f64, Stats) {
    let before = link.proxy.stats();
    let mut cmds: Vec<_> = (0..n)
        .map(|_| {
            let mut c = b.run_cmd(k);
            c.env("NEXINGEST_AWS_ENDPOINT_URL", link.endpoint());
            c
        })
        .collect();
    let m = measure_all(&mut cmds, "nexingest run", false);
    (m.secs, link.proxy.stats().since(&before))
}

fn mb(x: f64) -> f64 {
    x / 1e6
}

fn main() {
    let mbps: f64 = env_or("LINK_MBPS", 400.0);
    let njobs: usize = env_or("LINK_JOBS", 6usize).clamp(3, MODELS.len());
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
    eprintln!(
        "alone, local files: city job {:.2} s ({:.2} CPU s, load {:.2} s); whole-grid job {:.2} s",
        city_alone.secs, city_alone.cpu_secs, city_ledger.load_s, grid_alone.secs
    );

    // 1. The city queue at the two rates.
    let mut rows = Vec::new();
    let mut fetch_cap = f64::INFINITY;
    for r in [Some(rate), None] {
        cmip6_job::reset_jobs(db, SCHEMA);
        b.aws.enqueue_cmip6_at(models, "cities");
        let link = Link::new(&b.aws.endpoint, r);
        let (secs, st) = run_through(&b, &link, 1, 2);
        let l = ledger(&b);
        assert_eq!(l.jobs as usize, njobs, "every city job done");
        let eff_rate = r.map_or(st.bytes_down as f64 / secs, |x| x as f64);
        if r.is_none() {
            // One job's download alone is what the fleet model caps a job's fetch at.
            fetch_cap = l.bytes / l.download_s.max(1e-3);
        }
        rows.push(format!(
            "| {} | {njobs} | {:.1} | {:.3} | {:.2} | {:.2} | {:.2} s / {:.2} s / {:.2} s | {} |",
            r.map_or("none (moto's rate)".to_string(), |x| format!(
                "{:.0} Mbps ({:.1} MB/s)",
                x as f64 * 8.0 / 1e6,
                mb(x as f64)
            )),
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

    // 2. One whole-grid job at the link-bound rate.
    cmip6_job::reset_jobs(db, SCHEMA);
    b.aws.enqueue_cmip6(&models[..1]);
    let link = Link::new(&b.aws.endpoint, Some(rate));
    let (grid_secs, grid_st) = run_through(&b, &link, 1, 1);
    let transfer = grid_st.bytes_down as f64 / rate as f64;
    let grid_bound = transfer.max(grid_alone.secs);

    // 3. The fleet model against 1, 2, 3 processes (`--jobs 1` each) at the link-bound rate.
    let cpu_per_file = city_alone.cpu_secs / 3.0;
    let cost = JobCost {
        files: file_bytes.iter().map(|&b| (b, cpu_per_file)).collect(),
        db_s: city_ledger.load_s,
    };
    // A process's start (connect, resolve the queue) and its last empty receive.
    cmip6_job::reset_jobs(db, SCHEMA);
    let idle = Link::new(&b.aws.endpoint, None);
    let (overhead, _) = run_through(&b, &idle, 1, 1);
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
                overlap: false,
            },
            db_slots: 64,
            s3_rate: f64::INFINITY,
        };
        let p = simulate(&vec![cost.clone(); njobs], &fleet, 42);
        let predicted = p.wall_s + overhead;
        cmip6_job::reset_jobs(db, SCHEMA);
        b.aws.enqueue_cmip6_at(models, "cities");
        let link = Link::new(&b.aws.endpoint, Some(rate));
        let (secs, st) = run_through(&b, &link, n, 1);
        check.push(format!(
            "| {n} × `--jobs 1` | {njobs} | {predicted:.1} | {secs:.1} | {:.2} | {:.2} | {} | {} |",
            predicted / secs,
            st.bytes_down as f64 / rate as f64 / secs,
            p.bound(),
            load_average()
        ));
    }

    // 4. What a city job needs of each layout.
    let points = nexingest_benches::conus_points(1000);
    let opts = nexdecode::DecodeOptions {
        data_radius_km: 50.0,
        single_year_file: true,
        ..Default::default()
    };
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
    ] {
        let var = nexingest_benches::FULL_GRID_VAR;
        let f = nexdecode::GridFile::open_variable(&path, var).expect("open");
        let cells: Vec<_> = f
            .locate(cmip6_job::YEAR, &points, &opts)
            .expect("locate")
            .iter()
            .filter_map(|m| m.cell)
            .collect();
        let (file, need, k, n) = needed_chunks(&path, var, &cells);
        needs.push(format!(
            "| {layout} | {:.0} | {k} of {n} | {:.0} | {:.3} | {:.2} |",
            mb(file as f64),
            mb(need as f64),
            need as f64 / file as f64,
            file as f64 / need.max(1) as f64,
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
        "job: 3 files, {:.0} MB in all; {njobs} city jobs of 1,000 CONUS points; today's path \
         (download, then decode)\n",
        mb(job_bytes)
    );
    println!(
        "| link | jobs | wall s | bytes fetched ÷ file bytes | job time ÷ (bytes ÷ rate) | link busy | per job download / decode / load | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nwhole-grid job at {mbps:.0} Mbps: {grid_secs:.1} s; transfer {transfer:.1} s, decode + load \
         alone {:.1} s: ratio {:.2} to max(transfer, decode + load)",
        grid_alone.secs,
        grid_secs / grid_bound
    );
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
        "\nwhat a city job (1,000 CONUS points) needs of one variable's file, by layout (chunk index):\n"
    );
    println!(
        "| layout | file MB | chunks holding a cell | their MB | needed ÷ file | today's bytes ÷ needed |"
    );
    println!("|---|---|---|---|---|---|");
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

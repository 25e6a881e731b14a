//! `nexingest bench` against the local cluster, through the binary: a quick `--cells 50` run
//! on the hidden small test grid (365 × 20 × 20, generated in a moment even in a debug
//! build) loads through the real pipeline into a scratch schema that is gone afterwards,
//! leaves the main schema's tables alone, records its result, and `doctor` estimates from it;
//! `--jobs 2` runs two jobs at once; errors name the thing and the fix. Timing is reported,
//! never asserted.

mod common;

use std::process::Output;

use common::{env, unique};
use worker::config::{DbConfig, Schema};

fn nexingest(db_url: &str, schema: &str, args: &[&str]) -> Output {
    common::nexingest_blocking()
        .args(["--database-url", db_url, "--schema", schema])
        .args(args)
        .env_remove("NEXINGEST_WORK_DIR")
        .output()
        .expect("run nexingest")
}

fn json_of(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

const MAIN_TABLES: [&str; 6] = [
    "data_source",
    "climate_data_year",
    "map_cell",
    "location",
    "location_cell",
    "job_ledger",
];

async fn counts(pg: &tokio_postgres::Client, schema: &str) -> Vec<i64> {
    let mut v = Vec::new();
    for t in MAIN_TABLES {
        v.push(
            pg.query_one(&format!("SELECT count(*) FROM \"{schema}\".\"{t}\""), &[])
                .await
                .unwrap()
                .get(0),
        );
    }
    v
}

async fn schema_exists(pg: &tokio_postgres::Client, name: &str) -> bool {
    pg.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_in_a_scratch_schema_and_doctor_uses_it() {
    let Some(env) = env() else { return };
    let schema = format!("t_{}", unique("bench").replace('-', "_"));
    let db = DbConfig {
        url: env.db_url.clone(),
        schema: Schema::new(&schema).unwrap(),
    };
    worker::cmd::migrate::run(&db).await.expect("migrate");
    let pg = worker::db::connect(&env.db_url).await.expect("connect");
    let before = counts(&pg, &schema).await;
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().to_str().unwrap();

    // Before any bench, doctor says how to get a time estimate.
    let d = json_of(&nexingest(&env.db_url, &schema, &["doctor", "--json"]));
    let check = |d: &serde_json::Value, name: &str| {
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {d:#}"))
            .clone()
    };
    assert!(
        check(&d, "load time")["value"]
            .as_str()
            .unwrap()
            .contains("no `nexingest bench` result"),
        "{d:#}"
    );

    let args = [
        "bench",
        "--test-grid",
        "--cells",
        "50",
        "--work-dir",
        work_dir,
        "--no-progress",
        "--json",
    ];
    let r = json_of(&nexingest(&env.db_url, &schema, &args));
    eprintln!("bench --cells 50: {r:#}");
    for field in [
        "rows",
        "wall_seconds",
        "rows_per_second",
        "copy_mb_per_second",
        "bytes_per_row",
        "wal_bytes",
        "wal_bytes_per_job",
        "table_bytes",
        "jobs",
        "settings",
        "scratch_schema",
    ] {
        assert!(!r[field].is_null(), "{field} missing: {r:#}");
    }
    assert_eq!(r["rows"], 50, "one row per cell-year: {r:#}");
    assert_eq!(r["cells_per_job"], 50);
    assert_eq!(r["concurrent_jobs"], 1);
    assert_eq!(r["jobs"][0]["rows"], 50);
    assert!(r["bytes_per_row"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["wal_bytes"].as_i64().unwrap() > 0, "{r:#}");
    assert!(
        r["copy_bytes"].as_u64().unwrap() > 50 * 3 * 365 * 4,
        "{r:#}"
    );
    assert_eq!(r["scratch_dropped"], true);
    let scratch = r["scratch_schema"].as_str().unwrap();
    assert!(scratch.starts_with("nexingest_bench_"), "{scratch}");
    assert!(!schema_exists(&pg, scratch).await, "{scratch} left behind");
    assert_eq!(counts(&pg, &schema).await, before, "main schema changed");
    let recorded: i64 = pg
        .query_one(
            &format!("SELECT rows_loaded FROM \"{schema}\".bench_result"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 50);

    // The files are cached (by name, in the work dir) and the next run reuses them; two jobs
    // at once, every cell of the grid.
    let names: Vec<String> = std::fs::read_dir(work.path().join("nexingest-bench/test-365x20x20"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".nc")), "{names:?}");
    let r2 = json_of(&nexingest(
        &env.db_url,
        &schema,
        &[
            "bench",
            "--test-grid",
            "--jobs",
            "2",
            "--work-dir",
            work_dir,
            "--no-progress",
            "--json",
        ],
    ));
    assert_eq!(r2["generate_seconds"], 0.0, "{r2:#}");
    assert_eq!(r2["rows"], 2 * 400, "{r2:#}");
    assert_eq!(r2["jobs"].as_array().unwrap().len(), 2);
    assert!(!schema_exists(&pg, r2["scratch_schema"].as_str().unwrap()).await);

    // Human-readable output.
    let out = nexingest(
        &env.db_url,
        &schema,
        &[
            "bench",
            "--test-grid",
            "--cells",
            "10",
            "--work-dir",
            work_dir,
            "--no-progress",
            "--no-save",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in ["rows/s", "bytes per row", "WAL", "dropped", "--no-save"] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("password"), "{text}");

    // doctor takes the latest recorded bench (two jobs, 800 rows) for its estimate.
    let d = json_of(&nexingest(
        &env.db_url,
        &schema,
        &["doctor", "--json", "--jobs", "100", "--cells", "1000"],
    ));
    let b = &d["size"]["bench"];
    assert_eq!(b["rows"], 800, "{d:#}");
    assert_eq!(b["concurrent_jobs"], 2, "{d:#}");
    let secs = d["size"]["planned_seconds"].as_f64().unwrap();
    let rps = r2["rows_per_second"].as_f64().unwrap();
    assert!(
        (secs - 100_000.0 / rps).abs() < 1e-6 * secs.max(1.0),
        "{d:#}"
    );
    assert!(d["size"]["planned_wal_bytes"].as_u64().unwrap() > 0);
    // 800 rows are too few for its bytes per row: the model stays.
    assert_eq!(d["size"]["bytes_per_row_from"], "model", "{d:#}");
    let lt = check(&d, "load time");
    assert!(lt["value"].as_str().unwrap().contains("rows/s"), "{lt:#}");
    assert!(
        lt["detail"].as_str().unwrap().contains("quick try"),
        "{lt:#}"
    );
    let text = String::from_utf8_lossy(
        &nexingest(
            &env.db_url,
            &schema,
            &["doctor", "--jobs", "100", "--cells", "1000"],
        )
        .stdout,
    )
    .into_owned();
    assert!(
        text.contains("load time") && text.contains("planned load takes"),
        "{text}"
    );

    let _ = pg
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_errors_name_the_thing_and_the_fix() {
    let Some(env) = env() else { return };
    let work = tempfile::tempdir().unwrap();
    let wd = work.path().to_str().unwrap();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // No server there (a password in the URL is never printed).
    let o = nexingest(
        "postgres://someone:s3cret-pw@127.0.0.1:9/nexingest?sslmode=disable",
        "nexingest",
        &["bench", "--test-grid", "--work-dir", wd, "--no-progress"],
    );
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("cannot connect to the database"), "{e}");
    assert!(e.contains("--database-url"), "{e}");
    assert!(!e.contains("s3cret-pw"), "{e}");

    // A bad URL and bad flags.
    let o = nexingest("mysql://x", "nexingest", &["bench", "--work-dir", wd]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("URL"), "{}", stderr(&o));
    let o = nexingest(&env.db_url, "nexingest", &["bench", "--cells", "lots"]);
    assert!(stderr(&o).contains("--cells"), "{}", stderr(&o));
    let o = nexingest(&env.db_url, "nexingest", &["bench", "--jobs", "0"]);
    assert!(stderr(&o).contains("--jobs"), "{}", stderr(&o));
    let o = nexingest(&env.db_url, "nexingest", &["bench", "--link-mbps", "0"]);
    assert!(stderr(&o).contains("--link-mbps 0"), "{}", stderr(&o));
    let o = nexingest(
        &env.db_url,
        "nexingest",
        &[
            "bench",
            "--link-mbps",
            "100",
            "--aws-endpoint-url",
            "https://s3.us-west-2.amazonaws.com",
        ],
    );
    let e = stderr(&o);
    assert!(e.contains("not plain http://") && e.contains("TLS"), "{e}");
    let o = common::nexingest_blocking()
        .args(["--database-url", &env.db_url, "bench", "--link-mbps", "100"])
        .env_remove("NEXINGEST_AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("--aws-endpoint-url") && e.contains("scripts/services.sh"),
        "{e}"
    );

    // A role without CREATE on the database.
    let pg = worker::db::connect(&env.db_url).await.expect("connect");
    let role = format!("t_{}", unique("nocreate").replace('-', "_"));
    pg.batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .await
        .unwrap();
    let url = env
        .db_url
        .replacen("://nexingest@", &format!("://{role}@"), 1);
    assert_ne!(url, env.db_url, "test URL shape changed: {}", env.db_url);
    let o = nexingest(
        &url,
        "nexingest",
        &["bench", "--test-grid", "--work-dir", wd, "--no-progress"],
    );
    let e = stderr(&o);
    let _ = pg.batch_execute(&format!("DROP ROLE \"{role}\"")).await;
    assert!(!o.status.success());
    assert!(e.contains("may not create schemas"), "{e}");
    assert!(e.contains("GRANT CREATE ON DATABASE"), "{e}");

    // A work dir that cannot be created.
    let o = nexingest(
        &env.db_url,
        "nexingest",
        &[
            "bench",
            "--test-grid",
            "--work-dir",
            "/proc/nexingest-no",
            "--no-progress",
        ],
    );
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("--work-dir"), "{e}");
}

/// `bench --link-mbps`: after the local run, the jobs run again with their files uploaded to
/// the local S3 and read through a rate-limited link, once by ranges and once downloaded whole:
/// each writes every row, fetches the files' bytes once (no second download), and its transfer
/// is those bytes at the link's rate. A second run reuses the uploaded objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_link_runs_the_jobs_from_s3_through_the_link() {
    let Some(env) = env() else { return };
    let work = tempfile::tempdir().unwrap();
    let wd = work.path().to_str().unwrap();
    let bucket = unique("bench-link");
    let pg = worker::db::connect(&env.db_url).await.expect("connect");
    let args = [
        "bench",
        "--test-grid",
        "--cells",
        "30",
        "--work-dir",
        wd,
        "--no-progress",
        "--no-save",
        "--link-mbps",
        "20",
        "--link-latency-ms",
        "5",
        "--cmip6-bucket",
        &bucket,
    ];
    let r = json_of(&nexingest(
        &env.db_url,
        "nexingest",
        &[&args[..], &["--json"]].concat(),
    ));
    eprintln!("bench --link-mbps 20: {r:#}");
    assert_eq!(r["rows"], 30, "{r:#}");
    let l = &r["link"];
    assert_eq!(l["mbps"], 20.0, "{r:#}");
    assert_eq!(l["bucket"], bucket.as_str());

    // The files are in the bucket under the job's keys, byte for byte the generated ones.
    let s3 = worker::aws::clients(&common::aws_config(&env, &bucket, &bucket))
        .await
        .s3;
    // (path, key) of each file: its variable is its name's first field.
    let model = worker::bench::DATASET.models()[0];
    let keys: Vec<(std::path::PathBuf, String)> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let path = std::path::PathBuf::from(p.as_str().unwrap());
            let name = path.file_name().unwrap().to_str().unwrap();
            let var = name.split('_').next().unwrap();
            let key = worker::bench::DATASET.key(
                worker::bench::SCENARIO,
                model,
                worker::bench::YEAR,
                var,
            );
            (path, key)
        })
        .collect();
    assert_eq!(keys.len(), 3);
    let mut file_bytes = 0;
    let mut modified = Vec::new();
    for (path, key) in &keys {
        let obj = s3
            .get_object()
            .bucket(&bucket)
            .key(key.as_str())
            .send()
            .await
            .unwrap();
        modified.push(obj.last_modified().copied());
        let body = obj.body.collect().await.unwrap().into_bytes();
        assert_eq!(body.as_ref(), std::fs::read(path).unwrap(), "{key}");
        file_bytes += body.len() as u64;
    }
    assert_eq!(l["file_bytes"], file_bytes, "{r:#}");

    let runs = l["runs"].as_array().unwrap();
    let paths: Vec<&str> = runs.iter().map(|x| x["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["by ranges", "download, then decode"], "{r:#}");
    let local = l["local_seconds"].as_f64().unwrap();
    assert_eq!(local, r["wall_seconds"].as_f64().unwrap());
    for run in runs {
        assert_eq!(run["rows"], 30, "every row, through the link: {run:#}");
        let fetched = run["bytes_fetched"].as_u64().unwrap();
        // Every byte of the small files once (responses' headers on top), never twice.
        assert!(
            fetched >= file_bytes && fetched < file_bytes + file_bytes / 5,
            "fetched {fetched} of {file_bytes}: {run:#}"
        );
        assert!(run["requests"].as_u64().unwrap() >= 3, "{run:#}");
        let transfer = run["transfer_seconds"].as_f64().unwrap();
        let at_rate = fetched as f64 * 8.0 / 20e6;
        assert!((transfer - at_rate).abs() < 1e-6, "{transfer} vs {at_rate}");
        let wall = run["wall_seconds"].as_f64().unwrap();
        // (the link lends 5 ms of idle credit)
        assert!(
            wall >= transfer - 0.01,
            "a job cannot beat its link: {run:#}"
        );
        let ratio = run["ratio"].as_f64().unwrap();
        assert!((ratio - wall / transfer.max(local)).abs() < 1e-9, "{run:#}");
    }
    // Every scratch schema of the run is gone.
    let scratch = r["scratch_schema"].as_str().unwrap();
    for s in [
        scratch.to_owned(),
        format!("{scratch}_1"),
        format!("{scratch}_2"),
    ] {
        assert!(!schema_exists(&pg, &s).await, "{s} left behind");
    }

    // Again, as text: the objects are reused, not uploaded again.
    let out = nexingest(&env.db_url, "nexingest", &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "through a link of 20 Mbps",
        "by ranges",
        "download, then decode",
        "transfer s",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    for ((_, key), before) in keys.iter().zip(&modified) {
        let h = s3
            .head_object()
            .bucket(&bucket)
            .key(key.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(h.last_modified().copied(), *before, "{key} uploaded again");
    }
}

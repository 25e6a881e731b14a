//! The producer's input check: `enqueue` sends only the jobs whose every variable file exists,
//! resolving keys as the worker does, and reports the rest.
//!
//! The fixture bucket copies the real holes: NEX-GDDP rcp45 without `pr` 2096–2100 for
//! GFDL-CM3 and without 2100 for MIROC5 (every variable), a MIROC-ESM-CHEM that has the years
//! MIROC-ESM lacks (its files must not count for MIROC-ESM); NEX-GDDP-CMIP6 ssp245 without
//! `tasmin`/`tasmax` for CESM2, a GFDL-ESM4 (grid `gr1`) without one year of `tasmin`, and a
//! CanESM5 whose files carry `_v1.1`/`_v2.0` suffixes. Every object is a committed fixture file
//! uploaded under the real key of its (model, year, variable).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use common::{World, env};
use worker::catalog::Dataset;
use worker::cli::{Cli, Command};
use worker::producer::{EnqueueConfig, EnqueueReport, InputCheck, Skipped};

const VARS: [&str; 3] = ["tasmin", "tasmax", "pr"];

/// The bytes of one committed fixture file (the content does not matter to the check).
fn fixture_bytes() -> Vec<u8> {
    std::fs::read(
        fixtures::data_dir().join("nex-gddp/tasmax_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc"),
    )
    .unwrap()
}

async fn put(w: &World, key: &str, body: &[u8]) {
    w.s3.put_object()
        .bucket(&w.bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
}

/// NEX-GDDP rcp45 2095–2100 with the holes described above.
async fn nex_gddp_bucket(w: &World) {
    let body = fixture_bytes();
    for model in ["ACCESS1-0", "GFDL-CM3", "MIROC5", "MIROC-ESM-CHEM"] {
        for year in 2095..=2100 {
            for var in VARS {
                let hole = (model == "GFDL-CM3" && var == "pr" && year >= 2096)
                    || (model == "MIROC5" && year == 2100);
                if !hole {
                    put(w, &Dataset::NexGddp.key("rcp45", model, year, var), &body).await;
                }
            }
        }
    }
    // MIROC-ESM: only 2095.
    for var in VARS {
        put(
            w,
            &Dataset::NexGddp.key("rcp45", "MIROC-ESM", 2095, var),
            &body,
        )
        .await;
    }
}

/// NEX-GDDP-CMIP6 ssp245 2015–2017 with the holes and versions described above.
async fn cmip6_bucket(w: &World) {
    let body = fixture_bytes();
    let d = Dataset::NexGddpCmip6;
    for year in 2015..=2017 {
        put(w, &d.key("ssp245", "CESM2", year, "pr"), &body).await;
        for var in VARS {
            if !(var == "tasmin" && year == 2016) {
                put(w, &d.key("ssp245", "GFDL-ESM4", year, var), &body).await;
            }
            let base = d.key("ssp245", "CanESM5", year, var);
            let stem = base.strip_suffix(".nc").unwrap();
            match (var, year) {
                ("pr", 2016) => put(w, &format!("{stem}_v1.1.nc"), &body).await,
                ("tasmax", 2017) => {
                    put(w, &base, &body).await;
                    put(w, &format!("{stem}_v2.0.nc"), &body).await;
                }
                _ => put(w, &base, &body).await,
            }
        }
    }
    // Another scenario's files do not count.
    for var in VARS {
        put(w, &d.key("ssp585", "CESM2", 2015, var), &body).await;
    }
}

/// (model, year) of each body on the queue; fails on a duplicate.
async fn queued(w: &World) -> BTreeSet<(String, i64)> {
    let mut out = BTreeSet::new();
    for b in w.drain_queue(&w.queue_url, 1).await {
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["variables"], serde_json::json!(VARS), "{b}");
        let job = (
            v["model"].as_str().unwrap().to_owned(),
            v["year"].as_i64().unwrap(),
        );
        assert!(out.insert(job), "sent twice: {b}");
    }
    out
}

fn jobs(models: &[&str], years: std::ops::RangeInclusive<i64>) -> BTreeSet<(String, i64)> {
    models
        .iter()
        .flat_map(|m| years.clone().map(move |y| ((*m).to_owned(), y)))
        .collect()
}

fn skipped(
    model: &'static str,
    scenario: &'static str,
    years: &[i32],
    missing: &[&'static str],
) -> Skipped {
    Skipped {
        model,
        scenario,
        years: years.to_vec(),
        missing: missing.to_vec(),
    }
}

/// The flags of `enqueue` against the world, with the data buckets set to `bucket`.
fn enqueue_config(
    w: &World,
    bucket: &str,
    endpoint: &str,
    args: &[&str],
) -> anyhow::Result<EnqueueConfig> {
    let mut argv: Vec<String> = [
        "nexingest",
        "enqueue",
        "--queue-url",
        &w.queue_url,
        "--aws-endpoint-url",
        endpoint,
        "--nex-gddp-bucket",
        bucket,
        "--cmip6-bucket",
        bucket,
    ]
    .map(String::from)
    .to_vec();
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from(argv).expect("enqueue flags");
    let Command::Enqueue(a) = &cli.command else {
        unreachable!()
    };
    EnqueueConfig::from_args(&cli.global, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nex_gddp_holes_are_skipped_and_reported() {
    let Some(env) = env() else { return };
    let w = World::new(env, "inputs-gddp", 3, 30).await;
    nex_gddp_bucket(&w).await;
    let models = ["ACCESS1-0", "GFDL-CM3", "MIROC5", "MIROC-ESM"];
    let args = [
        "--dataset",
        "NEX-GDDP",
        "--scenario",
        "rcp45",
        "--models",
        "ACCESS1-0,GFDL-CM3,MIROC5,MIROC-ESM",
        "--years",
        "2095-2100",
    ];
    let want_skipped = vec![
        skipped(
            "GFDL-CM3",
            "rcp45",
            &[2096, 2097, 2098, 2099, 2100],
            &["pr"],
        ),
        skipped("MIROC-ESM", "rcp45", &[2096, 2097, 2098, 2099, 2100], &VARS),
        skipped("MIROC5", "rcp45", &[2100], &VARS),
    ];
    let mut want: BTreeSet<(String, i64)> = jobs(&["ACCESS1-0"], 2095..=2100);
    want.extend(jobs(&["GFDL-CM3", "MIROC-ESM"], 2095..=2095));
    want.extend(jobs(&["MIROC5"], 2095..=2099));

    // --dry-run: the same check and report, nothing sent.
    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let r = w.enqueue_report(&dry).await;
    assert_eq!(r.check, InputCheck::Done);
    assert_eq!((r.planned, r.enqueued), (24, want.len()));
    assert_eq!(r.skipped, want_skipped);
    assert!(queued(&w).await.is_empty(), "--dry-run sent messages");

    // Checked (the default): exactly the complete jobs.
    let r: EnqueueReport = w.enqueue_report(&args).await;
    assert_eq!(r.check, InputCheck::Done);
    assert_eq!(r.enqueued, want.len());
    assert_eq!(r.skipped_jobs(), 24 - want.len());
    assert_eq!(r.skipped, want_skipped);
    assert_eq!(queued(&w).await, want);
    let table = worker::cmd::enqueue::skipped_table(&r.skipped);
    assert_eq!(
        table,
        "model      scenario  years      missing\n\
         GFDL-CM3   rcp45     2096-2100  pr\n\
         MIROC-ESM  rcp45     2096-2100  tasmin,tasmax,pr\n\
         MIROC5     rcp45     2100       tasmin,tasmax,pr\n"
    );

    // --no-check-inputs: the whole matrix.
    let mut all: Vec<&str> = args.to_vec();
    all.push("--no-check-inputs");
    let r = w.enqueue_report(&all).await;
    assert_eq!(r.check, InputCheck::Off);
    assert!(r.skipped.is_empty());
    assert_eq!(queued(&w).await, jobs(&models, 2095..=2100));
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmip6_versions_grid_labels_and_a_missing_variable() {
    let Some(env) = env() else { return };
    let w = World::new(env, "inputs-cmip6", 3, 30).await;
    cmip6_bucket(&w).await;
    let r = w
        .enqueue_report(&[
            "--dataset",
            "NEX-GDDP-CMIP6",
            "--scenario",
            "ssp245",
            "--models",
            "CanESM5,CESM2,GFDL-ESM4",
            "--years",
            "2015-2017",
        ])
        .await;
    assert_eq!(r.check, InputCheck::Done);
    assert_eq!(
        r.skipped,
        vec![
            skipped(
                "CESM2",
                "ssp245",
                &[2015, 2016, 2017],
                &["tasmin", "tasmax"]
            ),
            skipped("GFDL-ESM4", "ssp245", &[2016], &["tasmin"]),
        ]
    );
    let mut want = jobs(&["CanESM5"], 2015..=2017);
    want.extend([
        ("GFDL-ESM4".to_owned(), 2015),
        ("GFDL-ESM4".to_owned(), 2017),
    ]);
    assert_eq!(queued(&w).await, want);

    // The worker resolves the same keys the check found: the newest version, any grid label.
    let d = Dataset::NexGddpCmip6;
    let key =
        |model, year, var| worker::s3::resolve_key(&w.s3, &w.bucket, d, "ssp245", model, year, var);
    let v20 = key("CanESM5", 2017, "tasmax").await.unwrap();
    assert!(v20.ends_with("_gn_2017_v2.0.nc"), "{v20}");
    let v11 = key("CanESM5", 2016, "pr").await.unwrap();
    assert!(v11.ends_with("_gn_2016_v1.1.nc"), "{v11}");
    let gr1 = key("GFDL-ESM4", 2017, "tasmin").await.unwrap();
    assert!(gr1.ends_with("_gr1_2017.nc"), "{gr1}");
    assert!(key("CESM2", 2015, "tasmax").await.is_err());
    w.cleanup().await;
}

/// The printed table of the real binary, and nothing sent with `--dry-run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_skipped_table() {
    let Some(env) = env() else { return };
    let w = World::new(env, "inputs-bin", 3, 30).await;
    nex_gddp_bucket(&w).await;
    let out = common::nexingest()
        .args(["enqueue", "--queue-url", &w.queue_url])
        .args(["--nex-gddp-bucket", &w.bucket, "--dataset", "NEX-GDDP"])
        .args(["--scenario", "rcp45", "--models", "GFDL-CM3,MIROC5"])
        .args(["--years", "2099-2100", "--dry-run"])
        .env("NEXINGEST_AWS_ENDPOINT_URL", &w.env.endpoint)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("enqueue finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bodies: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(bodies.len(), 1, "{stdout}");
    let body: serde_json::Value = serde_json::from_str(bodies[0]).unwrap();
    assert_eq!(
        (&body["model"], &body["year"]),
        (&"MIROC5".into(), &2099.into())
    );
    let text: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(
        text,
        [
            "skipped 3 of 4 jobs: input files missing",
            "model     scenario  years      missing",
            "GFDL-CM3  rcp45     2099-2100  pr",
            "MIROC5    rcp45     2100       tasmin,tasmax,pr",
            "1 jobs (dry run, nothing sent; inputs checked)",
        ],
        "{stdout}"
    );
    assert!(queued(&w).await.is_empty());
    w.cleanup().await;
}

/// A bucket that does not exist is an error naming it; S3 out of reach is a warning by default
/// (every job, unchecked) and an error with `--check-inputs`.
#[tokio::test]
async fn missing_bucket_and_unreachable_s3() {
    let Some(env) = env() else { return };
    let w = World::new(env, "inputs-err", 3, 30).await;
    let args = [
        "--dataset",
        "NEX-GDDP",
        "--scenario",
        "rcp45",
        "--models",
        "MIROC5",
        "--years",
        "2099-2100",
        "--dry-run",
    ];
    let nosuch = format!("{}-nosuch", w.bucket);
    let cfg = enqueue_config(&w, &nosuch, &w.env.endpoint, &args).unwrap();
    let e = worker::producer::enqueue(&cfg).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!("bucket \"{nosuch}\" does not exist")),
        "{text}"
    );

    // Nothing listens on port 9 of loopback.
    let mut unreachable: Vec<&str> = args.to_vec();
    unreachable.extend(["--aws-connect-timeout", "1", "--aws-operation-timeout", "5"]);
    let cfg = enqueue_config(&w, &w.bucket, "http://127.0.0.1:9", &unreachable).unwrap();
    let r = worker::producer::enqueue(&cfg).await.unwrap();
    assert!(
        matches!(&r.check, InputCheck::Unavailable(why) if why.contains(&w.bucket)),
        "{:?}",
        r.check
    );
    assert_eq!(r.enqueued, 2);
    assert!(r.skipped.is_empty());

    unreachable.push("--check-inputs");
    let cfg = enqueue_config(&w, &w.bucket, "http://127.0.0.1:9", &unreachable).unwrap();
    let e = worker::producer::enqueue(&cfg).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("--no-check-inputs"), "{text}");
    w.cleanup().await;
}

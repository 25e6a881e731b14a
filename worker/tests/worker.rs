//! Integration tests of the worker against the real local services: PostgreSQL, and S3 + SQS
//! (moto) through the real AWS SDKs. Each test has its own schema, buckets and queues.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{World, consume, env};
use nexdecode::{CellSelection, DecodeOptions, GridFile};
use worker::consumer::{RunSummary, run};

const NEX_GDDP: (&str, &str, &str, i64) = ("NEX-GDDP", "rcp85", "ACCESS1-0", 2008);
const CMIP6_360: (&str, &str, &str, i64) = ("NEX-GDDP-CMIP6", "ssp585", "UKESM1-0-LL", 2015);
const CMIP6_CAN: (&str, &str, &str, i64) = ("NEX-GDDP-CMIP6", "ssp245", "CanESM5", 2016);
const LOCA: (&str, &str, &str, i64) = ("LOCA", "rcp45", "CCSM4", 2006);

fn fixture_file(dir: &str, name: &str) -> std::path::PathBuf {
    fixtures::data_dir().join(dir).join(name)
}

/// A row's arrays (tasmin, tasmax, pr), NULL elements as `None`.
type Arrays = [Option<Vec<Option<f32>>>; 3];
/// Rows of one job by the bits of (lat, lon).
type JobRows = HashMap<(u64, u64), Arrays>;

/// Rows of one job: (lat, lon) → one Vec<Option<f32>> per variable column.
async fn job_rows(w: &World, (dataset, scenario, model, year): (&str, &str, &str, i64)) -> JobRows {
    let rows =
        w.pg.query(
            "SELECT c.lat, c.lon, y.tasmin, y.tasmax, y.pr
             FROM climate_data_year y
             JOIN map_cell c ON c.id = y.map_cell_id
             JOIN data_source s ON s.id = y.data_source_id
             JOIN dataset d ON d.id = s.dataset_id AND d.name = $1
             JOIN scenario sc ON sc.id = s.scenario_id AND sc.name = $2
             JOIN climate_model m ON m.id = s.model_id AND m.name = $3
             WHERE s.year = $4",
            &[&dataset, &scenario, &model, &(year as i32)],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let lat: f64 = r.get(0);
            let lon: f64 = r.get(1);
            (
                (lat.to_bits(), lon.to_bits()),
                [r.get(2), r.get(3), r.get(4)],
            )
        })
        .collect()
}

/// Checks a job's rows against what nexdecode decodes from the committed fixture files.
fn assert_rows_match_decoder(rows: &JobRows, dir: &str, files: [&str; 3], year: i32) {
    let opts = DecodeOptions {
        single_year_file: true,
        ..DecodeOptions::default()
    };
    let mut cells = None;
    for (v, name) in files.iter().enumerate() {
        let f = GridFile::open(fixture_file(dir, name)).unwrap();
        let block = f.decode_year(year, &CellSelection::AllData, &opts).unwrap();
        assert_eq!(block.len(), rows.len(), "{name}: one row per data cell");
        if let Some(n) = cells {
            assert_eq!(n, block.len());
        }
        cells = Some(block.len());
        for (i, c) in block.cells.iter().enumerate() {
            let (lat, lon) = f.grid().coords(*c);
            let row = rows
                .get(&(lat.to_bits(), lon.to_bits()))
                .unwrap_or_else(|| panic!("{name}: no row for cell {lat},{lon}"));
            let got = row[v].as_ref().expect("array present");
            let want: Vec<Option<f32>> = block
                .series(i)
                .iter()
                .map(|x| (!x.is_nan()).then_some(*x))
                .collect();
            assert_eq!(got.len(), want.len());
            for (d, (g, e)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.map(f32::to_bits),
                    e.map(f32::to_bits),
                    "{name} cell {lat},{lon} day {d}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_from_enqueue_to_exact_rows() {
    let Some(env) = env() else { return };
    let w = World::new(env, "e2e", 3, 60).await;
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    w.upload_job(CMIP6_360.0, CMIP6_360.2, CMIP6_360.3, None)
        .await;
    assert_eq!(
        w.enqueue_job(("NEX-GDDP", "RCP85", "ACCESS1-0", 2008), &[])
            .await,
        1
    );
    assert_eq!(w.enqueue_job(CMIP6_360, &[]).await, 1);
    let s = consume(w.run_config()).await;
    assert_eq!(
        s,
        RunSummary {
            done: 2,
            ..RunSummary::default()
        }
    );

    // Exact values: the fixtures' generator for the standard-calendar job (slot = time step)…
    let rows = job_rows(&w, NEX_GDDP).await;
    let specs = fixtures::set::nex_gddp_job();
    let data_cells = specs[0].data_cells();
    assert_eq!(rows.len(), data_cells);
    for (v, spec) in specs.iter().enumerate() {
        for (i, &lat) in spec.lat.iter().enumerate() {
            for (j, &lon) in spec.lon.iter().enumerate() {
                let Some(row) = rows.get(&(lat.to_bits(), lon.to_bits())) else {
                    assert!(
                        spec.is_masked(i, j),
                        "missing row for data cell {lat},{lon}"
                    );
                    continue;
                };
                let got = row[v].as_ref().unwrap();
                assert_eq!(got.len(), 366);
                for (t, g) in got.iter().enumerate() {
                    assert_eq!(
                        g.map(f32::to_bits),
                        spec.expected(t, i, j).map(f32::to_bits)
                    );
                }
            }
        }
    }
    // …and the decoder for the 360-day job (spread over 365 slots, NULL in the inserted ones).
    let rows = job_rows(&w, CMIP6_360).await;
    assert_rows_match_decoder(
        &rows,
        "nex-gddp-cmip6",
        [
            "tasmin_day_UKESM1-0-LL_ssp585_r1i1p1f2_gn_2015.nc",
            "tasmax_day_UKESM1-0-LL_ssp585_r1i1p1f2_gn_2015.nc",
            "pr_day_UKESM1-0-LL_ssp585_r1i1p1f2_gn_2015.nc",
        ],
        2015,
    );
    let nulls = rows.values().next().unwrap()[0]
        .as_ref()
        .unwrap()
        .iter()
        .filter(|x| x.is_none())
        .count();
    assert_eq!(nulls, 5, "360-day year spread over 365 slots");

    // Job state, units, ledger; the message is gone from the queue and the DLQ is empty.
    let r =
        w.pg.query_one(
            "SELECT count(*) FILTER (WHERE state = 'done'), sum(rows_written)::bigint,
                    sum(bytes_downloaded)::bigint FROM data_source",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 2);
    assert_eq!(r.get::<_, i64>(1), rows.len() as i64 + data_cells as i64);
    assert!(r.get::<_, i64>(2) > 0);
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger WHERE outcome = 'done'")
            .await,
        2
    );
    assert_eq!(
        w.count("SELECT count(*) FROM data_source_variable WHERE units = 'K' AND variable IN ('tasmin','tasmax')").await,
        4
    );
    assert!(w.drain_queue(&w.queue_url, 1).await.is_empty());
    assert!(w.drain_queue(&w.dlq_url, 0).await.is_empty());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_delivery_leaves_one_copy() {
    let Some(env) = env() else { return };
    let w = World::new(env, "dup", 3, 60).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    let body = r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016}"#;
    w.send_raw(&[body, body]).await;
    let s = consume(w.run_config()).await;
    assert_eq!((s.done, s.skipped), (1, 1), "{s:?}");
    let n = fixtures::set::nex_gddp_cmip6_jobs()[0].data_cells() as i64;
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, n);

    // Delivered again later: recognised as done and dropped without reloading.
    w.send_raw(&[body]).await;
    let s = consume(w.run_config()).await;
    assert_eq!((s.done, s.skipped), (0, 1), "{s:?}");
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger WHERE outcome = 'done'")
            .await,
        1
    );

    // Asked to update: replaced, still one copy.
    w.send_raw(&[r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016,"update_existing":true}"#])
        .await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, n);
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger WHERE outcome = 'done'")
            .await,
        2
    );
    assert!(w.drain_queue(&w.queue_url, 1).await.is_empty());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_file_fails_reaches_dlq_and_writes_nothing() {
    let Some(env) = env() else { return };
    let w = World::new(env, "corrupt", 2, 60).await;
    w.upload_with_corrupt_tasmax().await;
    w.enqueue_job(CMIP6_CAN, &[]).await;
    let s = consume(w.run_config()).await;
    assert_eq!(
        s.failed, 2,
        "one failure per receive up to maxReceiveCount: {s:?}"
    );
    assert_eq!(s.done, 0);

    let r =
        w.pg.query_one("SELECT state, last_error, attempts FROM data_source", &[])
            .await
            .unwrap();
    assert_eq!(r.get::<_, String>(0), "failed");
    let err: String = r.get(1);
    assert!(
        err.contains("decode") && err.contains("tasmax"),
        "reason recorded: {err}"
    );
    assert_eq!(r.get::<_, i32>(2), 2);
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger WHERE outcome = 'failed'")
            .await,
        2
    );
    for t in [
        "climate_data_year",
        "map_cell",
        "location_cell",
        "data_source_variable",
    ] {
        assert_eq!(
            w.count(&format!("SELECT count(*) FROM {t}")).await,
            0,
            "{t} unchanged"
        );
    }
    assert!(w.drain_queue(&w.queue_url, 0).await.is_empty());
    let dlq = w.drain_queue(&w.dlq_url, 1).await;
    assert_eq!(dlq.len(), 1, "message redriven to the DLQ");
    assert!(dlq[0].contains("CanESM5"));
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_copy_exits_in_time_and_releases_the_message() {
    let Some(env) = env() else { return };
    let w = World::new(env, "sigterm", 5, 120).await;
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    w.slow_inserts(0.1).await; // 152 rows: ~15 s of COPY
    w.enqueue_job(NEX_GDDP, &[]).await;
    let child = common::nexingest()
        .args(["--schema", &w.schema, "--log-format", "json", "run"])
        .args([
            "--queue-url",
            &w.queue_url,
            "--aws-endpoint-url",
            &w.env.endpoint,
        ])
        .args([
            "--nex-gddp-bucket",
            &w.bucket,
            "--drain-timeout",
            "2",
            "--visibility-timeout",
            "120",
        ])
        .args(["--wait-time", "1"])
        .env("NEXINGEST_DATABASE_URL", &w.env.db_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Wait until the worker is inside COPY into this schema.
    let copy_sql = format!("COPY \"{}\".\"climate_data_year\"%", w.schema);
    let t = Instant::now();
    loop {
        let n =
            w.pg.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
                &[&copy_sql],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if n > 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "worker never reached COPY"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap();
    let took = t.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clean exit: {:?}\n{log}", out.status);
    assert!(
        took < Duration::from_secs(8),
        "exited {took:?} after SIGTERM (drain deadline 2 s)"
    );

    // Visible again at once (the queue's own visibility timeout is 120 s).
    let t = Instant::now();
    let msgs = w.drain_queue(&w.queue_url, 2).await;
    assert_eq!(msgs.len(), 1, "message released");
    assert!(t.elapsed() < Duration::from_secs(5));
    // No partial rows, job back to pending.
    assert_eq!(
        w.count("SELECT count(*) FROM climate_data_year").await,
        0,
        "nothing of the interrupted COPY is visible"
    );
    let state: String =
        w.pg.query_one("SELECT state FROM data_source", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(state, "pending", "{log}");
    assert!(log.contains("drain deadline reached"), "{log}");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeat_keeps_a_long_job_from_being_delivered_twice() {
    let Some(env) = env() else { return };
    // The queue hides a received message for 2 s only; the job takes ~6 s.
    let w = World::new(env, "heartbeat", 5, 2).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    w.slow_inserts(0.04).await;
    w.enqueue_job(CMIP6_CAN, &[]).await;
    let mut cfg = w.run_config();
    cfg.visibility_timeout = Duration::from_secs(3); // heartbeat every second
    let t = Instant::now();
    let consumer = tokio::spawn(async move { run(cfg, std::future::pending()).await });
    // Once the worker holds the message, a competing consumer polls for it the whole time:
    // it must never get it.
    loop {
        let running = w
            .count("SELECT count(*) FROM data_source WHERE state = 'running'")
            .await;
        if running == 1 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = 0;
    while !consumer.is_finished() {
        let r = w
            .sqs
            .receive_message()
            .queue_url(&w.queue_url)
            .wait_time_seconds(1)
            .visibility_timeout(1)
            .send()
            .await
            .unwrap();
        seen += r.messages.unwrap_or_default().len();
    }
    let s = consumer.await.unwrap().unwrap();
    let took = t.elapsed();
    assert!(
        took > Duration::from_secs(4),
        "the job outlived the queue's visibility ({took:?})"
    );
    assert_eq!(seen, 0, "no second delivery during the job");
    assert_eq!(
        s,
        RunSummary {
            done: 1,
            ..RunSummary::default()
        }
    );
    assert_eq!(w.count("SELECT count(*) FROM job_ledger").await, 1);
    assert!(
        w.drain_queue(&w.queue_url, 3).await.is_empty(),
        "deleted after commit"
    );
    // Each extension also showed the job alive in the database (`jobs` tells stale ones).
    assert_eq!(
        w.count(
            "SELECT count(*) FROM data_source
             WHERE heartbeat_at > started_at + interval '1 second'"
        )
        .await,
        1,
        "the heartbeat was recorded while the job ran"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_system_message_is_accepted() {
    let Some(env) = env() else { return };
    let w = World::new(env, "legacy", 3, 60).await;
    w.upload_job(LOCA.0, LOCA.2, LOCA.3, None).await;
    // Cities (the old default location source).
    let n_locations = w.import_cities().await;
    assert!(n_locations >= 3);

    let ids = w
        .pg
        .query_one(
            "SELECT (SELECT id FROM scenario WHERE name = 'rcp45'), (SELECT id FROM climate_model WHERE name = 'CCSM4')",
            &[],
        )
        .await
        .unwrap();
    let body = format!(
        r#"{{"dataset": "LOCA", "scenario_id": {}, "model_id": {}, "year": "2006", "import_geojson_url": null, "import_boundary_url": null, "update_existing": false}}"#,
        ids.get::<_, i32>(0),
        ids.get::<_, i32>(1)
    );
    w.send_raw(&[&body]).await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");

    // Every location has a location_cell row; matched ones point at a loaded cell.
    assert_eq!(
        w.count("SELECT count(*) FROM location_cell").await,
        n_locations
    );
    let unmatched = w
        .count("SELECT count(*) FROM location_cell WHERE map_cell_id IS NULL")
        .await;
    assert!(unmatched >= 1, "the far-away city is reported unmatched");
    let loaded = w.count("SELECT count(*) FROM climate_data_year").await;
    let distinct = w
        .count(
            "SELECT count(DISTINCT map_cell_id) FROM location_cell WHERE map_cell_id IS NOT NULL",
        )
        .await;
    assert_eq!(loaded, distinct);
    assert_eq!(
        w.count(
            "SELECT count(*) FROM location_cell lc JOIN climate_data_year y ON y.map_cell_id = lc.map_cell_id
             WHERE y.tasmin IS NOT NULL AND y.tasmax IS NOT NULL AND y.pr IS NOT NULL"
        )
        .await,
        n_locations - unmatched
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_rejected_and_write_nothing() {
    let Some(env) = env() else { return };
    let w = World::new(env, "malformed", 1, 60).await;
    let bad = [
        "{not json",
        r#"{"dataset":"CMIP9","scenario":"ssp245","model":"CanESM5","year":2016}"#,
        r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2101}"#,
        r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016,"locations":"geojson:https://example.com/points.geojson"}"#,
        r#"{"dataset":"LOCA","scenario_id":99999,"model_id":1,"year":"2006"}"#,
    ];
    for b in &bad {
        match worker::message::parse(b, &w.aws()) {
            Err(worker::error::JobError::InvalidMessage(reason)) => assert!(!reason.is_empty()),
            Ok(worker::message::Message::Legacy(_)) => {} // ids are checked against the DB
            other => panic!("{b}: {other:?}"),
        }
    }
    w.send_raw(&bad).await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.rejected, bad.len() as u64, "{s:?}");
    assert_eq!((s.done, s.failed), (0, 0));
    for t in [
        "data_source",
        "climate_data_year",
        "map_cell",
        "location",
        "job_ledger",
    ] {
        assert_eq!(
            w.count(&format!("SELECT count(*) FROM {t}")).await,
            0,
            "{t}"
        );
    }
    assert_eq!(w.drain_queue(&w.dlq_url, 1).await.len(), bad.len());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn geojson_import_reports_bad_features_and_never_half_imports() {
    let Some(env) = env() else { return };
    let w = World::new(env, "geojson", 3, 60).await;
    let path = fixtures::data_dir().join("geojson/bad_features.geojson");
    let parse = |skip: bool| {
        let mut argv = vec![
            "nexingest",
            "import-locations",
            path.to_str().unwrap(),
            "--source",
            "bad",
        ];
        if skip {
            argv.push("--skip-invalid");
        }
        <worker::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap()
    };
    let cli = parse(false);
    let worker::cli::Command::ImportLocations(a) = &cli.command else {
        unreachable!()
    };
    match worker::cmd::import_locations::run(&w.db(), &w.aws(), a).await {
        Err(worker::cmd::import_locations::ImportError::BadFeatures(bad)) => {
            let idx: Vec<usize> = bad.iter().map(|b| b.index).collect();
            assert_eq!(idx, [1, 2, 3, 4, 6, 7]);
        }
        other => panic!("expected BadFeatures, got {other:?}"),
    }
    assert_eq!(
        w.count("SELECT count(*) FROM location").await,
        0,
        "nothing imported"
    );

    let cli = parse(true);
    let worker::cli::Command::ImportLocations(a) = &cli.command else {
        unreachable!()
    };
    let r = worker::cmd::import_locations::run(&w.db(), &w.aws(), a)
        .await
        .unwrap();
    assert_eq!((r.inserted, r.updated, r.skipped.len()), (2, 0, 6));
    let names: Vec<String> =
        w.pg.query("SELECT name FROM location ORDER BY external_id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(names, ["Oakland", "San Francisco"]);
    // Again: same rows, updated in place.
    let r = worker::cmd::import_locations::run(&w.db(), &w.aws(), a)
        .await
        .unwrap();
    assert_eq!((r.inserted, r.updated), (0, 2));
    assert_eq!(w.count("SELECT count(*) FROM location").await, 2);

    // From an allowed S3 URL too; a bucket off the allow-list is refused.
    let body = aws_sdk_s3::primitives::ByteStream::from_path(
        fixtures::data_dir().join("geojson/cities.geojson"),
    )
    .await
    .unwrap();
    w.s3.put_object()
        .bucket(&w.geo_bucket)
        .key("cities.geojson")
        .body(body)
        .send()
        .await
        .unwrap();
    let url = format!("s3://{}/cities.geojson", w.geo_bucket);
    let cli =
        <worker::cli::Cli as clap::Parser>::try_parse_from(["nexingest", "import-locations", &url])
            .unwrap();
    let worker::cli::Command::ImportLocations(a) = &cli.command else {
        unreachable!()
    };
    let r = worker::cmd::import_locations::run(&w.db(), &w.aws(), a)
        .await
        .unwrap();
    assert!(r.inserted >= 3 && r.source == "cities.geojson");
    let cli = <worker::cli::Cli as clap::Parser>::try_parse_from([
        "nexingest",
        "import-locations",
        "s3://elsewhere/x.geojson",
    ])
    .unwrap();
    let worker::cli::Command::ImportLocations(a) = &cli.command else {
        unreachable!()
    };
    assert!(
        worker::cmd::import_locations::run(&w.db(), &w.aws(), a)
            .await
            .is_err()
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_ingest_of_a_boundary_loads_the_touched_cells() {
    let Some(env) = env() else { return };
    let w = World::new(env, "ingest", 3, 60).await;
    let boundary = fixtures::data_dir().join("geojson/boundary.geojson");
    let out = common::nexingest()
        .args([
            "--schema",
            &w.schema,
            "ingest",
            "--dataset",
            "LOCA",
            "--scenario",
            "rcp45",
        ])
        .args(["--model", "CCSM4", "--year", "2006", "--no-progress"])
        .arg(format!("--locations=boundary:{}", boundary.display()))
        .arg(fixtures::data_dir().join("loca"))
        .env("NEXINGEST_DATABASE_URL", &w.env.db_url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rows"), "{stdout}");
    let n = w.count("SELECT count(*) FROM climate_data_year").await;
    let all = fixtures::set::loca_job()[0].data_cells() as i64;
    assert!(
        n > 0 && n < all,
        "{n} of {all} cells touched by the boundary"
    );
    // Every loaded cell lies within the polygon's bounding box (plus half a cell).
    let outside = w
        .count(
            "SELECT count(*) FROM climate_data_year y JOIN map_cell c ON c.id = y.map_cell_id
             WHERE c.lat NOT BETWEEN 37.32 - 0.032 AND 37.90 + 0.032
                OR c.lon - 360 NOT BETWEEN -122.30 - 0.032 AND -121.70 + 0.032",
        )
        .await;
    assert_eq!(outside, 0);
    w.cleanup().await;
}

/// A local points job whose file holds a point far outside the grid: the job loads the others,
/// keeps that location with no cell, and the warning says why (outside the grid, how far).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_ingest_names_why_a_location_has_no_cell() {
    let Some(env) = env() else { return };
    let w = World::new(env, "whynocell", 3, 60).await;
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points.geojson");
    // San Jose (inside the LOCA fixture grid) and Paris (far outside it).
    let features = serde_json::json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "San Jose"},
         "geometry": {"type": "Point", "coordinates": [-121.89, 37.34]}},
        {"type": "Feature", "properties": {"name": "Paris"},
         "geometry": {"type": "Point", "coordinates": [2.35, 48.85]}},
    ]});
    std::fs::write(&points, features.to_string()).unwrap();
    let out = common::nexingest()
        .args(["--schema", &w.schema, "--log-format", "text", "ingest"])
        .args([
            "--dataset",
            "LOCA",
            "--scenario",
            "rcp45",
            "--model",
            "CCSM4",
        ])
        .args(["--year", "2006", "--no-progress"])
        .arg(format!("--locations=geojson:{}", points.display()))
        .arg(fixtures::data_dir().join("loca"))
        .env("NEXINGEST_DATABASE_URL", &w.env.db_url)
        .env_remove("RUST_LOG")
        .env_remove("NEXINGEST_LOG")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("locations without a data cell"))
        .unwrap_or_else(|| panic!("no unmatched-location warning:\n{stderr}"));
    assert!(
        warning.contains("(48.8500,2.3500): outside the grid"),
        "the warning names the point and the reason: {warning}"
    );
    assert!(!warning.contains("37.3400"), "San Jose matched: {warning}");
    assert_eq!(
        w.count("SELECT count(*) FROM location_cell WHERE map_cell_id IS NULL")
            .await,
        1
    );
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, 1);
    w.cleanup().await;
}

#[test]
fn key_templates_match_the_fixture_manifest() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures::data_dir().join("MANIFEST.json")).unwrap())
            .unwrap();
    let mut n = 0;
    for f in manifest["files"].as_array().unwrap() {
        if f["kind"] != "dataset" {
            continue;
        }
        let d: worker::catalog::Dataset = f["dataset"].as_str().unwrap().parse().unwrap();
        let (scenario, model, var) = (
            f["scenario"].as_str().unwrap(),
            f["model"].as_str().unwrap(),
            f["var"].as_str().unwrap(),
        );
        let year = f["year"].as_i64().unwrap() as i32;
        assert_eq!(
            d.key(scenario, model, year, var),
            f["s3_key"].as_str().unwrap()
        );
        assert_eq!(d.member(model, scenario), f["member"].as_str().unwrap());
        assert_eq!(d.default_bucket(), f["bucket"].as_str().unwrap());
        n += 1;
    }
    assert_eq!(n, 12);
}

//! Running a fleet, against the real local services (PostgreSQL, moto S3 + SQS): the fleet-wide
//! load throttle with two worker processes, the EMF metrics and the one log line per job of a
//! run, and S3 event notifications from a bucket as jobs.

mod common;

use std::time::{Duration, Instant};
use worker::consumer::RunSummary;

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use common::{World, consume, env, finished};
use serde_json::Value;

const NEX_GDDP: (&str, &str, &str, i64) = ("NEX-GDDP", "rcp85", "ACCESS1-0", 2008);
const CMIP6_CAN: (&str, &str, &str, i64) = ("NEX-GDDP-CMIP6", "ssp245", "CanESM5", 2016);
const NEX_GDDP_JOB: &str =
    r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"ACCESS1-0","year":2008}"#;
const CMIP6_JOB: &str =
    r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016}"#;

/// The EMF lines of a worker's stdout.
fn emf_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .inspect(|v| assert!(v["_aws"]["CloudWatchMetrics"].is_array(), "{v}"))
        .collect()
}

async fn status_json(w: &World) -> Value {
    let cli = <worker::cli::Cli as clap::Parser>::try_parse_from(["nexingest", "status", "--json"])
        .unwrap();
    let worker::cli::Command::Status(a) = &cli.command else {
        unreachable!()
    };
    let out = worker::cmd::status::run(&w.db(), a).await.unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Uploads the files of both jobs the load-slot tests run ([`NEX_GDDP_JOB`], [`CMIP6_JOB`]).
async fn upload_both_jobs(w: &World) {
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
}

/// Two worker processes, one job each, `--max-db-loads 1`: the second job waits for the slot
/// (shown as `waiting` by `status`, its heartbeat going on) and its COPY starts only after the
/// first one's transaction has committed. Every row insert is timed by a trigger; the COPYs
/// are slowed down so that they would overlap without the throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_with_one_load_slot_never_overlap_their_copies() {
    let Some(env) = env() else { return };
    let w = World::new(env, "throttle", 3, 60).await;
    upload_both_jobs(&w).await;
    let cells_a = fixtures::set::nex_gddp_job()[0].data_cells();
    let cells_b = fixtures::set::nex_gddp_cmip6_jobs()[0].data_cells();
    // About 4 s of COPY per job.
    let per_row = 4.0 / cells_a.min(cells_b) as f64;
    w.pg.batch_execute("CREATE TABLE copy_log (tx bigint NOT NULL, at timestamptz NOT NULL)")
        .await
        .unwrap();
    w.before_each_insert(
        "log_copy_row",
        &format!(
            "INSERT INTO {s}.copy_log VALUES (txid_current(), clock_timestamp());
             PERFORM pg_sleep({per_row});",
            s = w.schema
        ),
    )
    .await;
    w.send_raw(&[NEX_GDDP_JOB, CMIP6_JOB]).await;
    let flags = [
        "--jobs",
        "1",
        "--max-db-loads",
        "1",
        "--metrics",
        "emf",
        // Several heartbeats while a job waits for the slot.
        "--visibility-timeout",
        "6",
    ];
    let a = w.spawn_worker(&[], &flags);
    let b = w.spawn_worker(&[], &flags);

    // Watch `status` while they run.
    let (mut saw_waiting, mut max_in_use) = (false, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(150) {
        let s = status_json(&w).await;
        let groups = s["groups"].as_array().unwrap();
        saw_waiting |= groups.iter().any(|g| g["state"] == "waiting");
        max_in_use = max_in_use.max(s["load_slots"]["in_use"].as_i64().unwrap());
        let done: i64 = groups
            .iter()
            .filter(|g| g["state"] == "done")
            .map(|g| g["jobs"].as_i64().unwrap())
            .sum();
        if done == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (out_a, _) = finished(a).await;
    let (out_b, _) = finished(b).await;
    assert!(
        saw_waiting,
        "status never showed a job waiting for the slot"
    );
    assert_eq!(max_in_use, 1, "at most one load slot in use");

    // One COPY per job; the later one starts after the earlier one's last row.
    let copies =
        w.pg.query(
            "SELECT min(at), max(at), count(*)::bigint FROM copy_log GROUP BY tx ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(copies.len(), 2, "two load transactions");
    let (end_first, start_second): (std::time::SystemTime, std::time::SystemTime) =
        (copies[0].get(1), copies[1].get(0));
    assert!(
        start_second > end_first,
        "the COPYs overlapped: second started {:?} before the first ended",
        end_first.duration_since(start_second).unwrap_or_default()
    );
    let mut rows: Vec<i64> = copies.iter().map(|r| r.get(2)).collect();
    rows.sort_unstable();
    let mut want = vec![cells_a as i64, cells_b as i64];
    want.sort_unstable();
    assert_eq!(rows, want);
    assert_eq!(
        w.count("SELECT count(*) FROM data_source WHERE state = 'done'")
            .await,
        2
    );
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger").await,
        2,
        "two done entries: no job was released, retried or delivered again while it waited"
    );
    // The waiting job's metrics say how long it waited; nobody waited for nothing.
    let mut waits: Vec<f64> = emf_lines(&out_a)
        .into_iter()
        .chain(emf_lines(&out_b))
        .filter(|l| l["Outcome"] == "done")
        .map(|l| l["LoadSlotWaitSeconds"].as_f64().unwrap())
        .collect();
    waits.sort_by(f64::total_cmp);
    assert_eq!(waits.len(), 2);
    assert!(waits[0] < 1.0 && waits[1] > 1.0, "slot waits {waits:?}");
    assert!(w.drain_queue(&w.queue_url, 1).await.is_empty());
    w.cleanup().await;
}

/// A load that fails mid-COPY gives its slot back (once its server process is done), so the
/// next job does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_load_gives_its_slot_back() {
    let Some(env) = env() else { return };
    let w = World::new(env, "slotback", 1, 60).await;
    upload_both_jobs(&w).await;
    // Every NEX-GDDP row insert fails, after a few rows' worth of work.
    w.before_each_insert(
        "fail_nex_gddp",
        &format!(
            "PERFORM pg_sleep(0.01);
             IF (SELECT d.name FROM {s}.data_source ds JOIN {s}.dataset d ON d.id = ds.dataset_id
                 WHERE ds.id = NEW.data_source_id) = 'NEX-GDDP' THEN
               RAISE EXCEPTION 'no NEX-GDDP today';
             END IF;",
            s = w.schema
        ),
    )
    .await;
    let mut cfg = w.run_config();
    cfg.pipeline.max_db_loads = Some(1);
    w.send_raw(&[NEX_GDDP_JOB]).await;
    let s = consume(cfg.clone()).await;
    assert_eq!(s.failed, 1, "{s:?}");
    let t = Instant::now();
    while status_json(&w).await["load_slots"]["in_use"] != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the failed load kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.send_raw(&[CMIP6_JOB]).await;
    let t = Instant::now();
    let s = consume(cfg).await;
    assert_eq!(s.done, 1, "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    w.cleanup().await;
}

/// A run with `--metrics emf`: one EMF line per message on stdout (a job, the same job again,
/// an invalid message) and the worker's totals; on stderr one line per job at the default
/// level, no per-phase lines, the summary once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_writes_emf_metrics_and_one_line_per_job() {
    let Some(env) = env() else { return };
    let w = World::new(env, "metrics", 1, 60).await;
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    // One job at a time: the job, then the same job again (skipped) in either order.
    w.send_raw(&[NEX_GDDP_JOB, NEX_GDDP_JOB, r#"{"dataset":"CMIP7"}"#])
        .await;
    let (out, err) = finished(w.spawn_worker(
        &[],
        &[
            "--jobs",
            "1",
            "--metrics",
            "emf",
            "--metrics-namespace",
            "nexingest-test",
        ],
    ))
    .await;
    let lines = emf_lines(&out);
    assert_eq!(lines.len(), 4, "three messages and the totals:\n{out}");
    let by = |o: &str| -> Vec<&Value> { lines.iter().filter(|l| l["Outcome"] == o).collect() };
    let cells = fixtures::set::nex_gddp_job()[0].data_cells() as u64;

    let done = by("done");
    assert_eq!(done.len(), 1, "{out}");
    let d = done[0];
    assert_eq!(d["Dataset"], "NEX-GDDP");
    assert_eq!(d["Scenario"], "rcp85");
    assert_eq!(d["Model"], "ACCESS1-0");
    assert_eq!(d["Year"], 2008);
    assert_eq!(d["Rows"].as_u64(), Some(cells));
    assert_eq!(d["RowsNew"].as_u64(), Some(cells));
    assert!(d["BytesDownloaded"].as_u64().unwrap() > 10_000);
    for m in [
        "DownloadSeconds",
        "DecodeSeconds",
        "LoadSeconds",
        "QueueWaitSeconds",
        "JobSeconds",
    ] {
        let v = d[m].as_f64().unwrap_or_else(|| panic!("{m} in {d}"));
        assert!((0.0..120.0).contains(&v), "{m} = {v}");
    }
    let directives = d["_aws"]["CloudWatchMetrics"].as_array().unwrap();
    assert!(
        directives
            .iter()
            .all(|x| x["Namespace"] == "nexingest-test")
    );
    let dims: Vec<&Value> = directives.iter().map(|x| &x["Dimensions"]).collect();
    assert!(dims.contains(&&serde_json::json!([["Dataset", "Scenario"]])));
    assert!(dims.contains(&&serde_json::json!([
        ["Dataset", "Scenario", "Outcome"],
        ["Outcome"]
    ])));
    // Every metric a directive names is on the line, as a number.
    for x in directives {
        for m in x["Metrics"].as_array().unwrap() {
            assert!(d[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
    }

    let skipped = by("skipped");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["Jobs"], 1);
    assert!(skipped[0].get("Rows").is_none());
    let rejected = by("rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].get("Dataset").is_none());
    assert!(
        rejected[0]["Reason"]
            .as_str()
            .unwrap()
            .contains("invalid message"),
        "{}",
        rejected[0]
    );

    let totals = &lines[3];
    assert!(
        totals.get("Outcome").is_none(),
        "totals come last: {totals}"
    );
    assert_eq!(totals["WorkerJobsDone"], 1);
    assert_eq!(totals["WorkerJobsSkipped"], 1);
    assert_eq!(totals["WorkerJobsRejected"], 1);
    assert_eq!(totals["WorkerRows"].as_u64(), Some(cells));
    assert_eq!(
        totals["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([[]])
    );

    // stderr at the default level: one line per job, no phases, nothing twice.
    let count = |needle: &str| err.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("job done"), 1, "{err}");
    assert_eq!(count("job already done"), 1, "{err}");
    assert_eq!(count("message rejected"), 1, "{err}");
    assert_eq!(count("worker stopped"), 1, "{err}");
    assert_eq!(count("phase"), 0, "{err}");
    assert_eq!(count("decoded"), 0, "{err}");
    let done_line = err.lines().find(|l| l.contains("job done")).unwrap();
    for field in ["rows=", "mb=", "download_s=", "decode_s=", "load_s="] {
        assert!(done_line.contains(field), "{field} in {done_line}");
    }
    w.cleanup().await;
}

/// A fatal error is printed once: a plain `error:` line on a terminal, one JSON log line with
/// `--log-format json`.
#[test]
fn a_fatal_error_is_printed_once() {
    for (format, plain, json) in [("text", 1, 0), ("json", 0, 1)] {
        let out = common::nexingest_blocking()
            .args([
                "--database-url",
                "postgres://nobody@127.0.0.1:1/none",
                "--log-format",
                format,
                "run",
            ])
            .env_remove("NEXINGEST_QUEUE_URL")
            .env_remove("NEXINGEST_QUEUE_NAME")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("queue")).collect();
        assert_eq!(lines.len(), 1, "{format}: {err}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("error: ")).count(),
            plain,
            "{err}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] == "ERROR"))
                .count(),
            json,
            "{err}"
        );
    }
}

/// Sends `bucket`'s `ObjectCreated` notifications to the world's queue (moto then sends an
/// `s3:TestEvent`, as S3 does).
async fn notify_queue(w: &World, bucket: &str) {
    let arn = w
        .sqs
        .get_queue_attributes()
        .queue_url(&w.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap();
    w.s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(arn)
                        .events(Event::S3ObjectCreated)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("bucket notification to the queue");
}

async fn put(w: &World, bucket: &str, key: &str, body: Vec<u8>) {
    w.s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .expect("upload");
}

/// Files dropped into a bucket become jobs through its S3 event notifications (moto sends
/// them to the queue): a `pr` file of a data source loaded with `tasmin,tasmax` for the cities
/// fills the `pr` column of those rows; the same object again (same key and ETag) is skipped;
/// S3's test events are deleted; a key of no dataset and a bucket not allowed are rejected
/// (to the DLQ). The object uploaded again with other content replaces its column.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_event_notifications_fill_a_variable_once_per_object_version() {
    let Some(env) = env() else { return };
    let w = World::new(env, "events", 1, 60).await;
    let n_cities = w.import_cities().await;
    assert!(n_cities > 0);
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    assert_eq!(
        w.enqueue_job(
            NEX_GDDP,
            &["--variables", "tasmin,tasmax", "--locations", "cities"]
        )
        .await,
        1
    );
    assert_eq!(consume(w.run_config()).await.done, 1);
    let rows = w.count("SELECT count(*) FROM climate_data_year").await;
    assert!(rows > 0);
    assert_eq!(
        w.count("SELECT count(*) FROM climate_data_year WHERE pr IS NULL")
            .await,
        rows
    );

    // Notifications on: a test event; the pr file (twice, same bytes); a file of no dataset.
    notify_queue(&w, &w.bucket).await;
    let pr_key =
        "NEX-GDDP/BCSD/rcp85/day/atmos/pr/r1i1p1/v1.0/pr_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc";
    let pr = std::fs::read(
        fixtures::data_dir().join("nex-gddp/pr_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc"),
    )
    .unwrap();
    put(&w, &w.bucket, pr_key, pr.clone()).await;
    put(&w, &w.bucket, pr_key, pr.clone()).await;
    put(&w, &w.bucket, "incoming/readme.txt", b"hello".to_vec()).await;
    // A bucket that is not allowed, with its own test event.
    let other = format!("x-{}", w.bucket.trim_start_matches("b-"));
    w.s3.create_bucket().bucket(&other).send().await.unwrap();
    notify_queue(&w, &other).await;
    put(&w, &other, pr_key, pr.clone()).await;

    let s = consume(w.run_config()).await;
    assert_eq!(
        s,
        RunSummary {
            done: 1,
            skipped: 1,
            rejected: 2,
            ignored: 2,
            ..RunSummary::default()
        }
    );
    assert_eq!(
        w.count("SELECT count(*) FROM climate_data_year").await,
        rows,
        "no row added: the cities' rows got their pr column"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM climate_data_year WHERE pr IS NULL OR tasmin IS NULL")
            .await,
        0
    );
    let etag =
        w.s3.head_object()
            .bucket(&w.bucket)
            .key(pr_key)
            .send()
            .await
            .unwrap()
            .e_tag
            .unwrap()
            .trim_matches('"')
            .to_owned();
    let entry =
        w.pg.query_one(
            "SELECT location_key, variables, rows_written, rows_updated FROM job_ledger
             WHERE outcome = 'done' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let key: String = entry.get(0);
    assert!(key.starts_with("cities:"), "{key}");
    assert!(
        key.ends_with(&format!("|s3://{}/{pr_key}#{etag}", w.bucket)),
        "{key}"
    );
    assert_eq!(entry.get::<_, Vec<String>>(1), ["pr"]);
    assert_eq!(
        (entry.get::<_, i64>(2), entry.get::<_, i64>(3)),
        (0, rows),
        "filled, not appended"
    );
    let dlq = w.drain_queue(&w.dlq_url, 1).await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert!(dlq.iter().any(|b| b.contains("readme.txt")));
    assert!(dlq.iter().any(|b| b.contains(&other)));

    // The same key with other bytes (a new ETag) is a new version: it replaces pr.
    let pr_digest = || async {
        w.pg.query_one(
            "SELECT md5(string_agg(pr::text, ',' ORDER BY map_cell_id)) FROM climate_data_year",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
    };
    let before = pr_digest().await;
    let mut changed = pr.clone();
    changed.extend_from_slice(&[0u8; 64]);
    put(&w, &w.bucket, pr_key, changed).await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");
    let entry =
        w.pg.query_one(
            "SELECT rows_written, rows_updated, update_existing FROM job_ledger
             WHERE outcome = 'done' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            entry.get::<_, i64>(0),
            entry.get::<_, i64>(1),
            entry.get::<_, bool>(2)
        ),
        (0, rows, true)
    );
    let after = pr_digest().await;
    assert_eq!(
        before, after,
        "same values (the file's data did not change)"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger WHERE outcome = 'done'")
            .await,
        3
    );
    w.cleanup().await;
}

/// One `nexingest ingest` of a NEX-GDDP-CMIP6 job on local files, in-process (its own
/// pipeline and `map_cell` cache, as a separate worker would have).
async fn ingest_cmip6(w: &World, dir: &std::path::Path, model: &str) -> bool {
    use clap::Parser;
    let cli = worker::cli::Cli::try_parse_from([
        "nexingest",
        "ingest",
        "--dataset",
        "NEX-GDDP-CMIP6",
        "--scenario",
        "ssp585",
        "--model",
        model,
        "--year",
        "2015",
        "--locations",
        "all",
        "--no-progress",
        dir.to_str().unwrap(),
    ])
    .unwrap();
    let worker::cli::Command::Ingest(a) = &cli.command else {
        unreachable!()
    };
    let p = worker::config::PipelineConfig {
        memory_budget: 1 << 30,
        work_dir: std::env::temp_dir(),
        download_concurrency: 1,
        download_part: 1 << 20,
        stream: true,
        range_gap: 64 * 1024,
        search_radius_km: 50.0,
        job_timeout: Duration::from_secs(300),
        max_db_loads: None,
    };
    worker::cmd::ingest::run(&w.db(), &p, a).await.unwrap()
}

/// Two workers run the first whole-grid jobs of a dataset at once (two models, one grid of
/// enough data cells for the background cell insert, in more than one batch): the
/// grid's cells exist once, and each job's rows point at the cells their values belong to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_jobs_of_a_dataset_share_one_set_of_cells() {
    let Some(env) = env() else { return };
    let w = World::new(env, "first-jobs", 3, 60).await;
    let tmp = tempfile::tempdir().unwrap();
    const MODELS: [&str; 2] = ["ACCESS-CM2", "CanESM5"];
    let spec = |var: &str, m: usize| {
        let mut s = fixtures::GridSpec::nex_gddp_cmip6(
            var,
            "ssp585",
            MODELS[m],
            "r1i1p1f1",
            2015,
            fixtures::Calendar::Standard,
            (0.0, 45.0),
            (0.0, 60.0),
        );
        // Each model its own values.
        s.phase = m * 101;
        s
    };
    let dirs: Vec<std::path::PathBuf> = (0..MODELS.len())
        .map(|m| {
            let dir = tmp.path().join(MODELS[m]);
            std::fs::create_dir_all(&dir).unwrap();
            for var in ["tasmin", "tasmax", "pr"] {
                let s = spec(var, m);
                fixtures::write_grid(dir.join(s.file_name()), &s).unwrap();
            }
            dir
        })
        .collect();
    let grid = spec("tasmax", 0);
    let cells = grid.data_cells();
    // More than the 10,000 cells from which the insert runs in the background, in batches
    // of 8,192.
    assert!(cells > 12_000, "{cells} data cells: several insert batches");

    let (a, b) = tokio::join!(
        ingest_cmip6(&w, &dirs[0], MODELS[0]),
        ingest_cmip6(&w, &dirs[1], MODELS[1])
    );
    assert!(a && b, "both jobs loaded");
    assert_eq!(
        w.count("SELECT count(*) FROM map_cell").await,
        cells as i64,
        "one map_cell row per data cell"
    );
    for (m, model) in MODELS.iter().enumerate() {
        let s = spec("tasmax", m);
        let by_coords: std::collections::HashMap<(u64, u64), (usize, usize)> = (0..s.lat.len())
            .flat_map(|i| (0..s.lon.len()).map(move |j| (i, j)))
            .map(|(i, j)| ((s.lat[i].to_bits(), s.lon[j].to_bits()), (i, j)))
            .collect();
        let rows =
            w.pg.query(
                "SELECT c.lat, c.lon, y.tasmax[1], y.tasmax[200]
                 FROM climate_data_year y
                 JOIN map_cell c ON c.id = y.map_cell_id
                 JOIN data_source s ON s.id = y.data_source_id
                 JOIN climate_model m ON m.id = s.model_id AND m.name = $1",
                &[model],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), cells, "{model}: one row per data cell");
        for r in &rows {
            let (lat, lon): (f64, f64) = (r.get(0), r.get(1));
            let &(i, j) = by_coords
                .get(&(lat.to_bits(), lon.to_bits()))
                .unwrap_or_else(|| panic!("{model}: cell ({lat}, {lon}) is on the grid"));
            let (d0, d199): (Option<f32>, Option<f32>) = (r.get(2), r.get(3));
            assert_eq!(d0, s.expected(0, i, j), "{model} ({lat}, {lon}) day 1");
            assert_eq!(
                d199,
                s.expected(199, i, j),
                "{model} ({lat}, {lon}) day 200"
            );
        }
    }
    w.cleanup().await;
}

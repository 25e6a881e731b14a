//! The operator commands against the local services (PostgreSQL + moto): `jobs`, `requeue`
//! (data sources and `--from-dlq`), `doctor`, `finalize`, `plot`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use common::{World, consume, env};
use worker::cli::{Cli, Command, PlotKind};

const CMIP6_CAN: (&str, &str, &str, i64) = ("NEX-GDDP-CMIP6", "ssp245", "CanESM5", 2016);

fn cli(w: &World, args: &[&str]) -> Cli {
    let mut argv: Vec<String> = vec![
        "nexingest".into(),
        "--database-url".into(),
        w.env.db_url.clone(),
        "--schema".into(),
        w.schema.clone(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    Cli::try_parse_from(argv).expect("flags parse")
}

/// `args` followed by the world's queue, endpoint and buckets.
fn with_aws(w: &World, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    v.extend(
        [
            "--queue-url",
            &w.queue_url,
            "--aws-endpoint-url",
            &w.env.endpoint,
            "--nex-gddp-bucket",
            &w.bucket,
            "--loca-bucket",
            &w.bucket,
            "--cmip6-bucket",
            &w.bucket,
            "--allowed-buckets",
            &w.geo_bucket,
        ]
        .map(String::from),
    );
    v
}

async fn jobs(w: &World, args: &[&str]) -> worker::producer::jobs::JobsReport {
    let mut argv = vec!["jobs"];
    argv.extend_from_slice(args);
    let c = cli(w, &argv);
    let Command::Jobs(a) = &c.command else {
        unreachable!()
    };
    worker::cmd::jobs::run(&w.db(), a).await.expect("jobs")
}

async fn requeue(
    w: &World,
    args: &[&str],
) -> (
    worker::requeue::RequeueReport,
    worker::requeue::RequeueConfig,
) {
    let mut argv = vec!["requeue".to_owned()];
    argv.extend(with_aws(w, args));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let c = cli(w, &argv);
    let Command::Requeue(a) = &c.command else {
        unreachable!()
    };
    let cfg = worker::requeue::RequeueConfig::from_args(&c.global, a).expect("config");
    let report = worker::requeue::run(&cfg).await.expect("requeue");
    (report, cfg)
}

async fn visible(w: &World, url: &str) -> usize {
    worker::queue::queue_attribute(&w.sqs, url, QueueAttributeName::ApproximateNumberOfMessages)
        .await
        .unwrap()
        .unwrap_or_default()
        .parse()
        .unwrap()
}

/// A done data source whose later job (a new variable) failed: `requeue --state failed` sends
/// that job again as recorded, the data source stays `done` throughout, and once it loads there
/// is nothing left to requeue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_of_a_done_data_source_is_requeued() {
    let Some(env) = env() else { return };
    let w = World::new(env, "requeuedone", 1, 60).await;
    w.upload_with_corrupt_tasmax().await;
    w.enqueue_job(CMIP6_CAN, &["--variables", "tasmin,pr"])
        .await;
    assert_eq!(consume(w.run_config()).await.done, 1);
    let rows = w.count("SELECT count(*) FROM climate_data_year").await;
    w.enqueue_job(CMIP6_CAN, &["--variables", "tasmax"]).await;
    let s = consume(w.run_config()).await;
    assert_eq!((s.done, s.failed), (0, 1), "{s:?}");
    assert_eq!(w.state().await, "done");
    assert!(jobs(&w, &["--state", "failed"]).await.rows.is_empty());

    // A dry run names the job and sends nothing.
    let (rep, cfg) = requeue(&w, &["--state", "failed", "--dry-run"]).await;
    let out = rep.render(&cfg);
    assert_eq!((rep.requeued.len(), rep.left.len()), (1, 0), "{out}");
    assert!(
        out.contains("would requeue NEX-GDDP-CMIP6/ssp245/CanESM5/2016 (done, a later job failed): variables tasmax, locations all"),
        "{out}"
    );
    assert_eq!(visible(&w, &w.queue_url).await, 0);

    // The operator fixes the file and requeues: one message, the data source stays done.
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    let (rep, _) = requeue(&w, &["--state", "failed"]).await;
    assert_eq!((rep.requeued.len(), rep.sent), (1, 1));
    assert_eq!(w.state().await, "done");
    assert_eq!(consume(w.run_config()).await.done, 1);
    assert_eq!(
        w.count(
            "SELECT count(*) FROM climate_data_year WHERE tasmax IS NOT NULL AND tasmin IS NOT NULL"
        )
        .await,
        rows
    );
    // Its latest attempt is done now: nothing left to requeue.
    let (rep, _) = requeue(&w, &["--state", "failed"]).await;
    assert_eq!((rep.requeued.len(), rep.sent), (0, 0));
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_is_listed_requeued_and_then_loads() {
    let Some(env) = env() else { return };
    let w = World::new(env, "requeue", 2, 60).await;
    w.upload_with_corrupt_tasmax().await;
    w.enqueue_job(CMIP6_CAN, &["--variables", "tasmax,pr"])
        .await;
    let s = consume(w.run_config()).await;
    assert_eq!((s.done, s.failed), (0, 2), "{s:?}");

    // `jobs --state failed` shows it with its last error; other states do not.
    let r = jobs(&w, &["--state", "failed"]).await;
    assert_eq!(r.rows.len(), 1);
    let row = &r.rows[0];
    assert_eq!(
        (
            row.dataset.as_str(),
            row.model.as_str(),
            row.year,
            row.state.as_str()
        ),
        ("NEX-GDDP-CMIP6", "CanESM5", 2016, "failed")
    );
    assert_eq!(row.attempts, 2);
    assert_eq!(
        (row.ledger.done, row.ledger.failed, row.ledger.released),
        (0, 2, 0)
    );
    let last = row.last.as_ref().expect("ledger entry");
    assert_eq!(last.outcome, "failed");
    assert_eq!(last.variables, ["pr", "tasmax"]);
    assert_eq!(last.location_key.as_deref(), Some("all"));
    assert!(
        last.error.as_deref().unwrap().contains("tasmax"),
        "{last:?}"
    );
    let text = r.render(false);
    assert!(
        text.contains("NEX-GDDP-CMIP6/ssp245/CanESM5/2016") && text.contains("failed"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.render(true)).unwrap();
    assert_eq!(json["jobs"][0]["state"], "failed");
    assert!(jobs(&w, &["--state", "done,pending"]).await.rows.is_empty());
    assert!(
        jobs(&w, &["--model", "ACCESS-CM2"]).await.rows.is_empty(),
        "model filter"
    );
    assert_eq!(
        jobs(&w, &["--since", "1h", "--years", "2010-2020"])
            .await
            .rows
            .len(),
        1
    );
    assert!(jobs(&w, &["--since", "2999-01-01"]).await.rows.is_empty());

    // The operator fixes the file. A dry run changes nothing and sends nothing.
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    let (rep, cfg) = requeue(&w, &["--state", "failed", "--dry-run"]).await;
    assert_eq!(rep.requeued.len(), 1);
    assert_eq!(rep.dry_run_bodies.len(), 1);
    assert!(rep.render(&cfg).contains("would requeue"));
    // A dry run needs no queue.
    let c = cli(&w, &["requeue", "--state", "failed", "--dry-run"]);
    let Command::Requeue(a) = &c.command else {
        unreachable!()
    };
    let cfg = worker::requeue::RequeueConfig::from_args(&c.global, a).unwrap();
    assert!(cfg.queue.is_none());
    let rep = worker::requeue::run(&cfg).await.unwrap();
    assert_eq!(rep.requeued.len(), 1);
    assert_eq!(w.state().await, "failed");
    assert_eq!(visible(&w, &w.queue_url).await, 0);

    // The requeue moves it to pending and sends one native message with the same job.
    let (rep, cfg) = requeue(&w, &["--state", "failed"]).await;
    let out = rep.render(&cfg);
    assert_eq!(rep.requeued.len(), 1, "{out}");
    assert_eq!(rep.sent, 1);
    assert!(out.contains("failed → pending"), "{out}");
    assert_eq!(w.state().await, "pending");
    let bodies = w.drain_queue(&w.queue_url, 1).await;
    assert_eq!(bodies.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["model"], "CanESM5");
    assert_eq!(body["year"], 2016);
    assert_eq!(body["locations"], "all");
    assert_eq!(body["variables"], serde_json::json!(["pr", "tasmax"]));
    // (drain_queue hid it; put it back for the consumer.)
    w.send_raw(&[&bodies[0]]).await;

    // Nothing else is failed: a second requeue does nothing.
    let (rep, _) = requeue(&w, &["--state", "failed"]).await;
    assert!(rep.requeued.is_empty() && rep.sent == 0);

    let s = consume(w.run_config()).await;
    assert_eq!((s.done, s.failed), (1, 0), "{s:?}");
    assert_eq!(w.state().await, "done");
    assert!(
        w.count(
            "SELECT count(*) FROM climate_data_year WHERE tasmax IS NOT NULL AND pr IS NOT NULL"
        )
        .await
            > 0
    );
    let r = jobs(&w, &[]).await;
    assert_eq!(r.rows[0].state, "done");
    assert_eq!((r.rows[0].ledger.done, r.rows[0].ledger.failed), (1, 2));
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_running_jobs_are_shown_and_requeued_from_their_ledger() {
    let Some(env) = env() else { return };
    let w = World::new(env, "stale", 3, 60).await;
    // Three running data sources: two whose attempts started 2 h ago (one with an earlier
    // released attempt on the ledger, one without any entry) and one that started now.
    let ids: Vec<i64> =
        w.pg.query(
            "INSERT INTO data_source (dataset_id, model_id, scenario_id, year, state, attempts,
                                      started_at)
             SELECT d.id, m.id, s.id, y, 'running', 1,
                    CASE WHEN y = 2008 THEN now() ELSE now() - interval '2 hours' END
             FROM dataset d, climate_model m, scenario s, unnest(ARRAY[2006, 2007, 2008]) y
             WHERE d.name = 'NEX-GDDP' AND m.name = 'ACCESS1-0' AND s.name = 'rcp85'
             ORDER BY y
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    w.pg.execute(
        "INSERT INTO job_ledger (data_source_id, worker, outcome, started_at, finished_at,
                                 error, variables, location_key, attempt)
         VALUES ($1, 'gone:1', 'released', now() - interval '3 hours',
                 now() - interval '3 hours', 'connection reset', '{pr,tasmin}', 'all', 1)",
        &[&ids[0]],
    )
    .await
    .unwrap();

    let r = jobs(&w, &["--state", "stale"]).await;
    let years: Vec<i32> = r.rows.iter().map(|r| r.year).collect();
    assert_eq!(years, [2006, 2007]);
    assert_eq!(jobs(&w, &["--state", "running"]).await.rows.len(), 1);
    // With a longer --stale-after they are running, not stale.
    assert!(
        jobs(&w, &["--state", "stale", "--stale-after", "10800"])
            .await
            .rows
            .is_empty()
    );

    // Requeue: the one with a ledger entry goes; the other's job is unknown.
    let (rep, cfg) = requeue(&w, &["--state", "stale"]).await;
    let out = rep.render(&cfg);
    assert_eq!(rep.requeued.len(), 1, "{out}");
    assert_eq!(rep.left.len(), 1, "{out}");
    assert!(out.contains("pass --locations"), "{out}");
    let states: Vec<String> =
        w.pg.query("SELECT state FROM data_source ORDER BY year", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(states, ["pending", "running", "running"]);
    let bodies = w.drain_queue(&w.queue_url, 1).await;
    assert_eq!(bodies.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["year"], 2006);
    assert_eq!(body["variables"], serde_json::json!(["pr", "tasmin"]));

    // With --locations the unknown one goes too, with the given variables.
    let (rep, _) = requeue(
        &w,
        &[
            "--state",
            "stale",
            "--locations",
            "cities",
            "--variables",
            "tasmax",
        ],
    )
    .await;
    assert_eq!(rep.requeued.len(), 1);
    let bodies = w.drain_queue(&w.queue_url, 1).await;
    assert_eq!(bodies.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["year"], 2007);
    assert_eq!(body["locations"], "cities");
    assert_eq!(body["variables"], serde_json::json!(["tasmax"]));
    // The fresh running one was never touched.
    assert_eq!(
        w.count("SELECT count(*) FROM data_source WHERE state = 'running' AND year = 2008")
            .await,
        1
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dead_letter_queue_is_redriven_without_losing_a_message() {
    let Some(env) = env() else { return };
    let w = World::new(env, "dlq", 3, 60).await;
    let bodies: Vec<String> = (0..23)
        .map(|i| {
            format!(
                r#"{{"dataset":"NEX-GDDP","scenario":"rcp85","model":"ACCESS1-0","year":{}}}"#,
                2006 + i
            )
        })
        .collect();
    worker::queue::send_all(&w.sqs, &w.dlq_url, &bodies)
        .await
        .unwrap();
    let dlq = w.dlq_url.clone();

    // A dry run prints them and leaves them where they are.
    let (rep, cfg) = requeue(&w, &["--from-dlq", &dlq, "--dry-run"]).await;
    assert_eq!(rep.sent, 23, "{}", rep.render(&cfg));
    assert_eq!(visible(&w, &w.queue_url).await, 0);
    assert_eq!(visible(&w, &dlq).await, 23);

    // At most 5, then the rest (by name this time).
    let (rep, _) = requeue(&w, &["--from-dlq", &dlq, "--max-messages", "5"]).await;
    assert_eq!(rep.sent, 5);
    let dlq_name = format!("{}-dlq", w.queue);
    let (rep, cfg) = requeue(&w, &["--from-dlq", &dlq_name]).await;
    assert_eq!(rep.sent, 18);
    assert_eq!(rep.delete_failed, 0);
    assert!(rep.render(&cfg).contains("moved 18 messages"));

    let moved: BTreeSet<String> = w.drain_queue(&w.queue_url, 1).await.into_iter().collect();
    let sent: BTreeSet<String> = bodies.into_iter().collect();
    assert_eq!(moved, sent, "every message arrived once");
    assert!(w.drain_queue(&dlq, 1).await.is_empty(), "the DLQ is empty");
    w.cleanup().await;
}

async fn dispatch(w: &World, args: &[&str]) -> ExitCode {
    worker::cmd::dispatch(cli(w, args)).await.expect("dispatch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_local_cluster() {
    let Some(env) = env() else { return };
    let w = World::new(env, "doctor", 3, 60).await;
    let c = cli(
        &w,
        &[
            "doctor",
            "--workers",
            "2",
            "--worker-jobs",
            "2",
            "--jobs",
            "100",
            "--cells",
            "1000",
        ],
    );
    let Command::Doctor(a) = &c.command else {
        unreachable!()
    };
    let cfg = worker::doctor::DoctorConfig::from_args(a).unwrap();
    let r = worker::doctor::run(&w.db(), &cfg).await.unwrap();
    let text = r.render(false);
    for name in [
        "server version",
        "TLS",
        "schema",
        "array storage",
        "max_connections",
        "max_wal_size",
        "checkpoint_timeout",
        "synchronous_commit",
        "autovacuum",
        "size",
    ] {
        assert!(r.checks.iter().any(|c| c.name == name), "{name}: {text}");
    }
    assert!(!r.failed, "{text}");
    let status = |n: &str| r.checks.iter().find(|c| c.name == n).unwrap().status;
    use worker::doctor::Status;
    assert_eq!(status("schema"), Status::Ok, "{text}");
    assert_eq!(status("array storage"), Status::Ok, "{text}");
    assert_eq!(status("TLS"), Status::Ok, "{text}");
    assert_eq!(
        r.size.planned_bytes,
        Some(100 * 1000 * r.size.bytes_per_row),
        "{text}"
    );
    assert!(text.contains("parameters for the load") && text.contains("after the load"));
    assert!(text.contains("max_wal_size"), "{text}");
    assert_eq!(dispatch(&w, &["doctor"]).await, ExitCode::SUCCESS);

    // Blockers: more connections than the server has; a schema that is not migrated.
    let c = cli(&w, &["doctor", "--workers", "5000"]);
    let Command::Doctor(a) = &c.command else {
        unreachable!()
    };
    let r = worker::doctor::run(
        &w.db(),
        &worker::doctor::DoctorConfig::from_args(a).unwrap(),
    )
    .await
    .unwrap();
    assert!(r.failed);
    assert_eq!(
        r.checks
            .iter()
            .find(|c| c.name == "max_connections")
            .unwrap()
            .status,
        Status::Fail
    );
    assert_eq!(
        dispatch(&w, &["doctor", "--workers", "5000"]).await,
        ExitCode::FAILURE
    );
    let c = Cli::try_parse_from([
        "nexingest",
        "--database-url",
        &w.env.db_url,
        "--schema",
        "t_not_migrated_here",
        "doctor",
    ])
    .unwrap();
    let Command::Doctor(a) = &c.command else {
        unreachable!()
    };
    let db = worker::config::DbConfig::from_args(&c.global).unwrap();
    let r = worker::doctor::run(&db, &worker::doctor::DoctorConfig::from_args(a).unwrap())
        .await
        .unwrap();
    assert!(r.failed);

    // The binary prints its checks and exits with their status.
    let bin = env!("CARGO_BIN_EXE_nexingest");
    let out = std::process::Command::new(bin)
        .args([
            "--database-url",
            &w.env.db_url,
            "--schema",
            &w.schema,
            "doctor",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("[ok  ] server version"), "{stdout}");
    let out = std::process::Command::new(bin)
        .args(["--database-url", &w.env.db_url, "--schema", &w.schema])
        .args(["doctor", "--workers", "5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT READY"));
    w.cleanup().await;
}

/// Loads the NEX-GDDP fixture job with `ingest` as `model`, from `dir`.
async fn ingest(w: &World, model: &str, dir: &Path) {
    let c = cli(
        w,
        &[
            "ingest",
            "--dataset",
            "NEX-GDDP",
            "--scenario",
            "rcp85",
            "--model",
            model,
            "--year",
            "2008",
            "--no-progress",
            dir.to_str().unwrap(),
        ],
    );
    let Command::Ingest(a) = &c.command else {
        unreachable!()
    };
    let pipeline = worker::config::PipelineConfig::from_args(&a.pipeline).unwrap();
    assert!(
        worker::cmd::ingest::run(&w.db(), &pipeline, a)
            .await
            .expect("ingest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finalize_vacuums_the_load_tables_and_reports_sizes() {
    let Some(env) = env() else { return };
    let w = World::new(env, "finalize", 3, 60).await;
    ingest(&w, "ACCESS1-0", &fixtures::data_dir().join("nex-gddp")).await;
    let rows = w.count("SELECT count(*) FROM climate_data_year").await;
    assert!(rows > 0);
    let vacuums = || async {
        w.count(&format!(
            "SELECT coalesce(sum(vacuum_count), 0)::bigint FROM pg_stat_all_tables
             WHERE schemaname = '{}'",
            w.schema
        ))
        .await
    };
    let before = vacuums().await;

    let c = cli(&w, &["finalize", "--dry-run"]);
    let Command::Finalize(a) = &c.command else {
        unreachable!()
    };
    let r = worker::cmd::finalize::run(&w.db(), a).await.unwrap();
    assert_eq!(r.tables.len(), 7);
    assert!(r.render(false).contains("dry run"));

    let c = cli(&w, &["finalize"]);
    let Command::Finalize(a) = &c.command else {
        unreachable!()
    };
    let r = worker::cmd::finalize::run(&w.db(), a).await.unwrap();
    let text = r.render(false);
    assert_eq!(r.statement, "VACUUM (ANALYZE)");
    let cdy = r
        .tables
        .iter()
        .find(|t| t.table == "climate_data_year")
        .unwrap();
    assert!(
        cdy.before.total_bytes > 0 && cdy.after.total_bytes > 0,
        "{text}"
    );
    assert_eq!(cdy.after.live_rows, rows, "{text}");
    assert!(
        text.contains("climate_data_year") && text.contains("total"),
        "{text}"
    );
    // Every table was vacuumed (the statistics may lag a moment).
    let mut n = 0;
    for _ in 0..50 {
        n = vacuums().await;
        if n >= before + 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= before + 7, "vacuum_count {before} -> {n}");

    let c = cli(
        &w,
        &[
            "finalize",
            "--tables",
            "map_cell,job_ledger",
            "--freeze",
            "--json",
        ],
    );
    let Command::Finalize(a) = &c.command else {
        unreachable!()
    };
    let r = worker::cmd::finalize::run(&w.db(), a).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&r.render(true)).unwrap();
    assert_eq!(json["statement"], "VACUUM (FREEZE, ANALYZE)");
    assert_eq!(json["tables"].as_array().unwrap().len(), 2);
    let c = cli(&w, &["finalize", "--tables", "pg_class"]);
    let Command::Finalize(a) = &c.command else {
        unreachable!()
    };
    let e = worker::cmd::finalize::run(&w.db(), a).await.unwrap_err();
    assert!(e.to_string().contains("not a table a load writes"), "{e}");
    w.cleanup().await;
}

/// A decoded PNG: (width, height, RGB bytes).
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn px(img: &(u32, u32, Vec<u8>), x: i32, y: i32) -> [u8; 3] {
    let i = (y as usize * img.0 as usize + x as usize) * 3;
    [img.2[i], img.2[i + 1], img.2[i + 2]]
}

#[test]
fn plot_map_colours_the_data_cells_and_greys_the_rest() {
    use worker::plot::render;
    let fixture = fixtures::set::committed()
        .into_iter()
        .find(|f| f.rel_path == "nex-gddp/tasmax_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc")
        .expect("fixture");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("map.png");
    let day: usize = 200;
    let c = Cli::try_parse_from([
        "nexingest",
        "plot",
        "map",
        fixture.path().to_str().unwrap(),
        "--day",
        &day.to_string(),
        "--out",
        out.to_str().unwrap(),
        "--width",
        "640",
        "--height",
        "480",
    ])
    .unwrap();
    let Command::Plot(p) = &c.command else {
        unreachable!()
    };
    let PlotKind::Map(a) = &p.kind else {
        unreachable!()
    };
    let report = worker::cmd::plot::map(a).unwrap();
    assert_eq!(report.size, (640, 480));
    let img = read_png(&out);
    assert_eq!((img.0, img.1), (640, 480));

    // Where each cell landed (the same layout as the command's).
    let data = worker::plot::map_data(&worker::cmd::plot::map_request(a)).unwrap();
    let (canvas, layout) = render::map(&data, 640, 480).unwrap();
    let (nlat, nlon) = (data.lat.len(), data.lon.len());
    assert_eq!(
        (nlat, nlon),
        (fixture.spec.lat.len(), fixture.spec.lon.len())
    );
    let (w, h) = (
        f64::from(layout.x.end - layout.x.start),
        f64::from(layout.y.end - layout.y.start),
    );
    let mut colours = BTreeSet::new();
    let (mut grey, mut coloured) = (0, 0);
    for i in 0..nlat {
        for j in 0..nlon {
            let x = layout.x.start + ((j as f64 + 0.5) / nlon as f64 * w) as i32;
            let y = layout.y.start + (((nlat - 1 - i) as f64 + 0.5) / nlat as f64 * h) as i32;
            let p = px(&img, x, y);
            assert_eq!(p, canvas.pixel(x as u32, y as u32));
            // The fixture's own formula says which cells hold data (time index = day - 1).
            match fixture.spec.expected(day - 1, i, j) {
                None => {
                    assert_eq!(p, render::MISSING, "masked cell ({i},{j}) is grey");
                    grey += 1;
                }
                Some(_) => {
                    assert_ne!(p, render::MISSING, "data cell ({i},{j}) is coloured");
                    colours.insert(p);
                    coloured += 1;
                }
            }
        }
    }
    assert_eq!(grey, 40);
    assert_eq!(coloured, nlat * nlon - 40);
    assert!(colours.len() > 30, "{} distinct colours", colours.len());
    // Labels and the colour bar are drawn: dark text pixels outside the map.
    let dark = (0..480)
        .flat_map(|y| (0..640).map(move |x| (x, y)))
        .filter(|(x, y)| !layout.x.contains(x) || !layout.y.contains(y))
        .filter(|(x, y)| px(&img, *x, *y).iter().all(|c| *c < 80))
        .count();
    assert!(dark > 500, "{dark} text pixels");

    // Bad days are refused.
    let mut bad = a.clone();
    bad.day = 367;
    assert!(worker::cmd::plot::map(&bad).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plot_series_draws_the_models_median_and_band() {
    use worker::plot::render;
    let Some(env) = env() else { return };
    let w = World::new(env, "plotseries", 3, 60).await;
    // Two models: the fixture as ACCESS1-0, and the same files as CCSM4 shifted by +3 K.
    ingest(&w, "ACCESS1-0", &fixtures::data_dir().join("nex-gddp")).await;
    let dir = tempfile::tempdir().unwrap();
    for v in ["tasmin", "tasmax", "pr"] {
        std::fs::copy(
            fixtures::data_dir()
                .join("nex-gddp")
                .join(format!("{v}_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc")),
            dir.path().join(format!("{v}.nc")),
        )
        .unwrap();
    }
    ingest(&w, "CCSM4", dir.path()).await;
    w.pg.execute(
        "UPDATE climate_data_year y
         SET tasmax = (SELECT array_agg(v + 3 ORDER BY i) FROM unnest(y.tasmax)
                       WITH ORDINALITY u(v, i))
         FROM data_source ds JOIN climate_model m ON m.id = ds.model_id
         WHERE ds.id = y.data_source_id AND m.name = 'CCSM4'",
        &[],
    )
    .await
    .unwrap();

    let out = dir.path().join("series.png");
    let args = [
        "plot",
        "series",
        "--lat",
        "38.0",
        "--lon",
        "-121.0",
        "--dataset",
        "NEX-GDDP",
        "--scenario",
        "rcp85",
        "--year-range",
        "2008",
        "--out",
        out.to_str().unwrap(),
        "--width",
        "900",
        "--height",
        "500",
    ];
    let c = cli(&w, &args);
    let Command::Plot(p) = &c.command else {
        unreachable!()
    };
    let PlotKind::Series(a) = &p.kind else {
        unreachable!()
    };
    let req = worker::cmd::plot::series_request(a).unwrap();
    let data = worker::plot::series_data(&w.db(), &req).await.unwrap();
    assert_eq!(data.days.len(), 366);
    assert!(data.title.contains("2 models"), "{}", data.title);
    assert_eq!(data.value_label, "tasmax (K)");
    for (_, v) in &data.days {
        let (median, min, max) = v.expect("every day has data");
        assert!((max - min - 3.0).abs() < 1e-3, "band of 3 K");
        assert!((median - min - 1.5).abs() < 1e-3, "median in the middle");
    }
    let report = worker::cmd::plot::series(&w.db(), a).await.unwrap();
    assert_eq!(report.size, (900, 500));
    let img = read_png(&out);
    assert_eq!((img.0, img.1), (900, 500));
    let band = [render::BAND.0, render::BAND.1, render::BAND.2];
    let median = [render::MEDIAN.0, render::MEDIAN.1, render::MEDIAN.2];
    // The median's height varies across the year (the seasonal cycle), inside the band.
    let mut heights = BTreeSet::new();
    let mut band_px = 0;
    for x in 0..900 {
        let col: Vec<i32> = (0..500).filter(|y| px(&img, x, *y) == median).collect();
        if let (Some(a), Some(b)) = (col.first(), col.last()) {
            heights.insert((a + b) / 2 / 10);
        }
        band_px += (0..500).filter(|y| px(&img, x, *y) == band).count();
    }
    assert!(heights.len() > 10, "median rows vary: {heights:?}");
    assert!(band_px > 2000, "{band_px} band pixels");

    // A place far from every loaded cell is an error, naming the reason.
    let mut far = args.map(String::from).to_vec();
    far[3] = "10.0".into();
    let far: Vec<&str> = far.iter().map(String::as_str).collect();
    let c = cli(&w, &far);
    let Command::Plot(p) = &c.command else {
        unreachable!()
    };
    let PlotKind::Series(a) = &p.kind else {
        unreachable!()
    };
    let e = worker::cmd::plot::series(&w.db(), a).await.unwrap_err();
    assert!(format!("{e:#}").contains("no loaded"), "{e:#}");
    w.cleanup().await;
}

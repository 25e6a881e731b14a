//! The job model against the real local services (PostgreSQL, moto S3 + SQS): location sets
//! and variables accumulate on a data source, job identity, the state machine, lost messages,
//! transient releases with a growing visibility.

mod common;

use std::time::{Duration, Instant};
use worker::consumer::RunSummary;

use common::{World, consume, env};

const NEX_GDDP: (&str, &str, &str, i64) = ("NEX-GDDP", "rcp85", "ACCESS1-0", 2008);
const CMIP6_CAN: (&str, &str, &str, i64) = ("NEX-GDDP-CMIP6", "ssp245", "CanESM5", 2016);

/// Five towns east of the fixture cities, each in its own data cell of the NEX-GDDP fixture
/// grid (lat 37.125..38.375, lon -122.875..-121.125) that no city uses.
const NEW_POINTS: &[(&str, f64, f64)] = &[
    ("tracy", 37.7397, -121.4252),
    ("stockton", 37.9577, -121.2908),
    ("manteca", 37.7974, -121.2161),
    ("lodi", 38.1302, -121.2724),
    ("brentwood", 37.9319, -121.6958),
];

fn points_geojson(points: &[(&str, f64, f64)]) -> String {
    let features: Vec<serde_json::Value> = points
        .iter()
        .map(|(name, lat, lon)| {
            serde_json::json!({
                "type": "Feature",
                "properties": {"id": name, "name": name},
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
            })
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

/// Each row of the data source: (map_cell_id, xmin, md5 of the three arrays, tas present).
async fn snapshot(w: &World) -> std::collections::BTreeMap<i64, (String, String, bool)> {
    w.pg.query(
        "SELECT map_cell_id, xmin::text, md5(row(tasmin, tasmax, pr)::text), tas IS NOT NULL
         FROM climate_data_year",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect()
}

async fn ledger(w: &World) -> Vec<(String, i64, i64)> {
    w.pg.query(
        "SELECT outcome, rows_written, rows_updated FROM job_ledger ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn not_visible(w: &World) -> (i64, i64) {
    let a = w
        .sqs
        .get_queue_attributes()
        .queue_url(&w.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = a.attributes.unwrap_or_default();
    let get = |k: aws_sdk_sqs::types::QueueAttributeName| {
        attrs
            .get(&k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    (
        get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
        get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// The operators' runbook: cities, then new GeoJSON points on the same loaded year, the same
/// message again, an update of the new points only, then a new variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locations_and_variables_accumulate_on_a_data_source() {
    let Some(env) = env() else { return };
    let w = World::new(env, "accumulate", 3, 60).await;
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    w.import_cities().await;
    let base = r#""dataset":"NEX-GDDP","scenario":"rcp85","model":"ACCESS1-0","year":2008"#;

    // 1. cities: 6 rows.
    w.send_raw(&[&format!(r#"{{{base},"locations":"cities"}}"#)])
        .await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");
    let cities = snapshot(&w).await;
    assert_eq!(cities.len(), 6);

    // 2. New points from a GeoJSON on the same data source: 6 + 5 rows, the cities' rows
    //    untouched (same tuple, same bytes).
    let key = "points/central-valley.geojson";
    w.s3.put_object()
        .bucket(&w.geo_bucket)
        .key(key)
        .body(points_geojson(NEW_POINTS).into_bytes().into())
        .send()
        .await
        .unwrap();
    let geo = format!(
        r#"{{{base},"locations":"geojson:s3://{}/{key}"}}"#,
        w.geo_bucket
    );
    w.send_raw(&[&geo]).await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");
    let after_geo = snapshot(&w).await;
    assert_eq!(after_geo.len(), 11);
    for (cell, row) in &cities {
        assert_eq!(after_geo.get(cell), Some(row), "city cell {cell} untouched");
    }
    assert_eq!(
        w.count("SELECT count(*) FROM location WHERE source LIKE 's3://%'")
            .await,
        5
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM location_cell lc JOIN location l ON l.id = lc.location_id
             JOIN climate_data_year y ON y.map_cell_id = lc.map_cell_id
             WHERE l.source LIKE 's3://%'"
        )
        .await,
        5,
        "each new point points at its own loaded cell"
    );

    // 3. The same message again: this job is done; skipped, nothing changes.
    w.send_raw(&[&geo]).await;
    let s = consume(w.run_config()).await;
    assert_eq!((s.done, s.skipped), (0, 1), "{s:?}");
    assert_eq!(snapshot(&w).await, after_geo);

    // 4. update_existing with the GeoJSON: still 11 rows, only the 5 points' rows rewritten.
    let upd = geo.replace(r#""locations""#, r#""update_existing":true,"locations""#);
    w.send_raw(&[&upd]).await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");
    let after_upd = snapshot(&w).await;
    assert_eq!(after_upd.len(), 11);
    let rewritten: Vec<_> = after_upd
        .iter()
        .filter(|(c, r)| after_geo[c].0 != r.0)
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(rewritten.len(), 5, "only the points' rows are replaced");
    for (cell, row) in &cities {
        assert_eq!(after_upd.get(cell), Some(row), "city cell {cell} untouched");
    }
    for (cell, row) in &after_upd {
        assert_eq!(row.1, after_geo[cell].1, "same values after the update");
    }

    // 5. A `tas` job on the same data source (every location): the column is filled into the
    //    11 rows, no row added, the other columns unchanged.
    let dir = tempfile::tempdir().unwrap();
    let mut tas = fixtures::set::nex_gddp_job()[0].clone();
    tas.var = fixtures::spec::VarMeta::cmip("tas");
    let path = dir.path().join(tas.file_name());
    fixtures::write_grid(&path, &tas).unwrap();
    w.s3.put_object()
        .bucket(&w.bucket)
        .key(tas.s3_key().unwrap())
        .body(
            aws_sdk_s3::primitives::ByteStream::from_path(&path)
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    w.send_raw(&[&format!(
        r#"{{{base},"variables":["tas"],"locations":"cities"}}"#
    )])
    .await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.done, 1, "{s:?}");
    let after_tas = snapshot(&w).await;
    assert_eq!(after_tas.len(), 11, "no row added");
    for (cell, row) in &after_tas {
        assert!(row.2, "tas filled in cell {cell}");
        assert_eq!(row.1, after_upd[cell].1, "other columns unchanged");
    }
    // The tas values are the generator's.
    let rows =
        w.pg.query(
            "SELECT c.lat, c.lon, y.tas FROM climate_data_year y JOIN map_cell c ON c.id = y.map_cell_id",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let (lat, lon): (f64, f64) = (r.get(0), r.get(1));
        let got: Vec<Option<f32>> = r.get(2);
        let i = tas.lat.iter().position(|&x| x == lat).unwrap();
        let j = tas.lon.iter().position(|&x| x == lon).unwrap();
        assert_eq!(got.len(), 366);
        for (t, g) in got.iter().enumerate() {
            assert_eq!(g.map(f32::to_bits), tas.expected(t, i, j).map(f32::to_bits));
        }
    }
    let vars: Vec<String> =
        w.pg.query_one("SELECT variables FROM data_source", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(vars, ["pr", "tas", "tasmax", "tasmin"]);
    assert_eq!(w.state().await, "done");
    let l = ledger(&w).await;
    let outcomes: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(outcomes, ["done", "done", "skipped", "done", "done"]);
    assert_eq!(
        l.iter().map(|e| (e.1, e.2)).collect::<Vec<_>>(),
        [(6, 0), (5, 0), (0, 0), (0, 5), (0, 11)]
    );
    assert!(w.drain_queue(&w.queue_url, 1).await.is_empty());
    w.cleanup().await;
}

/// Two worker processes receive the same job at once: one set of rows, both messages gone
/// (none in flight either), one `done` and one `skipped` ledger entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_one_job_delivered_twice() {
    let Some(env) = env() else { return };
    let w = World::new(env, "twoworkers", 3, 60).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    let body = r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016}"#;
    w.send_raw(&[body, body]).await;
    let a = w.spawn_worker(&["--log-format", "json"], &["--jobs", "1"]);
    let b = w.spawn_worker(&["--log-format", "json"], &["--jobs", "1"]);
    for c in [a, b] {
        let out = tokio::time::timeout(Duration::from_secs(120), c.wait_with_output())
            .await
            .expect("worker finished")
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let n = fixtures::set::nex_gddp_cmip6_jobs()[0].data_cells() as i64;
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, n);
    assert_eq!(
        w.count("SELECT count(DISTINCT map_cell_id) FROM climate_data_year")
            .await,
        n
    );
    let mut outcomes: Vec<String> = ledger(&w).await.into_iter().map(|e| e.0).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["done", "skipped"]);
    assert_eq!(not_visible(&w).await, (0, 0), "both messages deleted");
    assert_eq!(w.state().await, "done");
    w.cleanup().await;
}

/// The message disappears mid-load (queue purged: the receipt handle becomes invalid): the
/// heartbeat's extension is refused, the job rolls back instead of committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_message_commits_nothing() {
    let Some(env) = env() else { return };
    let w = World::new(env, "lostmsg", 5, 60).await;
    w.upload_job(NEX_GDDP.0, NEX_GDDP.2, NEX_GDDP.3, None).await;
    w.slow_inserts(0.05).await; // ~8 s of COPY
    w.send_raw(&[r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"ACCESS1-0","year":2008}"#])
        .await;
    let mut cfg = w.run_config();
    cfg.visibility_timeout = Duration::from_secs(3); // heartbeat every second
    cfg.max_attempts = 1;
    let consumer = tokio::spawn(consume(cfg));
    // Wait for the COPY, then make the receipt handle invalid.
    let copy_sql = format!("COPY \"{}\".\"climate_data_year\"%", w.schema);
    let t = Instant::now();
    while w
        .pg
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
            &[&copy_sql],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(t.elapsed() < Duration::from_secs(30), "never reached COPY");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.sqs
        .purge_queue()
        .queue_url(&w.queue_url)
        .send()
        .await
        .unwrap();
    let s = consumer.await.unwrap();
    assert_eq!((s.done, s.released), (0, 1), "{s:?}");
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, 0);
    assert_eq!(w.state().await, "pending");
    assert_eq!(
        w.count("SELECT count(*) FROM job_ledger WHERE outcome = 'done'")
            .await,
        0
    );
    w.cleanup().await;
}

/// A delivery that fails after the data source is done records its own failure; the data
/// source stays `done` with its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_failure_never_undoes_done() {
    let Some(env) = env() else { return };
    let w = World::new(env, "latefail", 1, 60).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    let base = r#""dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016"#;
    w.send_raw(&[&format!("{{{base}}}")]).await;
    assert_eq!(consume(w.run_config()).await.done, 1);
    let rows = w.count("SELECT count(*) FROM climate_data_year").await;
    // Another job on the done data source whose file does not exist: permanent failure.
    w.send_raw(&[&format!(r#"{{{base},"variables":["tas"]}}"#)])
        .await;
    let s = consume(w.run_config()).await;
    assert_eq!(s.failed, 1, "{s:?}");
    assert_eq!(w.state().await, "done");
    let (err, ledger_err): (Option<String>, Option<String>) =
        w.pg.query_one(
            "SELECT s.last_error, (SELECT error FROM job_ledger WHERE outcome = 'failed')
             FROM data_source s",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(err, None, "the done data source keeps no error");
    assert!(
        ledger_err.unwrap_or_default().contains("not found"),
        "the failure is on the ledger"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM climate_data_year").await,
        rows
    );
    w.cleanup().await;
}

/// A transient database failure (disk full, SQLSTATE 53100, raised by a trigger until the
/// "outage" ends) releases the message with a visibility that grows with its receive count,
/// not at once; after the outage the job completes, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failures_come_back_later_not_at_once() {
    let Some(env) = env() else { return };
    let w = World::new(env, "transient", 10, 60).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    w.pg.batch_execute("CREATE TABLE outage (on_ boolean); INSERT INTO outage VALUES (true);")
        .await
        .unwrap();
    w.before_each_insert(
        "fail_insert",
        "IF EXISTS (SELECT 1 FROM outage) THEN
           RAISE EXCEPTION 'could not extend file: No space left on device'
             USING ERRCODE = '53100';
         END IF;",
    )
    .await;
    w.send_raw(&[
        r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016}"#,
    ])
    .await;
    let mut cfg = w.run_config();
    cfg.max_attempts = 1;
    cfg.retry_visibility = Duration::from_secs(8);
    cfg.retry_visibility_max = Duration::from_secs(60);

    // First receive: released for 4–8 s (the consumer returns ~1–2 s after releasing).
    let s = consume(cfg.clone()).await;
    assert_eq!(s.released, 1, "{s:?}");
    let t = Instant::now();
    assert_eq!(
        not_visible(&w).await,
        (0, 1),
        "released, but not visible yet"
    );
    let s = consume(cfg.clone()).await;
    assert_eq!(s, RunSummary::default(), "not delivered again at once");
    // Comes back after its visibility; second receive: released for 8–16 s.
    while not_visible(&w).await.0 == 0 {
        assert!(t.elapsed() < Duration::from_secs(15), "never came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let first_gap = t.elapsed();
    assert!(
        first_gap >= Duration::from_millis(1500),
        "came back after {first_gap:?}"
    );
    let s = consume(cfg.clone()).await;
    assert_eq!(s.released, 1, "{s:?}");
    let t = Instant::now();
    while not_visible(&w).await.0 == 0 {
        assert!(t.elapsed() < Duration::from_secs(25), "never came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let second_gap = t.elapsed();
    assert!(
        second_gap >= Duration::from_millis(5500),
        "second release {second_gap:?} (the visibility grows with the receive count)"
    );
    assert_eq!(w.state().await, "pending");
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, 0);

    // The outage ends: the job completes once.
    w.pg.batch_execute("DELETE FROM outage").await.unwrap();
    let s = consume(cfg).await;
    assert_eq!(s.done, 1, "{s:?}");
    let n = fixtures::set::nex_gddp_cmip6_jobs()[0].data_cells() as i64;
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, n);
    assert_eq!(w.state().await, "done");
    let outcomes: Vec<String> = ledger(&w).await.into_iter().map(|e| e.0).collect();
    assert_eq!(outcomes, ["released", "released", "done"]);
    let attempts: i32 =
        w.pg.query_one("SELECT attempts FROM data_source", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(attempts, 3);
    assert_eq!(not_visible(&w).await, (0, 0));
    w.cleanup().await;
}

/// A transient failure mid-COPY (serialization failure on the first row, once) is retried in
/// process; the retry fetches nothing: it reuses what the first attempt read (the blocks
/// decoded from files read by ranges; files downloaded whole under `--download-to-disk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_process_retry_reuses_the_downloads() {
    let Some(env) = env() else { return };
    let w = World::new(env, "reuse", 3, 60).await;
    w.upload_job(CMIP6_CAN.0, CMIP6_CAN.2, CMIP6_CAN.3, None)
        .await;
    // A sequence is not rolled back with the failed COPY: only the very first row fails.
    w.pg.batch_execute("CREATE SEQUENCE fail_once")
        .await
        .unwrap();
    w.before_each_insert(
        "fail_first",
        "IF nextval('fail_once') = 1 THEN
           RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
         END IF;",
    )
    .await;
    w.send_raw(&[
        r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"ssp245","model":"CanESM5","year":2016}"#,
    ])
    .await;
    let mut cfg = w.run_config();
    cfg.max_attempts = 3;
    let s = consume(cfg).await;
    assert_eq!((s.done, s.released), (1, 0), "{s:?}");
    let n = fixtures::set::nex_gddp_cmip6_jobs()[0].data_cells() as i64;
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, n);
    let (attempts, bytes): (i32, i64) =
        w.pg.query_one("SELECT attempts, bytes_downloaded FROM data_source", &[])
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(
        bytes, 0,
        "the committing attempt fetched nothing: it reused the first attempt's reads"
    );
    let l: Vec<(String, Option<String>)> =
        w.pg.query("SELECT outcome, error FROM job_ledger ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].0, "released");
    assert!(l[0].1.as_deref().unwrap_or("").contains("40001"), "{l:?}");
    assert_eq!(l[1].0, "done");
    w.cleanup().await;
}

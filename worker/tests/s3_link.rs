//! S3 reads over a link that misbehaves, through `linkproxy` in front of the local S3, for both
//! ways of reading a file (by ranges while it decodes, and downloaded whole first): a GET cut
//! mid-body is resumed for its remaining bytes only, and an object replaced between two ranged
//! GETs fails the attempt as transient with nothing loaded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{World, consume, env};
use linkproxy::{LinkConfig, LinkProxy};

const LOCA: (&str, &str, &str, i64) = ("LOCA", "rcp45", "CCSM4", 2006);
const LOCA_MSG: &str = r#"{"dataset":"LOCA","scenario":"rcp45","model":"CCSM4","year":2006}"#;

/// The local S3's address (`NEXINGEST_AWS_ENDPOINT_URL`, `http://host:port`).
fn s3_addr(endpoint: &str) -> SocketAddr {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    hostport.parse().expect("endpoint is http://ip:port")
}

/// The fixture files of the LOCA job, total bytes.
fn loca_file_bytes() -> u64 {
    std::fs::read_dir(fixtures::data_dir().join("loca"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// A world whose consumer reads S3 through `proxy` (SQS too: the same endpoint), by ranges
/// (`stream`) or downloading each file whole.
fn through(w: &World, proxy: &LinkProxy, stream: bool) -> worker::consumer::RunConfig {
    let mut cfg = w.run_config();
    cfg.aws.endpoint_url = Some(format!("http://{}", proxy.addr()));
    // One GET per file (or per run of chunks), so a cut lands inside a body.
    cfg.pipeline.download_part = 1 << 20;
    cfg.pipeline.stream = stream;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_cut_mid_body_is_resumed_for_its_rest_only() {
    a_get_cut_mid_body(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ranged_read_cut_mid_body_is_resumed_for_its_rest_only() {
    a_get_cut_mid_body(true).await;
}

async fn a_get_cut_mid_body(stream: bool) {
    let Some(env) = env() else { return };
    let w = World::new(env.clone(), if stream { "cutr" } else { "cut" }, 3, 60).await;
    w.upload_job(LOCA.0, LOCA.2, LOCA.3, None).await;
    w.send_raw(&[LOCA_MSG]).await;
    let proxy = LinkProxy::start(s3_addr(&env.endpoint), LinkConfig::default())
        .await
        .unwrap();
    // Two connections die inside a body: 100,000 bytes into a file's download (each file is
    // ~250 KB, one GET), or 20,000 bytes into a read by ranges (a file this small is read
    // whole with its metadata: a 64 KiB head, then the rest in a few GETs).
    proxy.cut_next(2, if stream { 20_000 } else { 100_000 });
    let s = consume(through(&w, &proxy, stream)).await;
    assert_eq!((s.done, s.failed, s.released), (1, 0, 0), "{s:?}");
    let st = proxy.stats();
    assert_eq!(st.cuts, 2, "{st:?}");
    // One attempt, and no second full download: the files' bytes once, plus HTTP headers
    // and the queue's traffic (well under 64 KiB here); read by ranges, also the metadata
    // between runs of chunks that a coalesced GET fetches again (a few KiB per file).
    assert_eq!(w.count("SELECT attempts::bigint FROM data_source").await, 1);
    let files = loca_file_bytes();
    let slack = if stream { files / 8 } else { 0 } + (64 << 10);
    assert!(
        st.bytes_down >= files && st.bytes_down < files + slack,
        "{} bytes through the link for {files} bytes of files",
        st.bytes_down
    );
    let counted = w.count("SELECT bytes_downloaded FROM data_source").await as u64;
    if stream {
        assert!(
            counted >= files && counted < files + files / 8,
            "{counted} of {files}"
        );
    } else {
        assert_eq!(counted, files);
    }
    // Same rows as the files hold: one per data cell, every day present.
    let cells = fixtures::set::loca_job()[0].data_cells() as i64;
    assert_eq!(
        w.count("SELECT count(*) FROM climate_data_year").await,
        cells
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM climate_data_year
             WHERE cardinality(tasmin) = 365 AND cardinality(tasmax) = 365 AND cardinality(pr) = 365"
        )
        .await,
        cells
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_replaced_between_ranges_fails_transient_and_loads_nothing() {
    an_object_replaced(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_replaced_while_read_by_ranges_fails_transient_and_loads_nothing() {
    an_object_replaced(true).await;
}

async fn an_object_replaced(stream: bool) {
    let Some(env) = env() else { return };
    let w = World::new(
        env.clone(),
        if stream { "replr" } else { "replaced" },
        3,
        60,
    )
    .await;
    w.upload_job(LOCA.0, LOCA.2, LOCA.3, None).await;
    w.send_raw(&[LOCA_MSG]).await;
    // A slow link and small parts: a file takes ~1 s, in ~16 ranged GETs.
    let proxy = LinkProxy::start(
        s3_addr(&env.endpoint),
        LinkConfig {
            rate: Some(256 << 10),
            ..LinkConfig::default()
        },
    )
    .await
    .unwrap();
    let mut cfg = through(&w, &proxy, stream);
    cfg.pipeline.download_part = 16 << 10;
    cfg.pipeline.download_concurrency = 1;
    cfg.max_attempts = 1;
    let worker = tokio::spawn(consume(cfg));
    // Once the first file is partly read, every file of the job is replaced (new ETags).
    let t = std::time::Instant::now();
    while proxy.stats().bytes_down < 40_000 {
        assert!(t.elapsed() < Duration::from_secs(60), "no download started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other =
        fixtures::data_dir().join("nex-gddp-cmip6/pr_day_CanESM5_ssp245_r1i1p1f1_gn_2016.nc");
    let keys =
        w.s3.list_objects_v2()
            .bucket(&w.bucket)
            .send()
            .await
            .unwrap();
    for o in keys.contents() {
        w.s3.put_object()
            .bucket(&w.bucket)
            .key(o.key().unwrap())
            .body(
                aws_sdk_s3::primitives::ByteStream::from_path(&other)
                    .await
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let s = worker.await.unwrap();
    assert_eq!((s.done, s.released), (0, 1), "{s:?}");
    assert_eq!(w.count("SELECT count(*) FROM climate_data_year").await, 0);
    let err: String =
        w.pg.query_one(
            "SELECT error FROM job_ledger WHERE outcome <> 'done' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(err.contains("changed while it was being read"), "{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM data_source WHERE state = 'failed'")
            .await,
        0,
        "a replaced object is not a permanent failure"
    );
    w.cleanup().await;
}

//! Files read by ranges from the local S3 while they decode: every committed fixture and every
//! file of `../shared/realdata` (when present) decodes bit for bit like the same file on disk,
//! and a job that reads by ranges writes nothing to its work dir.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{World, consume, env};
use nexdecode::{CellSelection, DecodeError, DecodeOptions, GridFile, RemoteFile};
use worker::s3::ObjectRanges;
use worker::s3::ranges::RangeOptions;

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Decodes every year of `local` (all data cells, and a spread of cells) from disk and from
/// `remote`; `false` when the remote file is not readable by ranges.
fn compare(local: &Path, remote: Arc<ObjectRanges>) -> bool {
    let disk = GridFile::open(local).unwrap_or_else(|e| panic!("{e}"));
    let var = disk.variable().name.clone();
    let src: Arc<dyn RemoteFile> = remote.clone();
    let file = match GridFile::open_remote(src, remote.url(), &var) {
        Ok(f) => f,
        Err(DecodeError::UnsupportedStorage { detail, .. }) => {
            println!("{}: read whole ({detail})", local.display());
            return false;
        }
        Err(e) => panic!("{e}"),
    };
    let opts = DecodeOptions {
        allow_incomplete_year: true,
        ..DecodeOptions::default()
    };
    let grid = disk.grid().clone();
    let cells: Vec<_> = (0..grid.len())
        .step_by((grid.len() / 5).max(1))
        .map(|f| grid.cell(f))
        .collect();
    for year in disk.years() {
        for sel in [CellSelection::AllData, CellSelection::Cells(cells.clone())] {
            match (
                disk.decode_year(year, &sel, &opts),
                file.decode_year(year, &sel, &opts),
            ) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.cells, b.cells, "{} {year}", local.display());
                    assert!(
                        same_bits(a.values.as_slice().unwrap(), b.values.as_slice().unwrap()),
                        "{} {year}: values differ",
                        local.display()
                    );
                }
                (Err(a), Err(b)) => assert_eq!(
                    a.to_string().replace(&local.display().to_string(), ""),
                    b.to_string().replace(&remote.url(), "")
                ),
                (a, b) => panic!("{}: disk {a:?}, by ranges {b:?}", local.display()),
            }
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fixture_and_real_file_read_by_ranges_decodes_like_the_file() {
    let Some(env) = env() else { return };
    let w = World::new(env, "ranges", 3, 60).await;
    let files = fixtures::readable_files();
    let opts = RangeOptions {
        concurrency: 4,
        gap: 4 << 10,
        max_request: 64 << 10,
        window: 256 << 10,
        // Every file by ranges, however small.
        whole_below: 0,
    };
    let (mut streamed, mut whole) = (0, 0);
    for (i, path) in files.iter().enumerate() {
        let key = format!("ranges/{i}/{}", path.file_name().unwrap().to_string_lossy());
        w.s3.put_object()
            .bucket(&w.bucket)
            .key(&key)
            .body(
                aws_sdk_s3::primitives::ByteStream::from_path(path)
                    .await
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let src = Arc::new(
            ObjectRanges::open(&w.s3, &w.bucket, &key, opts)
                .await
                .unwrap(),
        );
        let size = std::fs::metadata(path).unwrap().len();
        let (p, s) = (path.clone(), src.clone());
        if tokio::task::spawn_blocking(move || compare(&p, s))
            .await
            .unwrap()
        {
            // Every year's chunks, each fetched once per decode (two decodes a year), never
            // the whole file again per decode.
            let years = GridFile::open(path).unwrap().years().len() as u64;
            assert!(
                src.fetched() < size + 2 * years * size,
                "{}: {} bytes fetched for a {size}-byte file",
                path.display(),
                src.fetched()
            );
            streamed += 1;
        } else {
            whole += 1;
        }
    }
    println!("{streamed} files read by ranges, {whole} not readable that way");
    assert!(streamed >= 10, "{streamed}");
    w.cleanup().await;
}

const LOCA: (&str, &str, &str, i64) = ("LOCA", "rcp45", "CCSM4", 2006);
const LOCA_MSG: &str = r#"{"dataset":"LOCA","scenario":"rcp45","model":"CCSM4","year":2006}"#;

/// A LOCA whole-grid job with a work dir that does not exist: read by ranges it needs none;
/// downloading whole (the other path, in another world) it fails naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_read_by_ranges_writes_no_temp_file() {
    let Some(env) = env() else { return };
    let nowhere = PathBuf::from("/nonexistent/nexingest-work");
    assert!(!nowhere.exists());
    for stream in [false, true] {
        let w = World::new(env.clone(), if stream { "notemp" } else { "temp" }, 3, 60).await;
        w.upload_job(LOCA.0, LOCA.2, LOCA.3, None).await;
        let mut cfg = w.run_config();
        cfg.pipeline.work_dir = nowhere.clone();
        cfg.pipeline.stream = stream;
        cfg.max_attempts = 1;
        w.send_raw(&[LOCA_MSG]).await;
        let s = consume(cfg).await;
        let rows = w
            .count(
                "SELECT count(*) FROM climate_data_year WHERE cardinality(tasmin) = 365
                 AND cardinality(tasmax) = 365 AND cardinality(pr) = 365",
            )
            .await;
        if stream {
            assert_eq!(s.done, 1, "{s:?}");
            let cells = fixtures::set::loca_job()[0].data_cells() as i64;
            assert_eq!(rows, cells);
        } else {
            assert_eq!(s.done, 0, "{s:?}");
            let err: String =
                w.pg.query_one("SELECT error FROM job_ledger ORDER BY id DESC LIMIT 1", &[])
                    .await
                    .unwrap()
                    .get(0);
            assert!(err.contains("NEXINGEST_WORK_DIR"), "{err}");
            assert_eq!(rows, 0);
        }
        assert!(!nowhere.exists());
        w.cleanup().await;
    }
}

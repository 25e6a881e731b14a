//! Array storage per variable (migration 6) against the real local PostgreSQL: the migrated
//! `climate_data_year` stores `pr` with lz4 and every other variable EXTERNAL, a table made
//! `LIKE` it inherits that, and `pr` loaded by a job, whether appended with its row or filled
//! into existing rows through the staging table, is stored lz4-compressed while the
//! temperatures are stored uncompressed.

mod common;

use clap::Parser;
use common::{World, env};
use worker::cli::{Cli, Command};

/// `(column, attstorage, attcompression)` of the `real[]` columns of `table`, in column order.
async fn storage(w: &World, table: &str) -> Vec<(String, String, String)> {
    w.pg.query(
        "SELECT a.attname::text, a.attstorage::text, a.attcompression::text
         FROM pg_attribute a
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'real[]'::regtype
         ORDER BY a.attnum",
        &[&format!("{}.{table}", w.schema)],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn expected() -> Vec<(String, String, String)> {
    worker::catalog::VARIABLES
        .iter()
        .map(|(_, col)| {
            let (s, c) = if *col == "pr" { ("x", "l") } else { ("e", "") };
            ((*col).to_owned(), s.to_owned(), c.to_owned())
        })
        .collect()
}

/// Loads the committed NEX-GDDP fixture job (ACCESS1-0 rcp85 2008) with `ingest`.
async fn ingest(w: &World, variables: &str) {
    let dir = fixtures::data_dir().join("nex-gddp");
    let argv = [
        "nexingest",
        "--database-url",
        &w.env.db_url,
        "--schema",
        &w.schema,
        "ingest",
        "--dataset",
        "NEX-GDDP",
        "--scenario",
        "rcp85",
        "--model",
        "ACCESS1-0",
        "--year",
        "2008",
        "--variables",
        variables,
        "--no-progress",
        dir.to_str().unwrap(),
    ];
    let c = Cli::try_parse_from(argv).expect("flags parse");
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

/// `(rows, rows whose pr is lz4, rows whose tasmin or tasmax is compressed, pr bytes stored,
/// pr bytes uncompressed)` of `climate_data_year`.
async fn compression(w: &World) -> (i64, i64, i64, i64, i64) {
    let r =
        w.pg.query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE pg_column_compression(pr) = 'lz4'),
                    count(*) FILTER (WHERE pg_column_compression(tasmin) IS NOT NULL
                                        OR pg_column_compression(tasmax) IS NOT NULL),
                    coalesce(sum(pg_column_size(pr)), 0)::bigint,
                    coalesce(sum(pg_column_size(array_cat(pr, '{}'::real[]))), 0)::bigint
             FROM climate_data_year",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_schema_stores_pr_with_lz4_and_the_rest_external() {
    let Some(env) = env() else { return };
    let w = World::new(env, "storage", 3, 60).await;
    assert_eq!(storage(&w, "climate_data_year").await, expected());
    // Tables made like it (the end-to-end benchmark's psql target) inherit the choice.
    w.pg.batch_execute(
        "SET default_toast_compression = pglz;
         CREATE TABLE like_cdy (LIKE climate_data_year INCLUDING ALL)",
    )
    .await
    .unwrap();
    assert_eq!(storage(&w, "like_cdy").await, expected());
    let version: i32 =
        w.pg.query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(version, worker::db::latest_version());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_pr_is_lz4_compressed_and_temperatures_are_not() {
    let Some(env) = env() else { return };
    let w = World::new(env, "storage-load", 3, 60).await;
    ingest(&w, "tasmin,tasmax,pr").await;
    let (rows, pr_lz4, temps_compressed, stored, raw) = compression(&w).await;
    assert_eq!(rows, 152, "the fixture's data cells");
    assert_eq!(pr_lz4, rows, "every pr array lz4-compressed");
    assert_eq!(temps_compressed, 0, "temperatures stored uncompressed");
    assert!(
        (stored as f64) < 0.8 * raw as f64,
        "lz4 shrinks pr: {stored} of {raw} bytes"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_filled_into_existing_rows_is_lz4_compressed() {
    let Some(env) = env() else { return };
    let w = World::new(env, "storage-fill", 3, 60).await;
    ingest(&w, "tasmin,tasmax").await;
    let (rows, pr_lz4, ..) = compression(&w).await;
    assert_eq!((rows, pr_lz4), (152, 0));
    // The second job on the data source fills pr into the rows through pgcopy's staging table
    // (EXTERNAL there) and INSERT … ON CONFLICT: the table's own storage applies.
    ingest(&w, "pr").await;
    let (rows, pr_lz4, temps_compressed, ..) = compression(&w).await;
    assert_eq!((rows, pr_lz4, temps_compressed), (152, 152, 0));
    w.cleanup().await;
}

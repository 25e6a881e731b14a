//! Cross-crate: committed fixture files → `nexdecode` → `pgcopy`'s encoder → a binary COPY file
//! loaded by `psql \copy` (not by our loader) into the real PostgreSQL → `SELECT` back, compared
//! with the fixture generator's own formula (`GridSpec::expected`), an oracle independent of
//! both crates under test.
//!
//! Uses standard-calendar jobs so the expected day slot of time step `t` is simply `t`; the
//! calendar mappings (noleap, 360_day) are covered by nexdecode's own tests.

use std::process::Command;

use fixtures::set::{self, Fixture, FixtureKind};
use nexdecode::{CellSelection, DecodeOptions, GridFile};
use nexingest_tests::service_env;
use pgcopy::{ColumnType, Columns, CopyBuffer, Validity};

/// The three variable files of one committed job, in tasmin, tasmax, pr order.
fn job_files(job: &[fixtures::GridSpec]) -> Vec<Fixture> {
    let committed = set::committed();
    job.iter()
        .map(|spec| {
            committed
                .iter()
                .find(|f| f.kind == FixtureKind::Dataset && f.rel_path.ends_with(&spec.file_name()))
                .unwrap_or_else(|| panic!("{} is not committed", spec.file_name()))
                .clone()
        })
        .collect()
}

#[tokio::test]
async fn fixture_jobs_decode_encode_and_load_through_psql_with_exact_values() {
    let (Some(url), Some(psql)) = (
        service_env("NEXINGEST_DATABASE_URL"),
        service_env("NEXINGEST_PSQL"),
    ) else {
        return;
    };
    let client = worker::db::connect(&url).await.unwrap();
    let schema = format!("xcrate_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.year_rows (job int NOT NULL, cell int NOT NULL,
               tasmin real[], tasmax real[], pr real[], PRIMARY KEY (job, cell));"
        ))
        .await
        .unwrap();

    let columns = Columns::new([
        ("job", ColumnType::Int4),
        ("cell", ColumnType::Int4),
        ("tasmin", ColumnType::Float4Array),
        ("tasmax", ColumnType::Float4Array),
        ("pr", ColumnType::Float4Array),
    ]);
    let jobs = [set::nex_gddp_job(), set::loca_job()];
    let dir = tempfile::tempdir().unwrap();
    let mut expected_rows = 0usize;

    for (job_id, job) in jobs.iter().enumerate() {
        let files = job_files(job);
        let blocks: Vec<_> = files
            .iter()
            .map(|f| {
                let file = GridFile::open(f.path()).unwrap();
                let year = file.years()[0];
                file.decode_year(year, &CellSelection::AllData, &DecodeOptions::default())
                    .unwrap()
            })
            .collect();
        // The three variables share the land mask, so their data cells agree.
        assert!(blocks.iter().all(|b| b.cells == blocks[0].cells));
        let spec = &files[0].spec;
        assert_eq!(blocks[0].len(), spec.data_cells(), "{}", files[0].rel_path);

        let mut buf = CopyBuffer::with_capacity(&columns, 1 << 20);
        let nlon = spec.lon.len();
        for (row, cell) in blocks[0].cells.iter().enumerate() {
            let flat = i32::try_from(cell.lat * nlon + cell.lon).unwrap();
            let mut w = buf.row();
            w.int4(job_id as i32).unwrap().int4(flat).unwrap();
            for b in &blocks {
                let series = b.values.row(row);
                w.float4_array(series.as_slice().unwrap(), Validity::NanIsNull)
                    .unwrap();
            }
            w.finish().unwrap();
        }
        expected_rows += blocks[0].len();
        let path = dir.path().join(format!("job{job_id}.pgcopy"));
        std::fs::write(&path, buf.finish()).unwrap();

        let out = Command::new(&psql)
            .arg(&url)
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(format!(
                "\\copy {schema}.year_rows FROM '{}' (FORMAT binary)",
                path.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Every value, checked against the generator's formula.
        let rows = client
            .query(
                &format!(
                    "SELECT cell, tasmin, tasmax, pr FROM {schema}.year_rows WHERE job = $1 ORDER BY cell"
                ),
                &[&(job_id as i32)],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), spec.data_cells());
        for r in &rows {
            let flat = usize::try_from(r.get::<_, i32>(0)).unwrap();
            let (i, j) = (flat / nlon, flat % nlon);
            for (v, f) in files.iter().enumerate() {
                let got: Vec<Option<f32>> = r.get(v + 1);
                let days = f.spec.time.values.len();
                assert_eq!(got.len(), days, "{} cell ({i},{j})", f.rel_path);
                for (t, g) in got.iter().enumerate() {
                    let want = f.spec.expected(t, i, j);
                    assert_eq!(
                        g.map(f32::to_bits),
                        want.map(f32::to_bits),
                        "{} cell ({i},{j}) day {t}",
                        f.rel_path
                    );
                }
            }
        }
    }
    let total: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.year_rows"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total as usize, expected_rows);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

//! pgcopy against the real PostgreSQL given by `NEXINGEST_DATABASE_URL`.
//!
//! Each test works in its own schema (named after the test and the process id), dropped at the
//! end even when the test fails.

use std::time::Duration;

use deadpool_postgres::{Manager, Pool};
use pgcopy::encode::date_from_ymd;
use pgcopy::{
    ColumnType, Columns, CopyBuffer, EncodeError, LoadError, LoaderConfig, Strategy, Table,
    Validity, load, quote_ident, source_fn,
};
use tokio_postgres::{Client, NoTls};

#[path = "support/every_type.rs"]
mod every_type;
use every_type::every_type;

fn db_url() -> Option<String> {
    match std::env::var("NEXINGEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "NEXINGEST_DATABASE_URL is not set but CI=true: start the database with \
             `scripts/services.sh start` and `eval \"$(scripts/services.sh env)\"`"
        ),
        _ => {
            eprintln!("SKIPPED: NEXINGEST_DATABASE_URL is not set (see scripts/services.sh env)");
            None
        }
    }
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to NEXINGEST_DATABASE_URL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A per-test schema, dropped (CASCADE) on drop.
struct TestDb {
    url: String,
    schema: String,
    client: Client,
}

impl TestDb {
    async fn new(test: &str) -> Option<TestDb> {
        let url = db_url()?;
        let schema = format!("pgcopy_{test}_{}", std::process::id());
        let client = connect(&url).await;
        let q = quote_ident(&schema);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {q} CASCADE; CREATE SCHEMA {q}; SET search_path = {q}; \
                 SET TimeZone = 'UTC'"
            ))
            .await
            .unwrap();
        Some(TestDb {
            url,
            schema,
            client,
        })
    }

    fn q(&self) -> String {
        quote_ident(&self.schema)
    }

    fn table(&self, name: &str, columns: Columns) -> Table {
        Table::new(Some(&self.schema), name, columns).unwrap()
    }

    fn pool(&self, size: usize) -> Pool {
        let cfg: tokio_postgres::Config = self.url.parse().unwrap();
        Pool::builder(Manager::new(cfg, NoTls))
            .max_size(size)
            .build()
            .unwrap()
    }

    /// Row count and a digest of the whole table, to prove "exactly as before".
    async fn fingerprint(&self, table: &str) -> (i64, String) {
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
                     FROM {}.{} t",
                    self.q(),
                    quote_ident(table)
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        let q = self.q();
        // Async cleanup from a sync Drop: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = connect(&url).await;
                c.batch_execute(&format!("DROP SCHEMA IF EXISTS {q} CASCADE"))
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

macro_rules! test_db {
    ($name:expr) => {
        match TestDb::new($name).await {
            Some(db) => db,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The project's row shape: two int keys + three real[] series.

fn project_columns() -> Columns {
    Columns::new([
        ("data_source_id", ColumnType::Int4),
        ("map_cell_id", ColumnType::Int4),
        ("tasmin", ColumnType::Float4Array),
        ("tasmax", ColumnType::Float4Array),
        ("pr", ColumnType::Float4Array),
    ])
}

async fn create_project_table(db: &TestDb, name: &str) {
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.{} (data_source_id integer NOT NULL, map_cell_id integer NOT NULL, \
             tasmin real[], tasmax real[], pr real[], PRIMARY KEY (data_source_id, map_cell_id))",
            db.q(),
            quote_ident(name)
        ))
        .await
        .unwrap();
}

fn value(ds: i32, cell: i32, var: usize, day: usize) -> f32 {
    if (cell as usize + day + var).is_multiple_of(97) {
        f32::NAN // NULL element
    } else {
        (cell as f32) * 0.5 + day as f32 + var as f32 * 1000.0 + ds as f32 * 0.125
    }
}

/// A source of `cells` project rows for data source `ds`, `days` per series.
fn project_source(
    ds: i32,
    cells: std::ops::Range<i32>,
    days: usize,
) -> impl FnMut(&mut CopyBuffer) -> Result<bool, EncodeError> + Send + 'static {
    let mut series = vec![vec![0f32; days]; 3];
    let mut cells = cells;
    move |buf| {
        let Some(cell) = cells.next() else {
            return Ok(false);
        };
        for (v, s) in series.iter_mut().enumerate() {
            for (d, x) in s.iter_mut().enumerate() {
                *x = value(ds, cell, v, d);
            }
        }
        buf.row()
            .int4(ds)?
            .int4(cell)?
            .float4_array(&series[0], Validity::NanIsNull)?
            .float4_array(&series[1], Validity::NanIsNull)?
            .float4_array(&series[2], Validity::NanIsNull)?
            .finish()?;
        Ok(true)
    }
}

/// An endless project-row source that sleeps between rows, for cancellation tests.
fn slow_source() -> impl FnMut(&mut CopyBuffer) -> Result<bool, EncodeError> + Send + 'static {
    let mut inner = project_source(9, 0..i32::MAX, 365);
    move |buf| {
        std::thread::sleep(Duration::from_millis(2));
        inner(buf)
    }
}

fn small_buffers() -> LoaderConfig {
    LoaderConfig {
        buffer_size: 4096,
        ..LoaderConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_every_type() {
    let mut db = test_db!("round_trip");
    db.client
        .batch_execute(
            "CREATE TABLE t (n integer PRIMARY KEY, b boolean, i2 smallint, i4 integer, \
             i8 bigint, f4 real, f8 double precision, tx text, vc varchar(20), by bytea, d date, \
             ts timestamp, tz timestamptz, af4 real[], af8 double precision[], ai4 integer[], \
             ai8 bigint[])",
        )
        .await
        .unwrap();
    use ColumnType::*;
    let columns = Columns::new([
        ("n", Int4),
        ("b", Bool),
        ("i2", Int2),
        ("i4", Int4),
        ("i8", Int8),
        ("f4", Float4),
        ("f8", Float8),
        ("tx", Text),
        ("vc", Text),
        ("by", Bytea),
        ("d", Date),
        ("ts", Timestamp),
        ("tz", Timestamptz),
        ("af4", Float4Array),
        ("af8", Float8Array),
        ("ai4", Int4Array),
        ("ai8", Int8Array),
    ]);
    let table = db.table("t", columns);

    let f4_365: Vec<f32> = (0..365).map(|i| i as f32 / 4.0).collect();
    let mask_365: Vec<bool> = (0..365).map(|i| i % 10 != 0 && i != 364).collect();
    let f8_366: Vec<f64> = (0..366).map(|i| i as f64 * 1.5).collect();
    let mut bitmap_366 = vec![0u8; 46];
    for i in 0..366 {
        if i % 3 != 1 {
            bitmap_366[i / 8] |= 1 << (i % 8);
        }
    }
    let i8_366: Vec<i64> = (0..366).map(|i| i64::MIN + i).collect();
    let mask_i8: Vec<bool> = (0..366).map(|i| i != 0 && i != 365).collect();

    let (a, b, c, d, e) = (
        f4_365.clone(),
        mask_365.clone(),
        f8_366.clone(),
        bitmap_366.clone(),
        (i8_366.clone(), mask_i8.clone()),
    );
    let mut n = 0;
    let source = source_fn(move |buf| {
        n += 1;
        let mut r = buf.row();
        r.int4(n)?;
        match n {
            1 => {
                r.bool(true)?
                    .int2(-2)?
                    .int4(4)?
                    .int8(8)?
                    .float4(1.5)?
                    .float8(-2.25)?;
                r.text("héllo, wörld")?.text("vc")?.bytea(&[0, 1, 2, 255])?;
                r.date(date_from_ymd(2024, 2, 29))?;
                r.timestamp(pgcopy::encode::timestamp_from_unix_micros(
                    1_700_000_000_123_456,
                ))?;
                r.timestamptz(0)?;
                r.float4_array(&[1.0, 2.0], Validity::AllValid)?;
                r.float8_array(&[3.0], Validity::AllValid)?;
                r.int4_array(&[i32::MIN, 0, i32::MAX], Validity::AllValid)?;
                r.int8_array(&[-1], Validity::AllValid)?;
            }
            2 => {
                for _ in 0..16 {
                    r.null()?;
                }
            }
            3 => {
                r.bool(false)?
                    .int2(i16::MIN)?
                    .int4(i32::MIN)?
                    .int8(i64::MAX)?;
                r.float4(f32::NAN)?.float8(f64::INFINITY)?;
                r.text("")?.text("\"quoted'\\")?.bytea(&[])?;
                r.date(i32::MAX)?
                    .timestamp(i64::MIN)?
                    .timestamptz(i64::MAX)?;
                r.float4_array(
                    &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0],
                    Validity::AllValid,
                )?;
                r.float8_array(&[], Validity::AllValid)?;
                r.int4_array(&[], Validity::NanIsNull)?;
                r.int8_array(&[], Validity::Mask(&[]))?;
            }
            4 => {
                r.null()?
                    .null()?
                    .null()?
                    .null()?
                    .float4(f32::NEG_INFINITY)?
                    .null()?;
                r.null()?.null()?.null()?.null()?.null()?.null()?;
                r.float4_array(&a, Validity::Mask(&b))?;
                r.float8_array(&c, Validity::Bitmap(&d))?;
                r.int4_array(&[7; 365], Validity::NanIsNull)?;
                r.int8_array(&e.0, Validity::Mask(&e.1))?;
            }
            _ => return Ok(false),
        }
        r.finish()?;
        Ok(true)
    });
    let tx = db.client.transaction().await.unwrap();
    let stats = load(
        &tx,
        &table,
        &Strategy::Append,
        source,
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats.rows_copied, 4);

    let rows = db
        .client
        .query(
            "SELECT n, b, i2, i4, i8, f4, f8, tx, vc, by, d::text, ts::text, tz::text, af4, af8, \
             ai4, ai8, array_lower(af4, 1), cardinality(af8) FROM t ORDER BY n",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);

    let r = &rows[0];
    assert_eq!(r.get::<_, Option<bool>>(1), Some(true));
    assert_eq!(r.get::<_, i16>(2), -2);
    assert_eq!(r.get::<_, i32>(3), 4);
    assert_eq!(r.get::<_, i64>(4), 8);
    assert_eq!(r.get::<_, f32>(5), 1.5);
    assert_eq!(r.get::<_, f64>(6), -2.25);
    assert_eq!(r.get::<_, &str>(7), "héllo, wörld");
    assert_eq!(r.get::<_, &str>(8), "vc");
    assert_eq!(r.get::<_, &[u8]>(9), &[0, 1, 2, 255]);
    assert_eq!(r.get::<_, &str>(10), "2024-02-29");
    assert_eq!(r.get::<_, &str>(11), "2023-11-14 22:13:20.123456");
    assert_eq!(r.get::<_, &str>(12), "2000-01-01 00:00:00+00");
    assert_eq!(r.get::<_, Vec<f32>>(13), vec![1.0, 2.0]);
    assert_eq!(r.get::<_, Vec<f64>>(14), vec![3.0]);
    assert_eq!(r.get::<_, Vec<i32>>(15), vec![i32::MIN, 0, i32::MAX]);
    assert_eq!(r.get::<_, Vec<i64>>(16), vec![-1]);
    assert_eq!(r.get::<_, i32>(17), 1);

    let r = &rows[1];
    let nulls: i32 = db
        .client
        .query_one(
            "SELECT num_nulls(b, i2, i4, i8, f4, f8, tx, vc, by, d, ts, tz, af4, af8, ai4, ai8) \
             FROM t WHERE n = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 16);
    assert_eq!(r.get::<_, Option<bool>>(1), None);
    assert_eq!(r.get::<_, Option<Vec<f32>>>(13), None);

    let r = &rows[2];
    assert_eq!(r.get::<_, i16>(2), i16::MIN);
    assert!(r.get::<_, f32>(5).is_nan());
    assert_eq!(r.get::<_, f64>(6), f64::INFINITY);
    assert_eq!(r.get::<_, &str>(7), "");
    assert_eq!(r.get::<_, &str>(8), "\"quoted'\\");
    assert_eq!(r.get::<_, &[u8]>(9), &[] as &[u8]);
    assert_eq!(r.get::<_, &str>(10), "infinity");
    assert_eq!(r.get::<_, &str>(11), "-infinity");
    assert_eq!(r.get::<_, &str>(12), "infinity");
    let af4: Vec<f32> = r.get(13);
    assert!(af4[0].is_nan());
    assert_eq!(&af4[1..3], &[f32::INFINITY, f32::NEG_INFINITY]);
    assert!(af4[3] == 0.0 && af4[3].is_sign_negative());
    assert_eq!(r.get::<_, Vec<f64>>(14), Vec::<f64>::new());
    assert_eq!(r.get::<_, Vec<i32>>(15), Vec::<i32>::new());
    assert_eq!(r.get::<_, Vec<i64>>(16), Vec::<i64>::new());
    assert_eq!(r.get::<_, i32>(18), 0);

    let r = &rows[3];
    assert_eq!(r.get::<_, f32>(5), f32::NEG_INFINITY);
    let af4: Vec<Option<f32>> = r.get(13);
    let want: Vec<Option<f32>> = f4_365
        .iter()
        .zip(&mask_365)
        .map(|(&v, &ok)| ok.then_some(v))
        .collect();
    assert_eq!(af4, want);
    let af8: Vec<Option<f64>> = r.get(14);
    assert_eq!(af8.len(), 366);
    for (i, v) in af8.iter().enumerate() {
        assert_eq!(*v, (i % 3 != 1).then_some(i as f64 * 1.5), "af8[{i}]");
    }
    assert_eq!(r.get::<_, Vec<i32>>(15), vec![7; 365]);
    let ai8: Vec<Option<i64>> = r.get(16);
    let want: Vec<Option<i64>> = i8_366
        .iter()
        .zip(&mask_i8)
        .map(|(&v, &ok)| ok.then_some(v))
        .collect();
    assert_eq!(ai8, want);
    assert_eq!(r.get::<_, i32>(18), 366);

    // The server agrees on NULL elements and lower bounds.
    let row = db
        .client
        .query_one(
            "SELECT array_position(af4, NULL), array_lower(af8, 1), \
             (SELECT count(*) FROM unnest(af8) x WHERE x IS NULL) FROM t WHERE n = 4",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, i64>(2), 122);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_rows_round_trip_with_nulls() {
    let db = test_db!("project_rows");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let mut client = connect(&db.url).await;
    let tx = client.transaction().await.unwrap();
    let stats = load(
        &tx,
        &table,
        &Strategy::Append,
        project_source(3, 0..500, 366),
        &small_buffers(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats.rows_copied, 500);
    assert!(stats.buffers_sent > 100, "{stats:?}");

    let rows = db
        .client
        .query(
            &format!(
                "SELECT map_cell_id, tasmin, tasmax, pr FROM {}.cdy ORDER BY 1",
                db.q()
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    for r in &rows {
        let cell: i32 = r.get(0);
        for var in 0..3 {
            let got: Vec<Option<f32>> = r.get(var + 1);
            assert_eq!(got.len(), 366);
            for (day, g) in got.iter().enumerate() {
                let v = value(3, cell, var, day);
                assert_eq!(
                    *g,
                    (!v.is_nan()).then_some(v),
                    "cell {cell} var {var} day {day}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_of_100k_rows() {
    let mut db = test_db!("large_batch");
    db.client
        .batch_execute("CREATE TABLE big (id integer PRIMARY KEY, k bigint, v real[])")
        .await
        .unwrap();
    let table = db.table(
        "big",
        Columns::new([
            ("id", ColumnType::Int4),
            ("k", ColumnType::Int8),
            ("v", ColumnType::Float4Array),
        ]),
    );
    const N: i32 = 100_000;
    let mut id = 0;
    let mut vals = [0f32; 24];
    let source = source_fn(move |buf| {
        if id == N {
            return Ok(false);
        }
        for (i, v) in vals.iter_mut().enumerate() {
            *v = if (id as usize + i).is_multiple_of(11) {
                f32::NAN
            } else {
                (id as f32) + i as f32
            };
        }
        buf.row()
            .int4(id)?
            .int8(i64::from(id) * 3)?
            .float4_array(&vals, Validity::NanIsNull)?
            .finish()?;
        id += 1;
        Ok(true)
    });
    let tx = db.client.transaction().await.unwrap();
    let stats = load(
        &tx,
        &table,
        &Strategy::Append,
        source,
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats.rows_copied, N as u64);
    assert!(stats.buffers_sent >= 10, "{stats:?}");
    let row = db
        .client
        .query_one(
            "SELECT count(*), sum(k)::text, count(*) FILTER (WHERE array_length(v, 1) = 24), \
             sum((SELECT count(*) FROM unnest(v) x WHERE x IS NULL))::text, max(v[24]) FROM big",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), N as i64);
    assert_eq!(row.get::<_, &str>(1), "14999850000");
    assert_eq!(row.get::<_, i64>(2), N as i64);
    let expected_nulls: i64 = (0..N as usize)
        .map(|id| (0..24).filter(|i| (id + i) % 11 == 0).count() as i64)
        .sum();
    assert_eq!(row.get::<_, &str>(3), expected_nulls.to_string());
    assert_eq!(row.get::<_, f32>(4), (N - 1) as f32 + 23.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violation_mid_load_leaves_table_unchanged() {
    let db = test_db!("constraint");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let mut client = connect(&db.url).await;
    let tx = client.transaction().await.unwrap();
    load(
        &tx,
        &table,
        &Strategy::Append,
        project_source(1, 0..100, 365),
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let before = db.fingerprint("cdy").await;

    // Cells 100..3000 are new, but cell 50 (already present) comes again in the middle.
    let mut new = project_source(1, 100..3000, 365);
    let mut dup = project_source(1, 50..51, 365);
    let mut n = 0;
    let source = source_fn(move |buf| {
        n += 1;
        if n == 1500 { dup(buf) } else { new(buf) }
    });
    let tx = client.transaction().await.unwrap();
    let err = load(&tx, &table, &Strategy::Append, source, &small_buffers())
        .await
        .unwrap_err();
    drop(tx);
    assert_eq!(err.sqlstate().map(|s| s.code()), Some("23505"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(db.fingerprint("cdy").await, before);

    // A NOT NULL violation is a data error too; the connection stays usable.
    let tx = client.transaction().await.unwrap();
    let bad = source_fn(|buf| {
        buf.row()
            .int4(2)?
            .null()?
            .null()?
            .null()?
            .null()?
            .finish()?;
        Ok(false)
    });
    let err = load(
        &tx,
        &table,
        &Strategy::Append,
        bad,
        &LoaderConfig::default(),
    )
    .await
    .unwrap_err();
    tx.rollback().await.unwrap();
    assert_eq!(err.sqlstate().map(|s| s.code()), Some("23502"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(db.fingerprint("cdy").await, before);
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_error_mid_load_is_not_a_corrupt_stream() {
    let db = test_db!("encode_error");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let mut client = connect(&db.url).await;
    let before = db.fingerprint("cdy").await;

    // Row 2000 is written in the wrong order (an array where map_cell_id belongs).
    let mut good = project_source(1, 0..5000, 365);
    let mut n = 0;
    let source = source_fn(move |buf| {
        n += 1;
        if n == 2000 {
            buf.row()
                .int4(1)?
                .float4_array(&[1.0], Validity::AllValid)?
                .finish()?;
        }
        good(buf)
    });
    let tx = client.transaction().await.unwrap();
    let err = load(&tx, &table, &Strategy::Append, source, &small_buffers())
        .await
        .unwrap_err();
    drop(tx);
    match &err {
        LoadError::Encode(EncodeError::WrongType {
            row, index, column, ..
        }) => {
            assert_eq!((*row, *index, column.as_str()), (1999, 1, "map_cell_id"));
        }
        other => panic!("expected an encode error, got {other}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(db.fingerprint("cdy").await, before);

    // A missing field is caught the same way.
    let tx = client.transaction().await.unwrap();
    let short = source_fn(|buf| {
        buf.row().int4(1)?.int4(1)?.finish()?;
        Ok(true)
    });
    let err = load(
        &tx,
        &table,
        &Strategy::Append,
        short,
        &LoaderConfig::default(),
    )
    .await
    .unwrap_err();
    drop(tx);
    assert!(
        matches!(
            err,
            LoadError::Encode(EncodeError::MissingFields { got: 2, .. })
        ),
        "{err}"
    );
    assert_eq!(db.fingerprint("cdy").await, before);
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_leaves_table_unchanged() {
    let db = test_db!("killed");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let pool = db.pool(1);
    {
        let mut c = pool.get().await.unwrap();
        let tx = c.transaction().await.unwrap();
        load(
            &tx,
            &table,
            &Strategy::Append,
            project_source(1, 0..10, 365),
            &LoaderConfig::default(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let before = db.fingerprint("cdy").await;

    let mut c = pool.get().await.unwrap();
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let killer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let admin = connect(&url).await;
            // Wait until the loader is inside its COPY, then kill its backend.
            for _ in 0..500 {
                let q: Option<String> = admin
                    .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
                    .await
                    .unwrap()
                    .get(0);
                if q.is_some_and(|q| q.starts_with("COPY")) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let ok: bool = admin
                        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                        .await
                        .unwrap()
                        .get(0);
                    return ok;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        })
    };
    let tx = c.transaction().await.unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        load(
            &tx,
            &table,
            &Strategy::replace_key("data_source_id", 1),
            slow_source(),
            &small_buffers(),
        ),
    )
    .await
    .expect("the load notices the killed connection");
    drop(tx);
    assert!(killer.await.unwrap(), "backend was killed during COPY");
    let err = res.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(db.fingerprint("cdy").await, before);
    drop(c);

    // The pool discards the dead connection and hands out a working one.
    let c = pool.get().await.unwrap();
    let pid2: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pid, pid2);
}

/// A pooled connection whose load was cut short is clean: no open transaction, no COPY.
async fn assert_clean(pool: &Pool, url: &str) {
    let c = pool.get().await.unwrap();
    // Simple protocol: one statement in its own implicit transaction, so the transaction
    // started with this statement unless an older one is still open.
    let msgs = c
        .simple_query("SELECT now() = statement_timestamp(), pg_backend_pid()")
        .await
        .unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        row.get(0),
        Some("t"),
        "connection still inside a transaction"
    );
    let pid: i32 = row.get(1).unwrap().parse().unwrap();
    // Seen from another session, the pooled connection is idle, not idle in transaction.
    let admin = connect(url).await;
    let state: String = admin
        .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_rolls_back_and_returns_a_clean_connection() {
    let db = test_db!("deadline");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let pool = db.pool(1);
    {
        let mut c = pool.get().await.unwrap();
        let tx = c.transaction().await.unwrap();
        load(
            &tx,
            &table,
            &Strategy::Append,
            project_source(9, 0..10, 365),
            &LoaderConfig::default(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let before = db.fingerprint("cdy").await;
    {
        let mut c = pool.get().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let config = LoaderConfig {
            timeout: Some(Duration::from_millis(400)),
            ..small_buffers()
        };
        let started = std::time::Instant::now();
        let err = load(
            &tx,
            &table,
            &Strategy::replace_key("data_source_id", 9),
            slow_source(),
            &config,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, LoadError::Timeout { .. }), "{err}");
        assert!(err.is_retryable());
    }
    assert_clean(&pool, &db.url).await;
    assert_eq!(db.fingerprint("cdy").await, before);

    // pgcopy::with_timeout bounds a whole job the same way.
    {
        let err = pgcopy::with_timeout(Duration::from_millis(300), async {
            let mut c = pool.get().await?;
            let tx = c
                .transaction()
                .await
                .map_err(|e| LoadError::postgres("BEGIN", e))?;
            load(
                &tx,
                &table,
                &Strategy::Append,
                slow_source(),
                &small_buffers(),
            )
            .await?;
            tx.commit()
                .await
                .map_err(|e| LoadError::postgres("COMMIT", e))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, LoadError::Timeout { .. }), "{err}");
    }
    assert_clean(&pool, &db.url).await;
    assert_eq!(db.fingerprint("cdy").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_load_rolls_back_and_returns_a_clean_connection() {
    let db = test_db!("aborted");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let pool = db.pool(1);
    let before = db.fingerprint("cdy").await;

    let task = {
        let (pool, table) = (pool.clone(), table.clone());
        tokio::spawn(async move {
            let mut c = pool.get().await.unwrap();
            let tx = c.transaction().await.unwrap();
            load(
                &tx,
                &table,
                &Strategy::Append,
                slow_source(),
                &small_buffers(),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        })
    };
    // Let rows reach the server first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_clean(&pool, &db.url).await;
    assert_eq!(db.fingerprint("cdy").await, before);

    // The same connection loads fine afterwards.
    let mut c = pool.get().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let s = load(
        &tx,
        &table,
        &Strategy::Append,
        project_source(1, 0..5, 365),
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.rows_copied, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_key_twice_leaves_one_copy_and_commits_with_the_callers_statements() {
    let db = test_db!("replace_key");
    create_project_table(&db, "cdy").await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.job (id integer PRIMARY KEY, state text NOT NULL CHECK (state <> 'bad'), \
             runs integer NOT NULL DEFAULT 0); INSERT INTO {0}.job VALUES (1, 'pending'), (2, 'pending')",
            db.q()
        ))
        .await
        .unwrap();
    let table = db.table("cdy", project_columns());
    let mut client = connect(&db.url).await;
    let job_sql = format!(
        "UPDATE {}.job SET state = $2, runs = runs + 1 WHERE id = $1",
        db.q()
    );

    // Data source 2 is loaded once and must never be touched.
    let tx = client.transaction().await.unwrap();
    load(
        &tx,
        &table,
        &Strategy::replace_key("data_source_id", 2),
        project_source(2, 0..40, 365),
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    for run in 0..2 {
        let tx = client.transaction().await.unwrap();
        let stats = load(
            &tx,
            &table,
            &Strategy::replace_key("data_source_id", 1),
            project_source(1, 0..300, 365),
            &small_buffers(),
        )
        .await
        .unwrap();
        assert_eq!(stats.rows_deleted, if run == 0 { 0 } else { 300 });
        assert_eq!(stats.rows_copied, 300);
        tx.execute(&job_sql, &[&1i32, &"done"]).await.unwrap();
        tx.commit().await.unwrap();
    }
    let counts = db
        .client
        .query(
            &format!(
                "SELECT data_source_id, count(*) FROM {}.cdy GROUP BY 1 ORDER BY 1",
                db.q()
            ),
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<(i32, i64)> = counts.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(counts, vec![(1, 300), (2, 40)]);
    let job = db
        .client
        .query_one(
            &format!("SELECT state, runs FROM {}.job WHERE id = 1", db.q()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((job.get::<_, &str>(0), job.get::<_, i32>(1)), ("done", 2));

    // A failing caller statement rolls back the replacement too.
    let before = db.fingerprint("cdy").await;
    let tx = client.transaction().await.unwrap();
    load(
        &tx,
        &table,
        &Strategy::replace_key("data_source_id", 1),
        project_source(1, 0..10, 365),
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    let err = tx.execute(&job_sql, &[&1i32, &"bad"]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23514"));
    drop(tx);
    assert_eq!(db.fingerprint("cdy").await, before);
    let job = db
        .client
        .query_one(
            &format!("SELECT runs FROM {}.job WHERE id = 1", db.q()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(job.get::<_, i32>(0), 2);

    // Composite key and bigint/text keys convert to the column types.
    let strategy = Strategy::ReplaceKey {
        key: vec![
            ("data_source_id".into(), 2i64.into()),
            ("map_cell_id".into(), 5.into()),
        ],
    };
    let tx = client.transaction().await.unwrap();
    let s = load(
        &tx,
        &table,
        &strategy,
        project_source(2, 5..6, 365),
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((s.rows_deleted, s.rows_copied), (1, 1));

    // A key that does not fit the column is a clear, non-retryable error.
    let tx = client.transaction().await.unwrap();
    let err = load(
        &tx,
        &table,
        &Strategy::replace_key("data_source_id", i64::MAX),
        project_source(2, 5..6, 365),
        &LoaderConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_upsert_updates_only_loaded_columns() {
    let mut db = test_db!("upsert");
    db.client
        .batch_execute(
            "CREATE TABLE u (id integer PRIMARY KEY, a real[], b text NOT NULL DEFAULT 'keep'); \
             INSERT INTO u VALUES (1, '{1}', 'x'), (2, '{2}', 'y')",
        )
        .await
        .unwrap();
    let table = db.table(
        "u",
        Columns::new([("id", ColumnType::Int4), ("a", ColumnType::Float4Array)]),
    );
    let mut rows = vec![(2, 20.0f32), (3, 30.0)].into_iter();
    let source = source_fn(move |buf| match rows.next() {
        Some((id, a)) => {
            buf.row()
                .int4(id)?
                .float4_array(&[a, f32::NAN], Validity::NanIsNull)?
                .finish()?;
            Ok(true)
        }
        None => Ok(false),
    });
    let tx = db.client.transaction().await.unwrap();
    let s = load(
        &tx,
        &table,
        &Strategy::upsert(["id"]),
        source,
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    // A second upsert in the same transaction gets its own staging table.
    let again = source_fn(|_| Ok(false));
    load(
        &tx,
        &table,
        &Strategy::upsert(["id"]),
        again,
        &LoaderConfig::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((s.rows_copied, s.rows_upserted), (2, 2));
    let rows = db
        .client
        .query("SELECT id, a, b FROM u ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<(i32, Vec<Option<f32>>, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, vec![Some(1.0)], "x".into()),
            (2, vec![Some(20.0), None], "y".into()),
            (3, vec![Some(30.0), None], "keep".into()),
        ]
    );

    // The conflict columns must be loaded columns.
    let tx = db.client.transaction().await.unwrap();
    let err = load(
        &tx,
        &table,
        &Strategy::upsert(["b"]),
        again,
        &LoaderConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LoadError::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weird_identifiers_are_quoted() {
    let mut db = test_db!("Weird \"Sch\" ema");
    let tname = "Tab \"le\"; DROP TABLE x; --";
    let create = format!(
        "CREATE TABLE {}.{} ({} integer PRIMARY KEY, {} real[], {} text)",
        db.q(),
        quote_ident(tname),
        quote_ident("Id"),
        quote_ident("va lue\""),
        quote_ident("select"),
    );
    db.client.batch_execute(&create).await.unwrap();
    let table = db.table(
        tname,
        Columns::new([
            ("Id", ColumnType::Int4),
            ("va lue\"", ColumnType::Float4Array),
            ("select", ColumnType::Text),
        ]),
    );
    assert!(
        table
            .qualified_name()
            .starts_with("\"pgcopy_Weird \"\"Sch\"\" ema_")
    );
    for strategy in [
        Strategy::Append,
        Strategy::replace_key("Id", 1),
        Strategy::upsert(["Id"]),
    ] {
        let mut done = false;
        let source = source_fn(move |buf| {
            if std::mem::replace(&mut done, true) {
                return Ok(false);
            }
            buf.row()
                .int4(1)?
                .float4_array(&[1.0], Validity::AllValid)?
                .text("ok")?
                .finish()?;
            Ok(true)
        });
        let tx = db.client.transaction().await.unwrap();
        if strategy == Strategy::Append {
            // Start empty so Append does not conflict.
            tx.batch_execute(&format!("DELETE FROM {}", table.qualified_name()))
                .await
                .unwrap();
        }
        load(&tx, &table, &strategy, source, &LoaderConfig::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), min({}) FROM {}",
                quote_ident("select"),
                table.qualified_name()
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, &str>(1)), (1, "ok"));

    // Names PostgreSQL would truncate or cannot store are rejected up front.
    let cols = Columns::new([("Id", ColumnType::Int4)]);
    assert!(matches!(
        Table::new(None, &"x".repeat(64), cols.clone()),
        Err(LoadError::Config(_))
    ));
    assert!(matches!(
        Table::new(Some("a\0b"), "t", cols.clone()),
        Err(LoadError::Config(_))
    ));
    assert!(matches!(
        Table::new(
            None,
            "t",
            Columns::new([("Id", ColumnType::Int4), ("Id", ColumnType::Int8)])
        ),
        Err(LoadError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_columns_are_checked_against_the_table() {
    let mut db = test_db!("columns");
    create_project_table(&db, "cdy").await;
    let never = source_fn(|_| Ok(false));

    // real[] declared as double precision[].
    let table = db.table(
        "cdy",
        Columns::new([
            ("data_source_id", ColumnType::Int4),
            ("tasmin", ColumnType::Float8Array),
        ]),
    );
    let tx = db.client.transaction().await.unwrap();
    let err = load(
        &tx,
        &table,
        &Strategy::Append,
        never,
        &LoaderConfig::default(),
    )
    .await
    .unwrap_err();
    drop(tx);
    match &err {
        LoadError::ColumnMismatch { column, actual, .. } => {
            assert_eq!((column.as_str(), actual.as_str()), ("tasmin", "_float4"));
        }
        other => panic!("{other}"),
    }
    assert!(!err.is_retryable());

    // Unknown column / table: the server's 42xxx error, not retryable.
    for (name, col) in [("cdy", "nope"), ("nope", "data_source_id")] {
        let table = db.table(name, Columns::new([(col, ColumnType::Int4)]));
        let tx = db.client.transaction().await.unwrap();
        let err = load(
            &tx,
            &table,
            &Strategy::Append,
            never,
            &LoaderConfig::default(),
        )
        .await
        .unwrap_err();
        drop(tx);
        assert!(
            err.sqlstate().is_some_and(|s| s.code().starts_with("42")),
            "{err}"
        );
        assert!(!err.is_retryable());
    }
}

#[test]
fn retryable_sqlstates() {
    use pgcopy::error::sqlstate_is_retryable as r;
    for code in [
        "08006", "08000", "40001", "40P01", "53100", "53200", "55P03", "57014", "57P01", "57P02",
        "57P03",
    ] {
        assert!(r(code), "{code}");
    }
    for code in [
        "22003", "22P02", "23505", "23502", "42P01", "42703", "XX000",
    ] {
        assert!(!r(code), "{code}");
    }
    assert!(
        LoadError::Timeout {
            after: Duration::from_secs(1)
        }
        .is_retryable()
    );
    assert!(!LoadError::Encode(EncodeError::NulInText { offset: 0 }).is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Reading: `COPY … TO STDOUT (FORMAT binary)` through `pgcopy::copy_out` and `RowReader`.

/// Values the server builds itself (its own send functions, NULL fields, NULL elements, empty
/// arrays, a lower bound other than 1), decoded by pgcopy and compared with what
/// tokio-postgres's own decoder reads from the same query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_decodes_what_the_server_sends() {
    use pgcopy::decode::RowReader;
    let db = test_db!("copy_out_types");
    let select = "SELECT g % 2 = 0 AS b,
                (CASE WHEN g % 5 = 0 THEN NULL ELSE -g END)::int2 AS i2,
                (g * 1000)::int4 AS i4, (g::int8 << 40) AS i8,
                (g + 0.25)::float4 AS f4, (-g / 7.0)::float8 AS f8,
                'row ' || g || ' ✓' AS t, decode(lpad(to_hex(g), 2, '0') || '00ff', 'hex') AS by,
                make_date(2000 + g, 3, 1) AS d,
                (timestamp '2000-01-01' + g * interval '1 second') AS ts,
                (timestamptz '2000-01-01 00:00:00+00' - g * interval '1 microsecond') AS tz,
                CASE WHEN g % 3 = 0 THEN NULL
                     ELSE ARRAY(SELECT CASE WHEN k % 3 = 1 THEN NULL ELSE (k * 0.5 - g)::float4 END
                                FROM generate_series(0, g % 7 - 1) k) END AS af4,
                CASE WHEN g % 4 = 3 THEN '[0:1]={1.5,2.5}'::float8[]
                     ELSE ARRAY[g / 3.0, NULL]::float8[] END AS af8,
                ARRAY[g, NULL, 3]::int4[] AS ai4, '{}'::int8[] AS ai8
         FROM generate_series(0, 59) g ORDER BY g";
    let columns = every_type();
    let expected = db.client.query(select, &[]).await.unwrap();
    let mut reader = pgcopy::copy_out(
        &db.client,
        &format!("COPY ({select}) TO STDOUT (FORMAT binary)"),
    )
    .await
    .unwrap();
    let mut n = 0;
    while let Some(tuple) = reader.next_tuple().await.unwrap() {
        let want = &expected[n];
        let mut r = RowReader::new(&columns, &tuple).unwrap();
        assert_eq!(r.bool().unwrap(), want.get::<_, Option<bool>>(0));
        assert_eq!(r.int2().unwrap(), want.get::<_, Option<i16>>(1));
        assert_eq!(r.int4().unwrap(), want.get::<_, Option<i32>>(2));
        assert_eq!(r.int8().unwrap(), want.get::<_, Option<i64>>(3));
        assert_eq!(r.float4().unwrap(), want.get::<_, Option<f32>>(4));
        assert_eq!(r.float8().unwrap(), want.get::<_, Option<f64>>(5));
        assert_eq!(r.text().unwrap(), want.get::<_, Option<&str>>(6));
        assert_eq!(r.bytea().unwrap(), want.get::<_, Option<&[u8]>>(7));
        // date/timestamps: compare with the server's own epoch arithmetic.
        let g = n as i32;
        assert_eq!(r.date().unwrap(), Some(date_from_ymd(2000 + g, 3, 1)));
        assert_eq!(r.timestamp().unwrap(), Some(i64::from(g) * 1_000_000));
        assert_eq!(r.timestamptz().unwrap(), Some(-i64::from(g)));
        let af4 = r.float4_array().unwrap();
        let want_af4: Option<Vec<Option<f32>>> = want.get(11);
        assert_eq!(af4.map(|a| a.iter().collect::<Vec<_>>()), want_af4);
        let af8 = r.float8_array().unwrap().unwrap();
        let want_af8: Vec<Option<f64>> = want.get(12);
        assert_eq!(af8.iter().collect::<Vec<_>>(), want_af8);
        assert_eq!(af8.lower_bound(), if n % 4 == 3 { 0 } else { 1 });
        let ai4 = r.int4_array().unwrap().unwrap();
        assert_eq!(ai4.iter().collect::<Vec<_>>(), [Some(g), None, Some(3)]);
        assert!(r.int8_array().unwrap().unwrap().is_empty());
        r.finish().unwrap();
        n += 1;
    }
    assert_eq!(n, 60);
    assert_eq!(reader.rows(), 60);
    assert!(reader.bytes() > 0);
    // A statement that is not a COPY TO is a server error.
    let e = pgcopy::copy_out(&db.client, "COPY nonexistent TO STDOUT (FORMAT binary)")
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e}");
}

/// Project rows loaded by `pgcopy::load`, read back with `copy_out`: the same values, NULL
/// elements where the encoder wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_rows_read_back_with_copy_out() {
    use pgcopy::decode::RowReader;
    let db = test_db!("copy_out_rows");
    create_project_table(&db, "cdy").await;
    let table = db.table("cdy", project_columns());
    let mut client = connect(&db.url).await;
    let tx = client.transaction().await.unwrap();
    load(
        &tx,
        &table,
        &Strategy::Append,
        project_source(3, 0..300, 365),
        &small_buffers(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut reader = pgcopy::copy_out(
        &db.client,
        &format!(
            "COPY (SELECT data_source_id, map_cell_id, tasmin, tasmax, pr FROM {}.cdy ORDER BY 2)
             TO STDOUT (FORMAT binary)",
            db.q()
        ),
    )
    .await
    .unwrap();
    let columns = project_columns();
    let mut cell = 0;
    while let Some(tuple) = reader.next_tuple().await.unwrap() {
        let mut r = RowReader::new(&columns, &tuple).unwrap();
        assert_eq!(r.int4().unwrap(), Some(3));
        assert_eq!(r.int4().unwrap(), Some(cell));
        for var in 0..3 {
            let a = r.float4_array().unwrap().unwrap();
            assert_eq!(a.len(), 365);
            for (day, got) in a.iter().enumerate() {
                let v = value(3, cell, var, day);
                assert_eq!(
                    got,
                    (!v.is_nan()).then_some(v),
                    "cell {cell} var {var} day {day}"
                );
            }
        }
        r.finish().unwrap();
        cell += 1;
    }
    assert_eq!(cell, 300);
}

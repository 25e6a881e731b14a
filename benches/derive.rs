//! `nexingest derive-historic` for one period against (a) the read limit — the same input rows
//! through `COPY (SELECT …) TO STDOUT (FORMAT binary)` by `psql` into /dev/null, one stream and
//! the same cell ranges in parallel streams — and (b) a single SQL statement computing the same
//! averages and percentiles (`unnest … WITH ORDINALITY`, `avg`, `percentile_cont`).
//! Targets (issue #9, DESIGN §7): ≤ 1.25× the single-stream read, ≥ 5× faster than (b).
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench derive
//! ```
//!
//! Settings (environment): `DERIVE_CELLS` (20000) cells × 3 models × 30 historical years
//! (1951–1980) of `tasmin`/`tasmax`/`pr` (365/366 days, ~1% NULL elements, the fixtures'
//! formula with a phase per model and year), generated once into the schema
//! `nexingest_derive_bench` (`climate_data_year` UNLOGGED; regenerated when the cell count
//! changes); `DERIVE_REPS` (3) interleaved repetitions; `DERIVE_STREAMS` (2) parallel streams;
//! `DERIVE_SQL=0` skips (b), which runs once and is by far the slowest. The bench first builds
//! the release binary (`cargo build --release -p worker`); wall times include process start;
//! peak RSS is the child's `ru_maxrss`.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use nexingest_benches::{Db, env_or, gib, measure_all, median, nexingest_bin};

use fixtures::formula::{LatTerms, LonTerms, Quantity, TimeTerms, combine};
use pgcopy::{ColumnType, Columns, LoaderConfig, Strategy, Table, Validity};
use tokio_postgres::NoTls;
use worker::config::{DbConfig, Schema};
use worker::derive::{Cells, DeriveConfig, Period};

const SCHEMA: &str = "nexingest_derive_bench";
const MODELS: [&str; 3] = ["ACCESS1-0", "BNU-ESM", "CCSM4"];
const PERIOD: Period = Period {
    start: 1951,
    end: 1980,
};
/// Bump when the generated data changes.
const DATA_VERSION: i32 = 1;

/// psql running `statements` in the bench schema with the reader's settings.
fn session(db: &Db, statements: &[&str]) -> Command {
    let mut c = db.psql_cmd();
    c.arg("-c")
        .arg(format!("SET search_path TO {SCHEMA}"))
        .arg("-c")
        .arg("SET statement_timeout = 0")
        .arg("-c")
        .arg("SET enable_sort = off");
    for s in statements {
        c.arg("-c").arg(s);
    }
    c
}

/// Generates the data once: `cells` map cells, 3 models × 30 years of rows.
async fn generate(db: &Db, cells: i64) {
    let exists = db.sql(&format!(
        "SELECT to_regclass('{SCHEMA}.bench_meta') IS NOT NULL"
    )) == "t";
    let have = if exists {
        db.sql(&format!(
            "SELECT cells::text || '/' || version FROM {SCHEMA}.bench_meta"
        ))
    } else {
        String::new()
    };
    if have == format!("{cells}/{DATA_VERSION}") {
        eprintln!("data: {cells} cells × 3 models × 30 years (generated earlier)");
        return;
    }
    eprintln!("generating {cells} cells × 3 models × 30 years (once) ...");
    let t = Instant::now();
    db.sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"));
    let dbc = DbConfig {
        url: db.url.clone(),
        schema: Schema::new(SCHEMA).unwrap(),
    };
    worker::cmd::migrate::run(&dbc).await.expect("migrate");
    db.sql(&format!(
        "SET search_path TO {SCHEMA};
         ALTER TABLE climate_data_year SET UNLOGGED;
         INSERT INTO map_cell (dataset_id, lat, lon)
           SELECT d.id, 20.125 + (g / 400) * 0.25, 230.125 + (g % 400) * 0.25
           FROM generate_series(0, {cells} - 1) g, dataset d WHERE d.name = 'NEX-GDDP';
         INSERT INTO data_source (dataset_id, model_id, scenario_id, year, state, rows_written,
                                  variables, location_source, attempts)
           SELECT d.id, m.id, s.id, y, 'done', {cells}, '{{tasmin,tasmax,pr}}', 'all', 1
           FROM dataset d, climate_model m, scenario s, generate_series(1951, 1980) y
           WHERE d.name = 'NEX-GDDP' AND s.name = 'historical'
             AND m.name IN ('{}', '{}', '{}')",
        MODELS[0], MODELS[1], MODELS[2]
    ));
    let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client;
    let cell_rows = client
        .query(
            &format!("SELECT id, lat, lon FROM {SCHEMA}.map_cell ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    let grid: Arc<Vec<(i64, LatTerms, LonTerms)>> = Arc::new(
        cell_rows
            .iter()
            .map(|r| (r.get(0), LatTerms::new(r.get(1)), LonTerms::new(r.get(2))))
            .collect(),
    );
    let sources: Vec<(i64, usize, i32)> = client
        .query(
            &format!(
                "SELECT ds.id, m.name, ds.year FROM {SCHEMA}.data_source ds
                 JOIN {SCHEMA}.climate_model m ON m.id = ds.model_id ORDER BY ds.id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let name: String = r.get(1);
            (
                r.get(0),
                MODELS.iter().position(|m| *m == name).unwrap(),
                r.get(2),
            )
        })
        .collect();
    let table = Table::new(
        Some(SCHEMA),
        "climate_data_year",
        Columns::new([
            ("data_source_id", ColumnType::Int8),
            ("map_cell_id", ColumnType::Int8),
            ("tasmin", ColumnType::Float4Array),
            ("tasmax", ColumnType::Float4Array),
            ("pr", ColumnType::Float4Array),
        ]),
    )
    .unwrap();
    for (k, &(ds, model, year)) in sources.iter().enumerate() {
        let days = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        let phase = (year - 1951) as usize * 37 + model * 1013;
        let times: Vec<TimeTerms> = (0..days).map(|t| TimeTerms::new(t + phase)).collect();
        let grid = Arc::clone(&grid);
        let mut next = 0;
        let mut series = vec![vec![0f32; days]; 3];
        let source = pgcopy::source_fn(move |buf| {
            let Some((id, la, lo)) = grid.get(next) else {
                return Ok(false);
            };
            next += 1;
            for (q, s) in [Quantity::Tasmin, Quantity::Tasmax, Quantity::Pr]
                .into_iter()
                .zip(series.iter_mut())
            {
                for (t, x) in s.iter_mut().enumerate() {
                    // ~1% NULL elements.
                    *x = if (*id as usize * 31 + t * 17 + model).is_multiple_of(101) {
                        f32::NAN
                    } else {
                        combine(q, &times[t], la, lo) as f32
                    };
                }
            }
            buf.row()
                .int8(ds)?
                .int8(*id)?
                .float4_array(&series[0], Validity::NanIsNull)?
                .float4_array(&series[1], Validity::NanIsNull)?
                .float4_array(&series[2], Validity::NanIsNull)?
                .finish()?;
            Ok(true)
        });
        let tx = client.transaction().await.unwrap();
        pgcopy::load(
            &tx,
            &table,
            &Strategy::Append,
            source,
            &LoaderConfig::default(),
        )
        .await
        .expect("load");
        tx.commit().await.unwrap();
        eprintln!(
            "  data source {}/{} ({:.0} s)",
            k + 1,
            sources.len(),
            t.elapsed().as_secs_f64()
        );
    }
    db.sql(&format!("VACUUM ANALYZE {SCHEMA}.climate_data_year"));
    db.sql("CHECKPOINT");
    db.sql(&format!(
        "CREATE TABLE {SCHEMA}.bench_meta AS SELECT {cells}::int AS cells, {DATA_VERSION} AS version"
    ));
    eprintln!("generated in {:.0} s", t.elapsed().as_secs_f64());
}

/// The single SQL statement (b): the same averages (date-aligned) and baselines.
fn single_sql(dataset: i32, days: usize) -> String {
    format!(
        "COPY (
WITH src AS (
  SELECT ds.id, ds.model_id, (ds.year % 4 = 0 AND (ds.year % 100 <> 0 OR ds.year % 400 = 0)) AS leap
  FROM data_source ds JOIN scenario s ON s.id = ds.scenario_id
  WHERE ds.dataset_id = {dataset} AND s.name = 'historical' AND ds.state = 'done'
    AND ds.year BETWEEN {} AND {}
), days AS NOT MATERIALIZED (
  SELECT y.map_cell_id, s.model_id,
         CASE WHEN s.leap OR u.i <= 59 THEN u.i ELSE u.i + 1 END AS slot,
         u.tasmin, u.tasmax, u.pr
  FROM climate_data_year y JOIN src s ON s.id = y.data_source_id,
       unnest(y.tasmin, y.tasmax, y.pr) WITH ORDINALITY AS u(tasmin, tasmax, pr, i)
), slots AS (
  SELECT map_cell_id, slot, avg(tasmin)::real AS tasmin, avg(tasmax)::real AS tasmax,
         avg(pr)::real AS pr
  FROM days GROUP BY map_cell_id, slot
), averages AS (
  SELECT map_cell_id, array_agg(tasmin ORDER BY slot) AS tasmin,
         array_agg(tasmax ORDER BY slot) AS tasmax, array_agg(pr ORDER BY slot) AS pr
  FROM slots GROUP BY map_cell_id
), per_model AS (
  SELECT map_cell_id, model_id,
         percentile_cont(ARRAY[0.01, 0.05, 0.95, 0.99]) WITHIN GROUP (ORDER BY tasmin) AS tasmin,
         percentile_cont(ARRAY[0.01, 0.05, 0.95, 0.99]) WITHIN GROUP (ORDER BY tasmax) AS tasmax,
         percentile_cont(ARRAY[0.01, 0.05, 0.95, 0.99]) WITHIN GROUP (ORDER BY pr)
           FILTER (WHERE pr > 0) AS pr
  FROM days GROUP BY map_cell_id, model_id
  HAVING count(*) = {days}
), baselines AS (
  SELECT map_cell_id, array_agg(ARRAY[t, n, x, p] ORDER BY k) AS rows
  FROM (
    SELECT map_cell_id, k.k, k.p::float8 AS p, avg(tasmin[k.k]) AS t, avg(tasmax[k.k]) AS n,
           avg(pr[k.k]) AS x
    FROM per_model, (VALUES (1, 1), (2, 5), (3, 95), (4, 99)) AS k(k, p)
    GROUP BY map_cell_id, k.k, k.p
  ) b GROUP BY map_cell_id
)
SELECT a.map_cell_id, a.tasmin, a.tasmax, a.pr, b.rows
FROM averages a LEFT JOIN baselines b USING (map_cell_id)
) TO STDOUT (FORMAT binary)",
        PERIOD.start, PERIOD.end
    )
    .replace('\n', " ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cells: i64 = env_or("DERIVE_CELLS", 20_000);
    let reps: usize = env_or("DERIVE_REPS", 3usize).max(1);
    let streams: usize = env_or("DERIVE_STREAMS", 2usize).max(1);
    let run_sql = std::env::var("DERIVE_SQL").map_or(true, |v| v != "0");
    let db = Db::for_bench();
    let bin = nexingest_bin("DERIVE_NEXINGEST");
    generate(&db, cells).await;

    // The derive's own read statements (one stream, and `streams` cell ranges).
    let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path TO {SCHEMA}"))
        .await
        .unwrap();
    let cfg = |s: usize| DeriveConfig {
        db: DbConfig {
            url: db.url.clone(),
            schema: Schema::new(SCHEMA).unwrap(),
        },
        dataset: Some("NEX-GDDP".into()),
        periods: Some(vec![PERIOD]),
        cells: Cells::All,
        jobs: 2,
        streams: s,
    };
    let schema = Schema::new(SCHEMA).unwrap();
    let statements = |s: usize| {
        let cfg = cfg(s);
        let client = &client;
        let schema = &schema;
        async move {
            let plans = worker::derive::plan::plan(client, &cfg)
                .await
                .expect("plan");
            let d = &plans[0];
            let p = &d.periods[0];
            p.ranges
                .iter()
                .map(|r| worker::derive::stream::sql(schema, d, p, *r, &Cells::All))
                .collect::<Vec<String>>()
        }
    };
    let one = statements(1).await;
    let many = statements(streams).await;
    let dataset: i32 = db
        .sql(&format!(
            "SELECT id FROM {SCHEMA}.dataset WHERE name = 'NEX-GDDP'"
        ))
        .parse()
        .unwrap();
    let rows: u64 = db
        .sql(&format!("SELECT count(*) FROM {SCHEMA}.climate_data_year"))
        .parse()
        .unwrap();
    let explain = db.sql(&format!(
        "SET search_path TO {SCHEMA}; SET enable_sort = off; EXPLAIN {}",
        one[0]
            .trim_start_matches("COPY (")
            .trim_end_matches(") TO STDOUT (FORMAT binary)")
    ));
    eprintln!(
        "plan of the read: {}",
        explain.lines().take(4).collect::<Vec<_>>().join(" / ")
    );

    let derive = |s: usize| {
        let mut c = Command::new(&bin);
        c.env("NEXINGEST_DATABASE_URL", &db.url)
            .env("NEXINGEST_SCHEMA", SCHEMA)
            .env("NEXINGEST_LOG", "warn")
            .env_remove("RUST_LOG")
            .args([
                "derive-historic",
                "--dataset",
                "NEX-GDDP",
                "--periods",
                &PERIOD.to_string(),
                "--no-progress",
                "--streams",
                &s.to_string(),
            ]);
        c
    };

    let mut read1 = Vec::new();
    let mut readn = Vec::new();
    let mut der1 = Vec::new();
    let mut dern = Vec::new();
    let mut rss = 0;
    let mut bytes = 0.0;
    for rep in 0..reps {
        eprintln!("rep {}: read, 1 stream ...", rep + 1);
        read1.push(measure_all(&mut [session(&db, &[&one[0]])], "read", false).secs);
        eprintln!("rep {}: read, {streams} streams ...", rep + 1);
        let mut cmds: Vec<Command> = many.iter().map(|s| session(&db, &[s])).collect();
        readn.push(measure_all(&mut cmds, "read streams", false).secs);
        eprintln!("rep {}: derive-historic --streams 1 ...", rep + 1);
        let m = measure_all(&mut [derive(1)], "derive", true);
        rss = rss.max(m.peak_rss);
        der1.push(m.secs);
        eprintln!("rep {}: derive-historic --streams {streams} ...", rep + 1);
        let m = measure_all(&mut [derive(streams)], "derive", true);
        rss = rss.max(m.peak_rss);
        dern.push(m.secs);
        if let Some(mb) = m
            .stdout
            .split(" rows read (")
            .nth(1)
            .and_then(|s| s.split(" MB").next())
        {
            bytes = mb.parse().unwrap_or(0.0);
        }
        eprintln!(
            "  read {:.2} s, read ×{streams} {:.2} s, derive {:.2} s, derive ×{streams} {:.2} s",
            read1[rep], readn[rep], der1[rep], dern[rep]
        );
    }
    let sql_secs = run_sql.then(|| {
        eprintln!("single SQL statement (once) ...");
        let days = (PERIOD.start..=PERIOD.end)
            .map(|y| {
                if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                    366
                } else {
                    365
                }
            })
            .sum::<usize>();
        let m = measure_all(
            &mut [session(
                &db,
                &["SET enable_sort = on", &single_sql(dataset, days)],
            )],
            "single SQL",
            false,
        );
        eprintln!("  {:.1} s", m.secs);
        m.secs
    });

    let (r1, rn, d1, dn) = (median(&read1), median(&readn), median(&der1), median(&dern));
    let best = d1.min(dn);
    println!();
    println!(
        "derive-historic, one period: {cells} cells × 3 models × 30 years = {rows} rows, \
         {bytes:.0} MB binary COPY; medians of {reps} interleaved repetitions"
    );
    println!();
    println!("| what | s | × read (1 stream) |");
    println!("|---|---:|---:|");
    println!(
        "| read: `COPY (SELECT …) TO STDOUT (FORMAT binary)` by psql, 1 stream | {r1:.2} | 1.00 |"
    );
    println!(
        "| read: the same, {streams} streams over cell ranges at once | {rn:.2} | {:.2} |",
        rn / r1
    );
    println!(
        "| `nexingest derive-historic --streams 1` | {d1:.2} | {:.2} |",
        d1 / r1
    );
    println!(
        "| `nexingest derive-historic --streams {streams}` | {dn:.2} | {:.2} |",
        dn / r1
    );
    if let Some(s) = sql_secs {
        println!(
            "| single SQL statement (`unnest`, `avg`, `percentile_cont`), once | {s:.1} | {:.2} |",
            s / r1
        );
    }
    println!();
    println!(
        "derive / read (1 stream): {:.2}× (target ≤ 1.25×: {}); peak RSS {:.2} GiB",
        best / r1,
        if best / r1 <= 1.25 { "met" } else { "not met" },
        gib(rss)
    );
    if let Some(s) = sql_secs {
        println!(
            "single SQL / derive: {:.1}× (target ≥ 5×: {})",
            s / best,
            if s / best >= 5.0 { "met" } else { "not met" }
        );
    }
    println!(
        "per-rep seconds: read {read1:.2?}, read ×{streams} {readn:.2?}, derive {der1:.2?}, \
         derive ×{streams} {dern:.2?}"
    );
}

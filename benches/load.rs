//! Load throughput of 100k project-shaped rows (two `integer` keys + three `real[365]` with some
//! NULL elements) through four paths, each into a fresh identical table, in one run:
//!
//! 1. `pgcopy::load` (Append);
//! 2. tokio-postgres `BinaryCopyInWriter` with `Vec<Option<f32>>` values;
//! 3. text `COPY` (rows formatted client-side, streamed in 1 MiB messages);
//! 4. `psql -c "\copy … FROM 'file' (FORMAT binary)"` of the same bytes pgcopy sends, from a file
//!    (the server's own limit);
//!
//! with the default array storage and with `ALTER COLUMN … SET STORAGE EXTERNAL`. Prints median
//! times and ratios against psql. Each timed load includes its commit; table creation does not.
//!
//! ```sh
//! scripts/services.sh start-bench && eval "$(scripts/services.sh env)"
//! cargo bench -p nexingest-benches --bench load
//! # PGCOPY_BENCH_ROWS=100000 PGCOPY_BENCH_REPS=3 (defaults)
//! ```

use std::io::Write as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use pgcopy::{ColumnType, Columns, CopyBuffer, LoaderConfig, Strategy, Table, Validity};
use postgres_types::Type;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;

const DAYS: usize = 365;
/// Distinct cell series, reused round-robin by every path alike.
const DISTINCT: usize = 1000;
const COLS: &str = "data_source_id, map_cell_id, tasmin, tasmax, pr";

type Series = Arc<Vec<[Vec<f32>; 3]>>;

fn series() -> Series {
    Arc::new(
        (0..DISTINCT)
            .map(|c| {
                std::array::from_fn(|v| {
                    (0..DAYS)
                        .map(|d| {
                            // ~1% NULL elements; realistic magnitudes (K, kg m-2 s-1).
                            if (c * 13 + d * 7 + v).is_multiple_of(97) {
                                f32::NAN
                            } else if v == 2 {
                                ((c + d) % 50) as f32 * 1.7e-6
                            } else {
                                250.0 + ((c * 31 + d * 17 + v) % 4000) as f32 * 0.0137
                            }
                        })
                        .collect()
                })
            })
            .collect(),
    )
}

fn columns() -> Columns {
    Columns::new([
        ("data_source_id", ColumnType::Int4),
        ("map_cell_id", ColumnType::Int4),
        ("tasmin", ColumnType::Float4Array),
        ("tasmax", ColumnType::Float4Array),
        ("pr", ColumnType::Float4Array),
    ])
}

/// A pgcopy row source over `rows` rows.
fn source(
    data: Series,
    rows: usize,
) -> impl FnMut(&mut CopyBuffer) -> Result<bool, pgcopy::EncodeError> + Send + 'static {
    let mut i = 0;
    move |buf| {
        if i == rows {
            return Ok(false);
        }
        let [a, b, c] = &data[i % DISTINCT];
        buf.row()
            .int4(1)?
            .int4(i as i32)?
            .float4_array(a, Validity::NanIsNull)?
            .float4_array(b, Validity::NanIsNull)?
            .float4_array(c, Validity::NanIsNull)?
            .finish()?;
        i += 1;
        Ok(true)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Psql,
    Pgcopy,
    BinaryCopyInWriter,
    TextCopy,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Psql,
        Method::Pgcopy,
        Method::BinaryCopyInWriter,
        Method::TextCopy,
    ];
    fn name(self) -> &'static str {
        match self {
            Method::Psql => "psql \\copy binary (file)",
            Method::Pgcopy => "pgcopy::load",
            Method::BinaryCopyInWriter => "BinaryCopyInWriter",
            Method::TextCopy => "text COPY",
        }
    }
}

struct Ctx {
    url: String,
    psql: String,
    schema: String,
    data: Series,
    rows: usize,
    file: std::path::PathBuf,
}

async fn connect(url: &str) -> Client {
    // The worker's connector: TLS as the URL says (default prefer), like psql's libpq.
    worker::db::connect(url).await.expect("connect")
}

async fn fresh_table(admin: &Client, ctx: &Ctx, name: &str, external: bool) {
    let t = format!("{}.{name}", ctx.schema);
    let mut sql = format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (data_source_id integer NOT NULL, \
         map_cell_id integer NOT NULL, tasmin real[], tasmax real[], pr real[], \
         PRIMARY KEY (data_source_id, map_cell_id));"
    );
    if external {
        sql.push_str(&format!(
            "ALTER TABLE {t} ALTER COLUMN tasmin SET STORAGE EXTERNAL, \
             ALTER COLUMN tasmax SET STORAGE EXTERNAL, ALTER COLUMN pr SET STORAGE EXTERNAL;"
        ));
    }
    admin.batch_execute(&sql).await.expect("create table");
    // Start every load from the same state (no dirty buffers of the previous load pending).
    let _ = admin.batch_execute("CHECKPOINT").await;
}

async fn run(method: Method, ctx: &Ctx, client: &mut Client, table: &str) -> Duration {
    let qualified = format!("{}.{table}", ctx.schema);
    let started = Instant::now();
    match method {
        Method::Psql => {
            let status = std::process::Command::new(&ctx.psql)
                .arg(&ctx.url)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!(
                    "\\copy {qualified} ({COLS}) FROM '{}' (FORMAT binary)",
                    ctx.file.display()
                ))
                .status()
                .expect("run psql");
            assert!(status.success(), "psql failed");
        }
        Method::Pgcopy => {
            let t = Table::new(Some(&ctx.schema), table, columns()).unwrap();
            let tx = client.transaction().await.unwrap();
            let stats = pgcopy::load(
                &tx,
                &t,
                &Strategy::Append,
                source(ctx.data.clone(), ctx.rows),
                &LoaderConfig::default(),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(stats.rows_copied, ctx.rows as u64);
        }
        Method::BinaryCopyInWriter => {
            let tx = client.transaction().await.unwrap();
            let sink = tx
                .copy_in(&format!(
                    "COPY {qualified} ({COLS}) FROM STDIN (FORMAT binary)"
                ))
                .await
                .unwrap();
            let types = [
                Type::INT4,
                Type::INT4,
                Type::FLOAT4_ARRAY,
                Type::FLOAT4_ARRAY,
                Type::FLOAT4_ARRAY,
            ];
            let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
            let opt = |s: &[f32]| -> Vec<Option<f32>> {
                s.iter().map(|&x| (!x.is_nan()).then_some(x)).collect()
            };
            for i in 0..ctx.rows {
                let [a, b, c] = &ctx.data[i % DISTINCT];
                let (a, b, c) = (opt(a), opt(b), opt(c));
                w.as_mut()
                    .write(&[&1i32, &(i as i32), &a, &b, &c])
                    .await
                    .unwrap();
            }
            let n = w.as_mut().finish().await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(n, ctx.rows as u64);
        }
        Method::TextCopy => {
            let tx = client.transaction().await.unwrap();
            let sink = tx
                .copy_in::<_, Bytes>(&format!("COPY {qualified} ({COLS}) FROM STDIN"))
                .await
                .unwrap();
            let mut sink = pin!(sink);
            let mut buf = Vec::with_capacity(1 << 21);
            for i in 0..ctx.rows {
                write!(buf, "1\t{i}").unwrap();
                for s in &ctx.data[i % DISTINCT] {
                    buf.extend_from_slice(b"\t{");
                    for (k, x) in s.iter().enumerate() {
                        if k > 0 {
                            buf.push(b',');
                        }
                        if x.is_nan() {
                            buf.extend_from_slice(b"NULL");
                        } else {
                            write!(buf, "{x}").unwrap();
                        }
                    }
                    buf.push(b'}');
                }
                buf.push(b'\n');
                if buf.len() >= 1 << 20 {
                    let chunk =
                        Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(1 << 21)));
                    sink.send(chunk).await.unwrap();
                }
            }
            sink.send(Bytes::from(buf)).await.unwrap();
            let n = sink.as_mut().finish().await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(n, ctx.rows as u64);
        }
    }
    started.elapsed()
}

/// CPU seconds used by this process and its waited-for children (psql), from /proc/self/stat.
fn client_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime, stime, cutime, cstime are 14–17.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 15 {
        return 0.0;
    }
    // `rest` starts at field 3 (state, not numeric, filtered out), so field n is f[n - 4].
    (f[10] + f[11] + f[12] + f[13]) / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // The production-like benchmark cluster (or NEXINGEST_BENCH_CLUSTER=test); prints its settings.
    let db = nexingest_benches::Db::for_bench();
    let (url, psql) = (db.url.clone(), db.psql.clone());
    let rows: usize = std::env::var("PGCOPY_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let reps: usize = std::env::var("PGCOPY_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let only: Option<Vec<String>> = std::env::var("PGCOPY_BENCH_METHODS")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let data = series();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rows.pgcopy");

        // The exact stream pgcopy sends, for psql; also the single-core encoding time.
        let started = Instant::now();
        let mut buf = CopyBuffer::with_capacity(&columns(), 1 << 20);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file).unwrap());
        let mut src = source(data.clone(), rows);
        let mut encode_time = Duration::ZERO;
        let mut total = 0usize;
        loop {
            let t = Instant::now();
            let more = src(&mut buf).unwrap();
            let chunk = if !more {
                Some(buf.finish())
            } else if buf.len() >= 1 << 20 {
                Some(buf.take())
            } else {
                None
            };
            encode_time += t.elapsed();
            if let Some(c) = chunk {
                total += c.len();
                out.write_all(&c).unwrap();
            }
            if !more {
                break;
            }
        }
        out.flush().unwrap();
        drop(out);
        println!(
            "stream: {rows} rows, {:.1} MB (written in {:.2}s); single-core encoding {:.3}s = {:.2} GB/s, {:.2} M rows/s",
            total as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            encode_time.as_secs_f64(),
            total as f64 / encode_time.as_secs_f64() / 1e9,
            rows as f64 / encode_time.as_secs_f64() / 1e6,
        );

        let schema = format!("pgcopy_bench_{}", std::process::id());
        let ctx = Ctx { url: url.clone(), psql, schema: schema.clone(), data, rows, file };
        let admin = connect(&url).await;
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await.unwrap();
        let mut client = connect(&url).await;

        let methods: Vec<Method> = Method::ALL
            .into_iter()
            .filter(|m| only.as_ref().is_none_or(|o| o.iter().any(|x| format!("{m:?}").eq_ignore_ascii_case(x))))
            .collect();
        let mut results: Vec<(bool, Method, Vec<f64>, Vec<f64>)> = Vec::new();
        for external in [false, true] {
            for &m in &methods {
                results.push((external, m, Vec::new(), Vec::new()));
            }
            // Round-robin across methods so drift in machine load hits all of them alike.
            for rep in 0..reps {
                for &m in &methods {
                    let table = format!("t_{}", format!("{m:?}").to_lowercase());
                    fresh_table(&admin, &ctx, &table, external).await;
                    let cpu0 = client_cpu();
                    let d = run(m, &ctx, &mut client, &table).await;
                    let cpu = client_cpu() - cpu0;
                    let count: i64 = admin
                        .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
                        .await
                        .unwrap()
                        .get(0);
                    assert_eq!(count, rows as i64);
                    admin.batch_execute(&format!("DROP TABLE {schema}.{table}")).await.unwrap();
                    eprintln!(
                        "  rep {rep} {} {:<26} {:.3}s (client CPU {cpu:.2}s)",
                        if external { "external" } else { "default " },
                        m.name(),
                        d.as_secs_f64()
                    );
                    let r = results.iter_mut().find(|r| r.0 == external && r.1 == m).unwrap();
                    r.2.push(d.as_secs_f64());
                    r.3.push(cpu);
                }
            }
        }
        admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();

        println!();
        println!("| storage | method | median s | min s | MB/s (binary stream) | client CPU s | × psql (median) | × psql (min) |");
        println!("|---|---|---|---|---|---|---|---|");
        for external in [false, true] {
            let mut psql_median = None;
            let mut psql_min = None;
            for (e, m, times, cpu) in results.iter_mut().filter(|r| r.0 == external) {
                let med = median(times);
                let cpu = median(cpu);
                let min = times[0];
                if *m == Method::Psql {
                    psql_median = Some(med);
                    psql_min = Some(min);
                }
                let ratio = |x: f64, p: Option<f64>| p.map(|p| format!("{:.2}", x / p)).unwrap_or_else(|| "-".into());
                let (ratio, ratio_min) = (ratio(med, psql_median), ratio(min, psql_min));
                println!(
                    "| {} | {} | {med:.3} | {min:.3} | {:.0} | {cpu:.2} | {ratio} | {ratio_min} |",
                    if *e { "EXTERNAL" } else { "default (pglz)" },
                    m.name(),
                    total as f64 / med / 1e6,
                );
            }
        }
        println!("\ndatabase: {}", db.describe());
        println!("{rows} rows × {reps} reps per method; rerun: cargo bench -p nexingest-benches --bench load");
        drop(dir);
    });
}

//! Loads a few project-shaped rows into a table, twice, with replace-by-key: the second run
//! replaces the first instead of duplicating it, and a job-status update commits in the same
//! transaction.
//!
//! ```sh
//! eval "$(scripts/services.sh env)"
//! cargo run -p pgcopy --example load_rows
//! ```

use deadpool_postgres::{Manager, Pool};
use pgcopy::{ColumnType, Columns, LoaderConfig, Strategy, Table, Validity};
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NEXINGEST_DATABASE_URL")
        .map_err(|_| "set NEXINGEST_DATABASE_URL (eval \"$(scripts/services.sh env)\")")?;
    let pool = Pool::builder(Manager::new(url.parse()?, NoTls))
        .max_size(2)
        .build()?;

    let client = pool.get().await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pgcopy_example;
             CREATE TABLE IF NOT EXISTS pgcopy_example.climate_data_year (
                 data_source_id integer NOT NULL,
                 map_cell_id integer NOT NULL,
                 tasmax real[],
                 PRIMARY KEY (data_source_id, map_cell_id));
             ALTER TABLE pgcopy_example.climate_data_year
                 ALTER COLUMN tasmax SET STORAGE EXTERNAL;
             CREATE TABLE IF NOT EXISTS pgcopy_example.job (
                 id integer PRIMARY KEY, state text NOT NULL, runs integer NOT NULL DEFAULT 0);
             INSERT INTO pgcopy_example.job VALUES (42, 'pending') ON CONFLICT DO NOTHING;",
        )
        .await?;
    drop(client);

    let table = Table::new(
        Some("pgcopy_example"),
        "climate_data_year",
        Columns::new([
            ("data_source_id", ColumnType::Int4),
            ("map_cell_id", ColumnType::Int4),
            ("tasmax", ColumnType::Float4Array),
        ]),
    )?;

    for run in 1..=2 {
        // Three cells; NaN marks a missing day (a NULL element).
        let mut cells = (0..3).map(|cell| {
            let series: Vec<f32> = (0..365)
                .map(|day| {
                    if day == 59 {
                        f32::NAN
                    } else {
                        270.0 + (day % 30) as f32 + cell as f32
                    }
                })
                .collect();
            (cell, series)
        });
        let source = pgcopy::source_fn(move |buf| match cells.next() {
            Some((cell, series)) => {
                buf.row()
                    .int4(42)?
                    .int4(cell)?
                    .float4_array(&series, Validity::NanIsNull)?
                    .finish()?;
                Ok(true)
            }
            None => Ok(false),
        });

        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let stats = pgcopy::load(
            &tx,
            &table,
            &Strategy::replace_key("data_source_id", 42),
            source,
            &LoaderConfig::default(),
        )
        .await?;
        // The caller's own statement, committed together with the rows.
        tx.execute(
            "UPDATE pgcopy_example.job SET state = 'done', runs = runs + 1 WHERE id = $1",
            &[&42i32],
        )
        .await?;
        tx.commit().await?;
        println!(
            "run {run}: deleted {}, copied {} rows ({} bytes)",
            stats.rows_deleted, stats.rows_copied, stats.bytes_sent
        );
    }

    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pgcopy_example.climate_data_year WHERE data_source_id = 42),
                    (SELECT runs FROM pgcopy_example.job WHERE id = 42)",
            &[],
        )
        .await?;
    println!(
        "rows for data source 42: {}, job runs: {}",
        row.get::<_, i64>(0),
        row.get::<_, i32>(1)
    );
    client
        .batch_execute("DROP SCHEMA pgcopy_example CASCADE")
        .await?;
    Ok(())
}

//! The write side of a period, all in the caller's transaction: the period row, the deletion of
//! earlier results, the average years (binary COPY fed by the computation as it goes) and the
//! baselines (binary COPY from memory).

use std::sync::{Arc, Mutex};

use anyhow::Context;
use pgcopy::{ColumnType, Columns, LoaderConfig, Strategy, Table, Validity};
use tokio::sync::mpsc;
use tokio_postgres::{GenericClient, Transaction};

use super::compute::{CellNote, Results};
use super::plan::{Cells, DatasetPlan, PeriodPlan};
use super::stats::SLOTS;
use super::{LeftOut, stats};
use crate::config::Schema;

/// The period's id and what was deleted.
pub(super) struct Prepared {
    pub period_id: i32,
    pub replaced: u64,
}

/// Locks the (dataset, period) against a concurrent run, upserts its `historic_period` row and
/// deletes its earlier results (for `--cells cities`, only the selected cells').
pub(super) async fn prepare(
    tx: &Transaction<'_>,
    schema: &Schema,
    d: &DatasetPlan,
    p: &PeriodPlan,
    cells: &Cells,
) -> anyhow::Result<Prepared> {
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('nexingest.derive.' || $1::text || '.' || $2::text
                                               || '.' || $3::text))",
        &[&schema.name(), &d.id.to_string(), &p.period.to_string()],
    )
    .await?;
    tx.execute(
        "INSERT INTO historic_period (start_year, end_year) VALUES ($1, $2)
         ON CONFLICT (start_year, end_year) DO NOTHING",
        &[&p.period.start, &p.period.end],
    )
    .await?;
    let period_id: i32 = tx
        .query_one(
            "SELECT id FROM historic_period WHERE start_year = $1 AND end_year = $2",
            &[&p.period.start, &p.period.end],
        )
        .await?
        .get(0);
    let mut replaced = 0;
    for table in ["historic_average_year", "climate_baseline"] {
        replaced += match (cells, &p.cities) {
            (Cells::Cities(_), Some(ids)) => {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE dataset_id = $1 AND period_id = $2
                           AND map_cell_id = ANY($3)"
                    ),
                    &[&d.id, &period_id, ids],
                )
                .await?
            }
            _ => {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE dataset_id = $1 AND period_id = $2"),
                    &[&d.id, &period_id],
                )
                .await?
            }
        };
    }
    Ok(Prepared {
        period_id,
        replaced,
    })
}

/// Baseline values kept in memory until the average years are written.
#[derive(Debug, Default)]
pub(super) struct Baselines {
    cells: Vec<i64>,
    /// `cells × percentiles × vars`.
    values: Vec<f32>,
}

/// What the average-year COPY wrote.
pub(super) struct Written {
    pub rows: u64,
    pub baselines: Baselines,
}

fn key_columns() -> Vec<(&'static str, ColumnType)> {
    vec![
        ("dataset_id", ColumnType::Int4),
        ("period_id", ColumnType::Int4),
        ("map_cell_id", ColumnType::Int8),
    ]
}

fn loader() -> LoaderConfig {
    LoaderConfig {
        buffer_size: 4 << 20,
        ..LoaderConfig::default()
    }
}

/// Writes the average years of every [`Results`] from `input` until it closes, keeping the
/// baselines for [`baselines`].
pub(super) async fn averages(
    tx: &Transaction<'_>,
    schema: &Schema,
    dataset: i32,
    period_id: i32,
    p: &PeriodPlan,
    mut input: mpsc::Receiver<Results>,
) -> anyhow::Result<Written> {
    let mut cols = key_columns();
    cols.extend(p.variables.iter().map(|v| (*v, ColumnType::Float4Array)));
    let table = Table::new(
        Some(schema.name()),
        "historic_average_year",
        Columns::new(cols),
    )?;
    let nv = p.variables.len();
    let bl = stats::PERCENTILES.len() * nv;
    let kept = Arc::new(Mutex::new(Baselines::default()));
    let keep = Arc::clone(&kept);
    let mut cur: Option<Results> = None;
    let mut i = 0;
    let source = pgcopy::source_fn(move |buf| {
        loop {
            let Some(r) = cur.as_ref() else {
                match input.blocking_recv() {
                    Some(r) => {
                        // Baselines of the cells with values, for the second COPY.
                        let mut k = keep.lock().expect("baselines lock");
                        for (c, (&cell, &any)) in r.cells.iter().zip(&r.any).enumerate() {
                            if any {
                                k.cells.push(cell);
                                k.values.extend_from_slice(&r.base[c * bl..(c + 1) * bl]);
                            }
                        }
                        cur = Some(r);
                        i = 0;
                        continue;
                    }
                    None => return Ok(false),
                }
            };
            if i == r.cells.len() {
                cur = None;
                continue;
            }
            let c = i;
            i += 1;
            if !r.any[c] {
                continue;
            }
            let mut w = buf.row();
            w.int4(dataset)?.int4(period_id)?.int8(r.cells[c])?;
            for v in 0..nv {
                let a = &r.avg[(c * nv + v) * SLOTS..(c * nv + v + 1) * SLOTS];
                if a.iter().all(|x| x.is_nan()) {
                    w.null()?;
                } else {
                    w.float4_array(a, Validity::NanIsNull)?;
                }
            }
            w.finish()?;
            return Ok(true);
        }
    });
    let stats = pgcopy::load(tx, &table, &Strategy::Append, source, &loader())
        .await
        .context("COPY historic_average_year")?;
    let baselines = std::mem::take(&mut *kept.lock().expect("baselines lock"));
    Ok(Written {
        rows: stats.rows_copied,
        baselines,
    })
}

/// Writes the baselines: one row per (cell, percentile) with any value.
pub(super) async fn baselines(
    tx: &Transaction<'_>,
    schema: &Schema,
    dataset: i32,
    period_id: i32,
    p: &PeriodPlan,
    b: Baselines,
) -> anyhow::Result<u64> {
    let mut cols = key_columns();
    cols.push(("percentile", ColumnType::Int4));
    cols.extend(p.variables.iter().map(|v| (*v, ColumnType::Float4)));
    let table = Table::new(Some(schema.name()), "climate_baseline", Columns::new(cols))?;
    let nv = p.variables.len();
    let np = stats::PERCENTILES.len();
    let mut row = 0;
    let total = b.cells.len() * np;
    let source = pgcopy::source_fn(move |buf| {
        while row < total {
            let (c, k) = (row / np, row % np);
            row += 1;
            let vals = &b.values[(c * np + k) * nv..(c * np + k + 1) * nv];
            if vals.iter().all(|x| x.is_nan()) {
                continue;
            }
            let mut w = buf.row();
            w.int4(dataset)?
                .int4(period_id)?
                .int8(b.cells[c])?
                .int4(stats::PERCENTILES[k])?;
            for &x in vals {
                if x.is_nan() {
                    w.null()?;
                } else {
                    w.float4(x)?;
                }
            }
            w.finish()?;
            return Ok(true);
        }
        Ok(false)
    });
    let stats = pgcopy::load(tx, &table, &Strategy::Append, source, &loader())
        .await
        .context("COPY climate_baseline")?;
    Ok(stats.rows_copied)
}

/// The cells with models left out, with their coordinates and model names, by cell id.
pub(super) async fn locate(
    client: &impl GenericClient,
    p: &PeriodPlan,
    mut notes: Vec<CellNote>,
) -> anyhow::Result<Vec<LeftOut>> {
    if notes.is_empty() {
        return Ok(Vec::new());
    }
    notes.sort_by_key(|n| n.cell);
    let ids: Vec<i64> = notes.iter().map(|n| n.cell).collect();
    let coords: std::collections::HashMap<i64, (f64, f64)> = client
        .query(
            "SELECT id, lat, lon FROM map_cell WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(notes
        .into_iter()
        .map(|n| {
            let (lat, lon) = coords.get(&n.cell).copied().unwrap_or((f64::NAN, f64::NAN));
            LeftOut {
                cell: n.cell,
                lat,
                lon,
                models: n
                    .models
                    .into_iter()
                    .map(|(m, years)| (p.models[m].1.clone(), years))
                    .collect(),
            }
        })
        .collect())
}

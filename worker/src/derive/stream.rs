//! The input rows of a period: one binary `COPY (SELECT …) TO STDOUT` per cell range, ordered
//! by cell, cut into [`Batch`]es of whole cells (the tuples themselves, not copied).
//!
//! The statement is a `UNION ALL` of one branch per data source under one
//! `ORDER BY map_cell_id`, which PostgreSQL runs as a Merge Append of the branches: no sort of
//! the big rows, no join. Each branch is a range scan of `climate_data_year`'s primary key
//! `(data_source_id, map_cell_id)` for one constant data source id, already in cell order; it
//! is an ordered subquery (`SELECT * FROM (… WHERE … ORDER BY map_cell_id)`) because a
//! `UNION ALL` member with a `WHERE` of its own is not flattened into the append, and then no
//! Merge Append is considered. Each tuple is `(map_cell_id, source index, <one real[] per
//! variable>)`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use bytes::Bytes;
use deadpool_postgres::Pool;
use pgcopy::decode::RowReader;
use pgcopy::{Columns, CopyReader};
use tokio::sync::mpsc;

use super::plan::{Cells, DatasetPlan, PeriodPlan};
use super::{Counters, Observer};
use crate::config::Schema;

/// A batch is sent once it holds at least this many bytes (at a cell boundary).
const BATCH_BYTES: usize = 16 << 20;

/// Report progress every this many rows.
const PROGRESS_EVERY: u64 = 512;

/// Whole cells' input tuples.
#[derive(Debug, Default)]
pub struct Batch {
    /// The cells, in stream order.
    pub cells: Vec<i64>,
    /// `starts[i]..starts[i + 1]` are cell `i`'s tuples in `rows`.
    pub starts: Vec<u32>,
    /// The tuples (zero-copy slices of the COPY messages).
    pub rows: Vec<Bytes>,
    /// Their total size.
    pub bytes: usize,
}

impl Batch {
    fn new() -> Self {
        Batch {
            starts: vec![0],
            ..Batch::default()
        }
    }

    fn close_cell(&mut self, cell: i64) {
        self.cells.push(cell);
        self.starts.push(self.rows.len() as u32);
    }

    /// Cell `i`'s tuples.
    pub fn cell_rows(&self, i: usize) -> &[Bytes] {
        &self.rows[self.starts[i] as usize..self.starts[i + 1] as usize]
    }
}

/// What one input stream read.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamStats {
    /// Tuples.
    pub rows: u64,
    /// Bytes of the COPY stream.
    pub bytes: u64,
}

/// Settings of a reading session.
pub const SESSION: &str = "SET statement_timeout = 0; SET enable_sort = off; SET jit = off";

/// Escapes a text value as an SQL literal (dollar-quoted, with a tag that does not occur in it).
fn literal(s: &str) -> String {
    let mut tag = String::from("nx");
    while s.contains(&format!("${tag}$")) {
        tag.push('x');
    }
    format!("${tag}${s}${tag}$")
}

/// The `COPY … TO STDOUT (FORMAT binary)` statement of one stream: cells in `[lo, hi)`.
pub fn sql(
    schema: &Schema,
    d: &DatasetPlan,
    p: &PeriodPlan,
    (lo, hi): (i64, i64),
    cells: &Cells,
) -> String {
    let table = schema.table("climate_data_year");
    let cols: String = p.variables.iter().map(|v| format!(", y.{v}")).collect();
    let mut filter = String::new();
    if lo > i64::MIN {
        filter.push_str(&format!(" AND y.map_cell_id >= {lo}"));
    }
    if hi < i64::MAX {
        filter.push_str(&format!(" AND y.map_cell_id < {hi}"));
    }
    if let Cells::Cities(source) = cells {
        let by_source = source
            .as_deref()
            .map(|s| format!(" AND l.source = {}", literal(s)))
            .unwrap_or_default();
        filter.push_str(&format!(
            " AND y.map_cell_id = ANY (ARRAY(SELECT DISTINCT lc.map_cell_id FROM {} lc \
             JOIN {} l ON l.id = lc.location_id \
             WHERE lc.dataset_id = {} AND lc.map_cell_id IS NOT NULL{by_source}))",
            schema.table("location_cell"),
            schema.table("location"),
            d.id
        ));
    }
    let branches: Vec<String> = p
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "SELECT * FROM (SELECT y.map_cell_id, {i}::int4 AS src{cols} FROM {table} y \
                 WHERE y.data_source_id = {}{filter} ORDER BY y.map_cell_id) s{i}",
                s.id
            )
        })
        .collect();
    format!(
        "COPY (SELECT * FROM ({}) u ORDER BY map_cell_id) TO STDOUT (FORMAT binary)",
        branches.join(" UNION ALL ")
    )
}

/// Reads one stream into batches sent on `out` (which applies backpressure).
///
/// # Errors
/// Database errors, a malformed stream, rows out of cell order, the consumer gone.
pub async fn read(
    pool: &Pool,
    statement: String,
    columns: Columns,
    out: mpsc::Sender<Batch>,
    counters: Arc<Counters>,
    observer: &dyn Observer,
) -> anyhow::Result<StreamStats> {
    let client = pool.get().await?;
    // A long read must not hit the session's statement timeout; the Merge Append over the
    // data sources' primary keys is the plan (never a sort of the whole input); compiling the
    // many-branch plan with JIT would cost seconds and save nothing.
    client.batch_execute(SESSION).await?;
    let stream = client
        .copy_out(statement.as_str())
        .await
        .context("COPY (SELECT …) TO STDOUT")?;
    let mut reader = CopyReader::new(stream);
    let mut batch = Batch::new();
    let mut current: Option<i64> = None;
    let mut last_bytes = 0;
    while let Some(tuple) = reader.next_tuple().await? {
        let cell = RowReader::new(&columns, &tuple)?
            .int8()?
            .context("NULL map_cell_id")?;
        if current != Some(cell) {
            if let Some(c) = current {
                if cell < c {
                    bail!("input not ordered by cell ({cell} after {c})");
                }
                batch.close_cell(c);
                if batch.bytes >= BATCH_BYTES {
                    let full = std::mem::replace(&mut batch, Batch::new());
                    out.send(full)
                        .await
                        .map_err(|_| anyhow::anyhow!("the computation stopped"))?;
                }
            }
            current = Some(cell);
        }
        batch.bytes += tuple.len();
        batch.rows.push(tuple.into_bytes());
        if reader.rows().is_multiple_of(PROGRESS_EVERY) {
            let bytes = reader.bytes();
            let r = counters.rows.fetch_add(PROGRESS_EVERY, Ordering::Relaxed) + PROGRESS_EVERY;
            let b = counters
                .bytes
                .fetch_add(bytes - last_bytes, Ordering::Relaxed)
                + (bytes - last_bytes);
            last_bytes = bytes;
            observer.progress(r, b);
        }
    }
    if let Some(c) = current {
        batch.close_cell(c);
        out.send(batch)
            .await
            .map_err(|_| anyhow::anyhow!("the computation stopped"))?;
    }
    let rest = reader.rows() % PROGRESS_EVERY;
    let r = counters.rows.fetch_add(rest, Ordering::Relaxed) + rest;
    let b = counters
        .bytes
        .fetch_add(reader.bytes() - last_bytes, Ordering::Relaxed)
        + (reader.bytes() - last_bytes);
    observer.progress(r, b);
    Ok(StreamStats {
        rows: reader.rows(),
        bytes: reader.bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_dollar_quoted() {
        assert_eq!(literal("cities"), "$nx$cities$nx$");
        assert_eq!(literal("a'b$nx$c"), "$nxx$a'b$nx$c$nxx$");
    }
}

//! Computes batches of cells on a rayon pool: each cell's tuples are decoded straight into a
//! reused [`CellWork`] (no allocation per cell or value) and its results written into the
//! batch's flat output arrays.

use std::sync::Mutex;

use anyhow::Context as _;
use pgcopy::Columns;
use pgcopy::decode::RowReader;
use rayon::prelude::*;
use tokio::sync::mpsc;

use super::plan::PeriodPlan;
use super::stats::{self, CellWork, Shape};
use super::stream::Batch;

/// What every cell's computation needs.
#[derive(Debug)]
pub struct Context {
    shape: Shape,
    columns: Columns,
    /// Per source index: (model index, leap year).
    sources: Vec<(usize, bool)>,
    /// Per source index: year (for messages).
    years: Vec<i32>,
    models: Vec<String>,
    variables: Vec<&'static str>,
    /// Working memory returned by finished rayon jobs, taken by new ones.
    spare: Mutex<Vec<CellWork>>,
}

impl Context {
    /// For one period.
    pub fn new(p: &PeriodPlan) -> Self {
        Context {
            shape: p.shape(),
            columns: p.input_columns(),
            sources: p
                .sources
                .iter()
                .map(|s| (s.model, stats::is_leap(s.year)))
                .collect(),
            years: p.sources.iter().map(|s| s.year).collect(),
            models: p.models.iter().map(|(_, n)| n.clone()).collect(),
            variables: p.variables.clone(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// The computation's shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    fn lease(&self) -> Lease<'_> {
        let work = self
            .spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_else(|| CellWork::new(&self.shape));
        Lease {
            ctx: self,
            work: Some(work),
        }
    }
}

/// A [`CellWork`] borrowed from the context's spares, given back on drop.
struct Lease<'a> {
    ctx: &'a Context,
    work: Option<CellWork>,
}

impl Lease<'_> {
    fn get(&mut self) -> &mut CellWork {
        self.work.as_mut().expect("present until drop")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let (Some(w), Ok(mut s)) = (self.work.take(), self.ctx.spare.lock()) {
            s.push(w);
        }
    }
}

/// A cell where models were left out of the baselines: (model index, years found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellNote {
    /// `map_cell.id`.
    pub cell: i64,
    /// Models left out, with the most years any of the variables has.
    pub models: Vec<(usize, u32)>,
}

/// A computed batch.
#[derive(Debug, Default)]
pub struct Results {
    /// The cells.
    pub cells: Vec<i64>,
    /// Average years: `cells × vars × 366`, NaN = no value.
    pub avg: Vec<f32>,
    /// Baselines: `cells × percentiles × vars`, NaN = no value.
    pub base: Vec<f32>,
    /// Whether the cell has any value (cells without are not written).
    pub any: Vec<bool>,
}

/// Totals of a period's computation.
#[derive(Debug, Default)]
pub struct Computed {
    /// Tuples computed.
    pub rows: u64,
    /// Cells with a value.
    pub cells: u64,
    /// Cells with models left out.
    pub left_out: Vec<CellNote>,
}

/// Computes one batch.
///
/// # Errors
/// A malformed tuple, an unknown source index, an array without its year's days.
pub fn batch(ctx: &Context, b: &Batch) -> anyhow::Result<(Results, Vec<CellNote>)> {
    let shape = &ctx.shape;
    let n = b.cells.len();
    let (al, bl) = (shape.avg_len(), shape.base_len());
    let mut r = Results {
        cells: b.cells.clone(),
        avg: vec![0.0; n * al],
        base: vec![0.0; n * bl],
        any: vec![false; n],
    };
    let notes: Vec<Option<CellNote>> = r
        .avg
        .par_chunks_mut(al)
        .zip(r.base.par_chunks_mut(bl))
        .zip(r.any.par_iter_mut())
        .enumerate()
        .map_init(
            || ctx.lease(),
            |lease, (i, ((avg, base), any))| {
                let w = lease.get();
                cell(ctx, w, b.cells[i], b.cell_rows(i))?;
                *any = w.finish(avg, base);
                Ok(note(ctx, w, b.cells[i]))
            },
        )
        .collect::<anyhow::Result<_>>()?;
    Ok((r, notes.into_iter().flatten().collect()))
}

fn cell(ctx: &Context, w: &mut CellWork, id: i64, rows: &[bytes::Bytes]) -> anyhow::Result<()> {
    w.reset();
    for row in rows {
        let mut r = RowReader::new(&ctx.columns, row)?;
        r.int8()?;
        let src = r.int4()?.context("NULL source index")?;
        let &(model, leap) = usize::try_from(src)
            .ok()
            .and_then(|s| ctx.sources.get(s))
            .with_context(|| format!("unknown source index {src}"))?;
        for var in 0..ctx.shape.vars {
            if let Some(a) = r.float4_array()? {
                w.add(model, var, leap, a.iter()).map_err(|e| {
                    anyhow::anyhow!(
                        "cell {id}, {} {}: {} has {} days, the year has {}",
                        ctx.models[model],
                        ctx.years[src as usize],
                        ctx.variables[e.var],
                        e.got,
                        e.expected
                    )
                })?;
            }
        }
        r.finish()?;
    }
    Ok(())
}

fn note(ctx: &Context, w: &CellWork, id: i64) -> Option<CellNote> {
    let shape = &ctx.shape;
    let incomplete = |m: usize| (0..shape.vars).any(|v| !w.complete(m, v));
    if !(0..shape.models).any(incomplete) {
        return None;
    }
    Some(CellNote {
        cell: id,
        models: (0..shape.models)
            .filter(|&m| incomplete(m))
            .map(|m| (m, (0..shape.vars).map(|v| w.rows(m, v)).max().unwrap_or(0)))
            .collect(),
    })
}

/// The compute stage: batches from `input` until it closes, results to `output`.
///
/// # Errors
/// As [`batch`]; also when the writer stopped.
pub fn run(
    ctx: &Context,
    pool: &rayon::ThreadPool,
    mut input: mpsc::Receiver<Batch>,
    output: mpsc::Sender<Results>,
) -> anyhow::Result<Computed> {
    let mut total = Computed::default();
    while let Some(b) = input.blocking_recv() {
        let (r, notes) = pool.install(|| batch(ctx, &b))?;
        total.rows += b.rows.len() as u64;
        total.cells += r.any.iter().filter(|&&a| a).count() as u64;
        total.left_out.extend(notes);
        drop(b);
        if output.blocking_send(r).is_err() {
            anyhow::bail!("the writer stopped");
        }
    }
    Ok(total)
}

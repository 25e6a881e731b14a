//! The `netcdf`-crate read path: fills a [`BlockRequest`] with libnetcdf hyperslab reads.
//!
//! libnetcdf holds a process-wide lock, so reads are sequential. They cover the bounding box of
//! the requested cells (whole rows when all cells are wanted) over runs of consecutive time steps,
//! in slabs of at most [`SLAB_ELEMENTS`] values. Each slab is scattered into the cell-major output
//! in parallel with rayon (one output row per task, no allocation per cell).

use std::path::Path;

use ndarray::Array2;
use netcdf::NcTypeDescriptor;
use rayon::prelude::*;

use crate::block::{BlockRequest, StepSlot, ValueRule};
use crate::error::DecodeError;
use crate::meta::Dtype;

/// Largest number of values read in one libnetcdf call (64 MiB of f32).
const SLAB_ELEMENTS: usize = 16 * 1024 * 1024;

/// A stored value type that converts to f32 before the [`ValueRule`] applies.
trait Raw: NcTypeDescriptor + Copy + Default + Send + Sync {
    fn to_f32(self) -> f32;
}

impl Raw for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}
impl Raw for f64 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
impl Raw for i16 {
    #[inline]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}
impl Raw for i32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
impl Raw for i8 {
    #[inline]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// Decodes `req` from an open file into a `cells × days` block (missing = NaN).
///
/// # Errors
/// [`DecodeError::MissingVariable`] when `req.var` is absent; [`DecodeError::Netcdf`] when a read
/// fails (truncated or corrupt file).
pub(crate) fn decode_netcdf(
    path: &Path,
    file: &netcdf::File,
    req: &BlockRequest<'_>,
    dtype: Dtype,
) -> Result<Array2<f32>, DecodeError> {
    let _span = tracing::debug_span!(
        "decode_netcdf",
        var = req.var,
        cells = req.cells.len(),
        steps = req.steps.len()
    )
    .entered();
    let mut out = Array2::from_elem((req.cells.len(), req.days), f32::NAN);
    if req.cells.is_empty() || req.steps.is_empty() {
        return Ok(out);
    }
    let var = file
        .variable(req.var)
        .ok_or_else(|| DecodeError::MissingVariable {
            path: path.to_path_buf(),
            name: req.var.to_string(),
            hint: String::new(),
        })?;
    match dtype {
        Dtype::F32 => fill::<f32>(path, &var, req, &mut out),
        Dtype::F64 => fill::<f64>(path, &var, req, &mut out),
        Dtype::I16 => fill::<i16>(path, &var, req, &mut out),
        Dtype::I32 => fill::<i32>(path, &var, req, &mut out),
        Dtype::I8 => fill::<i8>(path, &var, req, &mut out),
    }?;
    Ok(out)
}

/// The box of rows/columns covering all requested cells, and each cell's offset inside it.
struct BoundingBox {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    offsets: Vec<usize>,
}

impl BoundingBox {
    fn new(cells: &[usize], nlon: usize) -> BoundingBox {
        // Cells are ascending, so the first and last give the row range.
        let r0 = cells[0] / nlon;
        let r1 = cells[cells.len() - 1] / nlon;
        let (mut c0, mut c1) = (usize::MAX, 0);
        for &c in cells {
            c0 = c0.min(c % nlon);
            c1 = c1.max(c % nlon);
        }
        let width = c1 - c0 + 1;
        let offsets = cells
            .iter()
            .map(|&c| (c / nlon - r0) * width + (c % nlon - c0))
            .collect();
        BoundingBox {
            rows: r0..r1 + 1,
            cols: c0..c1 + 1,
            offsets,
        }
    }

    fn per_step(&self) -> usize {
        self.rows.len() * self.cols.len()
    }
}

fn fill<T: Raw>(
    path: &Path,
    var: &netcdf::Variable<'_>,
    req: &BlockRequest<'_>,
    out: &mut Array2<f32>,
) -> Result<(), DecodeError> {
    let nlon = req.shape[2];
    let bbox = BoundingBox::new(req.cells, nlon);
    let per_step = bbox.per_step();
    let max_steps = (SLAB_ELEMENTS / per_step).max(1);
    let mut buf: Vec<T> = Vec::new();
    let days = req.days;
    let out = out
        .as_slice_mut()
        .expect("freshly allocated standard-layout array");

    let mut i = 0;
    while i < req.steps.len() {
        // A slab: consecutive time indices, at most `max_steps` of them.
        let t0 = req.steps[i].time_index;
        let mut j = i + 1;
        while j < req.steps.len() && j - i < max_steps && req.steps[j].time_index == t0 + (j - i) {
            j += 1;
        }
        let slab = &req.steps[i..j];
        let n = slab.len();
        buf.resize(n * per_step, T::default());
        var.get_values_into(
            &mut buf[..n * per_step],
            (t0..t0 + n, bbox.rows.clone(), bbox.cols.clone()),
        )
        .map_err(|e| {
            DecodeError::netcdf(
                path,
                format!("read variable `{}` at time steps {t0}..{}", req.var, t0 + n),
                e,
            )
        })?;
        scatter(
            &buf[..n * per_step],
            per_step,
            slab,
            &bbox.offsets,
            req.values,
            days,
            out,
        );
        i = j;
    }
    Ok(())
}

/// Writes one slab (`steps × box`) into the cell-major output, in parallel over cells.
fn scatter<T: Raw>(
    buf: &[T],
    per_step: usize,
    slab: &[StepSlot],
    offsets: &[usize],
    rule: &ValueRule,
    days: usize,
    out: &mut [f32],
) {
    out.par_chunks_mut(days)
        .zip(offsets.par_iter())
        .with_min_len(64)
        .for_each(|(row, &off)| {
            for (s, step) in slab.iter().enumerate() {
                row[step.slot] = rule.apply(buf[s * per_step + off].to_f32());
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounding_box_offsets() {
        // 4 × 5 grid; cells (1,3), (2,1), (3,4).
        let cells = [8, 11, 19];
        let b = BoundingBox::new(&cells, 5);
        assert_eq!(b.rows, 1..4);
        assert_eq!(b.cols, 1..5);
        assert_eq!(b.per_step(), 12);
        assert_eq!(b.offsets, vec![2, 4, 11]);
    }

    #[test]
    fn scatter_places_slots_and_applies_rule() {
        let rule = ValueRule {
            fill: Some(1e20),
            missing: vec![],
            scale: 1.0,
            offset: 0.0,
        };
        // Two steps of a 3-value box; cells at box offsets 0 and 2.
        let buf = [1.0f32, 2.0, 3.0, 4.0, 5.0, 1e20];
        let slab = [
            StepSlot {
                time_index: 0,
                slot: 1,
            },
            StepSlot {
                time_index: 1,
                slot: 3,
            },
        ];
        let mut out = vec![f32::NAN; 2 * 4];
        scatter(&buf, 3, &slab, &[0, 2], &rule, 4, &mut out);
        assert!(out[0].is_nan());
        assert_eq!(out[1], 1.0);
        assert_eq!(out[3], 4.0);
        assert_eq!(out[5], 3.0);
        assert!(out[7].is_nan()); // fill
    }
}

//! The fast path against the `netcdf`-crate read path and against the raw values libnetcdf
//! returns (`netcdf::Variable::get_values`, the ground truth), on generated and real files.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::*;
use crate::block::StepSlot;

/// How to write a generated test file.
#[derive(Debug, Clone)]
struct Spec {
    shape: [usize; 3],
    chunk: [usize; 3],
    shuffle: bool,
    /// `None`: contiguous-free chunked storage without deflate.
    deflate: Option<i32>,
    big_endian: bool,
    fill: Option<f32>,
    /// Also write a `missing_value` attribute (different from the fill).
    missing: Option<f32>,
    /// Stored NaN values as well as fill values.
    nans: bool,
    /// Cells that are fill in early steps and valid from a cell-dependent step on, and cells
    /// valid only on the last step.
    late: bool,
    /// Every cell is fill before this step.
    dry_start: usize,
}

impl Spec {
    fn new(shape: [usize; 3], chunk: [usize; 3]) -> Spec {
        Spec {
            shape,
            chunk,
            shuffle: true,
            deflate: Some(5),
            big_endian: false,
            fill: Some(1e20),
            missing: None,
            nans: true,
            late: false,
            dry_start: 0,
        }
    }
}

/// The step from which a "late" cell is valid (`spec.late`), if it is one; the last step for
/// "last day only" cells.
fn late_start(spec: &Spec, y: usize, x: usize) -> Option<usize> {
    let nt = spec.shape[0];
    if !spec.late {
        None
    } else if (y * 13 + x).is_multiple_of(17) {
        Some(nt - 1)
    } else if (y + x).is_multiple_of(11) {
        Some((y * x + 3 * y) % nt)
    } else {
        None
    }
}

/// A known value for `(t, y, x)`: smooth land values, fill over an "ocean" mask, a few NaNs
/// and missing values.
fn value(spec: &Spec, t: usize, y: usize, x: usize) -> f32 {
    if let Some(f) = spec.fill
        && (y * 7 + x * 3).is_multiple_of(5)
    {
        return f;
    }
    if let Some(f) = spec.fill
        && (t < spec.dry_start || late_start(spec, y, x).is_some_and(|t0| t < t0))
    {
        return f;
    }
    if spec.nans && (t + 2 * y + x).is_multiple_of(37) {
        return f32::NAN;
    }
    if let Some(m) = spec.missing
        && (t * 3 + y + 5 * x).is_multiple_of(41)
    {
        return m;
    }
    250.0 + (t as f32) * 0.25 + (y as f32).sin() * 10.0 + (x as f32) * 0.003
}

fn write_file(path: &Path, spec: &Spec) {
    let [nt, ny, nx] = spec.shape;
    let mut f = netcdf::create(path).unwrap();
    f.add_dimension("time", nt).unwrap();
    f.add_dimension("lat", ny).unwrap();
    f.add_dimension("lon", nx).unwrap();
    let mut v = f
        .add_variable::<f32>("tas", &["time", "lat", "lon"])
        .unwrap();
    v.set_chunking(&spec.chunk).unwrap();
    if let Some(level) = spec.deflate {
        v.set_compression(level, spec.shuffle).unwrap();
    }
    if spec.big_endian {
        v.set_endianness(netcdf::Endianness::Big).unwrap();
    }
    if let Some(fill) = spec.fill {
        v.set_fill_value(fill).unwrap();
    }
    if let Some(m) = spec.missing {
        v.put_attribute("missing_value", m).unwrap();
    }
    let mut data = Vec::with_capacity(nt * ny * nx);
    for t in 0..nt {
        for y in 0..ny {
            for x in 0..nx {
                data.push(value(spec, t, y, x));
            }
        }
    }
    v.put_values(&data, ..).unwrap();
    f.close().unwrap();
}

fn rule_for(spec: &Spec) -> ValueRule {
    ValueRule {
        fill: spec.fill,
        missing: spec.missing.into_iter().collect(),
        scale: 1.0,
        offset: 0.0,
    }
}

/// The ground truth: every value through libnetcdf, then the request's rule.
fn reference(path: &Path, req: &BlockRequest<'_>) -> Array2<f32> {
    let file = netcdf::open(path).unwrap();
    let var = file.variable(req.var).unwrap();
    let raw: Vec<f32> = var.get_values(..).unwrap();
    let [nt, ny, nx] = req.shape;
    assert_eq!(raw.len(), nt * ny * nx);
    let mut out = Array2::from_elem((req.cells.len(), req.days), f32::NAN);
    for st in req.steps {
        for (c, &g) in req.cells.iter().enumerate() {
            out[[c, st.slot]] = req.values.apply(raw[st.time_index * ny * nx + g]);
        }
    }
    out
}

/// Bitwise equality (NaN == NaN: both paths produce the canonical `f32::NAN`).
fn assert_same(a: &Array2<f32>, b: &Array2<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
    for ((idx, x), y) in a.indexed_iter().zip(b.iter()) {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}: differs at {idx:?}: fast {x} vs netcdf {y}"
        );
    }
}

struct Case {
    cells: Vec<usize>,
    steps: Vec<StepSlot>,
    days: usize,
}

/// All cells and steps; a sparse cell set; steps with gaps and shifted slots.
fn cases(shape: [usize; 3]) -> Vec<(&'static str, Case)> {
    let [nt, ny, nx] = shape;
    let n = ny * nx;
    let all_steps: Vec<StepSlot> = (0..nt)
        .map(|t| StepSlot {
            time_index: t,
            slot: t,
        })
        .collect();
    let mut sparse: Vec<usize> = (0..n).step_by(97).collect();
    if sparse.last() != Some(&(n - 1)) {
        sparse.push(n - 1);
    }
    // Every third step, one slot later, skipping slot 0 and leaving gaps.
    let gappy: Vec<StepSlot> = (0..nt)
        .filter(|t| t % 3 != 1)
        .map(|t| StepSlot {
            time_index: t,
            slot: t + 1,
        })
        .collect();
    // A block of cells in the middle of the grid, whole rows.
    let rows: Vec<usize> = ((ny / 3) * nx..((ny / 3) + 2).min(ny) * nx).collect();
    vec![
        (
            "all",
            Case {
                cells: (0..n).collect(),
                steps: all_steps.clone(),
                days: nt,
            },
        ),
        (
            "sparse",
            Case {
                cells: sparse,
                steps: all_steps,
                days: nt,
            },
        ),
        (
            "gappy",
            Case {
                cells: rows,
                steps: gappy,
                days: nt + 2,
            },
        ),
    ]
}

/// Runs `f` with the chunks read through HDF5 (`Direct`, as for files with many chunks) or by
/// address (the default for small files), on this thread.
fn with_direct<T>(direct: bool, f: impl FnOnce() -> T) -> T {
    FORCE_DIRECT.with(|d| d.set(direct));
    let out = f();
    FORCE_DIRECT.with(|d| d.set(false));
    out
}

/// [`check_file_once`] with the chunks read by address and through HDF5.
fn check_file(path: &Path, var: &str, rule: &ValueRule) {
    for direct in [false, true] {
        with_direct(direct, || check_file_once(path, var, rule));
    }
}

fn check_file_once(path: &Path, var: &str, rule: &ValueRule) {
    let shape = {
        let f = netcdf::open(path).unwrap();
        let v = f.variable(var).unwrap();
        let d = v.dimensions();
        [d[0].len(), d[1].len(), d[2].len()]
    };
    for (name, case) in cases(shape) {
        let req = BlockRequest {
            var,
            shape,
            cells: &case.cells,
            steps: &case.steps,
            days: case.days,
            values: rule,
        };
        let fast = decode_chunked(path, &req)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: not eligible for the fast path", path.display()));
        assert_same(
            &fast,
            &reference(path, &req),
            &format!("{} {name}", path.display()),
        );
        assert_same(
            &fast,
            &netcdf_path(path, &req),
            &format!("{} {name} (netcdf path)", path.display()),
        );
        check_valid_rows(path, &req, &format!("{} {name}", path.display()));
    }
}

/// `Rows::Valid` equals the reference with its all-NaN rows dropped, whatever the state of the
/// reused output vectors (too small, large with stale contents).
fn check_valid_rows(path: &Path, req: &BlockRequest<'_>, what: &str) {
    let mut want_cells = req.cells.to_vec();
    let want = crate::file::drop_empty_rows(reference(path, req), &mut want_cells);
    let stale = vec![1.5_f32; (req.cells.len() + 3) * req.days + 7];
    for (label, mut values, mut cells) in [
        ("fresh", Vec::new(), Vec::new()),
        ("reused", stale, vec![7_usize; 5]),
        ("small", vec![2.5_f32; 3], vec![1]),
    ] {
        assert!(
            decode_chunked_into(path, req, None, Rows::Valid, &mut values, &mut cells).unwrap(),
            "{what}: eligible"
        );
        assert_eq!(cells, want_cells, "{what} {label}: data cells");
        assert!(cells.windows(2).all(|w| w[0] < w[1]), "{what}: ascending");
        let got = Array2::from_shape_vec((cells.len(), req.days), values).unwrap();
        assert_same(&got, &want, &format!("{what} {label} (valid rows)"));
    }
}

/// The crate's other read path on the same request.
fn netcdf_path(path: &Path, req: &BlockRequest<'_>) -> Array2<f32> {
    let file = netcdf::open(path).unwrap();
    crate::netcdf_read::decode_netcdf(path, &file, req, crate::meta::Dtype::F32).unwrap()
}

fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

fn check_spec(spec: &Spec) {
    let (_dir, path) = tmp("gen.nc");
    write_file(&path, spec);
    check_file(&path, "tas", &rule_for(spec));
}

#[test]
fn one_day_per_chunk_shuffle_deflate() {
    check_spec(&Spec::new([12, 30, 72], [1, 30, 72]));
}

#[test]
fn multi_day_chunks_with_partial_edges() {
    // 7 × 11 × 13 chunks over 20 × 25 × 40: partial edge chunks on every axis.
    check_spec(&Spec::new([20, 25, 40], [7, 11, 13]));
}

#[test]
fn deflate_without_shuffle() {
    let mut spec = Spec::new([9, 17, 23], [4, 17, 10]);
    spec.shuffle = false;
    spec.deflate = Some(1);
    check_spec(&spec);
}

#[test]
fn big_endian_floats() {
    let mut spec = Spec::new([10, 14, 19], [3, 5, 19]);
    spec.big_endian = true;
    check_spec(&spec);
    spec.shuffle = false;
    check_spec(&spec);
}

#[test]
fn fill_and_missing_values_general_rule() {
    let mut spec = Spec::new([8, 16, 16], [1, 8, 16]);
    spec.missing = Some(-999.0);
    check_spec(&spec);
    // Scale and offset go through `ValueRule::apply` exactly.
    let (_dir, path) = tmp("scaled.nc");
    write_file(&path, &spec);
    let rule = ValueRule {
        fill: spec.fill,
        missing: vec![-999.0],
        scale: 0.5,
        offset: -3.0,
    };
    check_file(&path, "tas", &rule);
    // No fill value, no NaN handling beyond canonical NaN.
    let rule = ValueRule {
        fill: None,
        missing: vec![],
        scale: 1.0,
        offset: 0.0,
    };
    check_file(&path, "tas", &rule);
}

/// Cells that only become valid after the first batch (of 32 steps), including cells valid only
/// on the last day, must be data cells, in storage order, with the same values as the netcdf
/// path's all-data block.
#[test]
fn valid_rows_include_cells_valid_only_in_later_batches() {
    for chunk in [[1, 30, 40], [7, 11, 13], [3, 30, 40]] {
        let mut spec = Spec::new([80, 30, 40], chunk);
        spec.late = true;
        let (_dir, path) = tmp("late.nc");
        write_file(&path, &spec);
        let rule = rule_for(&spec);
        let (cells, steps) = all_of(spec.shape);
        let req = request_all(spec.shape, &cells, &steps, &rule);
        let what = format!("late {chunk:?}");
        check_valid_rows(&path, &req, &what);

        // The file really has such cells: valid only on the last day, first valid after step
        // 32, and all of them are in the block.
        let reference = reference(&path, &req);
        let first_valid = |g: usize| reference.row(g).iter().position(|v| !v.is_nan());
        let last_only: Vec<usize> = (0..cells.len())
            .filter(|&g| first_valid(g) == Some(79))
            .collect();
        let later: Vec<usize> = (0..cells.len())
            .filter(|&g| first_valid(g).is_some_and(|t| t >= 32))
            .collect();
        assert!(last_only.len() >= 5, "{what}: {last_only:?}");
        assert!(later.len() > last_only.len() + 5, "{what}: {later:?}");
        let (mut values, mut kept) = (Vec::new(), Vec::new());
        decode_chunked_into(&path, &req, None, Rows::Valid, &mut values, &mut kept).unwrap();
        for g in later {
            let row = kept.binary_search(&g).expect("late cell kept");
            let t = first_valid(g).unwrap();
            assert_eq!(values[row * 80 + t], reference[[g, t]], "{what}: cell {g}");
            assert!(values[row * 80..row * 80 + t].iter().all(|v| v.is_nan()));
        }
        // Through the netcdf path's all-data selection: identical.
        let nc = netcdf_path(&path, &req);
        let mut nc_cells = cells.clone();
        let nc = crate::file::drop_empty_rows(nc, &mut nc_cells);
        assert_eq!(kept, nc_cells, "{what}: same cells as the netcdf path");
        let fast = Array2::from_shape_vec((kept.len(), 80), values).unwrap();
        assert_same(&fast, &nc, &format!("{what} vs netcdf path"));
    }
}

/// No cell is valid in the first batches: the rows are created later, NaN on the earlier days.
/// With gaps in the steps, uncovered slots stay NaN as well.
#[test]
fn valid_rows_when_early_batches_are_all_missing() {
    let mut spec = Spec::new([75, 20, 24], [1, 20, 24]);
    spec.dry_start = 40;
    spec.late = true;
    let (_dir, path) = tmp("dry.nc");
    write_file(&path, &spec);
    let rule = rule_for(&spec);
    for (name, case) in cases(spec.shape) {
        let req = BlockRequest {
            var: "tas",
            shape: spec.shape,
            cells: &case.cells,
            steps: &case.steps,
            days: case.days,
            values: &rule,
        };
        check_valid_rows(&path, &req, &format!("dry start {name}"));
    }
    // Only the first 40 (all missing) steps: no data cells at all.
    let (cells, steps) = all_of(spec.shape);
    let req = BlockRequest {
        steps: &steps[..40],
        ..request_all(spec.shape, &cells, &steps, &rule)
    };
    let (mut values, mut kept) = (vec![1.0; 10], vec![3]);
    assert!(decode_chunked_into(&path, &req, None, Rows::Valid, &mut values, &mut kept).unwrap());
    assert!(kept.is_empty() && values.is_empty());
}

#[test]
fn unsorted_and_empty_requests() {
    let spec = Spec::new([6, 10, 12], [2, 10, 12]);
    let (_dir, path) = tmp("small.nc");
    write_file(&path, &spec);
    let rule = rule_for(&spec);
    let cells = [3, 50, 119];
    let base = BlockRequest {
        var: "tas",
        shape: spec.shape,
        cells: &cells,
        steps: &[],
        days: 6,
        values: &rule,
    };
    // No steps: all NaN, same shape.
    let fast = decode_chunked(&path, &base).unwrap().unwrap();
    assert_same(&fast, &reference(&path, &base), "no steps");
    // No cells.
    let steps = [StepSlot {
        time_index: 2,
        slot: 0,
    }];
    let req = BlockRequest {
        cells: &[],
        steps: &steps,
        ..base.clone()
    };
    assert_eq!(
        decode_chunked(&path, &req).unwrap().unwrap().shape(),
        &[0, 6]
    );
    // Broken contract (cell outside the grid, descending cells): left to the netcdf path.
    let req = BlockRequest {
        cells: &[5, 120],
        steps: &steps,
        ..base.clone()
    };
    assert!(decode_chunked(&path, &req).unwrap().is_none());
    let req = BlockRequest {
        cells: &[5, 4],
        steps: &steps,
        ..base.clone()
    };
    assert!(decode_chunked(&path, &req).unwrap().is_none());
    // Wrong shape or variable: not eligible.
    let req = BlockRequest {
        shape: [6, 10, 13],
        steps: &steps,
        ..base.clone()
    };
    assert!(decode_chunked(&path, &req).unwrap().is_none());
    let req = BlockRequest {
        var: "nope",
        steps: &steps,
        ..base
    };
    assert!(decode_chunked(&path, &req).unwrap().is_none());
}

fn request_all<'a>(
    shape: [usize; 3],
    cells: &'a [usize],
    steps: &'a [StepSlot],
    rule: &'a ValueRule,
) -> BlockRequest<'a> {
    BlockRequest {
        var: "tas",
        shape,
        cells,
        steps,
        days: shape[0],
        values: rule,
    }
}

fn all_of(shape: [usize; 3]) -> (Vec<usize>, Vec<StepSlot>) {
    (
        (0..shape[1] * shape[2]).collect(),
        (0..shape[0])
            .map(|t| StepSlot {
                time_index: t,
                slot: t,
            })
            .collect(),
    )
}

#[test]
fn ineligible_files_return_none() {
    let dir = tempfile::tempdir().unwrap();
    let shape = [4, 6, 8];
    let (cells, steps) = all_of(shape);
    let rule = ValueRule {
        fill: Some(1e20),
        missing: vec![],
        scale: 1.0,
        offset: 0.0,
    };
    let req = request_all(shape, &cells, &steps, &rule);
    let data: Vec<f32> = (0..4 * 6 * 8).map(|i| i as f32).collect();

    // NetCDF-3 classic.
    let p = dir.path().join("classic.nc");
    let mut f = netcdf::create_with(&p, netcdf::Options::default()).unwrap();
    for (d, n) in [("time", 4), ("lat", 6), ("lon", 8)] {
        f.add_dimension(d, n).unwrap();
    }
    f.add_variable::<f32>("tas", &["time", "lat", "lon"])
        .unwrap();
    f.enddef().unwrap();
    f.variable_mut("tas")
        .unwrap()
        .put_values(&data, ..)
        .unwrap();
    f.close().unwrap();
    assert!(decode_chunked(&p, &req).unwrap().is_none(), "netcdf-3");

    // NetCDF-4 contiguous; chunked without any filter; a double variable; a short variable.
    let p = dir.path().join("nc4.nc");
    let mut f = netcdf::create(&p).unwrap();
    for (d, n) in [("time", 4), ("lat", 6), ("lon", 8)] {
        f.add_dimension(d, n).unwrap();
    }
    f.add_variable::<f32>("contig", &["time", "lat", "lon"])
        .unwrap()
        .put_values(&data, ..)
        .unwrap();
    let mut v = f
        .add_variable::<f32>("nofilter", &["time", "lat", "lon"])
        .unwrap();
    v.set_chunking(&[1, 6, 8]).unwrap();
    v.put_values(&data, ..).unwrap();
    let mut v = f
        .add_variable::<f64>("dbl", &["time", "lat", "lon"])
        .unwrap();
    v.set_chunking(&[1, 6, 8]).unwrap();
    v.set_compression(5, true).unwrap();
    v.put_values(&data.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), ..)
        .unwrap();
    let mut v = f
        .add_variable::<i16>("short", &["time", "lat", "lon"])
        .unwrap();
    v.set_chunking(&[1, 6, 8]).unwrap();
    v.set_compression(5, true).unwrap();
    v.put_values(&data.iter().map(|&x| x as i16).collect::<Vec<_>>(), ..)
        .unwrap();
    // Only the first two days written: later chunks have no storage.
    let mut v = f
        .add_variable::<f32>("partial", &["time", "lat", "lon"])
        .unwrap();
    v.set_chunking(&[1, 6, 8]).unwrap();
    v.set_compression(5, true).unwrap();
    v.put_values(&data[..2 * 48], (..2, .., ..)).unwrap();
    f.close().unwrap();
    for var in ["contig", "nofilter", "dbl", "short", "partial"] {
        let req = BlockRequest { var, ..req.clone() };
        for direct in [false, true] {
            assert!(
                with_direct(direct, || decode_chunked(&p, &req))
                    .unwrap()
                    .is_none(),
                "{var} must not be eligible (direct: {direct})"
            );
        }
    }
    // Only the first two (written) days of `partial`: eligible, and exact.
    let two: Vec<StepSlot> = steps[..2].to_vec();
    let req2 = BlockRequest {
        var: "partial",
        steps: &two,
        ..req.clone()
    };
    for direct in [false, true] {
        let fast = with_direct(direct, || decode_chunked(&p, &req2))
            .unwrap()
            .expect("written chunks are eligible");
        assert_same(&fast, &reference(&p, &req2), "partial, written days");
    }

    // HDF5 with fletcher32 in the pipeline.
    let p = dir.path().join("fletcher.h5");
    hdf5::sync::sync(|| {
        let f = hdf5::File::create(&p).unwrap();
        let arr = ndarray::Array3::from_shape_vec((4, 6, 8), data.clone()).unwrap();
        f.new_dataset_builder()
            .with_data(&arr)
            .chunk((1, 6, 8))
            .shuffle()
            .deflate(5)
            .fletcher32()
            .create("tas")
            .unwrap();
        let g = f
            .new_dataset_builder()
            .with_data(&arr)
            .chunk((1, 6, 8))
            .shuffle()
            .deflate(5)
            .create("plain");
        g.unwrap();
    });
    assert!(decode_chunked(&p, &req).unwrap().is_none(), "fletcher32");
    // The same data without fletcher32, written by plain HDF5, is eligible and exact.
    let ok: Vec<f32> = decode_chunked(
        &p,
        &BlockRequest {
            var: "plain",
            ..req.clone()
        },
    )
    .unwrap()
    .expect("shuffle+deflate HDF5 dataset is eligible")
    .t()
    .iter()
    .copied()
    .collect();
    assert_eq!(ok, data);
}

/// Overwrites the middle of one chunk with garbage, or reads a truncated copy: errors name the
/// file, the variable and the chunk's time index.
#[test]
fn corrupt_and_truncated_chunks_are_errors() {
    let spec = Spec::new([6, 20, 30], [1, 20, 30]);
    let (dir, path) = tmp("ok.nc");
    write_file(&path, &spec);
    let (cells, steps) = all_of(spec.shape);
    let rule = rule_for(&spec);
    let req = request_all(spec.shape, &cells, &steps, &rule);
    let (layout, _) = hdf5::sync::sync(|| Layout::probe(&path, &req)).unwrap();
    let loc = layout.chunks[4].unwrap();

    // Garbage in chunk 4 (time index 4).
    let bad = dir.path().join("bad.nc");
    let mut bytes = std::fs::read(&path).unwrap();
    let a = loc.addr as usize + 2;
    for b in &mut bytes[a..a + (loc.size as usize - 4).min(64)] {
        *b ^= 0x5a;
    }
    std::fs::write(&bad, &bytes).unwrap();
    for direct in [false, true] {
        let err = with_direct(direct, || decode_chunked(&bad, &req)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{msg}");
        assert!(
            msg.contains("bad.nc") && msg.contains("`tas`") && msg.contains("time index 4"),
            "{direct}: {msg}"
        );
    }

    // A short read: the file ends inside chunk 4 (HDF5 itself refuses to open a truncated
    // file, so the layout is taken from the intact file; the reads go to the truncated one).
    let short = dir.path().join("short.nc");
    std::fs::write(&short, &std::fs::read(&path).unwrap()[..a + 10]).unwrap();
    let plan = Plan::new(&req, &layout);
    for rows in [Rows::Requested, Rows::Valid] {
        let (mut values, mut kept) = (Vec::new(), Vec::new());
        let mut out = Output {
            values: &mut values,
            cells: &mut kept,
            main: 0,
            runs: Vec::new(),
            by_spatial: vec![Vec::new(); plan.spatial.len()],
            sp_rows: vec![0; plan.spatial.len()],
            started: false,
        };
        let err = decode_into(
            &Source {
                file: Some(&File::open(&short).unwrap()),
                direct: None,
                remote: None,
            },
            &short,
            &req,
            &layout,
            &plan,
            rows,
            &mut out,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("short.nc") && msg.contains("time index 4") && msg.contains("truncated"),
            "{rows:?}: {msg}"
        );
    }
    // Through the public entry point a truncated file is never silently accepted: HDF5 refuses
    // it (fallback, where libnetcdf reports it) or the chunk read fails.
    for direct in [false, true] {
        match with_direct(direct, || decode_chunked(&short, &req)) {
            Ok(None) => assert!(netcdf::open(&short).is_err() || reference_fails(&short, &req)),
            Ok(Some(_)) => panic!("truncated file decoded"),
            Err(e) => assert!(matches!(e, DecodeError::Corrupt { .. }), "{e}"),
        }
    }
}

fn reference_fails(path: &Path, req: &BlockRequest<'_>) -> bool {
    let f = netcdf::open(path).unwrap();
    f.variable(req.var)
        .unwrap()
        .get_values::<f32, _>(..)
        .is_err()
}

/// Both paths from several threads at once on shared and separate files: no crash, same data.
#[test]
fn concurrent_fast_and_netcdf_paths() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        Spec::new([10, 24, 36], [1, 24, 36]),
        Spec::new([9, 20, 30], [4, 7, 30]),
    ];
    let paths: Vec<PathBuf> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = dir.path().join(format!("c{i}.nc"));
            write_file(&p, s);
            p
        })
        .collect();
    std::thread::scope(|scope| {
        for th in 0..6 {
            let (paths, specs) = (&paths, &specs);
            scope.spawn(move || {
                for round in 0..8 {
                    let i = (th + round) % 2;
                    let (cells, steps) = all_of(specs[i].shape);
                    let rule = rule_for(&specs[i]);
                    let req = request_all(specs[i].shape, &cells, &steps, &rule);
                    // Keep a netcdf handle open on the same file while the fast path runs.
                    let nc = netcdf::open(&paths[i]).unwrap();
                    let fast = with_direct(th % 2 == 1, || decode_chunked(&paths[i], &req))
                        .unwrap()
                        .unwrap();
                    let slow = netcdf_path(&paths[i], &req);
                    drop(nc);
                    assert_same(&fast, &slow, "concurrent");
                }
            });
        }
    });
}

const REALDATA: &str = "/work/shared/realdata";

/// The real files: every float variable that is chunked shuffle+deflate (or deflate only) is
/// decoded by the fast path and equals libnetcdf's values; the others are not eligible.
#[test]
fn real_files_match_netcdf() {
    let dir = Path::new(REALDATA);
    if !dir.is_dir() {
        println!("SKIPPED: {REALDATA} is absent");
        return;
    }
    let files: [(&str, &str, bool); 11] = [
        ("pr_1980.nc", "pr", true),
        ("pr_1981.nc", "pr", true),
        (
            "tasmax_day_MPI-ESM1-2-LR_dcppA-hindcast_s1980-r1i1p1f1_gn_19801101-19901231.nc",
            "tasmax",
            true,
        ),
        (
            "tasmin_day_HadGEM3-GC31-MM_dcppA-hindcast_s1960-r2i1p1f2_gn_19610101-19611230.nc",
            "tasmin",
            true,
        ),
        (
            "tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20000101-20091231.nc",
            "tas",
            true,
        ),
        (
            "pr_day_EC-Earth3_dcppA-hindcast_s1961-r6i2p1f1_gr_19620101-19621231.nc",
            "pr",
            true,
        ),
        ("tas_day_MIROC6_ssp119_r1i1p1f1_gn_20150101.nc", "tas", true),
        (
            "tas_day_EC-EARTH_historical_r1i1p1_18500101-18591231.nc",
            "tas",
            false,
        ),
        (
            "mrsos_day_HadGEM2-ES_rcp45_r1i1p1_20051201-20151130.nc",
            "mrsos",
            false,
        ),
        (
            "mrsos_day_HadGEM2-ES_rcp85_r1i1p1_20051201.nc",
            "mrsos",
            false,
        ),
        (
            "prsn_day_CanESM5_historical_r1i1p1f1_gn_19910101-20101231.nc",
            "prsn",
            true,
        ),
    ];
    let rule = ValueRule {
        fill: Some(1e20),
        missing: vec![1e20],
        scale: 1.0,
        offset: 0.0,
    };
    for (name, var, eligible) in files {
        let path = dir.join(name);
        if !path.exists() {
            println!("SKIPPED: {} is absent", path.display());
            continue;
        }
        if eligible {
            check_file(&path, var, &rule);
        } else {
            let f = netcdf::open(&path).unwrap();
            let d: Vec<usize> = f
                .variable(var)
                .unwrap()
                .dimensions()
                .iter()
                .map(|d| d.len())
                .collect();
            let shape = [d[0], d[1], d[2]];
            let (cells, steps) = all_of(shape);
            let req = BlockRequest {
                var,
                ..request_all(shape, &cells, &steps, &rule)
            };
            assert!(
                decode_chunked(&path, &req).unwrap().is_none(),
                "{name} must not be eligible"
            );
        }
    }
}

//! Decoding the committed fixtures (and files written by the fixtures generator) against the
//! values the generator says every `(t, lat, lon)` must hold.
//!
//! The expected day slot of each time step is derived here from the fixture's own calendar
//! (`fixtures::Calendar::dates_of_year`) and DESIGN §2, independently of `nexdecode`'s code:
//! the real day of year of the model's (month, day) (absent → dropped), and for `360_day`
//! xarray's `round_half_even(D * doy / 360)`.

use std::path::Path;

use fixtures::set::{self, Fixture};
use fixtures::{
    Calendar as FxCalendar, CoordType, Encoding, GridSpec, MissingSpec, Storage,
    TimeAxis as FxTimeAxis, write_grid,
};
use ndarray::Array2;
use nexdecode::{
    CellIndex, CellSelection, DecodeError, DecodeOptions, GridFile, ReadPath, YearBlock,
};

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// 0-based real (Gregorian) day of year of (month, day), or None when the date does not exist.
fn real_doy(year: i32, month: u32, day: u32) -> Option<usize> {
    let len = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day == 0 || day > len[month as usize - 1] {
        return None;
    }
    Some(len[..month as usize - 1].iter().sum::<u32>() as usize + day as usize - 1)
}

/// (year, month, day) of every time step of a fixture, from its calendar and first value.
fn fixture_dates(spec: &GridSpec) -> Vec<(i32, u32, u32)> {
    let cal = spec.time.calendar.unwrap_or(FxCalendar::Standard);
    let units = fixtures::TimeUnits::parse(&spec.time.units).unwrap();
    let v0 = spec.time.values[0];
    let start = (1..=2300)
        .find(|&y| {
            [0.0, 0.5]
                .iter()
                .any(|&f| (units.value_of(cal, y, 1, 1, f) - v0).abs() < 1e-6)
        })
        .expect("fixture starts on Jan 1");
    let mut out = Vec::new();
    let mut y = start;
    while out.len() < spec.time.len() {
        out.extend(cal.dates_of_year(y).into_iter().map(|(m, d)| (y, m, d)));
        y += 1;
    }
    out.truncate(spec.time.len());
    out
}

/// The expected `data cells × days` block of `year` (cells with at least one valid value).
fn expected_block(spec: &GridSpec, year: i32) -> (Vec<CellIndex>, Array2<f32>) {
    let cal = spec.time.calendar.unwrap_or(FxCalendar::Standard);
    let days = if is_leap(year) { 366 } else { 365 };
    let (nlat, nlon) = (spec.lat.len(), spec.lon.len());
    let mut full = Array2::from_elem((nlat * nlon, days), f32::NAN);
    for (t, &(y, m, d)) in fixture_dates(spec).iter().enumerate() {
        if y != year {
            continue;
        }
        let slot = if cal == FxCalendar::Day360 {
            let doy = f64::from((m - 1) * 30 + d);
            Some((days as f64 * doy / 360.0).round_ties_even() as usize - 1)
        } else {
            real_doy(y, m, d)
        };
        let Some(slot) = slot else { continue };
        for i in 0..nlat {
            for j in 0..nlon {
                if let Some(v) = spec.expected(t, i, j) {
                    full[[i * nlon + j, slot]] = v;
                }
            }
        }
    }
    let mut cells = Vec::new();
    let mut rows = Vec::new();
    for (k, row) in full.rows().into_iter().enumerate() {
        if row.iter().any(|v| !v.is_nan()) {
            cells.push(CellIndex {
                lat: k / nlon,
                lon: k % nlon,
            });
            rows.extend(row.iter().copied());
        }
    }
    let n = cells.len();
    (cells, Array2::from_shape_vec((n, days), rows).unwrap())
}

/// Bitwise equality with NaN == NaN.
fn assert_same(a: &Array2<f32>, b: &Array2<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    for ((idx, x), y) in a.indexed_iter().zip(b.iter()) {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: at {idx:?}: {x} vs {y}"
        );
    }
}

fn decode(file: &GridFile, year: i32, sel: &CellSelection, path: ReadPath) -> YearBlock {
    let opts = DecodeOptions {
        read_path: path,
        ..DecodeOptions::default()
    };
    file.decode_year(year, sel, &opts)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the spec's storage is one the chunked fast path takes (NetCDF-4 chunks, deflate with
/// or without shuffle, f32).
fn fast_path_eligible(spec: &GridSpec) -> bool {
    matches!(
        spec.storage,
        Storage::Chunked {
            deflate: Some(_),
            ..
        }
    ) && spec.encoding == Encoding::F32
}

fn check_fixture(path: &Path, spec: &GridSpec) {
    let file = GridFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let info = file.variable();
    assert_eq!(info.name, spec.var.name);
    assert_eq!(info.units.as_deref(), Some(spec.var.units.as_str()));
    assert_eq!(info.shape, spec.shape());
    assert_eq!(file.grid().lat(), spec.lat.as_slice());
    assert_eq!(file.grid().lon(), spec.lon.as_slice());
    let mut years: Vec<i32> = fixture_dates(spec).iter().map(|d| d.0).collect();
    years.dedup();
    assert_eq!(file.years(), years, "{}", path.display());
    for year in years {
        let (cells, expected) = expected_block(spec, year);
        let name = format!("{} {year}", path.display());
        let netcdf = decode(&file, year, &CellSelection::AllData, ReadPath::Netcdf);
        assert_eq!(netcdf.cells, cells, "{name}: data cells");
        assert_eq!(netcdf.len(), spec.data_cells(), "{name}: data cell count");
        assert_same(&netcdf.values, &expected, &format!("{name} netcdf path"));
        let auto = decode(&file, year, &CellSelection::AllData, ReadPath::Auto);
        assert_eq!(auto.cells, cells);
        assert_same(
            &auto.values,
            &netcdf.values,
            &format!("{name} auto vs netcdf"),
        );
        // Files the fast path can read must really be read by it: `ReadPath::Chunked` fails
        // instead of falling back.
        if fast_path_eligible(spec) {
            let fast = decode(&file, year, &CellSelection::AllData, ReadPath::Chunked);
            assert_eq!(fast.cells, cells, "{name}: fast path cells");
            assert_same(
                &fast.values,
                &netcdf.values,
                &format!("{name} fast path vs netcdf"),
            );
        }

        // A selection: every third cell, masked ones included, given out of order.
        let mut sel: Vec<CellIndex> = (0..spec.lat.len() * spec.lon.len())
            .step_by(3)
            .map(|k| CellIndex {
                lat: k / spec.lon.len(),
                lon: k % spec.lon.len(),
            })
            .collect();
        sel.reverse();
        sel.push(sel[0]);
        for rp in [ReadPath::Netcdf, ReadPath::Auto] {
            let b = decode(&file, year, &CellSelection::Cells(sel.clone()), rp);
            assert_eq!(b.len(), sel.len() - 1, "{name}: duplicates removed");
            assert!(b.cells.windows(2).all(|w| w[0] < w[1]));
            for (r, c) in b.cells.iter().enumerate() {
                match expected
                    .rows()
                    .into_iter()
                    .zip(&cells)
                    .find(|(_, ec)| *ec == c)
                {
                    Some((row, _)) => assert_same(
                        &b.series(r).to_owned().insert_axis(ndarray::Axis(0)),
                        &row.to_owned().insert_axis(ndarray::Axis(0)),
                        &name,
                    ),
                    None => assert_eq!(b.valid_count_row(r), 0, "{name}: masked cell {c:?}"),
                }
            }
        }
    }
}

#[test]
fn committed_fixtures_decode_to_the_generator_values() {
    let all = set::committed();
    assert!(all.len() >= 15, "fixture set is present");
    for Fixture { spec, .. } in &all {
        let f = all.iter().find(|f| f.spec == *spec).unwrap();
        check_fixture(&f.path(), spec);
    }
}

/// Every committed file with a NEX-GDDP (CMIP5) structure — float `lat`/`lon`, the stray
/// `time` attribute and `coordinates = "height"` without a `height` variable, small chunks —
/// is read by the fast path, and LOCA files carry their bounds variables.
#[test]
fn real_layout_traits_are_in_the_committed_set() {
    fixtures::quiet_hdf5_errors();
    let all = set::committed();
    let nex_gddp: Vec<_> = all
        .iter()
        .filter(|f| f.spec.coord_type == CoordType::F32)
        .collect();
    assert!(nex_gddp.len() >= 4, "NEX-GDDP job + variant");
    let mut small_chunks = 0;
    for f in &nex_gddp {
        assert!(fast_path_eligible(&f.spec), "{}", f.rel_path);
        let nc = netcdf::open(f.path()).unwrap();
        let lat = nc.variable("lat").unwrap();
        assert_eq!(
            lat.vartype(),
            netcdf::types::NcVariableType::Float(netcdf::types::FloatType::F32)
        );
        let v = nc.variable(&f.spec.var.name).unwrap();
        assert!(v.attribute("time").is_some() && v.attribute("coordinates").is_some());
        assert!(nc.variable("height").is_none());
        let Storage::Chunked { chunks, .. } = f.spec.storage else {
            unreachable!()
        };
        let [_, ny, nx] = f.spec.shape();
        small_chunks += usize::from(chunks[1] < ny && chunks[2] < nx);
        let file = GridFile::open(f.path()).unwrap();
        assert_eq!(file.grid().lat(), f.spec.lat.as_slice(), "{}", f.rel_path);
        let opts = DecodeOptions {
            read_path: ReadPath::Chunked,
            ..DecodeOptions::default()
        };
        file.decode_year(2008, &CellSelection::AllData, &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", f.rel_path));
    }
    assert_eq!(small_chunks, nex_gddp.len(), "several chunks per day");
    for f in all.iter().filter(|f| f.rel_path.starts_with("loca/")) {
        let nc = netcdf::open(f.path()).unwrap();
        assert_eq!(nc.dimension("bnds").map(|d| d.len()), Some(2));
        for b in ["lat_bnds", "lon_bnds", "time_bnds"] {
            assert!(nc.variable(b).is_some(), "{}: {b}", f.rel_path);
        }
        // The data variable is still found among them.
        assert_eq!(
            GridFile::open(f.path()).unwrap().variable().name,
            f.spec.var.name
        );
    }
}

/// NEX-GDDP-structured files with the real chunk shapes `1 × 90 × 180` and `30 × 72 × 144`
/// (on a 92 × 184 window: partial edge chunks on both spatial axes), written by the generator
/// and checked against its formula on the netcdf path and on the fast path, which must take
/// them. To keep the test quick the files hold only the first 65 days of the year (two full
/// 30-day chunks and a partial one; three 32-step batches of 1-day chunks), decoded with
/// `allow_incomplete_year`.
#[test]
fn nex_gddp_real_chunk_shapes_on_the_fast_path() {
    let dir = temp_dir();
    for (chunks, var) in [([1, 90, 180], "tasmax"), ([30, 72, 144], "pr")] {
        let mut spec =
            GridSpec::nex_gddp(var, "rcp45", "MIROC5", 2008, (20.0, 43.0), (-120.0, -74.0));
        spec.time.values.truncate(65);
        assert_eq!(spec.shape(), [65, 92, 184]);
        spec.storage = Storage::Chunked {
            chunks,
            shuffle: true,
            deflate: Some(5),
            classic_model: true,
        };
        let path = dir.path().join(spec.file_name());
        write_grid(&path, &spec).unwrap();
        let file = GridFile::open(&path).unwrap();
        let (cells, expected) = expected_block(&spec, 2008);
        assert!(spec.masked_cells() > 0 && !cells.is_empty());
        let what = format!("{var} chunks {chunks:?}");
        let decode = |sel: &CellSelection, read_path| {
            let opts = DecodeOptions {
                read_path,
                allow_incomplete_year: true,
                ..DecodeOptions::default()
            };
            file.decode_year(2008, sel, &opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
        };
        for rp in [ReadPath::Netcdf, ReadPath::Chunked] {
            let b = decode(&CellSelection::AllData, rp);
            assert_eq!(b.cells, cells, "{what} {rp:?}: data cells");
            assert_same(&b.values, &expected, &format!("{what} {rp:?}"));
        }
        // A scattered selection across chunk borders, masked cells included.
        let sel: Vec<CellIndex> = (0..92 * 184)
            .step_by(89)
            .map(|k| CellIndex {
                lat: k / 184,
                lon: k % 184,
            })
            .collect();
        let fast = decode(&CellSelection::Cells(sel.clone()), ReadPath::Chunked);
        let slow = decode(&CellSelection::Cells(sel), ReadPath::Netcdf);
        assert_eq!(fast.cells, slow.cells);
        assert_same(&fast.values, &slow.values, &format!("{what} selection"));
    }
}

/// More chunks than the fast path reads addresses for (`INDEX_MAX_CHUNKS` = 2048): 366 days ×
/// 9 chunks of 1 × 8 × 8, whose stored bytes come through `H5Dread_chunk`; the same values as
/// the netcdf path and the formula.
#[test]
fn many_small_chunks_on_the_fast_path() {
    let dir = temp_dir();
    let mut spec = GridSpec::nex_gddp(
        "tasmin",
        "rcp85",
        "MIROC5",
        2008,
        (30.0, 36.0),
        (-100.0, -94.0),
    );
    assert_eq!(spec.shape(), [366, 24, 24]);
    spec.storage = Storage::Chunked {
        chunks: [1, 8, 8],
        shuffle: true,
        deflate: Some(5),
        classic_model: true,
    };
    let path = dir.path().join(spec.file_name());
    write_grid(&path, &spec).unwrap();
    check_fixture(&path, &spec);
}

#[test]
fn noleap_fixture_in_leap_year_has_empty_feb29() {
    let f = set::committed()
        .into_iter()
        .find(|f| f.rel_path.ends_with("tas_missing_value_double_holes.nc"))
        .unwrap();
    let file = GridFile::open(f.path()).unwrap();
    let block = decode(&file, 2012, &CellSelection::AllData, ReadPath::Auto);
    assert_eq!(block.days(), 366);
    assert!((0..block.len()).all(|i| !block.is_valid(i, 59)));
    assert!((0..block.len()).all(|i| block.is_valid(i, 58) || block.is_valid(i, 60)));
    // missing_value stored as double (1e20) on a float variable: masked cells decode to missing.
    assert_eq!(file.variable().missing, vec![1e20]);
}

#[test]
fn day360_fixture_spreads_over_365_slots() {
    let f = set::committed()
        .into_iter()
        .find(|f| f.rel_path.ends_with("tasmax_nc3_classic_360day.nc"))
        .unwrap();
    let file = GridFile::open(f.path()).unwrap();
    let block = decode(&file, 2015, &CellSelection::AllData, ReadPath::Auto);
    assert_eq!(block.days(), 365);
    let empty: Vec<usize> = (0..365)
        .filter(|&d| (0..block.len()).all(|i| !block.is_valid(i, d)))
        .collect();
    // 1-based real days 37, 109, 183, 255, 329 (xarray convert_calendar docs, align_on="year").
    assert_eq!(empty, vec![36, 108, 182, 254, 328]);
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn small_spec(var: &str, calendar: FxCalendar, year: i32) -> GridSpec {
    let time = FxTimeAxis::daily_noon(year, calendar, "days since 1950-01-01");
    GridSpec::new(
        var,
        vec![10.0, 10.5, 11.0],
        vec![20.0, 20.5, 21.0, 21.5],
        time,
    )
}

#[test]
fn calendars_written_by_the_generator() {
    let dir = temp_dir();
    for cal in [
        FxCalendar::Standard,
        FxCalendar::Gregorian,
        FxCalendar::ProlepticGregorian,
        FxCalendar::NoLeap,
        FxCalendar::Day365,
        FxCalendar::AllLeap,
        FxCalendar::Day366,
        FxCalendar::Day360,
        FxCalendar::Julian,
    ] {
        for year in [2000, 2001, 2100] {
            let spec = small_spec("tas", cal, year);
            let path = dir.path().join(format!("{}_{year}.nc", cal.cf_name()));
            write_grid(&path, &spec).unwrap();
            check_fixture(&path, &spec);
        }
    }
}

#[test]
fn locate_uses_nearest_data_cell_within_radius() {
    let f = set::committed()
        .into_iter()
        .find(|f| f.rel_path.starts_with("nex-gddp/tasmax"))
        .unwrap();
    let spec = &f.spec;
    let file = GridFile::open(f.path()).unwrap();
    let year = 2008;
    let masked = |c: CellIndex| spec.is_masked(c.lat, c.lon);
    let haversine = |la1: f64, lo1: f64, la2: f64, lo2: f64| {
        let (p1, p2) = (la1.to_radians(), la2.to_radians());
        let h = ((p2 - p1) / 2.0).sin().powi(2)
            + p1.cos() * p2.cos() * ((lo2 - lo1).to_radians() / 2.0).sin().powi(2);
        2.0 * 6371.0088 * h.sqrt().asin()
    };
    // A masked (ocean) cell, moved a little: the nearest data cell must be found by brute force.
    let (mi, mj) = (0..spec.lat.len())
        .flat_map(|i| (0..spec.lon.len()).map(move |j| (i, j)))
        .find(|&(i, j)| {
            spec.is_masked(i, j) && (j + 1 < spec.lon.len() && !spec.is_masked(i, j + 1))
        })
        .expect("a coastal ocean cell");
    let (qlat, qlon) = (spec.lat[mi] + 0.01, spec.lon[mj] - 360.0 + 0.02); // query in -180..180
    let mut best = None::<(CellIndex, f64)>;
    for i in 0..spec.lat.len() {
        for j in 0..spec.lon.len() {
            let c = CellIndex { lat: i, lon: j };
            if masked(c) {
                continue;
            }
            let d = haversine(qlat, qlon, spec.lat[i], spec.lon[j]);
            if best.is_none_or(|(_, bd)| d < bd) {
                best = Some((c, d));
            }
        }
    }
    let (want, want_d) = best.unwrap();
    let land = CellIndex { lat: 5, lon: 15 };
    assert!(!masked(land));
    let points = [
        (qlat, qlon),
        (spec.lat[5], spec.lon[15] + 0.1),
        (-40.0, 10.0), // far outside the window
    ];
    let opts = DecodeOptions {
        data_radius_km: 60.0,
        ..DecodeOptions::default()
    };
    let m = file.locate(year, &points, &opts).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].nearest, Some(CellIndex { lat: mi, lon: mj }));
    assert_eq!(m[0].cell, Some(want));
    assert!(m[0].substituted);
    assert!((m[0].distance_km - want_d).abs() < 1e-6);
    assert_eq!(m[1].cell, Some(land));
    assert!(!m[1].substituted);
    assert!(
        (m[1].distance_km - haversine(points[1].0, points[1].1, spec.lat[5], spec.lon[15])).abs()
            < 1e-6
    );
    assert_eq!(m[2].cell, None);
    assert_eq!(m[2].nearest, None);
    assert!(m[2].distance_km.is_nan());
    // Reported as outside the window, with the distance to its nearest edge cell (the
    // south-east corner: 10° E is nearer to 240° E than to 236° E round the globe), not as a
    // cell without data.
    let edge = haversine(points[2].0, points[2].1, spec.lat[0], spec.lon[15]);
    assert!((m[2].outside_km.unwrap() - edge).abs() < 1e-6);
    let why = m[2].reason().unwrap().to_string();
    assert!(why.starts_with("outside the grid (nearest edge "), "{why}");
    assert_eq!(
        m[0].reason(),
        Some(nexdecode::MatchReason::NearestCellHasNoData)
    );
    assert_eq!(m[1].reason(), None);
    // The same from an already decoded AllData block, without reading the file again.
    let all = file
        .decode_year(year, &CellSelection::AllData, &opts)
        .unwrap();
    let m2 = file.locate_in(&all, &points, &opts);
    let key = |x: &nexdecode::LocationMatch| {
        (
            x.cell,
            x.nearest,
            x.substituted,
            x.distance_km.to_bits(),
            x.outside_km.map(f64::to_bits),
        )
    };
    assert_eq!(
        m2.iter().map(key).collect::<Vec<_>>(),
        m.iter().map(key).collect::<Vec<_>>()
    );
    // A radius smaller than the distance to any data cell: unmatched, not dropped.
    let tight = DecodeOptions {
        data_radius_km: want_d * 0.5,
        ..DecodeOptions::default()
    };
    let m = file.locate(year, &points[..1], &tight).unwrap();
    assert_eq!(m.len(), 1);
    assert!(!m[0].is_matched());
}

fn assert_names_file(err: &DecodeError, path: &Path) {
    assert_eq!(err.path(), path);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn truncated_file_is_a_clear_error() {
    for c in set::corrupt() {
        let path = fixtures::data_dir().join(&c.rel_path);
        let err = match GridFile::open(&path) {
            Err(e) => e,
            Ok(file) => {
                let year = file.years()[0];
                let mut err = None;
                for rp in [ReadPath::Netcdf, ReadPath::Auto] {
                    let opts = DecodeOptions {
                        read_path: rp,
                        ..DecodeOptions::default()
                    };
                    match file.decode_year(year, &CellSelection::AllData, &opts) {
                        Err(e) => err = Some(e),
                        Ok(_) => panic!("{} decoded although truncated ({rp:?})", path.display()),
                    }
                }
                err.unwrap()
            }
        };
        assert_names_file(&err, &path);
    }
}

#[test]
fn metadata_errors_name_the_file() {
    let dir = temp_dir();
    let spec = small_spec("tasmax", FxCalendar::NoLeap, 2001);
    let path = dir.path().join("ok.nc");
    write_grid(&path, &spec).unwrap();

    let err = GridFile::open_variable(&path, "pr").unwrap_err();
    assert!(matches!(err, DecodeError::MissingVariable { .. }), "{err}");
    assert!(
        err.to_string().contains("tasmax"),
        "lists the variables: {err}"
    );
    assert_names_file(&err, &path);

    let file = GridFile::open(&path).unwrap();
    let err = file
        .decode_year(2002, &CellSelection::AllData, &DecodeOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, DecodeError::IncompleteYear { found: 0, .. }),
        "{err}"
    );
    assert_names_file(&err, &path);
    let err = file
        .decode_year(
            2001,
            &CellSelection::Cells(vec![CellIndex { lat: 3, lon: 0 }]),
            &DecodeOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, DecodeError::CellOutOfRange { .. }), "{err}");

    let missing = dir.path().join("absent.nc");
    let err = GridFile::open(&missing).unwrap_err();
    assert_names_file(&err, &missing);

    let text = dir.path().join("not_netcdf.nc");
    std::fs::write(&text, b"hello, not a netcdf file").unwrap();
    let err = GridFile::open(&text).unwrap_err();
    assert!(matches!(err, DecodeError::Netcdf { .. }), "{err}");
    assert_names_file(&err, &text);
}

#[test]
fn multi_year_file_and_single_year_option() {
    let f = set::committed()
        .into_iter()
        .find(|f| {
            f.rel_path
                .ends_with("tasmax_multi_year_hours_no_calendar.nc")
        })
        .unwrap();
    let file = GridFile::open(f.path()).unwrap();
    assert_eq!(file.variable().calendar, nexdecode::Calendar::Standard);
    let opts = DecodeOptions {
        single_year_file: true,
        ..DecodeOptions::default()
    };
    let err = file
        .decode_year(2016, &CellSelection::AllData, &opts)
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::DaysOutsideYear {
                year: 2016,
                count: 730,
                ..
            }
        ),
        "{err}"
    );
    assert_names_file(&err, &f.path());
}

#[test]
fn chunked_read_path_rejects_netcdf3() {
    let f = set::committed()
        .into_iter()
        .find(|f| f.rel_path.ends_with("tasmax_nc3_classic_360day.nc"))
        .unwrap();
    let file = GridFile::open(f.path()).unwrap();
    let opts = DecodeOptions {
        read_path: ReadPath::Chunked,
        ..DecodeOptions::default()
    };
    let err = file
        .decode_year(2015, &CellSelection::AllData, &opts)
        .unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedStorage { .. }),
        "{err}"
    );
    assert_names_file(&err, &f.path());
}

#[test]
fn missing_value_only_and_nan_marker_variants() {
    // The generator's own MissingSpec for a NaN marker plus 1e20 fill.
    let dir = temp_dir();
    let mut spec = small_spec("pr", FxCalendar::ProlepticGregorian, 2004);
    spec.missing = MissingSpec {
        fill_value: Some(1e20),
        missing_value: Some(1e20),
        missing_value_as_double: true,
        nan_marker: true,
    };
    spec.mask = fixtures::spec::Mask::Cells((0..12).map(|k| k % 5 == 0).collect());
    spec.holes = vec![(0, 1, 1), (365, 2, 3)];
    let path = dir.path().join("nan.nc");
    write_grid(&path, &spec).unwrap();
    check_fixture(&path, &spec);
}

/// One `YearBlock` reused for every fixture, year and selection (all data, then a selection,
/// through both read paths) holds exactly what a fresh `decode_year` returns; an error leaves it
/// empty and usable; decoding the same request again reuses its allocation.
#[test]
fn decode_year_into_reuses_one_block() {
    let all = set::committed();
    let mut block = YearBlock::default();
    assert!(block.is_empty() && block.days() == 0);
    for f in &all {
        let file = GridFile::open(f.path()).unwrap_or_else(|e| panic!("{e}"));
        for year in file.years() {
            let n = file.grid().len();
            let some: Vec<CellIndex> = (0..n)
                .step_by(4)
                .map(|k| file.grid().cell(k))
                .rev()
                .collect();
            for sel in [CellSelection::AllData, CellSelection::Cells(some)] {
                for rp in [ReadPath::Auto, ReadPath::Netcdf] {
                    let opts = DecodeOptions {
                        read_path: rp,
                        ..DecodeOptions::default()
                    };
                    let fresh = decode(&file, year, &sel, ReadPath::Netcdf);
                    file.decode_year_into(year, &sel, &opts, &mut block)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let what = format!("{} {year} {rp:?}", f.rel_path);
                    assert_eq!(block.variable, fresh.variable, "{what}");
                    assert_eq!(block.units, fresh.units, "{what}");
                    assert_eq!(block.year, fresh.year, "{what}");
                    assert_eq!(block.calendar, fresh.calendar, "{what}");
                    assert_eq!(block.cells, fresh.cells, "{what}");
                    assert_same(&block.values, &fresh.values, &what);
                }
            }
        }
        // An error empties the block; the next decode fills it again.
        let err = file.decode_year_into(
            1000,
            &CellSelection::AllData,
            &DecodeOptions::default(),
            &mut block,
        );
        assert!(err.is_err());
        assert!(block.is_empty() && block.values.is_empty());
    }
    // The same request again (fast path) writes into the same memory.
    let opts = DecodeOptions {
        read_path: ReadPath::Chunked,
        ..DecodeOptions::default()
    };
    let mut checked = 0;
    for f in &all {
        let file = GridFile::open(f.path()).unwrap();
        let year = file.years()[0];
        if file
            .decode_year_into(year, &CellSelection::AllData, &opts, &mut block)
            .is_err()
        {
            continue; // not eligible for the fast path
        }
        let ptr = block.values.as_ptr();
        let first = block.clone();
        file.decode_year_into(year, &CellSelection::AllData, &opts, &mut block)
            .unwrap();
        assert_eq!(
            block.values.as_ptr(),
            ptr,
            "{}: allocation reused",
            f.rel_path
        );
        assert_eq!(block.cells, first.cells);
        assert_same(&block.values, &first.values, "second decode");
        checked += 1;
    }
    assert!(checked >= 3, "fast-path fixtures: {checked}");
}

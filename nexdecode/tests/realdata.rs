//! Conformance over the real NetCDF files in `../shared/realdata` (see its `MANIFEST.md`).
//!
//! Every expected figure below is copied from MANIFEST.md (which took them from `ncdump`), never
//! from this crate's output. Values are compared exactly: MANIFEST prints 9 significant digits,
//! which identify an f32 uniquely. When the directory is absent the tests print `SKIPPED: …`.

use std::path::{Path, PathBuf};

use nexdecode::{
    Calendar, CellIndex, CellSelection, DecodeError, DecodeOptions, GridFile, ReadPath, YearBlock,
};

fn realdata_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/realdata"
    ));
    dir.is_dir().then_some(dir)
}

/// The file, or `None` (with a SKIPPED line) when the data set or the file is absent.
fn file(name: &str) -> Option<PathBuf> {
    let Some(dir) = realdata_dir() else {
        println!("SKIPPED: {name}: no realdata directory at ../../shared/realdata");
        return None;
    };
    let path = dir.join(name);
    if !path.is_file() {
        println!("SKIPPED: {name}: not present in {}", dir.display());
        return None;
    }
    Some(path)
}

fn f(s: &str) -> f32 {
    s.parse().unwrap()
}

fn opts(read_path: ReadPath) -> DecodeOptions {
    DecodeOptions {
        read_path,
        allow_incomplete_year: true,
        ..DecodeOptions::default()
    }
}

/// Decodes a year on both read paths, checks they agree bit for bit, returns the block.
fn decode(file: &GridFile, year: i32, sel: &CellSelection) -> YearBlock {
    let a = file
        .decode_year(year, sel, &opts(ReadPath::Netcdf))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = file
        .decode_year(year, sel, &opts(ReadPath::Auto))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        a.cells,
        b.cells,
        "{}: paths disagree on cells",
        file.path().display()
    );
    for (x, y) in a.values.iter().zip(b.values.iter()) {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{}: paths differ",
            file.path().display()
        );
    }
    a
}

/// Min and max of the valid values over all years of a file, and the number of valid values.
fn file_stats(file: &GridFile) -> (f32, f32, usize) {
    let (mut lo, mut hi, mut n) = (f32::INFINITY, f32::NEG_INFINITY, 0);
    for year in file.years() {
        let b = decode(file, year, &CellSelection::AllData);
        for &v in b.values.iter().filter(|v| !v.is_nan()) {
            lo = lo.min(v);
            hi = hi.max(v);
            n += 1;
        }
    }
    (lo, hi, n)
}

fn value(b: &YearBlock, cell: CellIndex, slot: usize) -> f32 {
    b.values[[b.row_of(cell).expect("cell in block"), slot]]
}

fn empty_slots(b: &YearBlock) -> Vec<usize> {
    (0..b.days())
        .filter(|&d| (0..b.len()).all(|i| !b.is_valid(i, d)))
        .collect()
}

fn c(lat: usize, lon: usize) -> CellIndex {
    CellIndex { lat, lon }
}

#[test]
fn r01_pr_1980_nex_gddp_cmip6_leap_year_nan_ocean() {
    let Some(path) = file("pr_1980.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    let v = file.variable();
    assert_eq!(
        (v.name.as_str(), v.units.as_deref()),
        ("pr", Some("kg m-2 s-1"))
    ); // NC_STRING attributes
    assert_eq!(v.calendar, Calendar::ProlepticGregorian);
    assert_eq!(v.fill, Some(f64::from(1e20f32)));
    assert_eq!((file.grid().nlat(), file.grid().nlon()), (57, 69));
    assert_eq!(file.years(), vec![1980]);
    let strict = DecodeOptions {
        single_year_file: true,
        ..DecodeOptions::default()
    };
    let b = file
        .decode_year(1980, &CellSelection::AllData, &strict)
        .unwrap();
    assert_eq!(b.days(), 366);
    // 661 of 3,933 cells are NaN ocean on every day: 241,926 NaN of 1,439,478 values.
    assert_eq!(b.len(), 3933 - 661);
    assert_eq!(b.valid_count(), 1_439_478 - 241_926);
    assert_eq!(b.row_of(c(0, 0)), None, "[0,0,0] is NaN: not a data cell");
    assert_eq!(
        value(&b, c(0, 14), 0),
        0.0,
        "first valid element, flat index 14"
    );
    let (lo, hi, _) = file_stats(&file);
    assert_eq!((lo, hi), (0.0, f("7.73756823e-4")));
}

#[test]
fn r02_pr_1981() {
    let Some(path) = file("pr_1981.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    let b = decode(&file, 1981, &CellSelection::AllData);
    assert_eq!(b.days(), 365);
    assert_eq!(b.len(), 3272);
    assert_eq!(b.valid_count(), 1_435_545 - 241_265);
    assert_eq!(value(&b, c(0, 14), 0), f("2.32101502e-05"));
    let (lo, hi, _) = file_stats(&file);
    assert_eq!((lo, hi), (0.0, f("9.15057841e-4")));
}

#[test]
fn r03_tasmax_standard_multi_year_0900() {
    let Some(path) =
        file("tasmax_day_MPI-ESM1-2-LR_dcppA-hindcast_s1980-r1i1p1f1_gn_19801101-19901231.nc")
    else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(file.variable().calendar, Calendar::Standard);
    assert_eq!(file.steps(), 3713);
    assert_eq!(file.years(), (1980..=1990).collect::<Vec<_>>());
    assert_eq!((file.grid().nlat(), file.grid().nlon()), (1, 2));
    // 1980 starts on Nov 1: incomplete.
    let err = file
        .decode_year(1980, &CellSelection::AllData, &DecodeOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::IncompleteYear {
                year: 1980,
                found: 61,
                expected: 366,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.path(), path);
    // [0,0,0] = 231.988495 is 1980-11-01 09:00: leap-year day of year 306 (slot 305).
    let b = decode(&file, 1980, &CellSelection::AllData);
    assert_eq!(value(&b, c(0, 0), 305), f("231.988495"));
    assert_eq!(b.valid_count(), 61 * 2);
    for (year, days) in [(1984, 366), (1988, 366), (1985, 365)] {
        let b = file
            .decode_year(year, &CellSelection::AllData, &DecodeOptions::default())
            .unwrap();
        assert_eq!((b.days(), b.valid_count()), (days, days * 2));
    }
    let (lo, hi, n) = file_stats(&file);
    assert_eq!((lo, hi, n), (f("207.322327"), f("252.921738"), 3713 * 2));
}

#[test]
fn r04_tasmin_360_day_spread_over_365_slots() {
    let Some(path) =
        file("tasmin_day_HadGEM3-GC31-MM_dcppA-hindcast_s1960-r2i1p1f2_gn_19610101-19611230.nc")
    else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(file.variable().calendar, Calendar::Day360);
    assert_eq!(file.years(), vec![1961]);
    let b = decode(&file, 1961, &CellSelection::AllData);
    assert_eq!((b.days(), b.len()), (365, 20));
    // xarray align_on="year", 360 → 365: real days 37, 109, 183, 255, 329 stay empty.
    assert_eq!(empty_slots(&b), vec![36, 108, 182, 254, 328]);
    assert_eq!(b.valid_count(), 360 * 20);
    assert_eq!(value(&b, c(0, 0), 0), f("253.015137"));
    let (lo, hi, _) = file_stats(&file);
    assert_eq!((lo, hi), (f("194.732422"), f("306.349609")));
}

#[test]
fn r05_tas_noleap_leap_year_feb29_null() {
    let Some(path) = file("tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20000101-20091231.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    let v = file.variable();
    assert_eq!(v.calendar, Calendar::NoLeap);
    assert_eq!(v.missing, vec![1e20], "missing_value stored as double");
    assert_eq!(v.time_units, "days since 0001-01-01 00:00:00");
    assert_eq!(file.years(), (2000..=2009).collect::<Vec<_>>());
    let b = decode(&file, 2000, &CellSelection::AllData);
    assert_eq!((b.days(), b.len()), (366, 6));
    assert_eq!(empty_slots(&b), vec![59]);
    assert_eq!(value(&b, c(0, 0), 0), f("245.85289"));
    let b = decode(&file, 2001, &CellSelection::AllData);
    assert_eq!(b.days(), 365);
    assert!(empty_slots(&b).is_empty());
    let (lo, hi, n) = file_stats(&file);
    assert_eq!((lo, hi, n), (f("202.700699"), f("303.912506"), 3650 * 6));
}

#[test]
fn r06_pr_proleptic_hindcast_reference() {
    let Some(path) = file("pr_day_EC-Earth3_dcppA-hindcast_s1961-r6i2p1f1_gr_19620101-19621231.nc")
    else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(file.years(), vec![1962]);
    let b = decode(&file, 1962, &CellSelection::AllData);
    assert_eq!((b.days(), b.len(), b.valid_count()), (365, 18, 365 * 18));
    assert_eq!(value(&b, c(0, 0), 0), f("2.80914469e-06"));
    let (lo, hi, _) = file_stats(&file);
    assert_eq!((lo, hi), (f("-3.36458564e-24"), f("7.14302645e-4")));
}

#[test]
fn r07_tas_gregorian_global_gaussian_single_step() {
    let Some(path) = file("tas_day_MIROC6_ssp119_r1i1p1f1_gn_20150101.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(
        file.variable().calendar,
        Calendar::Standard,
        "gregorian alias"
    );
    let g = file.grid();
    assert_eq!((g.nlat(), g.nlon()), (128, 256));
    assert!(g.is_global());
    // Seam: 359.9 E is nearer to 0 (across the seam) than to 358.59375.
    assert_eq!(g.nearest_cell(0.0, 359.9).unwrap().lon, 0);
    assert_eq!(g.nearest_cell(0.0, -1.0).unwrap().lon, 255);
    // Gaussian latitudes −88.9277353522959 … 88.9277353522959: a location poleward of the top
    // row belongs to it (as xarray's nearest selection), not "outside the grid".
    assert!((g.lat()[127] - 88.927_735_352_295_9).abs() < 1e-12);
    assert!((g.lat()[0] + 88.927_735_352_295_9).abs() < 1e-12);
    let m = file
        .locate(2015, &[(89.9, 10.0), (-89.9, 10.0)], &opts(ReadPath::Auto))
        .unwrap();
    // 10° E: 10 / 1.40625 = 7.1 → column 7.
    assert_eq!((m[0].cell, m[1].cell), (Some(c(127, 7)), Some(c(0, 7))));
    assert!(m.iter().all(|x| !x.substituted && x.reason().is_none()));
    let err = file
        .decode_year(2015, &CellSelection::AllData, &DecodeOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, DecodeError::IncompleteYear { found: 1, .. }),
        "{err}"
    );
    let b = decode(&file, 2015, &CellSelection::AllData);
    assert_eq!((b.len(), b.valid_count()), (128 * 256, 128 * 256));
    assert_eq!(value(&b, c(0, 0), 0), f("256.34079"));
    let (lo, hi, _) = file_stats(&file);
    assert_eq!((lo, hi), (f("230.150986"), f("316.969818")));
}

#[test]
fn r08_tas_netcdf3_standard_leap_years() {
    let Some(path) = file("tas_day_EC-EARTH_historical_r1i1p1_18500101-18591231.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    let v = file.variable();
    assert_eq!(v.calendar, Calendar::Standard);
    assert!(v.missing.is_empty(), "no missing_value");
    assert_eq!(file.years(), (1850..=1859).collect::<Vec<_>>());
    for (year, days) in [(1850, 365), (1852, 366), (1856, 366), (1859, 365)] {
        let b = file
            .decode_year(year, &CellSelection::AllData, &DecodeOptions::default())
            .unwrap();
        assert_eq!(
            (b.days(), b.len(), b.valid_count()),
            (days, 8, days * 8),
            "{year}"
        );
    }
    let b = decode(&file, 1850, &CellSelection::AllData);
    assert_eq!(value(&b, c(0, 0), 0), f("249.312439"));
    let (lo, hi, n) = file_stats(&file);
    assert_eq!((lo, hi, n), (f("200.139801"), f("310.550903"), 3652 * 8));
}

#[test]
fn r09_mrsos_netcdf3_360_day_fill_values() {
    let Some(path) = file("mrsos_day_HadGEM2-ES_rcp45_r1i1p1_20051201-20151130.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(file.variable().calendar, Calendar::Day360);
    assert_eq!(file.years(), (2005..=2015).collect::<Vec<_>>());
    // (lat 35, lon 187.5) is 1e20 at every step: not a data cell.
    for year in 2006..=2014 {
        let b = file
            .decode_year(year, &CellSelection::AllData, &DecodeOptions::default())
            .unwrap();
        assert_eq!(b.cells, vec![c(0, 0), c(0, 1), c(1, 0)], "{year}");
        assert_eq!(b.valid_count(), 3 * 360);
        // Both lat −90 cells are 0 at every step.
        assert!(
            b.series(0)
                .iter()
                .chain(b.series(1).iter())
                .all(|v| v.is_nan() || *v == 0.0)
        );
    }
    let b = decode(&file, 2010, &CellSelection::Cells(vec![c(1, 1)]));
    assert_eq!(b.valid_count(), 0, "masked cell decodes to missing");
    // 3,600 of 14,400 values are fill.
    let (lo, hi, n) = file_stats(&file);
    assert_eq!((lo, hi, n), (0.0, f("30.9897461"), 14_400 - 3_600));
}

#[test]
fn r10_mrsos_full_grid_land_sea_mask() {
    let Some(path) = file("mrsos_day_HadGEM2-ES_rcp85_r1i1p1_20051201.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    let g = file.grid();
    assert_eq!((g.nlat(), g.nlon()), (145, 192));
    assert!(g.is_global());
    let b = decode(&file, 2005, &CellSelection::AllData);
    assert_eq!(
        b.len(),
        27_840 - 17_321,
        "17,321 of 27,840 values are 1e20 (ocean)"
    );
    let (lo, hi, _) = file_stats(&file);
    assert_eq!((lo, hi), (0.0, f("48.2548218")));
}

#[test]
fn r11_prsn_365_day_twenty_years() {
    let Some(path) = file("prsn_day_CanESM5_historical_r1i1p1f1_gn_19910101-20101231.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(file.variable().calendar, Calendar::NoLeap, "365_day alias");
    assert_eq!(file.years(), (1991..=2010).collect::<Vec<_>>());
    for year in [1992, 1996, 2000, 2004, 2008] {
        let b = file
            .decode_year(year, &CellSelection::AllData, &DecodeOptions::default())
            .unwrap();
        assert_eq!((b.days(), b.len()), (366, 30));
        assert_eq!(empty_slots(&b), vec![59], "{year}");
    }
    let b = decode(&file, 1991, &CellSelection::AllData);
    assert_eq!(value(&b, c(0, 0), 0), f("1.09617524e-08"));
    let (lo, hi, n) = file_stats(&file);
    assert_eq!((lo, hi, n), (0.0, f("4.54585592e-4"), 7300 * 30));
}

#[test]
fn r12_tiny_downscaled_negative_longitudes() {
    // Not redistributed (licence unclear): skipped when absent, checked when someone adds it.
    let Some(path) = file("tiny_downscaled_tasmax.nc") else {
        return;
    };
    let file = GridFile::open(&path).unwrap();
    assert_eq!(file.variable().calendar, Calendar::ProlepticGregorian);
    assert_eq!(file.years(), (1960..=1991).collect::<Vec<_>>());
    assert_eq!(
        file.grid().nearest_cell(50.8, 241.6).map(|c| c.lon),
        Some(1)
    );
    let b = decode(&file, 1960, &CellSelection::AllData);
    assert_eq!(b.days(), 366);
    assert_eq!(value(&b, c(0, 0), 0), f("0.00800171308"));
}

#[test]
fn every_file_opens_and_both_paths_agree() {
    let Some(dir) = realdata_dir() else {
        println!("SKIPPED: no realdata directory at ../../shared/realdata");
        return;
    };
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nc") {
            let file = GridFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
            file_stats(&file);
            n += 1;
        }
    }
    assert!(n >= 11, "{n} files in {}", Path::new(&dir).display());
}

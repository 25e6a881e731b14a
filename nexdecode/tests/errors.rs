//! Files with unusable structure or metadata, written with the `netcdf` crate: every error
//! names the file and says what is wrong.

use std::path::{Path, PathBuf};

use nexdecode::{
    Calendar, CellIndex, CellSelection, DecodeError, DecodeOptions, GridFile, ReadPath,
};

/// How to write a tiny `(time, lat, lon)` file.
struct Tiny {
    dims: [&'static str; 3],
    time_units: Option<&'static str>,
    calendar: Option<&'static str>,
    times: Vec<f64>,
    packed: bool,
    dtype_u16: bool,
    extra_var: bool,
}

impl Default for Tiny {
    fn default() -> Self {
        Tiny {
            dims: ["time", "lat", "lon"],
            time_units: Some("days since 2001-01-01"),
            calendar: Some("noleap"),
            times: (0..365).map(|d| f64::from(d) + 0.5).collect(),
            packed: false,
            dtype_u16: false,
            extra_var: false,
        }
    }
}

const LAT: [f64; 2] = [10.0, 11.0];
const LON: [f64; 3] = [350.0, 355.0, 0.0 + 359.0];

fn write(dir: &Path, name: &str, t: &Tiny) -> PathBuf {
    let path = dir.join(name);
    let mut f = netcdf::create(&path).unwrap();
    let nt = t.times.len();
    for d in t.dims {
        let len = match d {
            "time" => nt,
            "lat" | "latitude" => LAT.len(),
            _ => LON.len(),
        };
        f.add_dimension(d, len).unwrap();
    }
    let lat_name = t.dims.iter().find(|d| d.starts_with("lat")).unwrap();
    let lon_name = t.dims.iter().find(|d| d.starts_with("lon")).unwrap();
    f.add_variable::<f64>(lat_name, &[lat_name])
        .unwrap()
        .put_values(&LAT, ..)
        .unwrap();
    let lon: Vec<f64> = LON.to_vec();
    f.add_variable::<f64>(lon_name, &[lon_name])
        .unwrap()
        .put_values(&lon, ..)
        .unwrap();
    let mut tv = f.add_variable::<f64>("time", &["time"]).unwrap();
    if let Some(u) = t.time_units {
        tv.put_attribute("units", u).unwrap();
    }
    if let Some(c) = t.calendar {
        tv.put_attribute("calendar", c).unwrap();
    }
    tv.put_values(&t.times, ..).unwrap();
    let n = nt * LAT.len() * LON.len();
    if t.packed {
        let mut v = f.add_variable::<i16>("tas", &t.dims).unwrap();
        v.put_attribute("scale_factor", 0.5f32).unwrap();
        v.put_attribute("add_offset", 200.0f32).unwrap();
        v.put_attribute("_FillValue", -32767i16).unwrap();
        let raw: Vec<i16> = (0..n)
            .map(|k| if k % 7 == 3 { -32767 } else { (k % 100) as i16 })
            .collect();
        v.put_values(&raw, ..).unwrap();
    } else if t.dtype_u16 {
        let mut v = f.add_variable::<u16>("tas", &t.dims).unwrap();
        v.put_values(&vec![1u16; n], ..).unwrap();
    } else {
        let mut v = f.add_variable::<f32>("tas", &t.dims).unwrap();
        v.put_attribute("units", "K").unwrap();
        v.put_values(&vec![280.0f32; n], ..).unwrap();
    }
    if t.extra_var {
        let mut v = f.add_variable::<f32>("tasmax", &t.dims).unwrap();
        v.put_values(&vec![281.0f32; n], ..).unwrap();
    }
    path
}

fn names_file(err: &DecodeError, path: &Path) {
    assert_eq!(err.path(), path, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn dims_in_another_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "order.nc",
        &Tiny {
            dims: ["lat", "lon", "time"],
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(matches!(err, DecodeError::UnexpectedDims { .. }), "{err}");
    assert!(err.to_string().contains("lat, lon, time"), "{err}");
    names_file(&err, &path);
    let err = GridFile::open_variable(&path, "tas").unwrap_err();
    assert!(matches!(err, DecodeError::UnexpectedDims { .. }), "{err}");
    let err = GridFile::open_variable(&path, "lat").unwrap_err();
    assert!(matches!(err, DecodeError::UnexpectedDims { .. }), "{err}");
}

#[test]
fn latitude_longitude_aliases_and_two_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "alias.nc",
        &Tiny {
            dims: ["time", "latitude", "longitude"],
            ..Tiny::default()
        },
    );
    let file = GridFile::open(&path).unwrap();
    assert_eq!(
        file.variable().dims,
        ["time".to_string(), "latitude".into(), "longitude".into()]
    );
    let path = write(
        dir.path(),
        "two.nc",
        &Tiny {
            extra_var: true,
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(matches!(err, DecodeError::NoDataVariable { .. }), "{err}");
    assert!(err.to_string().contains("tas, tasmax"), "{err}");
    assert_eq!(
        GridFile::open_variable(&path, "tasmax")
            .unwrap()
            .variable()
            .name,
        "tasmax"
    );
}

#[test]
fn calendar_and_time_unit_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cal.nc",
        &Tiny {
            calendar: Some("none"),
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedCalendar { .. }),
        "{err}"
    );
    names_file(&err, &path);

    let path = write(
        dir.path(),
        "units.nc",
        &Tiny {
            time_units: Some("months since 2001-01"),
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(matches!(err, DecodeError::BadTimeUnits { .. }), "{err}");
    names_file(&err, &path);

    let path = write(
        dir.path(),
        "nounits.nc",
        &Tiny {
            time_units: None,
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(matches!(err, DecodeError::BadTimeUnits { .. }), "{err}");

    let mut times: Vec<f64> = (0..365).map(f64::from).collect();
    times.swap(10, 11);
    let path = write(
        dir.path(),
        "unordered.nc",
        &Tiny {
            times,
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnorderedTime { index: 11, .. }),
        "{err}"
    );
    names_file(&err, &path);

    // Absent calendar = standard.
    let path = write(
        dir.path(),
        "std.nc",
        &Tiny {
            calendar: None,
            ..Tiny::default()
        },
    );
    assert_eq!(
        GridFile::open(&path).unwrap().calendar(),
        Calendar::Standard
    );
}

#[test]
fn unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "u16.nc",
        &Tiny {
            dtype_u16: true,
            ..Tiny::default()
        },
    );
    let err = GridFile::open(&path).unwrap_err();
    assert!(matches!(err, DecodeError::UnsupportedDtype { .. }), "{err}");
    names_file(&err, &path);
}

#[test]
fn packed_short_unpacks_and_masks_fill() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "packed.nc",
        &Tiny {
            packed: true,
            ..Tiny::default()
        },
    );
    let file = GridFile::open(&path).unwrap();
    let opts = DecodeOptions {
        read_path: ReadPath::Netcdf,
        ..DecodeOptions::default()
    };
    let b = file
        .decode_year(2001, &CellSelection::AllData, &opts)
        .unwrap();
    assert_eq!((b.len(), b.days()), (6, 365));
    for t in 0..365 {
        for k in 0..6 {
            let raw_index = t * 6 + k;
            let got = b.values[[k, t]];
            if raw_index % 7 == 3 {
                assert!(got.is_nan());
            } else {
                assert_eq!(got, (raw_index % 100) as f32 * 0.5 + 200.0);
            }
        }
    }
    // The same through Auto (not eligible for the fast path: i16) gives the same block.
    let auto = file
        .decode_year(2001, &CellSelection::AllData, &DecodeOptions::default())
        .unwrap();
    assert_eq!(
        auto.values.iter().filter(|v| v.is_nan()).count(),
        b.values.iter().filter(|v| v.is_nan()).count()
    );
    assert!(
        auto.values
            .iter()
            .zip(b.values.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    );
}

#[test]
fn global_seam_in_a_small_grid_and_cell_out_of_range() {
    // Longitudes 350, 355, 359: not global, so 1 E (2 degrees past the last cell) is outside.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "lon.nc", &Tiny::default());
    let file = GridFile::open(&path).unwrap();
    assert!(!file.grid().is_global());
    assert_eq!(file.grid().nearest_cell(10.0, -1.5).map(|c| c.lon), Some(2));
    assert_eq!(file.grid().nearest_cell(10.0, 1.0), None);
    let err = file
        .decode_year(
            2001,
            &CellSelection::Cells(vec![CellIndex { lat: 0, lon: 3 }]),
            &DecodeOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, DecodeError::CellOutOfRange { .. }), "{err}");
    names_file(&err, &path);
}

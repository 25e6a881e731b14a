//! Prints a one-line summary per NetCDF file: variable, units, calendar, days, data cells and
//! min/mean/max of the valid values, for every year of the file (or the year given with
//! `--year`).
//!
//! ```text
//! cargo run --release -p nexdecode --example summarize -- fixtures/data/*.nc
//! ```
//!
//! A file that fails to decode is reported and the others continue; the exit code is 1 when any
//! file failed.

use std::process::ExitCode;

use nexdecode::{CellSelection, DecodeOptions, GridFile};

fn main() -> ExitCode {
    let mut year_filter: Option<i32> = None;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--year" {
            year_filter = args.next().and_then(|y| y.parse().ok());
        } else {
            paths.push(a);
        }
    }
    if paths.is_empty() {
        eprintln!("usage: summarize [--year YEAR] FILE.nc...");
        return ExitCode::from(2);
    }
    let opts = DecodeOptions::default();
    let mut failed = false;
    for path in &paths {
        if let Err(e) = summarize(path, year_filter, &opts) {
            println!("{path}: ERROR {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn summarize(
    path: &str,
    year_filter: Option<i32>,
    opts: &DecodeOptions,
) -> Result<(), nexdecode::DecodeError> {
    let file = GridFile::open(path)?;
    let v = file.variable();
    let name = std::path::Path::new(path)
        .file_name()
        .map_or(path.into(), |n| n.to_string_lossy());
    println!(
        "{name}: variable {} ({}), units {}, calendar {}, grid {} × {}, {} steps",
        v.name,
        v.dtype,
        v.units.as_deref().unwrap_or("-"),
        v.calendar,
        file.grid().nlat(),
        file.grid().nlon(),
        file.steps()
    );
    for year in file.years() {
        if year_filter.is_some_and(|y| y != year) {
            continue;
        }
        match file.decode_year(year, &CellSelection::AllData, opts) {
            Ok(block) => {
                let (mut min, mut max, mut sum, mut n) =
                    (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0usize);
                for &x in block.values.iter().filter(|x| !x.is_nan()) {
                    min = min.min(x);
                    max = max.max(x);
                    sum += f64::from(x);
                    n += 1;
                }
                let mean = if n > 0 { sum / n as f64 } else { f64::NAN };
                println!(
                    "  {year}: days {}, data cells {}, valid values {n}, min {min} mean {mean:.6e} max {max}",
                    block.days(),
                    block.len()
                );
            }
            Err(e) => println!("  {year}: skipped: {e}"),
        }
    }
    Ok(())
}

//! Prints the daily series of one location for one year.
//!
//! ```text
//! cargo run -p nexdecode --example series -- FILE.nc LAT LON YEAR [RADIUS_KM]
//! ```
//!
//! The location is mapped to its nearest grid cell (or the nearest data cell within the radius,
//! default 50 km); each line is `YYYY-MM-DD value` in the file's units, `NULL` for missing.

use std::process::ExitCode;

use nexdecode::{CellSelection, DecodeOptions, GridFile};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: series FILE.nc LAT LON YEAR [RADIUS_KM]");
        return ExitCode::from(2);
    }
    let parse = |s: &str, what: &str| -> Option<f64> {
        let v = s.parse().ok();
        if v.is_none() {
            eprintln!("bad {what}: {s}");
        }
        v
    };
    let (Some(lat), Some(lon), Some(year)) = (
        parse(&args[1], "latitude"),
        parse(&args[2], "longitude"),
        parse(&args[3], "year"),
    ) else {
        return ExitCode::from(2);
    };
    let mut opts = DecodeOptions::default();
    if let Some(r) = args.get(4).and_then(|s| parse(s, "radius")) {
        opts.data_radius_km = r;
    }
    match run(&args[0], lat, lon, year as i32, &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    path: &str,
    lat: f64,
    lon: f64,
    year: i32,
    opts: &DecodeOptions,
) -> Result<(), nexdecode::DecodeError> {
    let file = GridFile::open(path)?;
    let m = file.locate(year, &[(lat, lon)], opts)?[0];
    let Some(cell) = m.cell else {
        println!(
            "# ({lat}, {lon}) is unmatched: {}, no data cell within {} km",
            m.reason().map_or_else(String::new, |r| r.to_string()),
            opts.data_radius_km
        );
        return Ok(());
    };
    let (clat, clon) = file.grid().coords(cell);
    let block = file.decode_year(year, &CellSelection::Cells(vec![cell]), opts)?;
    let v = file.variable();
    println!(
        "# {} [{}] {year}, calendar {}: cell ({clat}, {clon}) index ({}, {}), {:.2} km away{}",
        v.name,
        v.units.as_deref().unwrap_or("-"),
        v.calendar,
        cell.lat,
        cell.lon,
        m.distance_km,
        m.reason().map_or_else(String::new, |r| format!(" ({r})"))
    );
    let leap = nexdecode::is_leap_year(year);
    let months = [
        31,
        if leap { 29 } else { 28 },
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
    let (mut month, mut day) = (1usize, 1u32);
    for &x in block.series(0) {
        if x.is_nan() {
            println!("{year:04}-{month:02}-{day:02} NULL");
        } else {
            println!("{year:04}-{month:02}-{day:02} {x}");
        }
        day += 1;
        if day > months[month - 1] {
            day = 1;
            month += 1;
        }
    }
    println!("# {} of {} days valid", block.valid_count(), block.days());
    Ok(())
}

//! `plot`: quick-look PNGs for QA.
//!
//! - `plot series`: one location's daily values across models from the database — the models'
//!   median per day as a line and their minimum–maximum as a band, the variable's units on the
//!   value axis. The location is the loaded cell (of the dataset, with the variable, scenario
//!   and years) nearest to `--lat/--lon`, within 1°.
//! - `plot map FILE --day N`: one day of a NetCDF file on a colour scale (the day's 2nd–98th
//!   percentile), cells without data grey. The file's year is decoded with `nexdecode`.
//!
//! Drawing is pure Rust: plotters lays the plots out on an in-memory RGB canvas whose text
//! comes from a built-in bitmap font ([`canvas`]), encoded by the `png` crate.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

use crate::catalog::{self, Dataset};
use crate::cli::{PlotMapArgs, PlotSeriesArgs};
use crate::config::DbConfig;
use crate::db;

pub mod canvas;
pub mod render;

use render::{MapData, SeriesData};

/// Largest image side accepted, pixels.
pub const MAX_SIDE: u32 = 8192;

fn check_size(w: u32, h: u32) -> anyhow::Result<()> {
    if !(200..=MAX_SIDE).contains(&w) || !(150..=MAX_SIDE).contains(&h) {
        bail!("image size {w} × {h}: width 200..={MAX_SIDE}, height 150..={MAX_SIDE} pixels");
    }
    Ok(())
}

/// Parses `2050` or `2040-2060`.
///
/// # Errors
/// Syntax, or a range that runs backwards or spans more than 200 years.
pub fn parse_year_range(s: &str) -> anyhow::Result<(i32, i32)> {
    let s = s.trim();
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: i32 = a
        .trim()
        .parse()
        .with_context(|| format!("--year-range {s:?}"))?;
    let b: i32 = b
        .trim()
        .parse()
        .with_context(|| format!("--year-range {s:?}"))?;
    if b < a || b - a > 200 {
        bail!("--year-range {s:?}: first year ≤ last year, at most 200 years");
    }
    Ok((a, b))
}

/// `37.77N 122.42W`.
fn place(lat: f64, lon: f64) -> String {
    let lon = if lon > 180.0 { lon - 360.0 } else { lon };
    format!(
        "{:.2}{} {:.2}{}",
        lat.abs(),
        if lat < 0.0 { 'S' } else { 'N' },
        lon.abs(),
        if lon < 0.0 { 'W' } else { 'E' }
    )
}

fn write_png(path: &Path, c: &canvas::Canvas) -> anyhow::Result<()> {
    let png = c.to_png().context("encoding the PNG")?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
}

/// What a plot command drew.
#[derive(Debug, Clone)]
pub struct PlotReport {
    /// The file written.
    pub path: std::path::PathBuf,
    /// Image size.
    pub size: (u32, u32),
    /// One line about what is on it.
    pub summary: String,
}

/// The data of `plot series`, read from the database.
///
/// # Errors
/// Invalid flags, no loaded cell near the location, no data, database errors.
pub async fn series_data(dbc: &DbConfig, a: &PlotSeriesArgs) -> anyhow::Result<SeriesData> {
    let d: Dataset = a.dataset.parse().map_err(anyhow::Error::msg)?;
    let (scenario, _, _) = d
        .scenario(&a.scenario)
        .with_context(|| format!("unknown scenario {:?} for {d}", a.scenario))?;
    let var = catalog::canonical_variable(&a.variable)
        .with_context(|| format!("unknown variable {:?}", a.variable))?;
    let col = pgcopy::quote_ident(catalog::variable_column(var).expect("allow-listed"));
    let (y0, y1) = parse_year_range(&a.year_range)?;
    if !(-90.0..=90.0).contains(&a.lat) || !(-180.0..=360.0).contains(&a.lon) {
        bail!("--lat must be -90..=90 and --lon -180..=360");
    }
    let models: Option<Vec<String>> = if a.models.trim().eq_ignore_ascii_case("all") {
        None
    } else {
        Some(
            a.models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    d.model(m)
                        .map(str::to_owned)
                        .with_context(|| format!("unknown model {m:?} for {d}"))
                })
                .collect::<anyhow::Result<_>>()?,
        )
    };
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    let dataset_id: i32 = client
        .query_opt("SELECT id FROM dataset WHERE name = $1", &[&d.name()])
        .await
        .context("reading the catalog (is the schema migrated?)")?
        .context("dataset not in the database catalog (run `nexingest migrate`)")?
        .get(0);
    // The nearest loaded cell with the variable in the scenario and years (longitudes compared
    // modulo 360, east-west distances shrunk by cos(lat)).
    let cell = client
        .query_opt(
            &format!(
                "SELECT c.id, c.lat, c.lon
                 FROM map_cell c
                 WHERE c.dataset_id = $1 AND c.lat BETWEEN $2::float8 - 1 AND $2::float8 + 1
                   AND EXISTS (
                       SELECT 1 FROM climate_data_year y
                       JOIN data_source ds ON ds.id = y.data_source_id
                       JOIN scenario s ON s.id = ds.scenario_id
                       WHERE y.map_cell_id = c.id AND ds.dataset_id = $1 AND s.name = $4
                         AND ds.year BETWEEN $5 AND $6 AND y.{col} IS NOT NULL)
                 ORDER BY (c.lat - $2::float8) ^ 2
                        + ((c.lon - $3::float8 - 360 * round((c.lon - $3::float8) / 360))
                           * cos(radians($2::float8))) ^ 2, c.lat, c.lon
                 LIMIT 1"
            ),
            &[&dataset_id, &a.lat, &a.lon, &scenario, &y0, &y1],
        )
        .await
        .context("finding the nearest loaded cell")?;
    let Some(cell) = cell else {
        bail!(
            "no loaded {d} {scenario} cell with {var} in {y0}-{y1} within 1 degree of {}",
            place(a.lat, a.lon)
        );
    };
    let (cell_id, clat, clon): (i64, f64, f64) = (cell.get(0), cell.get(1), cell.get(2));
    let km = nexdecode::haversine_km(a.lat, a.lon, clat, clon);
    let rows = client
        .query(
            &format!(
                "SELECT m.name, ds.year, y.{col}
                 FROM climate_data_year y
                 JOIN data_source ds ON ds.id = y.data_source_id
                 JOIN scenario s ON s.id = ds.scenario_id
                 JOIN climate_model m ON m.id = ds.model_id
                 WHERE y.map_cell_id = $1 AND ds.dataset_id = $2 AND s.name = $3
                   AND ds.year BETWEEN $4 AND $5 AND y.{col} IS NOT NULL
                   AND ($6::text[] IS NULL OR m.name = ANY($6))
                 ORDER BY ds.year, m.name"
            ),
            &[&cell_id, &dataset_id, &scenario, &y0, &y1, &models],
        )
        .await
        .context("reading the series")?;
    if rows.is_empty() {
        bail!("no {var} values of the chosen models at that cell");
    }
    let units: Option<String> = client
        .query_opt(
            "SELECT v.units FROM data_source_variable v
             JOIN data_source ds ON ds.id = v.data_source_id
             JOIN scenario s ON s.id = ds.scenario_id
             WHERE ds.dataset_id = $1 AND s.name = $2 AND v.variable = $3
               AND ds.year BETWEEN $4 AND $5
             GROUP BY v.units ORDER BY count(*) DESC LIMIT 1",
            &[&dataset_id, &scenario, &var, &y0, &y1],
        )
        .await?
        .map(|r| r.get(0));
    let mut names: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    names.sort();
    names.dedup();
    let mut days = Vec::new();
    let mut buf = Vec::with_capacity(names.len());
    for year in y0..=y1 {
        let n = nexdecode::real_days_in_year(year);
        let of_year: Vec<Vec<Option<f32>>> = rows
            .iter()
            .filter(|r| r.get::<_, i32>(1) == year)
            .map(|r| r.get(2))
            .collect();
        for day in 0..n {
            buf.clear();
            buf.extend(
                of_year
                    .iter()
                    .map(|a| a.get(day).copied().flatten().unwrap_or(f32::NAN)),
            );
            let x = f64::from(year) + day as f64 / n as f64;
            days.push((x, render::median_min_max(&mut buf)));
        }
    }
    let mut title = String::new();
    let _ = write!(
        title,
        "{var} at {} (cell {:.3}, {:.3}; {km:.0} km away): {d} {scenario} {}, {} model{}",
        place(a.lat, a.lon),
        clat,
        clon,
        if y0 == y1 {
            y0.to_string()
        } else {
            format!("{y0}-{y1}")
        },
        names.len(),
        if names.len() == 1 { "" } else { "s" }
    );
    Ok(SeriesData {
        title,
        value_label: format!("{var} ({})", units.as_deref().unwrap_or("units unknown")),
        days,
    })
}

/// `plot series`.
///
/// # Errors
/// See [`series_data`]; drawing and writing the file.
pub async fn series(dbc: &DbConfig, a: &PlotSeriesArgs) -> anyhow::Result<PlotReport> {
    check_size(a.width, a.height)?;
    let data = series_data(dbc, a).await?;
    let c = render::series(&data, a.width, a.height)?;
    write_png(&a.out, &c)?;
    let valid = data.days.iter().filter(|d| d.1.is_some()).count();
    Ok(PlotReport {
        path: a.out.clone(),
        size: (c.width(), c.height()),
        summary: format!(
            "{}; {valid} of {} days with data",
            data.title,
            data.days.len()
        ),
    })
}

/// The data of `plot map`: one day of a file on ascending axes.
///
/// # Errors
/// The file cannot be read or decoded, the year is not in it, the day is out of range.
pub fn map_data(a: &PlotMapArgs) -> anyhow::Result<MapData> {
    let file = match &a.variable {
        Some(v) => nexdecode::GridFile::open_variable(&a.file, v),
        None => nexdecode::GridFile::open(&a.file),
    }
    .with_context(|| format!("opening {}", a.file.display()))?;
    let years = file.years();
    let year = match a.year {
        Some(y) if years.contains(&y) => y,
        Some(y) => bail!(
            "{} holds no day of {y} (years: {years:?})",
            a.file.display()
        ),
        None => *years.first().context("the file has no time steps")?,
    };
    let ndays = nexdecode::real_days_in_year(year);
    if !(1..=ndays).contains(&(a.day as usize)) {
        bail!("--day {}: {year} has days 1..={ndays}", a.day);
    }
    let opts = nexdecode::DecodeOptions {
        allow_incomplete_year: true,
        ..nexdecode::DecodeOptions::default()
    };
    let block = file
        .decode_year(year, &nexdecode::CellSelection::AllData, &opts)
        .with_context(|| format!("decoding {year} of {}", a.file.display()))?;
    let grid = file.grid();
    // Axes ascending; rank[i] = sorted position of file index i.
    let order = |axis: &[f64]| {
        let mut idx: Vec<usize> = (0..axis.len()).collect();
        idx.sort_by(|&x, &y| axis[x].total_cmp(&axis[y]));
        let mut rank = vec![0; axis.len()];
        for (pos, &i) in idx.iter().enumerate() {
            rank[i] = pos;
        }
        (idx.iter().map(|&i| axis[i]).collect::<Vec<f64>>(), rank)
    };
    let (lat, lat_rank) = order(grid.lat());
    let (lon, lon_rank) = order(grid.lon());
    let nlon = lon.len();
    let mut values = vec![f32::NAN; lat.len() * nlon];
    let day = a.day as usize - 1;
    for (row, cell) in block.cells.iter().enumerate() {
        values[lat_rank[cell.lat] * nlon + lon_rank[cell.lon]] = block.values[[row, day]];
    }
    let var = &file.variable().name;
    let units = file.variable().units.clone();
    let name = a
        .file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(MapData {
        title: format!("{var} {year} day {} ({name})", a.day),
        value_label: format!("{var} ({})", units.as_deref().unwrap_or("units unknown")),
        lat,
        lon,
        values,
    })
}

/// The default image size of a map: about 2 pixels per cell, square cells.
pub fn map_size(nlat: usize, nlon: usize, width: Option<u32>, height: Option<u32>) -> (u32, u32) {
    // Margins of the layout in `render::map`: caption and axes, colour bar.
    const EXTRA_W: u32 = render::COLOUR_BAR + 70 + 28;
    const EXTRA_H: u32 = 44 + 44 + 28;
    let w = width.unwrap_or_else(|| (nlon as u32 * 2 + EXTRA_W).clamp(600, 1600));
    let h = height.unwrap_or_else(|| {
        let plot_w = w.saturating_sub(EXTRA_W).max(1);
        let plot_h = (f64::from(plot_w) * nlat as f64 / nlon.max(1) as f64).round() as u32;
        (plot_h + EXTRA_H).clamp(300, 1200)
    });
    (w, h)
}

/// `plot map`.
///
/// # Errors
/// See [`map_data`]; drawing and writing the file.
pub fn map(a: &PlotMapArgs) -> anyhow::Result<PlotReport> {
    let data = map_data(a)?;
    let (w, h) = map_size(data.lat.len(), data.lon.len(), a.width, a.height);
    check_size(w, h)?;
    let (c, layout) = render::map(&data, w, h)?;
    write_png(&a.out, &c)?;
    let valid = data.values.iter().filter(|v| !v.is_nan()).count();
    Ok(PlotReport {
        path: a.out.clone(),
        size: (w, h),
        summary: format!(
            "{}; {valid} of {} cells with data; colour scale {} .. {}",
            data.title,
            data.values.len(),
            layout.scale.0,
            layout.scale.1
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_ranges_and_places() {
        assert_eq!(parse_year_range("2050").unwrap(), (2050, 2050));
        assert_eq!(parse_year_range("2040-2060").unwrap(), (2040, 2060));
        assert!(parse_year_range("2060-2040").is_err());
        assert!(parse_year_range("x").is_err());
        assert_eq!(place(37.77, -122.42), "37.77N 122.42W");
        assert_eq!(place(-33.9, 237.58), "33.90S 122.42W");
        let (w, h) = map_size(600, 1440, None, None);
        assert_eq!(w, 1600);
        assert!(h > 300 && h <= 1200, "{h}");
        assert_eq!(map_size(12, 16, Some(500), Some(400)), (500, 400));
    }
}

//! What the plots draw: takes a [`SeriesRequest`] and the database (the loaded cell nearest
//! to a point, its models' values over years) or a [`MapRequest`] (one day of a NetCDF file);
//! hands on the [`SeriesData`] or [`MapData`] that [`super::render`] draws.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::render::{self, MapData, SeriesData};
use crate::catalog::{self, Dataset};
use crate::config::DbConfig;
use crate::db;

/// One location's series: what [`series_data`] reads.
#[derive(Debug, Clone)]
pub struct SeriesRequest {
    /// Dataset.
    pub dataset: Dataset,
    /// Scenario, as the catalog spells it.
    pub scenario: &'static str,
    /// Variable, as the catalog spells it.
    pub variable: &'static str,
    /// First and last year.
    pub years: (i32, i32),
    /// Latitude of the location, degrees north.
    pub lat: f64,
    /// Longitude of the location, degrees east (-180..=360).
    pub lon: f64,
    /// Only these models (`None`: all loaded ones).
    pub models: Option<Vec<&'static str>>,
}

impl SeriesRequest {
    /// Looks the names up in the catalog (case-insensitively) and checks the years and the
    /// place.
    ///
    /// # Errors
    /// An unknown dataset, scenario, variable or model; years that run backwards or span more
    /// than 200 years; a latitude outside -90..=90 or a longitude outside -180..=360.
    pub fn new(
        dataset: &str,
        scenario: &str,
        variable: &str,
        years: (i32, i32),
        (lat, lon): (f64, f64),
        models: Option<&[&str]>,
    ) -> anyhow::Result<Self> {
        let d: Dataset = dataset.parse().map_err(anyhow::Error::msg)?;
        let (scenario, _, _) = d
            .scenario(scenario)
            .with_context(|| format!("unknown scenario {scenario:?} for {d}"))?;
        let var = catalog::canonical_variable(variable)
            .with_context(|| format!("unknown variable {variable:?}"))?;
        if years.1 < years.0 || years.1 - years.0 > 200 {
            bail!(
                "years {}-{}: first ≤ last, at most 200 years",
                years.0,
                years.1
            );
        }
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=360.0).contains(&lon) {
            bail!("--lat must be -90..=90 and --lon -180..=360");
        }
        let models = models
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        d.model(m)
                            .with_context(|| format!("unknown model {m:?} for {d}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(SeriesRequest {
            dataset: d,
            scenario,
            variable: var,
            years,
            lat,
            lon,
            models,
        })
    }
}

/// One day of a file: what [`map_data`] reads.
#[derive(Debug, Clone)]
pub struct MapRequest {
    /// NetCDF file. The whole year is decoded (about cells × days × 4 bytes of memory).
    pub file: PathBuf,
    /// Day of the year, 1-based.
    pub day: u32,
    /// Year (`None`: the file's first).
    pub year: Option<i32>,
    /// Variable (`None`: the file's `(time, lat, lon)` variable).
    pub variable: Option<String>,
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

/// The series from the database: the loaded cell nearest to the place and its models' values
/// per day, reduced to (median, min, max).
///
/// # Errors
/// No loaded cell near the location, no data, database errors.
pub async fn series_data(dbc: &DbConfig, req: &SeriesRequest) -> anyhow::Result<SeriesData> {
    let SeriesRequest {
        dataset: d,
        scenario,
        variable: var,
        years: (y0, y1),
        lat,
        lon,
        ..
    } = *req;
    let models: Option<Vec<&str>> = req.models.clone();
    let col = pgcopy::quote_ident(catalog::variable_column(var).expect("allow-listed"));
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
            &[&dataset_id, &lat, &lon, &scenario, &y0, &y1],
        )
        .await
        .context("finding the nearest loaded cell")?;
    let Some(cell) = cell else {
        bail!(
            "no loaded {d} {scenario} cell with {var} in {y0}-{y1} within 1 degree of {}",
            place(lat, lon)
        );
    };
    let (cell_id, clat, clon): (i64, f64, f64) = (cell.get(0), cell.get(1), cell.get(2));
    let km = nexdecode::haversine_km(lat, lon, clat, clon);
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
        place(lat, lon),
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

/// One day of a file on ascending axes.
///
/// # Errors
/// The file cannot be read or decoded, the year is not in it, the day is out of range.
pub fn map_data(req: &MapRequest) -> anyhow::Result<MapData> {
    let file = match &req.variable {
        Some(v) => nexdecode::GridFile::open_variable(&req.file, v),
        None => nexdecode::GridFile::open(&req.file),
    }
    .with_context(|| format!("opening {}", req.file.display()))?;
    let years = file.years();
    let year = match req.year {
        Some(y) if years.contains(&y) => y,
        Some(y) => bail!(
            "{} holds no day of {y} (years: {years:?})",
            req.file.display()
        ),
        None => *years.first().context("the file has no time steps")?,
    };
    let ndays = nexdecode::real_days_in_year(year);
    if !(1..=ndays).contains(&(req.day as usize)) {
        bail!("--day {}: {year} has days 1..={ndays}", req.day);
    }
    let opts = nexdecode::DecodeOptions {
        allow_incomplete_year: true,
        ..nexdecode::DecodeOptions::default()
    };
    let block = file
        .decode_year(year, &nexdecode::CellSelection::AllData, &opts)
        .with_context(|| format!("decoding {year} of {}", req.file.display()))?;
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
    let day = req.day as usize - 1;
    for (row, cell) in block.cells.iter().enumerate() {
        values[lat_rank[cell.lat] * nlon + lon_rank[cell.lon]] = block.values[[row, day]];
    }
    let var = &file.variable().name;
    let units = file.variable().units.clone();
    let name = req
        .file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(MapData {
        title: format!("{var} {year} day {} ({name})", req.day),
        value_label: format!("{var} ({})", units.as_deref().unwrap_or("units unknown")),
        lat,
        lon,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_and_requests() {
        assert_eq!(place(37.77, -122.42), "37.77N 122.42W");
        assert_eq!(place(-33.9, 237.58), "33.90S 122.42W");
        let r = SeriesRequest::new(
            "nex-gddp",
            "RCP85",
            "tasmax",
            (2040, 2060),
            (37.0, -122.0),
            Some(&["access1-0"]),
        )
        .unwrap();
        assert_eq!(
            (r.scenario, r.models.as_deref()),
            ("rcp85", Some(&["ACCESS1-0"][..]))
        );
        let bad = |years, at| SeriesRequest::new("LOCA", "rcp85", "pr", years, at, None);
        assert!(bad((2060, 2040), (0.0, 0.0)).is_err());
        assert!(bad((2040, 2060), (91.0, 0.0)).is_err());
        assert!(
            SeriesRequest::new(
                "LOCA",
                "rcp85",
                "pr",
                (2040, 2040),
                (0.0, 0.0),
                Some(&["x"])
            )
            .is_err()
        );
    }
}

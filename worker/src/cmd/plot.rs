//! `nexingest plot series|map`: its flags as a [`SeriesRequest`] or [`MapRequest`], drawn by
//! [`crate::plot`].

use anyhow::{Context, bail};

use crate::cli::{PlotMapArgs, PlotSeriesArgs};
use crate::config::DbConfig;
use crate::plot::{self, MapRequest, PlotReport, SeriesRequest};

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

/// `plot series`' flags as a request.
///
/// # Errors
/// An unknown dataset, scenario, variable or model; a bad `--year-range`, `--lat` or `--lon`.
pub fn series_request(a: &PlotSeriesArgs) -> anyhow::Result<SeriesRequest> {
    let years = parse_year_range(&a.year_range)?;
    let models: Option<Vec<&str>> = if a.models.trim().eq_ignore_ascii_case("all") {
        None
    } else {
        Some(
            a.models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect(),
        )
    };
    SeriesRequest::new(
        &a.dataset,
        &a.scenario,
        &a.variable,
        years,
        (a.lat, a.lon),
        models.as_deref(),
    )
}

/// `plot map`'s flags as a request.
pub fn map_request(a: &PlotMapArgs) -> MapRequest {
    MapRequest {
        file: a.file.clone(),
        day: a.day,
        year: a.year,
        variable: a.variable.clone(),
    }
}

/// `plot series`.
///
/// # Errors
/// See [`series_request`] and [`plot::series`].
pub async fn series(dbc: &DbConfig, a: &PlotSeriesArgs) -> anyhow::Result<PlotReport> {
    plot::check_size(a.width, a.height)?;
    plot::series(dbc, &series_request(a)?, &a.out, a.width, a.height).await
}

/// `plot map`.
///
/// # Errors
/// See [`plot::map`].
pub fn map(a: &PlotMapArgs) -> anyhow::Result<PlotReport> {
    plot::map(&map_request(a), &a.out, a.width, a.height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_ranges() {
        assert_eq!(parse_year_range("2050").unwrap(), (2050, 2050));
        assert_eq!(parse_year_range("2040-2060").unwrap(), (2040, 2060));
        assert!(parse_year_range("2060-2040").is_err());
        assert!(parse_year_range("x").is_err());
    }
}

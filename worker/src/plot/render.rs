//! The two plots, drawn from plain data (no database, no files): takes [`SeriesData`] or
//! [`MapData`] and a size, hands on a [`Canvas`] ([`series`], [`map`]; the map also its
//! [`MapLayout`]).

use std::ops::Range;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::canvas::Canvas;

const BACKGROUND: [u8; 3] = [255, 255, 255];
/// Colour of cells without data on a map.
pub const MISSING: [u8; 3] = [170, 170, 170];
/// Colour of the median line.
pub const MEDIAN: RGBColor = RGBColor(31, 90, 170);
/// Colour of the min–max band.
pub const BAND: RGBColor = RGBColor(160, 195, 235);

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// Decimals for tick labels about a fifth of `span` apart.
pub fn decimals(span: f64) -> usize {
    let step = span / 5.0;
    if !(step.is_finite() && step > 0.0) {
        return 2;
    }
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

/// The caption's font size: large when the title fits the width, else small.
fn caption_size(title: &str, width: u32) -> u32 {
    if super::canvas::text_size(title, 2).0 + 28 <= width {
        18
    } else {
        9
    }
}

/// One day across models: (median, minimum, maximum).
pub type DayStats = (f32, f32, f32);

/// A location's daily series across models.
#[derive(Debug, Clone)]
pub struct SeriesData {
    /// Title line.
    pub title: String,
    /// Value-axis label (variable and units).
    pub value_label: String,
    /// Per day: its position in fractional years (year + day/days_in_year) and the models'
    /// (median, min, max), `None` where no model has a value.
    pub days: Vec<(f64, Option<DayStats>)>,
}

/// The min–max band and median of `values` (NaN = missing), `None` when none is valid.
pub fn median_min_max(values: &mut [f32]) -> Option<DayStats> {
    let mut n = 0;
    for i in 0..values.len() {
        if !values[i].is_nan() {
            values[n] = values[i];
            n += 1;
        }
    }
    let v = &mut values[..n];
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f32::total_cmp);
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

/// `x` (fractional years) as a label: the year for long spans, else the date.
fn year_label(x: f64, span: f64) -> String {
    let year = x.floor();
    if span > 3.0 {
        return format!("{year:.0}");
    }
    let y = year as i32;
    let n = nexdecode::real_days_in_year(y);
    let doy = (((x - year) * n as f64 + 1e-6).floor() as usize).min(n - 1);
    let (m, d) = month_day(y, doy);
    format!("{y}-{m:02}-{d:02}")
}

/// Month (1-based) and day (1-based) of the 0-based day of `year`.
fn month_day(year: i32, doy: usize) -> (usize, usize) {
    let feb = if nexdecode::is_leap_year(year) {
        29
    } else {
        28
    };
    let lengths = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut left = doy;
    for (i, len) in lengths.iter().enumerate() {
        if left < *len {
            return (i + 1, left + 1);
        }
        left -= len;
    }
    (12, 31)
}

/// `title`, cut with `...` to fit `width` pixels at font scale 1.
fn fit(title: &str, width: u32) -> String {
    let max = (width.saturating_sub(16) / super::canvas::GLYPH as u32) as usize;
    if title.chars().count() <= max {
        title.to_owned()
    } else {
        let mut t: String = title.chars().take(max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

/// Splits per-day values into runs of consecutive days with data.
fn runs<T: Copy>(days: &[(f64, Option<T>)]) -> Vec<Vec<(f64, T)>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for (x, v) in days {
        match v {
            Some(v) => run.push((*x, *v)),
            None if !run.is_empty() => out.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Draws a series plot: the band as one vertical line per day, the median as a line broken
/// where no model has data.
///
/// # Errors
/// When there is no value at all, or drawing fails.
pub fn series(d: &SeriesData, width: u32, height: u32) -> anyhow::Result<Canvas> {
    let valid: Vec<DayStats> = d.days.iter().filter_map(|(_, v)| *v).collect();
    anyhow::ensure!(!valid.is_empty(), "no values to plot");
    let lo = valid.iter().map(|v| v.1).fold(f32::INFINITY, f32::min) as f64;
    let hi = valid.iter().map(|v| v.2).fold(f32::NEG_INFINITY, f32::max) as f64;
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1.0) * 1e-3);
    let x0 = d.days.first().map_or(0.0, |v| v.0);
    let x1 = d.days.last().map_or(1.0, |v| v.0) + 1.0 / 365.0;
    let span = x1 - x0;
    let yd = decimals(hi - lo);
    let mut canvas = Canvas::new(width, height, BACKGROUND);
    {
        let root = canvas.area();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                fit(&d.title, width),
                ("sans-serif", caption_size(&d.title, width)),
            )
            .margin(14)
            .margin_right(44)
            .x_label_area_size(44)
            .y_label_area_size(84)
            .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(236, 236, 236))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| year_label(*x, span))
            .y_label_formatter(&|y| format!("{y:.yd$}"))
            .label_style(("sans-serif", 9))
            .axis_desc_style(("sans-serif", 9))
            .x_desc(if span > 3.0 { "year" } else { "date" })
            .y_desc(d.value_label.as_str())
            .draw()
            .map_err(err)?;
        // The band: one filled polygon per run of days with data (max forward, min back).
        for run in runs(&d.days) {
            let step = if run.len() > 1 {
                run[1].0 - run[0].0
            } else {
                1.0 / 365.0
            };
            let mut pts: Vec<(f64, f64)> = Vec::with_capacity(run.len() * 2 + 2);
            pts.extend(run.iter().map(|(x, v)| (*x, f64::from(v.2))));
            let last = run[run.len() - 1];
            pts.push((last.0 + step * 0.5, f64::from(last.1.2)));
            pts.push((last.0 + step * 0.5, f64::from(last.1.1)));
            pts.extend(run.iter().rev().map(|(x, v)| (*x, f64::from(v.1))));
            chart
                .draw_series(std::iter::once(Polygon::new(pts, BAND.filled())))
                .map_err(err)?;
            let median: Vec<(f64, f64)> = run.iter().map(|(x, v)| (*x, f64::from(v.0))).collect();
            if median.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(median[0], 2, MEDIAN.filled())))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(median, MEDIAN.stroke_width(2)))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    // Legend, top left inside the plot.
    let (x, y) = (110, 42);
    for dx in 0..22 {
        for dy in 0..8 {
            canvas.set(x + dx, y + dy, [BAND.0, BAND.1, BAND.2]);
        }
        canvas.set(x + dx, y + 19, [MEDIAN.0, MEDIAN.1, MEDIAN.2]);
        canvas.set(x + dx, y + 20, [MEDIAN.0, MEDIAN.1, MEDIAN.2]);
    }
    canvas.text(x + 28, y, "min-max of the models", 1, [60, 60, 60]);
    canvas.text(x + 28, y + 16, "median", 1, [60, 60, 60]);
    Ok(canvas)
}

/// One day of a grid.
#[derive(Debug, Clone)]
pub struct MapData {
    /// Title line.
    pub title: String,
    /// Colour-bar label (variable and units).
    pub value_label: String,
    /// Latitudes, ascending.
    pub lat: Vec<f64>,
    /// Longitudes, ascending.
    pub lon: Vec<f64>,
    /// `lat.len() × lon.len()` values, latitude-major, NaN = no data.
    pub values: Vec<f32>,
}

/// Width of the colour bar and its labels, pixels.
pub const COLOUR_BAR: u32 = 130;

/// Where a map was drawn.
#[derive(Debug, Clone)]
pub struct MapLayout {
    /// Pixel columns of the map.
    pub x: Range<i32>,
    /// Pixel rows of the map.
    pub y: Range<i32>,
    /// The colour scale: values at its ends.
    pub scale: (f32, f32),
}

/// The index of the axis value nearest to `v` (`axis` ascending, non-empty).
fn nearest(axis: &[f64], v: f64) -> usize {
    let i = axis.partition_point(|a| *a < v);
    if i == 0 {
        0
    } else if i == axis.len() {
        axis.len() - 1
    } else if (axis[i] - v) < (v - axis[i - 1]) {
        i
    } else {
        i - 1
    }
}

/// The edges of an axis's cells: half a step beyond the first and last centres.
fn edges(axis: &[f64]) -> (f64, f64) {
    let n = axis.len();
    let step = if n > 1 {
        (axis[n - 1] - axis[0]) / (n - 1) as f64
    } else {
        1.0
    };
    (axis[0] - step / 2.0, axis[n - 1] + step / 2.0)
}

/// The colour scale (viridis): `t` in 0..=1.
pub fn colour(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let p = t * (STOPS.len() - 1) as f64;
    let i = (p.floor() as usize).min(STOPS.len() - 2);
    let f = p - i as f64;
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8;
    }
    c
}

/// The 2nd and 98th percentiles of the valid values (widened when equal).
pub fn scale_of(values: &[f32]) -> Option<(f32, f32)> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f32::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (mut lo, mut hi) = (at(0.02), at(0.98));
    if hi <= lo {
        let d = (lo.abs() * 1e-3).max(1e-6);
        lo -= d;
        hi += d;
    }
    Some((lo, hi))
}

/// Draws a map: cells coloured by value on the 2nd–98th percentile scale, cells without data
/// grey, a colour bar with the units on the right.
///
/// # Errors
/// Mismatched sizes, no valid value, or drawing fails.
pub fn map(d: &MapData, width: u32, height: u32) -> anyhow::Result<(Canvas, MapLayout)> {
    let (nlat, nlon) = (d.lat.len(), d.lon.len());
    anyhow::ensure!(
        nlat > 0 && nlon > 0 && d.values.len() == nlat * nlon,
        "map: {} values for a {nlat} × {nlon} grid",
        d.values.len()
    );
    let (lo, hi) = scale_of(&d.values).context("the day has no valid value")?;
    let (lon0, lon1) = edges(&d.lon);
    let (lat0, lat1) = edges(&d.lat);
    let vd = decimals(f64::from(hi - lo));
    let xd = decimals(lon1 - lon0);
    let yd = decimals(lat1 - lat0);
    let mut canvas = Canvas::new(width, height, BACKGROUND);
    let (xr, yr);
    {
        let root = canvas.area();
        let root = root
            .titled(
                &fit(&d.title, width),
                ("sans-serif", caption_size(&d.title, width)),
            )
            .map_err(err)?;
        let (left, right) = root.split_horizontally(width.saturating_sub(COLOUR_BAR).max(50));
        let mut chart = ChartBuilder::on(&left)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(lon0..lon1, lat0..lat1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| format!("{x:.xd$}"))
            .y_label_formatter(&|y| format!("{y:.yd$}"))
            .label_style(("sans-serif", 9))
            .axis_desc_style(("sans-serif", 9))
            .x_desc("longitude (deg E)")
            .y_desc("latitude (deg N)")
            .draw()
            .map_err(err)?;
        (xr, yr) = chart.plotting_area().get_pixel_range();
        let mut bar = ChartBuilder::on(&right)
            .margin_top(14)
            .margin_bottom(58)
            .margin_right(8)
            .right_y_label_area_size(COLOUR_BAR - 40)
            .build_cartesian_2d(0.0..1.0, f64::from(lo)..f64::from(hi))
            .map_err(err)?
            .set_secondary_coord(0.0..1.0, f64::from(lo)..f64::from(hi));
        bar.configure_secondary_axes()
            .y_labels(6)
            .y_label_formatter(&|y| format!("{y:.vd$}"))
            .label_style(("sans-serif", 9))
            .axis_desc_style(("sans-serif", 9))
            .y_desc(d.value_label.as_str())
            .draw()
            .map_err(err)?;
        let steps = 128;
        let step = f64::from(hi - lo) / f64::from(steps);
        bar.draw_series((0..steps).map(|i| {
            let v0 = f64::from(lo) + step * f64::from(i);
            let c = colour((f64::from(i) + 0.5) / f64::from(steps));
            Rectangle::new(
                [(0.0, v0), (1.0, v0 + step)],
                RGBColor(c[0], c[1], c[2]).filled(),
            )
        }))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    // The raster: each pixel takes the value of the cell nearest to its centre.
    let span = f64::from(hi - lo);
    let w = f64::from(xr.end - xr.start);
    let h = f64::from(yr.end - yr.start);
    let cols: Vec<usize> = (xr.start..xr.end)
        .map(|px| {
            nearest(
                &d.lon,
                lon0 + (f64::from(px - xr.start) + 0.5) / w * (lon1 - lon0),
            )
        })
        .collect();
    for py in yr.clone() {
        let lat = lat1 - (f64::from(py - yr.start) + 0.5) / h * (lat1 - lat0);
        let row = nearest(&d.lat, lat) * nlon;
        for (k, px) in (xr.start..xr.end).enumerate() {
            let v = d.values[row + cols[k]];
            let c = if v.is_nan() {
                MISSING
            } else {
                colour((f64::from(v) - f64::from(lo)) / span)
            };
            canvas.set(px, py, c);
        }
    }
    Ok((
        canvas,
        MapLayout {
            x: xr,
            y: yr,
            scale: (lo, hi),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_band() {
        let mut v = [3.0, f32::NAN, 1.0, 2.0];
        assert_eq!(median_min_max(&mut v), Some((2.0, 1.0, 3.0)));
        let mut v = [4.0, 1.0];
        assert_eq!(median_min_max(&mut v), Some((2.5, 1.0, 4.0)));
        assert_eq!(median_min_max(&mut [f32::NAN]), None);
    }

    #[test]
    fn nearest_and_scale() {
        let axis = [0.0, 1.0, 2.0];
        assert_eq!(nearest(&axis, -5.0), 0);
        assert_eq!(nearest(&axis, 0.6), 1);
        assert_eq!(nearest(&axis, 1.4), 1);
        assert_eq!(nearest(&axis, 9.0), 2);
        assert_eq!(edges(&axis), (-0.5, 2.5));
        assert_eq!(colour(0.0), [68, 1, 84]);
        assert_eq!(colour(1.0), [253, 231, 37]);
        let (lo, hi) = scale_of(&[5.0, 5.0]).unwrap();
        assert!(lo < 5.0 && hi > 5.0);
        assert_eq!(year_label(2050.5, 1.0), "2050-07-02");
        assert_eq!(year_label(2008.0, 1.0), "2008-01-01");
        assert_eq!(month_day(2008, 59), (2, 29));
        assert_eq!(month_day(2007, 59), (3, 1));
        assert_eq!(month_day(2007, 364), (12, 31));
        assert_eq!(fit("abcdef", 16 + 8 * 5), "ab...");
        assert_eq!(year_label(2050.0, 10.0), "2050");
        assert_eq!(decimals(0.8), 1);
        assert_eq!(decimals(40.0), 0);
        assert_eq!(decimals(1e-4), 5);
    }

    #[test]
    fn a_map_colours_data_and_greys_the_rest() {
        let lat = vec![10.0, 11.0, 12.0];
        let lon = vec![100.0, 101.0, 102.0, 103.0];
        let mut values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        values[0] = f32::NAN; // lat 10, lon 100: bottom left
        let d = MapData {
            title: "t".into(),
            value_label: "v (K)".into(),
            lat,
            lon,
            values,
        };
        let (c, l) = map(&d, 500, 400).unwrap();
        assert_eq!((c.width(), c.height()), (500, 400));
        let bottom_left = c.pixel(l.x.start as u32 + 2, l.y.end as u32 - 3);
        assert_eq!(bottom_left, MISSING);
        let top_right = c.pixel(l.x.end as u32 - 3, l.y.start as u32 + 2);
        assert_eq!(top_right, colour(1.0));
    }
}

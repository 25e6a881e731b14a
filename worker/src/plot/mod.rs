//! Quick-look PNGs for QA: takes a [`SeriesRequest`] (and the database) or a [`MapRequest`]
//! (a NetCDF file), an output path and a size; writes the PNG and hands on a [`PlotReport`].
//!
//! - [`series`]: one location's daily values across models from the database — the models'
//!   median per day as a line and their minimum–maximum as a band, the variable's units on the
//!   value axis. The location is the loaded cell (of the dataset, with the variable, scenario
//!   and years) nearest to the requested point, within 1°.
//! - [`map`]: one day of a NetCDF file on a colour scale (the day's 2nd–98th percentile), cells
//!   without data grey. The file's year is decoded with `nexdecode`.
//!
//! The steps are modules: [`data`] reads what is drawn ([`SeriesData`], [`MapData`]),
//! [`render`] draws it, without I/O: plotters lays the plots out on an in-memory RGB canvas
//! whose text comes from a built-in bitmap font ([`canvas`]), encoded by the `png` crate.
//! `nexingest plot` (`cmd::plot`) turns its flags into the requests.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::DbConfig;

pub mod canvas;
pub mod data;
pub mod render;

pub use data::{MapRequest, SeriesRequest, map_data, series_data};
pub use render::{MapData, SeriesData};

/// Largest image side accepted, pixels.
pub const MAX_SIDE: u32 = 8192;

/// Smallest image accepted, pixels (width, height).
pub const MIN_SIZE: (u32, u32) = (200, 150);

/// Checks an image size against [`MIN_SIZE`] and [`MAX_SIDE`].
///
/// # Errors
/// A side out of range.
pub fn check_size(w: u32, h: u32) -> anyhow::Result<()> {
    if !(MIN_SIZE.0..=MAX_SIDE).contains(&w) || !(MIN_SIZE.1..=MAX_SIDE).contains(&h) {
        bail!(
            "image size {w} × {h}: width {}..={MAX_SIDE}, height {}..={MAX_SIDE} pixels",
            MIN_SIZE.0,
            MIN_SIZE.1
        );
    }
    Ok(())
}

fn write_png(path: &Path, c: &canvas::Canvas) -> anyhow::Result<()> {
    let png = c.to_png().context("encoding the PNG")?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
}

/// What a plot drew.
#[derive(Debug, Clone)]
pub struct PlotReport {
    /// The file written.
    pub path: PathBuf,
    /// Image size.
    pub size: (u32, u32),
    /// One line about what is on it.
    pub summary: String,
}

/// Draws a location's series ([`series_data`]) into a `width` × `height` PNG at `out`.
///
/// # Errors
/// The size out of range; see [`series_data`]; drawing and writing the file.
pub async fn series(
    dbc: &DbConfig,
    req: &SeriesRequest,
    out: &Path,
    width: u32,
    height: u32,
) -> anyhow::Result<PlotReport> {
    check_size(width, height)?;
    let data = series_data(dbc, req).await?;
    let c = render::series(&data, width, height)?;
    write_png(out, &c)?;
    let valid = data.days.iter().filter(|d| d.1.is_some()).count();
    Ok(PlotReport {
        path: out.to_owned(),
        size: (c.width(), c.height()),
        summary: format!(
            "{}; {valid} of {} days with data",
            data.title,
            data.days.len()
        ),
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

/// Draws one day of a file ([`map_data`]) into a PNG at `out`, `width` × `height` or
/// [`map_size`] where not given.
///
/// # Errors
/// See [`map_data`]; the size out of range; drawing and writing the file.
pub fn map(
    req: &MapRequest,
    out: &Path,
    width: Option<u32>,
    height: Option<u32>,
) -> anyhow::Result<PlotReport> {
    let data = map_data(req)?;
    let (w, h) = map_size(data.lat.len(), data.lon.len(), width, height);
    check_size(w, h)?;
    let (c, layout) = render::map(&data, w, h)?;
    write_png(out, &c)?;
    let valid = data.values.iter().filter(|v| !v.is_nan()).count();
    Ok(PlotReport {
        path: out.to_owned(),
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
    fn map_sizes() {
        let (w, h) = map_size(600, 1440, None, None);
        assert_eq!(w, 1600);
        assert!(h > 300 && h <= 1200, "{h}");
        assert_eq!(map_size(12, 16, Some(500), Some(400)), (500, 400));
        assert!(check_size(200, 150).is_ok());
        assert!(check_size(199, 150).is_err() && check_size(200, MAX_SIDE + 1).is_err());
    }
}

//! Mapping locations (lat, lon) to data cells of a year.

use crate::error::DecodeError;
use crate::file::GridFile;
use crate::grid::{CellIndex, Grid};
use crate::options::{CellSelection, DecodeOptions};
use crate::series::YearBlock;

/// Where a location landed on the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LocationMatch {
    /// The query latitude.
    pub lat: f64,
    /// The query longitude (as given).
    pub lon: f64,
    /// The data cell used, or `None` when the location is unmatched (no data cell within
    /// [`DecodeOptions::data_radius_km`]).
    pub cell: Option<CellIndex>,
    /// Great-circle distance (km) from the location to the used cell's centre; NaN when unmatched.
    pub distance_km: f64,
    /// The nearest grid cell by index, with or without data (`None` outside the grid).
    pub nearest: Option<CellIndex>,
    /// True when `cell` is not `nearest` (the nearest cell had no data or the point lies outside
    /// the grid).
    pub substituted: bool,
}

impl LocationMatch {
    /// True when the location has a data cell.
    pub fn is_matched(&self) -> bool {
        self.cell.is_some()
    }
}

/// Sorted flat indices of cells and whether each has data in the year.
struct Known {
    flat: Vec<usize>,
    has_data: Vec<bool>,
}

impl Known {
    fn get(&self, flat: usize) -> Option<bool> {
        self.flat
            .binary_search(&flat)
            .ok()
            .map(|i| self.has_data[i])
    }
}

impl GridFile {
    /// Maps points `(lat, lon)` (degrees; any longitude convention) to data cells of `year`.
    ///
    /// Each point takes its nearest cell by grid index on each axis (longitude normalised to the
    /// file's convention, wrapping at the seam of global grids). When that cell has no data in
    /// the year (missing on every day), or the point lies outside the grid, the nearest data cell
    /// within `options.data_radius_km` is used instead and `substituted` is set; when there is
    /// none, the point is returned unmatched (`cell: None`). Every point gets one entry, in order.
    ///
    /// # Errors
    /// The errors of [`GridFile::decode_year`] (the year must be complete).
    pub fn locate(
        &self,
        year: i32,
        points: &[(f64, f64)],
        options: &DecodeOptions,
    ) -> Result<Vec<LocationMatch>, DecodeError> {
        let grid = self.grid();
        let nearest: Vec<Option<CellIndex>> = points
            .iter()
            .map(|&(la, lo)| grid.nearest_cell(la, lo))
            .collect();
        let mut known =
            self.has_data(year, nearest.iter().flatten().copied().collect(), options)?;

        // Candidates for points whose nearest cell is empty or absent.
        let mut candidates: Vec<Vec<(CellIndex, f64)>> = vec![Vec::new(); points.len()];
        let mut unknown = Vec::new();
        for (i, (&(la, lo), near)) in points.iter().zip(&nearest).enumerate() {
            let needs = match near {
                Some(c) => known.get(grid.flat(*c)) != Some(true),
                None => true,
            };
            if needs && options.data_radius_km > 0.0 {
                candidates[i] = grid.cells_within(la, lo, options.data_radius_km);
                unknown.extend(
                    candidates[i]
                        .iter()
                        .map(|(c, _)| *c)
                        .filter(|c| known.get(grid.flat(*c)).is_none()),
                );
            }
        }
        if !unknown.is_empty() {
            let more = self.has_data(year, unknown, options)?;
            known = merge(known, more);
        }

        Ok(choose(grid, points, &nearest, &candidates, |c| {
            known.get(grid.flat(c)) == Some(true)
        }))
    }

    /// Like [`GridFile::locate`], but takes the data cells from an already decoded block (e.g.
    /// the [`CellSelection::AllData`] block of the year) instead of reading the file: a cell has
    /// data when the block holds it with at least one valid value. No I/O, no errors.
    pub fn locate_in(
        &self,
        data: &YearBlock,
        points: &[(f64, f64)],
        options: &DecodeOptions,
    ) -> Vec<LocationMatch> {
        let grid = self.grid();
        let has = |c: CellIndex| data.row_of(c).is_some_and(|r| data.valid_count_row(r) > 0);
        let nearest: Vec<Option<CellIndex>> = points
            .iter()
            .map(|&(la, lo)| grid.nearest_cell(la, lo))
            .collect();
        let candidates: Vec<Vec<(CellIndex, f64)>> = points
            .iter()
            .zip(&nearest)
            .map(|(&(la, lo), near)| {
                if near.is_some_and(has) || options.data_radius_km <= 0.0 {
                    Vec::new()
                } else {
                    grid.cells_within(la, lo, options.data_radius_km)
                }
            })
            .collect();
        choose(grid, points, &nearest, &candidates, has)
    }

    /// Decodes the cells for the year and records which hold at least one valid value.
    fn has_data(
        &self,
        year: i32,
        cells: Vec<CellIndex>,
        options: &DecodeOptions,
    ) -> Result<Known, DecodeError> {
        let block = self.decode_year(year, &CellSelection::Cells(cells), options)?;
        let has_data = (0..block.len())
            .map(|i| block.series(i).iter().any(|v| !v.is_nan()))
            .collect();
        let flat = block.cells.iter().map(|&c| self.grid().flat(c)).collect();
        Ok(Known { flat, has_data })
    }
}

/// The match of each point: its nearest cell when that has data, else the first candidate
/// (nearest first) with data, else unmatched.
fn choose(
    grid: &Grid,
    points: &[(f64, f64)],
    nearest: &[Option<CellIndex>],
    candidates: &[Vec<(CellIndex, f64)>],
    has: impl Fn(CellIndex) -> bool,
) -> Vec<LocationMatch> {
    points
        .iter()
        .zip(nearest)
        .zip(candidates)
        .map(|((&(lat, lon), &near), cands)| {
            if let Some(c) = near
                && has(c)
            {
                let distance_km = grid.distance_km(lat, lon, c);
                return LocationMatch {
                    lat,
                    lon,
                    cell: Some(c),
                    distance_km,
                    nearest: near,
                    substituted: false,
                };
            }
            match cands.iter().find(|(c, _)| has(*c)) {
                Some(&(c, d)) => LocationMatch {
                    lat,
                    lon,
                    cell: Some(c),
                    distance_km: d,
                    nearest: near,
                    substituted: true,
                },
                None => LocationMatch {
                    lat,
                    lon,
                    cell: None,
                    distance_km: f64::NAN,
                    nearest: near,
                    substituted: false,
                },
            }
        })
        .collect()
}

fn merge(a: Known, b: Known) -> Known {
    let mut pairs: Vec<(usize, bool)> = a
        .flat
        .into_iter()
        .zip(a.has_data)
        .chain(b.flat.into_iter().zip(b.has_data))
        .collect();
    pairs.sort_unstable_by_key(|p| p.0);
    pairs.dedup_by_key(|p| p.0);
    Known {
        flat: pairs.iter().map(|p| p.0).collect(),
        has_data: pairs.iter().map(|p| p.1).collect(),
    }
}

//! Mapping locations (lat, lon) to data cells of a year.

use std::fmt;

use crate::error::DecodeError;
use crate::file::GridFile;
use crate::grid::{CellIndex, Grid};
use ndarray::Array2;

use crate::chunked::Rows;
use crate::options::DecodeOptions;
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
    /// For a point outside the grid, the great-circle distance (km) to the grid's nearest edge
    /// cell ([`Grid::edge_cell`]); `None` inside the grid.
    pub outside_km: Option<f64>,
}

impl LocationMatch {
    /// True when the location has a data cell.
    pub fn is_matched(&self) -> bool {
        self.cell.is_some()
    }

    /// Why the location did not take its own nearest cell (then `cell` is a substitute within
    /// the search radius, or `None`); `None` when it did.
    pub fn reason(&self) -> Option<MatchReason> {
        if self.nearest.is_none() {
            return Some(MatchReason::OutsideGrid {
                edge_km: self.outside_km.unwrap_or(f64::NAN),
            });
        }
        (self.substituted || self.cell.is_none()).then_some(MatchReason::NearestCellHasNoData)
    }
}

/// Why a location is not in its own nearest cell ([`LocationMatch::reason`]). `Display` gives
/// the text for reports: `outside the grid (nearest edge 3954.2 km)`, `nearest cell has no data`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum MatchReason {
    /// The point lies outside the grid (beyond a regional grid's edge, or beyond the last
    /// latitude of a grid that stops short of a pole); `edge_km` is the distance to the nearest
    /// edge cell (NaN for a non-finite point).
    OutsideGrid {
        /// Great-circle distance (km) to the nearest edge cell.
        edge_km: f64,
    },
    /// The point's nearest cell has no data in the year (ocean, outside a dataset's domain).
    NearestCellHasNoData,
}

impl fmt::Display for MatchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchReason::OutsideGrid { edge_km } if edge_km.is_finite() => {
                write!(f, "outside the grid (nearest edge {edge_km:.1} km)")
            }
            MatchReason::OutsideGrid { .. } => f.write_str("outside the grid"),
            MatchReason::NearestCellHasNoData => f.write_str("nearest cell has no data"),
        }
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
    /// This reads the file as [`GridFile::locate_decode`] does; to decode the matched cells as
    /// well, call that instead (it reads the file once, not twice).
    ///
    /// # Errors
    /// The errors of [`GridFile::decode_year`] (the year must be complete).
    pub fn locate(
        &self,
        year: i32,
        points: &[(f64, f64)],
        options: &DecodeOptions,
    ) -> Result<Vec<LocationMatch>, DecodeError> {
        self.locate_decode(year, points, options).map(|(m, _)| m)
    }

    /// [`GridFile::locate`] and the decode of the matched cells in one read of the file: the
    /// matches, one per point in order, and the block of `year` with a row for each matched cell
    /// (ascending, no duplicates) — the block [`GridFile::decode_year`] gives for
    /// `CellSelection::Cells` of those cells, bit for bit.
    ///
    /// The one read covers each point's nearest cell and every cell within
    /// `options.data_radius_km` of it (the candidates, in case the nearest cell has no data); it
    /// keeps rows only for the cells with data. When the candidates of all points number more
    /// than [`ONE_READ_MAX_CANDIDATES`], the nearest cells are read first and the candidates of
    /// the points whose nearest cell has no data in a second read.
    ///
    /// # Errors
    /// The errors of [`GridFile::decode_year`] (the year must be complete).
    pub fn locate_decode(
        &self,
        year: i32,
        points: &[(f64, f64)],
        options: &DecodeOptions,
    ) -> Result<(Vec<LocationMatch>, YearBlock), DecodeError> {
        self.locate_decode_with(year, points, options, ONE_READ_MAX_CANDIDATES)
    }

    /// [`GridFile::locate_decode`] with the one-read limit as a parameter.
    pub(crate) fn locate_decode_with(
        &self,
        year: i32,
        points: &[(f64, f64)],
        options: &DecodeOptions,
        max_candidates: usize,
    ) -> Result<(Vec<LocationMatch>, YearBlock), DecodeError> {
        let grid = self.grid();
        let nearest: Vec<Option<CellIndex>> = points
            .iter()
            .map(|&(la, lo)| grid.nearest_cell(la, lo))
            .collect();
        let radius = options.data_radius_km;
        let mut candidates: Vec<Vec<(CellIndex, f64)>> = vec![Vec::new(); points.len()];
        let mut one_read = true;
        if radius > 0.0 {
            let mut total = 0;
            for (c, &(la, lo)) in candidates.iter_mut().zip(points) {
                *c = grid.cells_within(la, lo, radius);
                total += c.len();
                if total > max_candidates {
                    one_read = false;
                    break;
                }
            }
        }
        let flat_of = |cells: &mut dyn Iterator<Item = CellIndex>| {
            let mut f: Vec<usize> = cells.map(|c| grid.flat(c)).collect();
            f.sort_unstable();
            f.dedup();
            f
        };
        // Blocks read, each with its rows' flat cells, ascending; only rows with data count.
        let mut blocks: Vec<(YearBlock, Vec<usize>)> = Vec::with_capacity(2);
        if one_read {
            let want = flat_of(
                &mut nearest
                    .iter()
                    .flatten()
                    .copied()
                    .chain(candidates.iter().flatten().map(|&(c, _)| c)),
            );
            let mut b = YearBlock::default();
            self.decode_flat_into(year, &want, Rows::Valid, options, &mut b)?;
            let f = flat_of(&mut b.cells.iter().copied());
            blocks.push((b, f));
        } else {
            let want = flat_of(&mut nearest.iter().flatten().copied());
            let mut b = YearBlock::default();
            self.decode_flat_into(year, &want, Rows::Valid, options, &mut b)?;
            let f = flat_of(&mut b.cells.iter().copied());
            let near_has = |c: CellIndex| f.binary_search(&grid.flat(c)).is_ok();
            let mut unknown = Vec::new();
            for (i, (&(la, lo), near)) in points.iter().zip(&nearest).enumerate() {
                if near.is_some_and(near_has) || radius <= 0.0 {
                    candidates[i] = Vec::new();
                    continue;
                }
                candidates[i] = grid.cells_within(la, lo, radius);
                unknown.extend(
                    candidates[i]
                        .iter()
                        .map(|&(c, _)| grid.flat(c))
                        .filter(|g| want.binary_search(g).is_err()),
                );
            }
            blocks.push((b, f));
            if !unknown.is_empty() {
                unknown.sort_unstable();
                unknown.dedup();
                let mut b = YearBlock::default();
                self.decode_flat_into(year, &unknown, Rows::Valid, options, &mut b)?;
                let f = flat_of(&mut b.cells.iter().copied());
                blocks.push((b, f));
            }
        }
        let has = |c: CellIndex| {
            let g = grid.flat(c);
            blocks.iter().any(|(_, f)| f.binary_search(&g).is_ok())
        };
        let matches = choose(grid, points, &nearest, &candidates, has);
        let cells = flat_of(&mut matches.iter().filter_map(|m| m.cell));
        let block = rows_of(blocks, &cells, grid, year);
        Ok((matches, block))
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
}

/// The candidate cells of all points above which [`GridFile::locate_decode`] reads the file twice
/// (the nearest cells first, then only the candidates it needs) instead of once: 262,144 cells,
/// at most 383 MB of decoded rows for a 366-day year.
pub const ONE_READ_MAX_CANDIDATES: usize = 1 << 18;

/// A block with the rows of `cells` (ascending flat indices, each a row of one of `blocks`).
fn rows_of(
    mut blocks: Vec<(YearBlock, Vec<usize>)>,
    cells: &[usize],
    grid: &Grid,
    year: i32,
) -> YearBlock {
    if blocks.len() == 1 && blocks[0].1 == cells {
        return blocks.pop().expect("one block").0;
    }
    let first = &blocks[0].0;
    let days = first.days();
    let mut values = Vec::with_capacity(cells.len() * days);
    for g in cells {
        let (b, i) = blocks
            .iter()
            .find_map(|(b, f)| f.binary_search(g).ok().map(|i| (b, i)))
            .expect("a matched cell has a row");
        values.extend(b.series(i).iter());
    }
    YearBlock {
        variable: first.variable.clone(),
        units: first.units.clone(),
        year,
        calendar: first.calendar,
        cells: cells.iter().map(|&g| grid.cell(g)).collect(),
        values: Array2::from_shape_vec((cells.len(), days), values).expect("cells × days"),
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
            let outside_km = match near {
                Some(_) => None,
                None => grid
                    .edge_cell(lat, lon)
                    .map(|c| grid.distance_km(lat, lon, c)),
            };
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
                    outside_km,
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
                    outside_km,
                },
                None => LocationMatch {
                    lat,
                    lon,
                    cell: None,
                    distance_km: f64::NAN,
                    nearest: near,
                    substituted: false,
                    outside_km,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::haversine_km;

    fn axis(start: f64, step: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| start + step * i as f64).collect()
    }

    /// What `locate_in` does for a grid and a data mask, without a file.
    fn place(
        grid: &Grid,
        points: &[(f64, f64)],
        radius_km: f64,
        has: impl Fn(CellIndex) -> bool,
    ) -> Vec<LocationMatch> {
        let nearest: Vec<_> = points
            .iter()
            .map(|&(la, lo)| grid.nearest_cell(la, lo))
            .collect();
        let candidates: Vec<_> = points
            .iter()
            .map(|&(la, lo)| grid.cells_within(la, lo, radius_km))
            .collect();
        choose(grid, points, &nearest, &candidates, has)
    }

    #[test]
    fn outside_a_regional_grid_is_reported_as_outside_with_the_edge_distance() {
        // A LOCA-like 1/16° window over the Bay Area; its western quarter has no data (ocean).
        let grid = Grid::new(axis(37.28125, 0.0625, 12), axis(237.28125, 0.0625, 20)).unwrap();
        let has = |c: CellIndex| c.lon >= 5;
        let points = [
            (21.3069, -157.8583), // Honolulu: far outside
            (37.46875, -121.48),  // 4.5 km east of the eastern edge column, data within 50 km
            (37.5, -122.70),      // inside, over the ocean: nearest cell has no data
            (37.5, -122.0),       // inside, on land
        ];
        let m = place(&grid, &points, 50.0, has);

        assert_eq!(m[0].cell, None);
        assert_eq!(m[0].nearest, None);
        let corner = grid.coords(CellIndex { lat: 0, lon: 0 });
        let edge = haversine_km(points[0].0, points[0].1, corner.0, corner.1);
        assert_eq!(m[0].outside_km, Some(edge));
        assert_eq!(
            m[0].reason(),
            Some(MatchReason::OutsideGrid { edge_km: edge })
        );
        assert!((3000.0..5000.0).contains(&edge), "{edge}");
        assert_eq!(
            m[0].reason().unwrap().to_string(),
            format!("outside the grid (nearest edge {edge:.1} km)")
        );

        assert!(m[1].is_matched() && m[1].substituted);
        assert_eq!(m[1].cell.map(|c| c.lon), Some(19));
        let km = m[1].outside_km.unwrap();
        assert!((4.0..5.0).contains(&km), "{km}");
        assert!(matches!(
            m[1].reason(),
            Some(MatchReason::OutsideGrid { .. })
        ));

        assert!(m[2].is_matched() && m[2].substituted);
        assert_eq!(m[2].outside_km, None);
        assert_eq!(m[2].reason(), Some(MatchReason::NearestCellHasNoData));
        assert_eq!(
            m[2].reason().unwrap().to_string(),
            "nearest cell has no data"
        );

        assert!(m[3].is_matched() && !m[3].substituted);
        assert_eq!((m[3].reason(), m[3].outside_km), (None, None));

        // With no data cell within the radius, an ocean point is unmatched for lack of data.
        let m = place(&grid, &points[2..3], 1.0, has);
        assert_eq!(m[0].cell, None);
        assert_eq!(m[0].reason(), Some(MatchReason::NearestCellHasNoData));
    }

    #[test]
    fn locate_decode_in_one_read_and_in_two_reads_agree_with_decode_year() {
        use crate::options::{CellSelection, ReadPath};
        let f = fixtures::set::committed()
            .into_iter()
            .find(|f| f.rel_path.starts_with("nex-gddp/tasmax"))
            .expect("the NEX-GDDP tasmax fixture");
        let spec = &f.spec;
        let file = GridFile::open(f.path()).unwrap();
        // Every cell centre nudged (land and ocean, some nearest cells without data), twice
        // over (duplicate cells), and a point far outside the window.
        let mut points: Vec<(f64, f64)> = Vec::new();
        for i in 0..spec.lat.len() {
            for j in (0..spec.lon.len()).step_by(3) {
                points.push((spec.lat[i] + 0.01, spec.lon[j] - 0.02));
                points.push((spec.lat[i] - 0.01, spec.lon[j] + 0.02));
            }
        }
        points.push((-40.0, 10.0));
        let masked = points
            .iter()
            .filter_map(|&(la, lo)| file.grid().nearest_cell(la, lo))
            .filter(|c| spec.is_masked(c.lat, c.lon))
            .count();
        assert!(masked > 0, "some nearest cells have no data");
        for read_path in [ReadPath::Auto, ReadPath::Netcdf] {
            let opts = DecodeOptions {
                data_radius_km: 60.0,
                read_path,
                ..DecodeOptions::default()
            };
            let (m1, b1) = file
                .locate_decode_with(2008, &points, &opts, usize::MAX)
                .unwrap();
            let (m2, b2) = file.locate_decode_with(2008, &points, &opts, 0).unwrap();
            let key = |m: &LocationMatch| {
                (
                    m.cell,
                    m.nearest,
                    m.substituted,
                    m.distance_km.to_bits(),
                    m.outside_km,
                )
            };
            assert!(m1.iter().map(key).eq(m2.iter().map(key)));
            assert!(m1.iter().any(|m| m.substituted), "a substitute was found");
            let mut cells: Vec<CellIndex> = m1.iter().filter_map(|m| m.cell).collect();
            cells.sort_unstable();
            cells.dedup();
            let want = file
                .decode_year(2008, &CellSelection::Cells(cells.clone()), &opts)
                .unwrap();
            for b in [&b1, &b2] {
                assert_eq!(b.cells, cells);
                assert_eq!(
                    (&b.variable, &b.units, b.year, b.calendar),
                    (&want.variable, &want.units, want.year, want.calendar)
                );
                assert_eq!(b.values.dim(), want.values.dim());
                let bits =
                    |v: &ndarray::Array2<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&b.values), bits(&want.values), "{read_path:?}");
            }
        }
    }

    #[test]
    fn a_point_beyond_the_polar_row_of_a_global_grid_takes_that_row() {
        // Rows every 1.4° up to 88.9°, 1.1° short of the pole (like MIROC6's Gaussian grid).
        let grid = Grid::new(axis(-88.9, 1.4, 128), axis(0.0, 1.40625, 256)).unwrap();
        let m = place(&grid, &[(89.9, 10.0), (-89.9, 200.0)], 50.0, |_| true);
        assert_eq!(m[0].cell.map(|c| c.lat), Some(127));
        assert_eq!(m[1].cell.map(|c| c.lat), Some(0));
        assert!(m.iter().all(|x| x.reason().is_none() && !x.substituted));
    }
}

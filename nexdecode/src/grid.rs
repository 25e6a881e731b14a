//! Latitude/longitude grids: cell indices, nearest cells, seam wrap, distances.

/// A grid cell by its index on each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellIndex {
    /// Index along the latitude axis.
    pub lat: usize,
    /// Index along the longitude axis.
    pub lon: usize,
}

/// The longitude convention of a grid (and of normalised queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LonConvention {
    /// Longitudes in `[0, 360)` (some value above 180 exists).
    ZeroTo360,
    /// Longitudes in `[-180, 180)` (no value above 180).
    Signed,
}

/// Mean Earth radius (km) used for all distances.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km between two points given in degrees (haversine).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// The lat/lon axes of a file: regular or irregular, ascending or descending.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    lat: Vec<f64>,
    lon: Vec<f64>,
    convention: LonConvention,
    global: bool,
    /// Whether the first / last latitude row is the polar row of a global grid: every point
    /// between it and its pole belongs to it.
    polar: [bool; 2],
}

impl Grid {
    /// Builds a grid from its axes (degrees north, degrees east).
    ///
    /// # Errors
    /// A message when an axis is empty, holds a non-finite value or is not strictly monotonic.
    pub fn new(lat: Vec<f64>, lon: Vec<f64>) -> Result<Grid, String> {
        check_axis("latitude", &lat)?;
        check_axis("longitude", &lon)?;
        if lat.iter().any(|v| v.abs() > 90.0 + 1e-9) {
            return Err("latitude outside -90..90".into());
        }
        let convention = if lon.iter().any(|&v| v > 180.0) {
            LonConvention::ZeroTo360
        } else {
            LonConvention::Signed
        };
        let global = lon.len() >= 2 && {
            let span = (lon[lon.len() - 1] - lon[0]).abs();
            let step = span / (lon.len() - 1) as f64;
            (span + step - 360.0).abs() <= 0.5 * step
        };
        let polar = [(0, 1), (lat.len() - 1, lat.len().saturating_sub(2))].map(|(e, next)| {
            global && lat.len() >= 2 && 90.0 - lat[e].abs() <= (lat[e] - lat[next]).abs() + 1e-9
        });
        Ok(Grid {
            lat,
            lon,
            convention,
            global,
            polar,
        })
    }

    /// Latitudes (degrees north), in file order.
    pub fn lat(&self) -> &[f64] {
        &self.lat
    }

    /// Longitudes (degrees east), in file order.
    pub fn lon(&self) -> &[f64] {
        &self.lon
    }

    /// Number of latitudes.
    pub fn nlat(&self) -> usize {
        self.lat.len()
    }

    /// Number of longitudes.
    pub fn nlon(&self) -> usize {
        self.lon.len()
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.lat.len() * self.lon.len()
    }

    /// Always false (grids have at least one cell); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's longitude convention.
    pub fn lon_convention(&self) -> LonConvention {
        self.convention
    }

    /// True when the longitudes go round the globe (span plus one step ≈ 360°), so nearest-cell
    /// searches wrap at the seam.
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// `(lat, lon)` of a cell's centre.
    ///
    /// # Panics
    /// When the cell lies outside the grid.
    pub fn coords(&self, cell: CellIndex) -> (f64, f64) {
        (self.lat[cell.lat], self.lon[cell.lon])
    }

    /// Flat index `lat * nlon + lon` (the file's storage order).
    pub fn flat(&self, cell: CellIndex) -> usize {
        cell.lat * self.lon.len() + cell.lon
    }

    /// Inverse of [`Grid::flat`].
    pub fn cell(&self, flat: usize) -> CellIndex {
        CellIndex {
            lat: flat / self.lon.len(),
            lon: flat % self.lon.len(),
        }
    }

    /// True when the cell lies inside the grid.
    pub fn contains(&self, cell: CellIndex) -> bool {
        cell.lat < self.lat.len() && cell.lon < self.lon.len()
    }

    /// A longitude in the grid's convention: `[0, 360)` or `[-180, 180)`.
    pub fn normalize_lon(&self, lon: f64) -> f64 {
        match self.convention {
            LonConvention::ZeroTo360 => lon.rem_euclid(360.0),
            LonConvention::Signed => (lon + 180.0).rem_euclid(360.0) - 180.0,
        }
    }

    /// The nearest cell by grid index on each axis, or `None` when the point lies outside the grid
    /// (more than half a cell beyond an edge; never on a global longitude axis, which wraps).
    ///
    /// On a global grid a point poleward of the last latitude row belongs to that row when
    /// the row is the polar one, i.e. no further row would fit between it and the pole (its
    /// distance to the pole is at most the spacing of the last two rows): a Gaussian grid's
    /// top row at 88.93° takes points up to 90°, as xarray's nearest selection does. A global
    /// grid that stops short of a pole (NEX-GDDP-CMIP6 starts at −59.875°) keeps that edge.
    pub fn nearest_cell(&self, lat: f64, lon: f64) -> Option<CellIndex> {
        match self.place(lat, lon)? {
            (c, true) => Some(c),
            (_, false) => None,
        }
    }

    /// The cell nearest by index with the point clamped to the grid: [`Grid::nearest_cell`]
    /// for a point inside the grid, the nearest edge cell for one outside (e.g. to say how far
    /// outside a regional grid it lies). `None` only for non-finite coordinates.
    pub fn edge_cell(&self, lat: f64, lon: f64) -> Option<CellIndex> {
        self.place(lat, lon).map(|(c, _)| c)
    }

    /// The nearest cell, clamped to the grid, and whether the point lies inside the grid.
    fn place(&self, lat: f64, lon: f64) -> Option<(CellIndex, bool)> {
        let open = if lat.abs() <= 90.0 {
            self.polar
        } else {
            [false; 2]
        };
        let (i, lat_in) = nearest_index(&self.lat, lat, false, open)?;
        let q = self.normalize_lon(lon);
        let (mut j, lon_in) = nearest_index(&self.lon, q, self.global, [false; 2])?;
        if !lon_in {
            // Off a regional longitude axis: leave it by the end that is nearer round the globe
            // (10° E is nearer to a window's eastern end at 240° E than to its western at 236° E).
            let circ = |x: f64| {
                let d = (x - q).abs().rem_euclid(360.0);
                d.min(360.0 - d)
            };
            let n = self.lon.len();
            j = if circ(self.lon[n - 1]) < circ(self.lon[0]) {
                n - 1
            } else {
                0
            };
        }
        Some((CellIndex { lat: i, lon: j }, lat_in && lon_in))
    }

    /// Great-circle distance (km) from a point to a cell's centre.
    pub fn distance_km(&self, lat: f64, lon: f64, cell: CellIndex) -> f64 {
        let (clat, clon) = self.coords(cell);
        haversine_km(lat, lon, clat, clon)
    }

    /// All cells whose centres lie within `radius_km` of the point, nearest first (ties by flat
    /// index), with their distances.
    pub fn cells_within(&self, lat: f64, lon: f64, radius_km: f64) -> Vec<(CellIndex, f64)> {
        let mut out = Vec::new();
        if radius_km.is_nan() || radius_km < 0.0 {
            return out;
        }
        let radius_deg = (radius_km / EARTH_RADIUS_KM).to_degrees();
        let (lo, hi) = (lat - radius_deg, lat + radius_deg);
        let max_abs_lat = lo.abs().max(hi.abs());
        let cos = max_abs_lat.min(90.0).to_radians().cos();
        let dlon = if cos < 1e-9 || hi >= 90.0 || lo <= -90.0 {
            360.0
        } else {
            radius_deg / cos
        };
        let qlon = self.normalize_lon(lon);
        for (i, &la) in self.lat.iter().enumerate() {
            if la < lo || la > hi {
                continue;
            }
            for (j, &lo_) in self.lon.iter().enumerate() {
                let diff = (lo_ - qlon).abs();
                let diff = diff.min(360.0 - diff); // points on the sphere: always compare wrapped
                if diff > dlon {
                    continue;
                }
                let d = haversine_km(lat, lon, la, lo_);
                if d <= radius_km {
                    out.push((CellIndex { lat: i, lon: j }, d));
                }
            }
        }
        out.sort_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then_with(|| self.flat(a.0).cmp(&self.flat(b.0)))
        });
        out
    }
}

fn check_axis(name: &str, v: &[f64]) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{name} axis is empty"));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("{name} axis holds a non-finite value"));
    }
    if v.len() >= 2 {
        let asc = v[1] > v[0];
        let mono = v
            .windows(2)
            .all(|w| if asc { w[1] > w[0] } else { w[1] < w[0] });
        if !mono {
            return Err(format!("{name} axis is not strictly monotonic"));
        }
    }
    Ok(())
}

/// Nearest index on a strictly monotonic axis (ascending or descending), and whether `q` lies
/// on the axis: not more than half an edge step beyond its first/last value, unless that end is
/// `open` (everything beyond it belongs to it), or `wrap` (a global longitude axis, where the
/// seam is crossed instead). Outside the axis the index is the nearest end. Ties go to the
/// lower index. `None` only for a non-finite `q`.
fn nearest_index(axis: &[f64], q: f64, wrap: bool, open: [bool; 2]) -> Option<(usize, bool)> {
    let n = axis.len();
    if !q.is_finite() {
        return None;
    }
    if n == 1 {
        // No extent is known for a single-value axis: it covers everything.
        return Some((0, true));
    }
    let asc = axis[1] > axis[0];
    // First index whose value is past q in the axis direction.
    let p = axis.partition_point(|&v| if asc { v < q } else { v > q });
    let dist = |i: usize| (axis[i] - q).abs();
    if wrap {
        // Compare the two neighbours across the seam as well.
        let circ = |i: usize| {
            let d = (axis[i] - q).abs().rem_euclid(360.0);
            d.min(360.0 - d)
        };
        let (a, b) = if p == 0 || p == n {
            (n - 1, 0)
        } else {
            (p - 1, p)
        };
        let (da, db) = (circ(a), circ(b));
        return Some((if da < db || (da == db && a < b) { a } else { b }, true));
    }
    let step_first = (axis[1] - axis[0]).abs();
    let step_last = (axis[n - 1] - axis[n - 2]).abs();
    if p == 0 {
        return Some((0, open[0] || dist(0) <= 0.5 * step_first + 1e-9));
    }
    if p == n {
        return Some((n - 1, open[1] || dist(n - 1) <= 0.5 * step_last + 1e-9));
    }
    Some((if dist(p - 1) <= dist(p) { p - 1 } else { p }, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(start: f64, step: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| start + step * i as f64).collect()
    }

    #[test]
    fn haversine_known_distances() {
        // One degree of latitude ≈ 111.195 km on a 6371.0088 km sphere.
        assert!((haversine_km(0.0, 0.0, 1.0, 0.0) - 111.195).abs() < 0.01);
        // Across the seam: 179.5 and -179.5 are one degree apart at the equator.
        assert!((haversine_km(0.0, 179.5, 0.0, -179.5) - 111.195).abs() < 0.01);
        assert!((haversine_km(0.0, 359.5, 0.0, 0.5) - 111.195).abs() < 0.01);
        assert_eq!(haversine_km(10.0, 20.0, 10.0, 20.0), 0.0);
    }

    #[test]
    fn nearest_on_regular_quarter_degree_grid() {
        // NEX-GDDP-CMIP6: lat -59.875..89.875, lon 0.125..359.875.
        let g = Grid::new(axis(-59.875, 0.25, 600), axis(0.125, 0.25, 1440)).unwrap();
        assert!(g.is_global());
        assert_eq!(g.lon_convention(), LonConvention::ZeroTo360);
        // 40.7128 N, 74.0060 W (New York) → lon 285.994 → index (285.994-0.125)/0.25 = 1143.5 → 1143 or 1144
        let c = g.nearest_cell(40.7128, -74.0060).unwrap();
        assert_eq!(c.lat, ((40.7128f64 + 59.875) / 0.25).round() as usize);
        assert_eq!(c.lon, 1143); // 285.875 is 0.119 away, 286.125 is 0.131 away
        assert!((g.coords(c).1 - 285.875).abs() < 1e-9);
        // Outside the CMIP6 latitude range (Antarctica) → no cell.
        assert_eq!(g.nearest_cell(-75.0, 10.0), None);
        // Edge: within half a cell of the first latitude.
        assert_eq!(g.nearest_cell(-59.99, 10.0).map(|c| c.lat), Some(0));
    }

    #[test]
    fn seam_wrap_on_global_grid() {
        let g = Grid::new(axis(-89.875, 0.25, 720), axis(0.125, 0.25, 1440)).unwrap();
        // 359.99 E is 0.135 from 0.125 (across the seam) and 0.115 from 359.875.
        assert_eq!(g.nearest_cell(0.0, 359.99).unwrap().lon, 1439);
        // 0.01 E: 0.115 from 0.125, 0.135 from 359.875 (across the seam).
        assert_eq!(g.nearest_cell(0.0, 0.01).unwrap().lon, 0);
        // -0.2 → 359.8: nearest 359.875.
        assert_eq!(g.nearest_cell(0.0, -0.2).unwrap().lon, 1439);
        // A coarse global grid starting at 0: 359.5 is nearer to 0 (across the seam) than to 337.5.
        let g = Grid::new(vec![-45.0, 45.0], axis(0.0, 22.5, 16)).unwrap();
        assert!(g.is_global());
        assert_eq!(g.nearest_cell(0.0, 359.5).unwrap().lon, 0);
        assert_eq!(g.nearest_cell(0.0, 350.0).unwrap().lon, 0); // 10 across the seam vs 12.5
        assert_eq!(g.nearest_cell(0.0, 345.0).unwrap().lon, 15);
    }

    #[test]
    fn signed_convention_and_regional_grid() {
        // -180..180 global grid.
        let g = Grid::new(axis(-89.5, 1.0, 180), axis(-179.5, 1.0, 360)).unwrap();
        assert_eq!(g.lon_convention(), LonConvention::Signed);
        assert!(g.is_global());
        assert_eq!(g.normalize_lon(270.0), -90.0);
        assert_eq!(
            g.nearest_cell(10.2, 270.2).unwrap(),
            CellIndex { lat: 100, lon: 90 }
        );
        assert_eq!(g.nearest_cell(0.0, 179.9).unwrap().lon, 359);
        assert_eq!(g.nearest_cell(0.0, -179.9).unwrap().lon, 0);
        assert_eq!(g.nearest_cell(0.0, 180.1).unwrap().lon, 0); // -179.9
        // A regional -180..180 grid (MANIFEST #12: lon -118.458, -118.375; 1/12°).
        let g = Grid::new(
            axis(50.708_333, 1.0 / 12.0, 4),
            vec![-118.458_334, -118.375_001],
        )
        .unwrap();
        assert!(!g.is_global());
        assert_eq!(
            g.nearest_cell(50.8, 241.6).unwrap(),
            CellIndex { lat: 1, lon: 1 }
        );
        assert_eq!(g.nearest_cell(50.8, -118.44).unwrap().lon, 0);
        assert_eq!(g.nearest_cell(50.8, -117.0), None);
        // A regional 0..360 grid (LOCA-like CONUS).
        let g = Grid::new(axis(23.53125, 0.0625, 490), axis(234.53125, 0.0625, 944)).unwrap();
        assert_eq!(g.lon_convention(), LonConvention::ZeroTo360);
        assert!(!g.is_global());
        let c = g.nearest_cell(34.05, -118.26).unwrap(); // Los Angeles
        assert_eq!(c.lon, ((241.74f64 - 234.53125) / 0.0625).round() as usize);
        assert_eq!(g.nearest_cell(48.85, 2.35), None); // Paris
    }

    #[test]
    fn descending_latitude_and_irregular_axis() {
        let g = Grid::new(vec![60.0, 30.0, 0.0, -30.0], vec![0.0, 1.0, 5.0, 20.0]).unwrap();
        assert_eq!(g.nearest_cell(44.0, 0.0).unwrap().lat, 1);
        assert_eq!(g.nearest_cell(46.0, 0.0).unwrap().lat, 0);
        assert_eq!(g.nearest_cell(-40.0, 0.0).unwrap().lat, 3);
        assert_eq!(g.nearest_cell(-50.0, 0.0), None);
        assert_eq!(g.nearest_cell(0.0, 2.9).unwrap().lon, 1);
        assert_eq!(g.nearest_cell(0.0, 3.1).unwrap().lon, 2);
        assert_eq!(g.nearest_cell(0.0, 12.5).unwrap().lon, 2); // tie → lower index
        assert_eq!(g.nearest_cell(0.0, 27.0).unwrap().lon, 3);
        assert_eq!(g.nearest_cell(0.0, 28.0), None);
    }

    /// The 128 latitudes of MIROC6's T85 Gaussian grid (MANIFEST #7), from the Gauss-Legendre
    /// nodes, ascending (−88.928..88.928; spacing ≈ 1.4008°, 1.07° from the top row to the pole).
    fn gaussian_128() -> Vec<f64> {
        let n = 128;
        let mut lat = Vec::with_capacity(n);
        for k in 0..n {
            // Newton on P_n from the Chebyshev-like guess; root k of P_n gives −cos θ ascending.
            let mut x = -(std::f64::consts::PI * (k as f64 + 0.75) / (n as f64 + 0.5)).cos();
            for _ in 0..50 {
                let (mut p0, mut p1) = (1.0, x);
                for m in 2..=n {
                    let p2 = ((2 * m - 1) as f64 * x * p1 - (m - 1) as f64 * p0) / m as f64;
                    p0 = p1;
                    p1 = p2;
                }
                let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                x -= p1 / dp;
            }
            lat.push(x.asin().to_degrees());
        }
        lat
    }

    #[test]
    fn polar_rows_of_global_grids_take_points_up_to_the_pole() {
        let lat = gaussian_128();
        assert!(
            (lat[127] - 88.927_735_352_295_9).abs() < 1e-9,
            "{}",
            lat[127]
        );
        let g = Grid::new(lat.clone(), axis(0.0, 1.40625, 256)).unwrap();
        assert!(g.is_global());
        // 89.9° is 0.97° beyond the top row, more than half its 1.40° spacing: still the top row.
        for (q, row) in [
            (89.9, 127),
            (90.0, 127),
            (88.5, 127),
            (-89.9, 0),
            (-90.0, 0),
        ] {
            assert_eq!(g.nearest_cell(q, 10.0).map(|c| c.lat), Some(row), "{q}");
        }
        assert_eq!(g.nearest_cell(90.5, 10.0), None, "beyond the pole");
        assert_eq!(g.nearest_cell(f64::NAN, 10.0), None);
        // Descending, the same grid.
        let mut desc = lat;
        desc.reverse();
        let g = Grid::new(desc, axis(0.0, 1.40625, 256)).unwrap();
        assert_eq!(g.nearest_cell(89.9, 10.0).map(|c| c.lat), Some(0));
        assert_eq!(g.nearest_cell(-89.9, 10.0).map(|c| c.lat), Some(127));
        // A regular global 0.25° grid: 89.99 is within half a step anyway.
        let g = Grid::new(axis(-89.875, 0.25, 720), axis(0.125, 0.25, 1440)).unwrap();
        assert_eq!(g.nearest_cell(89.99, 0.0).map(|c| c.lat), Some(719));
        // A global 2° grid whose rows stop 2° short of the poles: still polar.
        let g = Grid::new(axis(-88.0, 2.0, 89), axis(0.0, 2.0, 180)).unwrap();
        assert_eq!(g.nearest_cell(89.9, 0.0).map(|c| c.lat), Some(88));
        // Rows stopping well short of a pole are edges, not polar rows: NEX-GDDP-CMIP6's
        // southern edge at −59.875 keeps Antarctica outside; its northern row is polar.
        let g = Grid::new(axis(-59.875, 0.25, 600), axis(0.125, 0.25, 1440)).unwrap();
        assert_eq!(g.nearest_cell(-75.0, 10.0), None);
        assert_eq!(g.nearest_cell(-60.2, 10.0), None);
        assert_eq!(g.nearest_cell(90.0, 10.0).map(|c| c.lat), Some(599));
        // A regional grid near a pole: no polar row (the longitudes do not go round).
        let g = Grid::new(axis(80.5, 1.0, 9), axis(0.5, 1.0, 20)).unwrap();
        assert!(!g.is_global());
        assert_eq!(g.nearest_cell(89.9, 5.0), None);
        assert_eq!(g.nearest_cell(89.0, 5.0).map(|c| c.lat), Some(8));
    }

    #[test]
    fn edge_cell_clamps_points_outside_the_grid() {
        // LOCA-like CONUS window.
        let g = Grid::new(axis(23.53125, 0.0625, 490), axis(234.53125, 0.0625, 944)).unwrap();
        // Honolulu: west and south of the grid → the south-west corner cell.
        assert_eq!(g.nearest_cell(21.3069, -157.8583), None);
        assert_eq!(
            g.edge_cell(21.3069, -157.8583),
            Some(CellIndex { lat: 0, lon: 0 })
        );
        // North of the grid, inside its longitudes → top row, same column as nearest would be.
        let c = g.edge_cell(60.0, -100.01).unwrap();
        assert_eq!(c.lat, 489);
        assert_eq!(c.lon, ((259.99f64 - 234.53125) / 0.0625).round() as usize);
        // West of a window at 236..240° E, 10° E is nearer to its eastern end round the globe.
        let w = Grid::new(axis(36.625, 0.25, 12), axis(236.625, 0.25, 16)).unwrap();
        assert_eq!(
            w.edge_cell(-40.0, 10.0),
            Some(CellIndex { lat: 0, lon: 15 })
        );
        assert_eq!(w.edge_cell(37.0, 200.0), Some(CellIndex { lat: 1, lon: 0 }));
        // Inside: the same as the nearest cell.
        assert_eq!(g.edge_cell(34.05, -118.26), g.nearest_cell(34.05, -118.26));
        assert_eq!(g.edge_cell(f64::NAN, 0.0), None);
    }

    #[test]
    fn bad_axes_rejected() {
        assert!(Grid::new(vec![], vec![0.0]).is_err());
        assert!(Grid::new(vec![0.0, 0.0], vec![0.0]).is_err());
        assert!(Grid::new(vec![0.0, 1.0, 0.5], vec![0.0]).is_err());
        assert!(Grid::new(vec![f64::NAN], vec![0.0]).is_err());
        assert!(Grid::new(vec![95.0], vec![0.0]).is_err());
    }

    #[test]
    fn cells_within_radius() {
        let g = Grid::new(axis(-89.875, 0.25, 720), axis(0.125, 0.25, 1440)).unwrap();
        let near = g.cells_within(0.0, 0.0, 30.0);
        // Cells at (±0.125, ±0.125 across the seam): 19.66 km each; the next ring is ≥ 43 km.
        assert_eq!(near.len(), 4);
        assert!(near.iter().all(|(_, d)| (d - 19.657).abs() < 0.01));
        assert!(near.iter().any(|(c, _)| c.lon == 1439));
        assert!(near.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(g.cells_within(0.0, 0.0, 10.0).is_empty());
        // Near the pole every longitude is a candidate.
        assert_eq!(g.cells_within(89.99, 0.0, 20.0).len(), 1440);
    }

    #[test]
    fn flat_round_trip() {
        let g = Grid::new(axis(0.0, 1.0, 3), axis(0.0, 1.0, 5)).unwrap();
        let c = CellIndex { lat: 2, lon: 3 };
        assert_eq!(g.flat(c), 13);
        assert_eq!(g.cell(13), c);
        assert!(!g.contains(CellIndex { lat: 3, lon: 0 }));
    }
}

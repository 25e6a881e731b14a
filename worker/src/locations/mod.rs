//! GeoJSON location input: points (FeatureCollection) for the `location` table, polygons for
//! boundary jobs. Each feature is checked on its own so bad ones are reported by index.
//! [`import`] reads such documents (file or S3) and upserts their points, for jobs and for
//! `nexingest import-locations` alike.

use std::fmt;

use geojson::{Feature, GeometryValue};
use nexdecode::{CellIndex, Grid};
use serde_json::Value;

pub mod import;

/// A location ready for the `location` table.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLocation {
    /// Id within its source (feature property, feature id, or index).
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// Latitude, degrees north.
    pub lat: f64,
    /// Longitude, degrees east (-180..180, as GeoJSON requires).
    pub lon: f64,
    /// The feature's properties.
    pub properties: serde_json::Map<String, Value>,
}

/// A feature that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFeature {
    /// 0-based index in `features`.
    pub index: usize,
    /// Why.
    pub reason: String,
}

impl fmt::Display for BadFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feature {}: {}", self.index, self.reason)
    }
}

/// How to read names and ids.
#[derive(Debug, Clone)]
pub struct PointOptions {
    /// Property holding the name.
    pub name_property: String,
    /// Property holding the id; when a feature lacks it, its GeoJSON `id`, else its index.
    pub id_property: String,
}

impl Default for PointOptions {
    fn default() -> Self {
        PointOptions {
            name_property: "name".into(),
            id_property: "id".into(),
        }
    }
}

/// The result of reading a points document.
#[derive(Debug, Clone, Default)]
pub struct Points {
    /// Good locations.
    pub locations: Vec<NewLocation>,
    /// Bad features.
    pub bad: Vec<BadFeature>,
}

fn features(doc: &[u8]) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err("not a GeoJSON FeatureCollection".into());
    }
    match v.get("features") {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => Err("FeatureCollection without a `features` array".into()),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a FeatureCollection of points.
///
/// # Errors
/// When the document is not a FeatureCollection at all. Bad features are returned in
/// [`Points::bad`], not as an error.
pub fn read_points(doc: &[u8], opts: &PointOptions) -> Result<Points, String> {
    let mut out = Points::default();
    let mut seen = std::collections::HashSet::new();
    for (index, fv) in features(doc)?.into_iter().enumerate() {
        let bad = |reason: String| BadFeature { index, reason };
        let f: Feature = match serde_json::from_value(fv) {
            Ok(f) => f,
            Err(e) => {
                out.bad.push(bad(format!("invalid feature: {e}")));
                continue;
            }
        };
        let props = f.properties.clone().unwrap_or_default();
        let (lat, lon) = match f.geometry.as_ref().map(|g| &g.value) {
            Some(GeometryValue::Point { coordinates }) if coordinates.len() >= 2 => {
                (coordinates[1], coordinates[0])
            }
            Some(GeometryValue::Point { .. }) => {
                out.bad
                    .push(bad("point with fewer than 2 coordinates".into()));
                continue;
            }
            Some(g) => {
                out.bad
                    .push(bad(format!("geometry is {}, not a Point", g.type_name())));
                continue;
            }
            None => {
                out.bad.push(bad("no geometry".into()));
                continue;
            }
        };
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            out.bad.push(bad(format!("latitude {lat} out of range")));
            continue;
        }
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            out.bad.push(bad(format!("longitude {lon} out of range")));
            continue;
        }
        let name = match props.get(&opts.name_property).and_then(scalar) {
            Some(n) if !n.trim().is_empty() && n.len() <= 500 => n.trim().to_owned(),
            _ => {
                out.bad
                    .push(bad(format!("no `{}` property", opts.name_property)));
                continue;
            }
        };
        let external_id = match props.get(&opts.id_property).and_then(scalar) {
            Some(id) if !id.is_empty() && id.len() <= 200 => id,
            _ => match &f.id {
                Some(geojson::feature::Id::String(s)) => s.clone(),
                Some(geojson::feature::Id::Number(n)) => n.to_string(),
                None => index.to_string(),
            },
        };
        if !seen.insert(external_id.clone()) {
            out.bad.push(bad(format!("duplicate id {external_id:?}")));
            continue;
        }
        out.locations.push(NewLocation {
            external_id,
            name,
            lat,
            lon,
            properties: props,
        });
    }
    Ok(out)
}

/// A polygon ring set: the first ring is the outer boundary, the rest are holes. Coordinates
/// are (lon, lat).
pub type Polygon = Vec<Vec<(f64, f64)>>;

/// Reads every Polygon/MultiPolygon of a GeoJSON document (a FeatureCollection, a Feature or
/// a bare geometry).
///
/// # Errors
/// When the document holds no polygon, or a polygon is malformed.
pub fn read_polygons(doc: &[u8]) -> Result<Vec<Polygon>, String> {
    let gj: geojson::GeoJson = std::str::from_utf8(doc)
        .map_err(|e| format!("not UTF-8: {e}"))?
        .parse()
        .map_err(|e| format!("not GeoJSON: {e}"))?;
    let mut geoms = Vec::new();
    match gj {
        geojson::GeoJson::FeatureCollection(fc) => {
            geoms.extend(fc.features.into_iter().filter_map(|f| f.geometry));
        }
        geojson::GeoJson::Feature(f) => geoms.extend(f.geometry),
        geojson::GeoJson::Geometry(g) => geoms.push(g),
    }
    let mut out = Vec::new();
    let mut push = |rings: &Vec<Vec<geojson::Position>>| -> Result<(), String> {
        let mut poly = Vec::with_capacity(rings.len());
        for ring in rings {
            if ring.len() < 4 {
                return Err("polygon ring with fewer than 4 positions".into());
            }
            let r: Vec<(f64, f64)> = ring
                .iter()
                .map(|p| {
                    (
                        p.as_slice().first().copied().unwrap_or(f64::NAN),
                        p.as_slice().get(1).copied().unwrap_or(f64::NAN),
                    )
                })
                .collect();
            if r.iter()
                .any(|(x, y)| !x.is_finite() || !y.is_finite() || y.abs() > 90.0)
            {
                return Err("polygon with invalid coordinates".into());
            }
            poly.push(r);
        }
        if !poly.is_empty() {
            out.push(poly);
        }
        Ok(())
    };
    for g in &geoms {
        match &g.value {
            GeometryValue::Polygon { coordinates } => push(coordinates)?,
            GeometryValue::MultiPolygon { coordinates } => {
                for p in coordinates {
                    push(p)?;
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err("no Polygon or MultiPolygon geometry".into());
    }
    Ok(out)
}

/// Even-odd point-in-polygon over all rings (holes excluded).
pub fn contains(poly: &Polygon, lon: f64, lat: f64) -> bool {
    let mut inside = false;
    for ring in poly {
        let n = ring.len();
        let mut j = n - 1;
        for i in 0..n {
            let (xi, yi) = ring[i];
            let (xj, yj) = ring[j];
            if (yi > lat) != (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
    }
    inside
}

/// Whether a polygon touches the axis-aligned cell `[lon0, lon1] × [lat0, lat1]`: the cell's
/// centre or a corner is inside, or a polygon vertex lies in the cell, or an edge crosses it.
pub fn touches_cell(poly: &Polygon, lon0: f64, lon1: f64, lat0: f64, lat1: f64) -> bool {
    let cx = (lon0 + lon1) / 2.0;
    let cy = (lat0 + lat1) / 2.0;
    if contains(poly, cx, cy)
        || [(lon0, lat0), (lon0, lat1), (lon1, lat0), (lon1, lat1)]
            .iter()
            .any(|&(x, y)| contains(poly, x, y))
    {
        return true;
    }
    for ring in poly {
        for w in ring.windows(2) {
            let (a, b) = (w[0], w[1]);
            let inside = |(x, y): (f64, f64)| x >= lon0 && x <= lon1 && y >= lat0 && y <= lat1;
            if inside(a) || inside(b) {
                return true;
            }
            let edges = [
                ((lon0, lat0), (lon1, lat0)),
                ((lon1, lat0), (lon1, lat1)),
                ((lon1, lat1), (lon0, lat1)),
                ((lon0, lat1), (lon0, lat0)),
            ];
            if edges.iter().any(|&(c, d)| segments_cross(a, b, c, d)) {
                return true;
            }
        }
    }
    false
}

fn segments_cross(a: (f64, f64), b: (f64, f64), c: (f64, f64), d: (f64, f64)) -> bool {
    let orient = |p: (f64, f64), q: (f64, f64), r: (f64, f64)| {
        (q.0 - p.0) * (r.1 - p.1) - (q.1 - p.1) * (r.0 - p.0)
    };
    let (d1, d2) = (orient(c, d, a), orient(c, d, b));
    let (d3, d4) = (orient(a, b, c), orient(a, b, d));
    ((d1 > 0.0) != (d2 > 0.0)) && ((d3 > 0.0) != (d4 > 0.0))
}

/// The bounding box `(lon_min, lon_max, lat_min, lat_max)` of polygons.
pub fn bbox(polys: &[Polygon]) -> (f64, f64, f64, f64) {
    let mut b = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in polys {
        for &(x, y) in p.iter().flatten() {
            b.0 = b.0.min(x);
            b.1 = b.1.max(x);
            b.2 = b.2.min(y);
            b.3 = b.3.max(y);
        }
    }
    b
}

/// The cells of `grid` that the polygons touch, sorted and without duplicates. Each polygon
/// (each part of a MultiPolygon, as [`read_polygons`] returns them) is handled on its own and
/// the cells are the union.
///
/// A cell is the rectangle halfway to its neighbouring centres on each axis (half a step beyond
/// the first and last centre; ±0.5° on a single-value axis). It is touched when its interior
/// and the polygon's interior overlap: a polygon edge passes through the cell, or the cell lies
/// inside the polygon (holes excluded). A cell that meets the polygon only along its border or
/// at a corner is not touched, so a polygon whose edges lie on cell borders selects exactly the
/// cells it covers.
///
/// # Longitudes and the seam
/// Nothing is normalised vertex by vertex (that is what turned a polygon over lon 0 on a 0..360
/// grid into a band the other way round the globe). Instead:
///
/// 1. Each ring is *unwrapped* into its own continuous longitude frame: walking the ring, a
///    vertex more than 180° east or west of the previous one is moved by a multiple of 360° so
///    that no edge spans more than 180°. A ring may therefore be written in -180..180 (UK:
///    -6..3; Fiji: 177 then -178 across the antimeridian), in 0..360 (UK: 354 then 3), or
///    already continuous with longitudes past ±180 (Fiji: 177..182); all give the same frame up
///    to a whole turn. An edge of exactly 360° (from -180 to 180 along a parallel, as in a
///    whole-world box) is taken as written. Holes are moved by whole turns into their outer
///    ring's frame. A MultiPolygon split at ±180 (the RFC 7946 way) needs nothing special:
///    its parts are separate polygons and each selects the cells on its side.
/// 2. A ring that does not return to its start after unwrapping goes once round a pole (a
///    polar cap drawn as a loop of longitudes): it is closed through the pole nearer to its
///    mean latitude. A ring that winds more than once is used as written.
/// 3. Grid longitudes are used in the file's own convention (0..360 or -180..180, global or
///    regional). Each column's bounds are tested shifted by every whole turn (−360, 0, +360, …)
///    that brings them over the polygon's longitude range in its frame, so a cell is found
///    whichever side of the seam it is stored on. Rows are first filtered by the polygon's
///    latitude range; per row only the edges within the row's band are tested, and only the
///    shifted columns over those edges' longitude range.
///
/// Callers pass the polygons as read; no [`Grid::normalize_lon`] is needed (normalising every
/// vertex first gives the same cells for ordinary polygons, since unwrapping undoes it, but it
/// loses the ±180 end points of whole-world and polar rings).
pub fn cells_touched(grid: &Grid, polys: &[Polygon]) -> Vec<CellIndex> {
    let lat_bounds = axis_bounds(grid.lat());
    let lon_bounds = axis_bounds(grid.lon());
    let mut out = Vec::new();
    for poly in polys {
        if let Some(frame) = Frame::new(poly) {
            frame.cells(&lat_bounds, &lon_bounds, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `(low, high)` bounds of each cell along an axis: halfway to the neighbouring values, half a
/// step beyond the ends, ±0.5 around a single value.
fn axis_bounds(axis: &[f64]) -> Vec<(f64, f64)> {
    let n = axis.len();
    if n == 1 {
        return vec![(axis[0] - 0.5, axis[0] + 0.5)];
    }
    (0..n)
        .map(|i| {
            let a = if i > 0 {
                (axis[i - 1] + axis[i]) / 2.0
            } else {
                axis[0] - (axis[1] - axis[0]) / 2.0
            };
            let b = if i + 1 < n {
                (axis[i] + axis[i + 1]) / 2.0
            } else {
                axis[n - 1] + (axis[n - 1] - axis[n - 2]) / 2.0
            };
            (a.min(b), a.max(b))
        })
        .collect()
}

type Point = (f64, f64);
type Edge = (Point, Point);

/// One polygon in its own unwrapped longitude frame: the edges of all its rings (each ring
/// closed) and their bounding box `(lon_min, lon_max, lat_min, lat_max)`.
struct Frame {
    edges: Vec<Edge>,
    bbox: (f64, f64, f64, f64),
}

impl Frame {
    /// `None` for a polygon without an outer ring of at least three positions.
    fn new(poly: &Polygon) -> Option<Frame> {
        // Rings without area (fewer than three distinct positions, or all on one line) have
        // no inside; their edges alone would select the cells along them.
        let mut rings = poly
            .iter()
            .map(|r| unwrap_ring(r))
            .map(|r| if has_area(&r) { r } else { Vec::new() });
        let outer = rings.next()?;
        if outer.is_empty() {
            return None;
        }
        let mid = |r: &[Point]| {
            let (lo, hi) = r
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p.0), hi.max(p.0))
                });
            (lo + hi) / 2.0
        };
        let outer_mid = mid(&outer);
        let mut all = vec![outer];
        for mut hole in rings.filter(|r| !r.is_empty()) {
            let turn = 360.0 * ((outer_mid - mid(&hole)) / 360.0).round();
            if turn != 0.0 {
                hole.iter_mut().for_each(|p| p.0 += turn);
            }
            all.push(hole);
        }
        let mut edges = Vec::new();
        let mut bbox = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for ring in &all {
            for &(x, y) in ring {
                bbox = (bbox.0.min(x), bbox.1.max(x), bbox.2.min(y), bbox.3.max(y));
            }
            edges.extend(ring.windows(2).map(|w| (w[0], w[1])));
        }
        Some(Frame { edges, bbox })
    }

    /// Pushes the touched cells (possibly with duplicates).
    fn cells(
        &self,
        lat_bounds: &[(f64, f64)],
        lon_bounds: &[(f64, f64)],
        out: &mut Vec<CellIndex>,
    ) {
        let (_, _, y_min, y_max) = self.bbox;
        let lon_lo = lon_bounds.iter().map(|b| b.0).fold(f64::INFINITY, f64::min);
        let lon_hi = lon_bounds
            .iter()
            .map(|b| b.1)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut row_edges: Vec<Edge> = Vec::new();
        for (i, &(la0, la1)) in lat_bounds.iter().enumerate() {
            if la1 <= y_min || la0 >= y_max {
                continue;
            }
            // The edges within this row's band; the polygon's part of the band lies within
            // their longitude range.
            row_edges.clear();
            let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
            for &(a, b) in &self.edges {
                if a.1.max(b.1) >= la0 && a.1.min(b.1) <= la1 {
                    row_edges.push((a, b));
                    x_min = x_min.min(a.0.min(b.0));
                    x_max = x_max.max(a.0.max(b.0));
                }
            }
            if row_edges.is_empty() {
                continue;
            }
            // Whole turns that bring some column over [x_min, x_max].
            let first = ((x_min - lon_hi) / 360.0).ceil() as i64;
            let last = ((x_max - lon_lo) / 360.0).floor() as i64;
            for turn in first..=last {
                let shift = 360.0 * turn as f64;
                for (j, &(lo0, lo1)) in lon_bounds.iter().enumerate() {
                    let (lo0, lo1) = (lo0 + shift, lo1 + shift);
                    if lo1 <= x_min || lo0 >= x_max {
                        continue;
                    }
                    if touches_interior(&row_edges, lo0, lo1, la0, la1) {
                        out.push(CellIndex { lat: i, lon: j });
                    }
                }
            }
        }
    }
}

/// Whether a ring has an inside: its positions do not all lie on one line.
fn has_area(ring: &[Point]) -> bool {
    let Some(&o) = ring.first() else {
        return false;
    };
    ring.windows(2)
        .any(|w| (w[0].0 - o.0) * (w[1].1 - o.1) - (w[1].0 - o.0) * (w[0].1 - o.1) != 0.0)
}

/// A closed ring in a continuous longitude frame (see [`cells_touched`]); empty when the ring
/// has fewer than three positions.
fn unwrap_ring(ring: &[Point]) -> Vec<Point> {
    if ring.len() < 3 {
        return Vec::new();
    }
    let mut raw = ring.to_vec();
    if raw.first() != raw.last() {
        raw.push(raw[0]);
    }
    let mut out = Vec::with_capacity(raw.len() + 3);
    out.push(raw[0]);
    let mut shift = 0.0;
    for w in raw.windows(2) {
        let d = w[1].0 - w[0].0;
        if d.abs() > 180.0 && (d.abs() - 360.0).abs() > 1e-9 {
            shift -= 360.0 * (d / 360.0).round();
        }
        out.push((w[1].0 + shift, w[1].1));
    }
    let turns = (shift / 360.0_f64).round().abs();
    if turns == 0.0 {
        return out;
    }
    if turns > 1.0 {
        return raw;
    }
    // Once round a pole: close the ring through it.
    let mean_lat = raw[1..].iter().map(|p| p.1).sum::<f64>() / (raw.len() - 1) as f64;
    let pole = if mean_lat >= 0.0 { 90.0 } else { -90.0 };
    let (end, start) = (out[out.len() - 1], out[0]);
    out.extend([(end.0, pole), (start.0, pole), start]);
    out
}

/// Whether the interiors of the polygon (its `edges` within the row) and of the cell
/// `[x0, x1] × [y0, y1]` overlap: an edge passes through the open cell, or (no edge does, so
/// the cell is wholly inside or outside) the cell's centre is inside (even-odd).
fn touches_interior(edges: &[Edge], x0: f64, x1: f64, y0: f64, y1: f64) -> bool {
    if edges
        .iter()
        .any(|&(a, b)| meets_open_rect(a, b, x0, x1, y0, y1))
    {
        return true;
    }
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let mut inside = false;
    for &(a, b) in edges {
        if (a.1 > cy) != (b.1 > cy) && cx < (b.0 - a.0) * (cy - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
    }
    inside
}

/// Whether segment `a`–`b` has a point strictly inside `(x0, x1) × (y0, y1)`: clip it to the
/// closed rectangle (Liang–Barsky) and test the clipped part's midpoint, which is strictly
/// inside exactly when some point is (a part lying along the border is not).
fn meets_open_rect(a: Point, b: Point, x0: f64, x1: f64, y0: f64, y1: f64) -> bool {
    if a.0.max(b.0) <= x0 || a.0.min(b.0) >= x1 || a.1.max(b.1) <= y0 || a.1.min(b.1) >= y1 {
        return false;
    }
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
            continue;
        }
        let t = q / p;
        if p < 0.0 {
            t0 = t0.max(t);
        } else {
            t1 = t1.min(t);
        }
        if t0 > t1 {
            return false;
        }
    }
    let t = (t0 + t1) / 2.0;
    let (x, y) = (a.0 + t * dx, a.1 + t * dy);
    x > x0 && x < x1 && y > y0 && y < y1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_with_bad_features_reported_by_index() {
        let doc = br#"{"type":"FeatureCollection","features":[
            {"type":"Feature","id":7,"geometry":{"type":"Point","coordinates":[-75.16,39.95]},"properties":{"name":"Philadelphia"}},
            {"type":"Feature","geometry":{"type":"Point","coordinates":[-75.0,95.0]},"properties":{"name":"Nowhere"}},
            {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]},"properties":{"name":"Line"}},
            {"type":"Feature","geometry":{"type":"Point","coordinates":[10,10]},"properties":{}},
            {"type":"Feature","geometry":{"type":"Point","coordinates":"x"},"properties":{"name":"Bad"}},
            {"type":"Feature","geometry":{"type":"Point","coordinates":[2.35,48.85]},"properties":{"name":"Paris"}}
        ]}"#;
        let p = read_points(doc, &PointOptions::default()).unwrap();
        assert_eq!(p.locations.len(), 2);
        assert_eq!(p.locations[0].external_id, "7");
        assert_eq!(p.locations[1].external_id, "5");
        assert_eq!(p.locations[1].lat, 48.85);
        let idx: Vec<usize> = p.bad.iter().map(|b| b.index).collect();
        assert_eq!(idx, [1, 2, 3, 4]);
        assert!(p.bad[0].reason.contains("latitude"));
        assert!(read_points(b"{}", &PointOptions::default()).is_err());
    }

    #[test]
    fn polygon_touches() {
        let doc = br#"{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,2],[0,2],[0,0]]]}"#;
        let polys = read_polygons(doc).unwrap();
        assert!(contains(&polys[0], 1.0, 1.0));
        assert!(!contains(&polys[0], 3.0, 1.0));
        assert!(touches_cell(&polys[0], 1.9, 2.1, 1.9, 2.1));
        assert!(touches_cell(&polys[0], -0.5, 0.5, 0.5, 1.5));
        assert!(!touches_cell(&polys[0], 2.5, 3.0, 2.5, 3.0));
        assert_eq!(bbox(&polys), (0.0, 2.0, 0.0, 2.0));
    }

    fn axis(start: f64, step: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| start + step * i as f64).collect()
    }

    fn rect(x0: f64, x1: f64, y0: f64, y1: f64) -> Vec<(f64, f64)> {
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    }

    /// Area of a ring clipped to `[x0, x1] × [y0, y1]` (Sutherland–Hodgman, shoelace).
    fn clipped_area(ring: &[(f64, f64)], x0: f64, x1: f64, y0: f64, y1: f64) -> f64 {
        type Inside = fn((f64, f64), f64) -> bool;
        let (b0, b1, b2, b3) = bbox(&[vec![ring.to_vec()]]);
        if b1 <= x0 || b0 >= x1 || b3 <= y0 || b2 >= y1 {
            return 0.0;
        }
        let mut poly: Vec<(f64, f64)> = ring[..ring.len() - 1].to_vec();
        let planes: [(Inside, f64, bool); 4] = [
            (|p, v| p.0 >= v, x0, true),
            (|p, v| p.0 <= v, x1, true),
            (|p, v| p.1 >= v, y0, false),
            (|p, v| p.1 <= v, y1, false),
        ];
        for (inside, v, vertical) in planes {
            let input = std::mem::take(&mut poly);
            let n = input.len();
            let cut = |p: (f64, f64), q: (f64, f64)| {
                if vertical {
                    let t = (v - p.0) / (q.0 - p.0);
                    (v, p.1 + t * (q.1 - p.1))
                } else {
                    let t = (v - p.1) / (q.1 - p.1);
                    (p.0 + t * (q.0 - p.0), v)
                }
            };
            for i in 0..n {
                let (prev, cur) = (input[(i + n - 1) % n], input[i]);
                match (inside(prev, v), inside(cur, v)) {
                    (true, true) => poly.push(cur),
                    (true, false) => poly.push(cut(prev, cur)),
                    (false, true) => {
                        poly.push(cut(prev, cur));
                        poly.push(cur);
                    }
                    (false, false) => {}
                }
            }
        }
        let n = poly.len();
        (0..n)
            .map(|i| {
                let (a, b) = (poly[i], poly[(i + 1) % n]);
                a.0 * b.1 - b.0 * a.1
            })
            .sum::<f64>()
            .abs()
            / 2.0
    }

    /// Independent reference on a regular grid (`step` on both axes): the cells whose rectangle,
    /// shifted by −720..720 in whole turns, overlaps some polygon (rings given already in one
    /// continuous frame; outer minus holes) with a positive area.
    fn brute(grid: &Grid, step: f64, polys: &[Polygon]) -> Vec<CellIndex> {
        let mut out = Vec::new();
        for (i, &la) in grid.lat().iter().enumerate() {
            for (j, &lo) in grid.lon().iter().enumerate() {
                let hit = [-720.0, -360.0, 0.0, 360.0, 720.0].iter().any(|s| {
                    let (x0, x1) = (lo + s - step / 2.0, lo + s + step / 2.0);
                    let (y0, y1) = (la - step / 2.0, la + step / 2.0);
                    polys.iter().any(|p| {
                        let outer = clipped_area(&p[0], x0, x1, y0, y1);
                        let holes: f64 =
                            p[1..].iter().map(|h| clipped_area(h, x0, x1, y0, y1)).sum();
                        outer - holes > 1e-9
                    })
                });
                if hit {
                    out.push(CellIndex { lat: i, lon: j });
                }
            }
        }
        out
    }

    /// The cells at the given centre coordinates (longitudes in any convention).
    fn at(grid: &Grid, lats: &[f64], lons: &[f64]) -> Vec<CellIndex> {
        let idx = |axis: &[f64], v: f64| {
            axis.iter()
                .position(|&a| (a - v).abs() < 1e-9)
                .unwrap_or_else(|| panic!("{v} not on the axis"))
        };
        let mut out = Vec::new();
        for &la in lats {
            for &lo in lons {
                out.push(CellIndex {
                    lat: idx(grid.lat(), la),
                    lon: idx(grid.lon(), grid.normalize_lon(lo)),
                });
            }
        }
        out.sort_unstable();
        out
    }

    /// Today's `boundary_cells` of the pipeline: vertices normalised to the grid's convention,
    /// then a bounding box and [`touches_cell`]. Right away from the seam.
    fn before(grid: &Grid, polys: &[Polygon]) -> Vec<CellIndex> {
        let polys: Vec<Polygon> = polys
            .iter()
            .map(|p| {
                p.iter()
                    .map(|r| r.iter().map(|&(x, y)| (grid.normalize_lon(x), y)).collect())
                    .collect()
            })
            .collect();
        let (x0, x1, y0, y1) = bbox(&polys);
        let (lat_b, lon_b) = (axis_bounds(grid.lat()), axis_bounds(grid.lon()));
        let mut out = Vec::new();
        for (i, &(la0, la1)) in lat_b.iter().enumerate() {
            for (j, &(lo0, lo1)) in lon_b.iter().enumerate() {
                if la1 < y0 || la0 > y1 || lo1 < x0 || lo0 > x1 {
                    continue;
                }
                if polys.iter().any(|p| touches_cell(p, lo0, lo1, la0, la1)) {
                    out.push(CellIndex { lat: i, lon: j });
                }
            }
        }
        out
    }

    /// The selected cells' longitudes in 0..360.
    fn lons360(grid: &Grid, cells: &[CellIndex]) -> Vec<f64> {
        cells
            .iter()
            .map(|&c| grid.coords(c).1.rem_euclid(360.0))
            .collect()
    }

    fn check(grid: &Grid, polys: &[Polygon], expected: &[CellIndex]) {
        let got = cells_touched(grid, polys);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
        assert_eq!(got, expected, "{polys:?}");
    }

    fn range(from: f64, to: f64) -> Vec<f64> {
        (0..)
            .map(|k| from + k as f64)
            .take_while(|&v| v <= to + 1e-9)
            .collect()
    }

    #[test]
    fn uk_and_france_across_lon_0() {
        let lat = axis(40.5, 1.0, 21);
        let g360 = Grid::new(lat.clone(), axis(0.5, 1.0, 360)).unwrap();
        let g180 = Grid::new(lat, axis(-179.5, 1.0, 360)).unwrap();
        // Lon -6..3, lat 49..56 on cell borders: 9 columns × 7 rows, written four ways.
        let frame = rect(-6.0, 3.0, 49.0, 56.0);
        let written: [Vec<(f64, f64)>; 4] = [
            frame.clone(),
            rect(354.0, 363.0, 49.0, 56.0),
            // 0..360 with the jump at lon 0.
            vec![
                (354.0, 49.0),
                (3.0, 49.0),
                (3.0, 56.0),
                (354.0, 56.0),
                (354.0, 49.0),
            ],
            // Not closed, clockwise, starting east of 0.
            vec![(3.0, 56.0), (3.0, 49.0), (-6.0, 49.0), (-6.0, 56.0)],
        ];
        for g in [&g360, &g180] {
            let expected = at(g, &range(49.5, 55.5), &range(-5.5, 2.5));
            assert_eq!(expected.len(), 63);
            assert_eq!(brute(g, 1.0, &[vec![frame.clone()]]), expected);
            for ring in &written {
                check(g, &[vec![ring.clone()]], &expected);
            }
            let got = cells_touched(g, &[vec![frame.clone()]]);
            assert!(
                lons360(g, &got)
                    .iter()
                    .all(|&x| (354.0..360.0).contains(&x) || (0.0..=3.0).contains(&x))
            );
            // The old per-vertex normalisation took the band the other way round on 0..360.
            if g.lon_convention() == nexdecode::LonConvention::ZeroTo360 {
                assert_ne!(before(g, &[vec![written[1].clone()]]), expected);
            }
        }
        // An irregular outline off the cell borders (the reference clips every cell).
        let outline: Vec<(f64, f64)> = vec![
            (-5.7, 49.2),
            (-1.3, 48.9),
            (2.6, 50.9),
            (1.8, 55.6),
            (-2.1, 54.3),
            (-4.9, 55.8),
            (-6.2, 52.1),
            (-5.7, 49.2),
        ];
        let in360: Vec<(f64, f64)> = outline
            .iter()
            .map(|&(x, y): &(f64, f64)| (x.rem_euclid(360.0), y))
            .collect();
        for g in [&g360, &g180] {
            let expected = brute(g, 1.0, &[vec![outline.clone()]]);
            assert!(expected.len() > 40, "{}", expected.len());
            check(g, &[vec![outline.clone()]], &expected);
            check(g, &[vec![in360.clone()]], &expected);
            let lons = lons360(g, &expected);
            assert!(
                lons.iter()
                    .all(|&x| (353.0..360.0).contains(&x) || (0.0..=3.0).contains(&x))
            );
            assert!(lons.iter().any(|&x| x > 353.0) && lons.iter().any(|&x| x < 3.0));
        }
    }

    #[test]
    fn fiji_across_the_antimeridian() {
        let lat = axis(-24.5, 1.0, 15);
        let g360 = Grid::new(lat.clone(), axis(0.5, 1.0, 360)).unwrap();
        let g180 = Grid::new(lat.clone(), axis(-179.5, 1.0, 360)).unwrap();
        // Centres on whole degrees: the first cell straddles the seam (-180.5..-179.5).
        let g_seam = Grid::new(lat, axis(-180.0, 1.0, 360)).unwrap();
        // Lon 177.3..-178.4 (181.6), lat -19.2..-15.7.
        let frame = rect(177.3, 181.6, -19.2, -15.7);
        let jumped = vec![
            (177.3, -19.2),
            (-178.4, -19.2),
            (-178.4, -15.7),
            (177.3, -15.7),
            (177.3, -19.2),
        ];
        let west = rect(-182.7, -178.4, -19.2, -15.7);
        let split = read_polygons(
            br#"{"type":"Feature","properties":{},"geometry":{"type":"MultiPolygon","coordinates":[
                [[[177.3,-19.2],[180,-19.2],[180,-15.7],[177.3,-15.7],[177.3,-19.2]]],
                [[[-180,-19.2],[-178.4,-19.2],[-178.4,-15.7],[-180,-15.7],[-180,-19.2]]]]}}"#,
        )
        .unwrap();
        assert_eq!(split.len(), 2);
        let rows = range(-19.5, -15.5);
        for (g, lons) in [
            (&g360, range(177.5, 181.5)),
            (&g180, range(177.5, 181.5)),
            (&g_seam, range(177.0, 182.0)),
        ] {
            let expected = at(g, &rows, &lons);
            assert_eq!(expected.len(), 5 * lons.len());
            assert_eq!(brute(g, 1.0, &[vec![frame.clone()]]), expected);
            for polys in [
                vec![vec![frame.clone()]],
                vec![vec![jumped.clone()]],
                vec![vec![west.clone()]],
                split.clone(),
            ] {
                check(g, &polys, &expected);
            }
            let got = cells_touched(g, &split);
            assert!(
                lons360(g, &got)
                    .iter()
                    .all(|&x| (176.0..=182.5).contains(&x))
            );
        }
        // The seam cell (centre -180) is the union of both halves of the split polygon.
        let seam_col = CellIndex { lat: 5, lon: 0 };
        assert!(cells_touched(&g_seam, &split[..1]).contains(&seam_col));
        assert!(cells_touched(&g_seam, &split[1..]).contains(&seam_col));
    }

    #[test]
    fn away_from_the_seam_same_as_before() {
        let lat = axis(30.125, 0.25, 100);
        let g360 = Grid::new(lat.clone(), axis(0.125, 0.25, 1440)).unwrap();
        let g180 = Grid::new(lat, axis(-179.875, 0.25, 1440)).unwrap();
        let europe = vec![
            (5.31, 44.23),
            (9.87, 43.61),
            (14.93, 46.07),
            (13.02, 50.41),
            (10.38, 48.57),
            (7.21, 53.74),
            (5.31, 44.23),
        ];
        let colorado = rect(-109.06, -102.04, 36.99, 41.01);
        for g in [&g360, &g180] {
            for polys in [
                vec![vec![europe.clone()]],
                vec![vec![colorado.clone()]],
                vec![vec![europe.clone()], vec![colorado.clone()]],
            ] {
                let expected = brute(g, 0.25, &polys);
                assert!(expected.len() > 100);
                assert_eq!(before(g, &polys), expected);
                check(g, &polys, &expected);
            }
        }
    }

    #[test]
    fn holes_in_any_frame() {
        let g = Grid::new(axis(40.5, 1.0, 21), axis(0.5, 1.0, 360)).unwrap();
        let outer = rect(-6.3, 6.4, 44.2, 55.7);
        let hole = rect(-2.2, 1.7, 48.3, 51.6);
        let expected = brute(&g, 1.0, &[vec![outer.clone(), hole.clone()]]);
        // Cells wholly inside the hole (lon -2..1, lat 49..51) are left out.
        assert_eq!(expected.len(), 14 * 12 - 3 * 2);
        let hole360: Vec<(f64, f64)> = hole.iter().map(|&(x, y)| (x + 360.0, y)).collect();
        let outer_jumped: Vec<(f64, f64)> = outer
            .iter()
            .map(|&(x, y)| (x.rem_euclid(360.0), y))
            .collect();
        check(&g, &[vec![outer.clone(), hole.clone()]], &expected);
        check(&g, &[vec![outer_jumped, hole360]], &expected);
    }

    #[test]
    fn polar_cap_and_whole_world() {
        let lat = axis(70.5, 1.0, 20);
        let g360 = Grid::new(lat.clone(), axis(0.5, 1.0, 360)).unwrap();
        let g180 = Grid::new(lat, axis(-179.5, 1.0, 360)).unwrap();
        // A loop of longitudes at 80 N (-170, -150, …, 170, back to -170): the cap north of it.
        let mut cap: Vec<(f64, f64)> = (0..18).map(|k| (-170.0 + 20.0 * k as f64, 80.0)).collect();
        cap.push(cap[0]);
        let world = rect(-180.0, 180.0, -90.0, 90.0);
        for g in [&g360, &g180] {
            let all: Vec<CellIndex> = (0..g.nlat())
                .flat_map(|i| (0..g.nlon()).map(move |j| CellIndex { lat: i, lon: j }))
                .collect();
            check(g, &[vec![world.clone()]], &all);
            let north: Vec<CellIndex> = all.iter().copied().filter(|c| c.lat >= 10).collect();
            check(g, &[vec![cap.clone()]], &north);
        }
        assert!(cells_touched(&g360, &[]).is_empty());
        // Degenerate rings select nothing.
        assert!(cells_touched(&g360, &[vec![vec![(1.0, 80.0), (2.0, 81.0)]]]).is_empty());
        assert!(
            cells_touched(
                &g360,
                &[vec![vec![
                    (1.0, 80.0),
                    (2.0, 81.0),
                    (3.0, 82.0),
                    (1.0, 80.0)
                ]]]
            )
            .is_empty()
        );
    }

    #[test]
    fn quarter_degree_global_grid_and_a_detailed_outline() {
        // The NEX-GDDP 0.25° global grid (1440 × 720) and a 3000-vertex circle of radius 6°
        // around (0.3 E, 47.1 N), vertices normalised to 0..360 the way the old caller did.
        let g = Grid::new(axis(-89.875, 0.25, 720), axis(0.125, 0.25, 1440)).unwrap();
        let (cx, cy, r) = (0.3, 47.1, 6.0);
        let n = 3000;
        let ring: Vec<(f64, f64)> = (0..=n)
            .map(|k| {
                let a = std::f64::consts::TAU * (k % n) as f64 / n as f64;
                (g.normalize_lon(cx + r * a.cos()), cy + r * a.sin())
            })
            .collect();
        let t = std::time::Instant::now();
        let got = cells_touched(&g, &[vec![ring]]);
        eprintln!("{} cells in {:?}", got.len(), t.elapsed());
        let half_diag = 0.125 * 2f64.sqrt();
        let dist = |c: CellIndex| {
            let (la, lo) = g.coords(c);
            let dx = (lo - cx + 180.0).rem_euclid(360.0) - 180.0;
            (dx * dx + (la - cy) * (la - cy)).sqrt()
        };
        assert!(got.iter().all(|&c| dist(c) < r + half_diag));
        let mut inner = 0;
        for i in 0..g.nlat() {
            for j in 0..g.nlon() {
                let c = CellIndex { lat: i, lon: j };
                if dist(c) < r - half_diag - 1e-3 {
                    inner += 1;
                    assert!(got.binary_search(&c).is_ok(), "{c:?}");
                }
            }
        }
        assert!(inner > 1500);
        let lons = lons360(&g, &got);
        assert!(lons.iter().all(|&x| !(6.5..=354.0).contains(&x)));
    }
}

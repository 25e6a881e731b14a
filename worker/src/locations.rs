//! GeoJSON location input: points (FeatureCollection) for the `location` table, polygons for
//! boundary jobs. Each feature is checked on its own so bad ones are reported by index.

use std::fmt;

use geojson::{Feature, GeometryValue};
use serde_json::Value;

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
}

//! Stage 2: the message's location source resolved into what to load, and the job's identity.
//!
//! A job's **identity** is (data source, variables, location-source key). The key names what
//! the location source stood for when the job ran:
//! - `all`: every data cell of the grid;
//! - `cities:SOURCE:N:HASH` (`SOURCE` = `*` for every source): the `location` ids it covers
//!   (their count and a hash of the sorted ids), so a `cities` job after new locations were
//!   imported is another job;
//! - `geojson:URL:SIZE:HASH`, `boundary:URL:SIZE:HASH`: the document's URL, size and a hash of
//!   its bytes (what its ETag stands for), so an edited document is another job.
//!
//! - a job of an S3 event appends `|s3://bucket/key#ETAG` to its location source's key: one
//!   version of an object is processed once, a changed object (new ETag) again.
//!
//! A `cities` job without `update_existing` works only on the locations whose cell has no row
//! yet holding all its variables, as the old importer did; the key still covers them all.

use nexdecode::{CellIndex, Grid};
use tracing::warn;

use super::Pipeline;
use super::state::Prepared;
use crate::catalog;
use crate::error::JobError;
use crate::locations::import as import_locations;
use crate::locations::{self, NewLocation, PointOptions, Polygon};
use crate::message::{JobSpec, LocationSource};

/// What a job loads and who it is.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The job's variables, request order.
    pub variables: Vec<&'static str>,
    /// The location-source key of the job's identity.
    pub key: String,
    /// Which cells.
    pub cells: CellPlan,
}

impl JobPlan {
    /// The variables, sorted (as the ledger stores them).
    pub fn variables_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.variables.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    }
}

/// Which cells a job loads, before the grid is known.
#[derive(Debug, Clone)]
pub enum CellPlan {
    /// Every data cell.
    All,
    /// The cells nearest to points.
    Points(Points),
    /// Every cell the polygons touch.
    Polygons(Vec<Polygon>),
}

/// Points to locate, and the locations they are.
#[derive(Debug, Clone)]
pub struct Points {
    /// `(lat, lon)` per point.
    pub coords: Vec<(f64, f64)>,
    /// Which locations.
    pub ids: PointIds,
}

/// The `location` rows behind a job's points.
#[derive(Debug, Clone)]
pub enum PointIds {
    /// Existing `location.id`s, one per point.
    Known(Vec<i64>),
    /// A GeoJSON document's points, imported into `location` in the job's transaction (so a
    /// failed job leaves no locations behind).
    Import {
        /// `location.source`: the document's URL.
        source: String,
        /// One per point.
        locations: Vec<NewLocation>,
    },
}

/// FNV-1a, 64 bits: a stable hash for identity keys (not for security).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn document_key(kind: &str, res: &impl std::fmt::Display, doc: &[u8]) -> String {
    format!(
        "{kind}:{res}:{}:{:016x}",
        doc.len(),
        fnv1a(doc.iter().copied())
    )
}

/// The key of a `cities` source over the given location ids (any order).
pub fn cities_key(source: Option<&str>, ids: &[i64]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    format!(
        "cities:{}:{}:{:016x}",
        source.unwrap_or("*"),
        sorted.len(),
        fnv1a(sorted.iter().flat_map(|i| i.to_le_bytes()))
    )
}

/// `y.c1 IS NOT NULL AND y.c2 IS NOT NULL …` over the variables' columns.
pub(crate) fn all_present_sql(alias: &str, vars: &[&'static str]) -> Result<String, JobError> {
    let mut parts = Vec::with_capacity(vars.len());
    for v in vars {
        let c = catalog::variable_column(v)
            .ok_or_else(|| JobError::InvalidMessage(format!("variable {v}")))?;
        parts.push(format!("{alias}.{} IS NOT NULL", pgcopy::quote_ident(c)));
    }
    Ok(parts.join(" AND "))
}

impl Pipeline {
    /// Resolves the location source: reads the `location` table or fetches the GeoJSON
    /// document, and computes the identity key.
    ///
    /// # Errors
    /// `Data` for an empty or invalid location source; S3 and database errors.
    pub async fn plan(&self, spec: &JobSpec, p: &Prepared) -> Result<JobPlan, JobError> {
        let variables = spec.variables.clone();
        let (key, cells) = match &spec.locations {
            LocationSource::All => ("all".to_owned(), CellPlan::All),
            LocationSource::Cities(source) => {
                let client = self.pool.get().await?;
                let present = all_present_sql("y", &variables)?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT l.id, l.lat, l.lon,
                                    EXISTS (SELECT 1 FROM location_cell lc
                                            JOIN climate_data_year y
                                              ON y.map_cell_id = lc.map_cell_id
                                             AND y.data_source_id = $2
                                            WHERE lc.location_id = l.id AND lc.dataset_id = $3
                                              AND {present})
                             FROM location l
                             WHERE $1::text IS NULL OR l.source = $1
                             ORDER BY l.id"
                        ),
                        &[source, &p.data_source_id, &p.ids.dataset],
                    )
                    .await?;
                if rows.is_empty() {
                    return Err(JobError::Data(format!(
                        "location source {} holds no locations (run import-locations)",
                        spec.locations
                    )));
                }
                let all: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                let key = cities_key(source.as_deref(), &all);
                let todo: Vec<_> = rows
                    .iter()
                    .filter(|r| spec.update_existing || !r.get::<_, bool>(3))
                    .collect();
                (
                    key,
                    CellPlan::Points(Points {
                        coords: todo.iter().map(|r| (r.get(1), r.get(2))).collect(),
                        ids: PointIds::Known(todo.iter().map(|r| r.get(0)).collect()),
                    }),
                )
            }
            LocationSource::GeoJson(res) => {
                let doc = import_locations::fetch(res, self.s3.as_ref()).await?;
                let pts = locations::read_points(&doc, &PointOptions::default())
                    .map_err(|e| JobError::Data(format!("{res}: {e}")))?;
                for b in &pts.bad {
                    warn!(source = %res, index = b.index, reason = %b.reason, "bad GeoJSON feature skipped");
                }
                if pts.locations.is_empty() {
                    return Err(JobError::Data(format!("{res}: no valid point features")));
                }
                (
                    document_key("geojson", res, &doc),
                    CellPlan::Points(Points {
                        coords: pts.locations.iter().map(|l| (l.lat, l.lon)).collect(),
                        ids: PointIds::Import {
                            source: res.to_string(),
                            locations: pts.locations,
                        },
                    }),
                )
            }
            LocationSource::Boundary(res) => {
                let doc = import_locations::fetch(res, self.s3.as_ref()).await?;
                let polys = locations::read_polygons(&doc)
                    .map_err(|e| JobError::Data(format!("{res}: {e}")))?;
                (
                    document_key("boundary", res, &doc),
                    CellPlan::Polygons(polys),
                )
            }
        };
        // An S3-event job is also the object's version: `…|s3://bucket/key#etag`.
        let key = match &spec.object {
            Some(o) => format!("{key}|{}", o.identity()),
            None => key,
        };
        Ok(JobPlan {
            variables,
            key,
            cells,
        })
    }
}

/// Cells of `grid` a set of polygons touches, right across lon 0/360 and ±180
/// ([`locations::cells_touched`]; the polygons are passed as read, not normalised).
pub(crate) fn boundary_cells(grid: &Grid, polys: &[Polygon]) -> Vec<CellIndex> {
    locations::cells_touched(grid, polys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cities_key_names_the_ids_not_their_order() {
        assert_eq!(cities_key(None, &[3, 1, 2]), cities_key(None, &[1, 2, 3]));
        assert_ne!(cities_key(None, &[1, 2, 3]), cities_key(None, &[1, 2, 4]));
        assert_ne!(cities_key(None, &[1, 2]), cities_key(Some("x"), &[1, 2]));
        assert!(cities_key(Some("us"), &[7]).starts_with("cities:us:1:"));
    }

    #[test]
    fn document_keys_change_with_the_bytes() {
        let a = document_key("geojson", &"s3://b/k", b"{}");
        assert_eq!(a, document_key("geojson", &"s3://b/k", b"{}"));
        assert_ne!(a, document_key("geojson", &"s3://b/k", b"{ }"));
        assert_ne!(a, document_key("geojson", &"s3://b/j", b"{}"));
    }
}

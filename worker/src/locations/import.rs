//! Location documents into the `location` table: a GeoJSON document read from a local file or
//! an allowed S3 URL ([`fetch`]), its points upserted in the caller's transaction ([`upsert`]),
//! and the all-or-nothing import of `nexingest import-locations` ([`import`]). Jobs use the
//! same [`fetch`] and [`upsert`] for their location sources.

use super::{BadFeature, NewLocation, PointOptions};
use crate::config::{AwsConfig, DbConfig};
use crate::error::JobError;
use crate::message::Resource;
use crate::{aws, db, s3};

/// Largest GeoJSON document read (bytes).
pub const MAX_GEOJSON: u64 = 256 * 1024 * 1024;

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// `location.source` used.
    pub source: String,
    /// New rows.
    pub inserted: u64,
    /// Updated rows.
    pub updated: u64,
    /// Bad features skipped (`--skip-invalid`).
    pub skipped: Vec<BadFeature>,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Bad features and no `--skip-invalid`: nothing was written.
    #[error("{} bad feature(s), nothing imported (use --skip-invalid to skip them):\n  {}",
        .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    BadFeatures(Vec<BadFeature>),
    /// The document is unusable.
    #[error("{0}")]
    Document(String),
    /// Input or database failure.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Reads a GeoJSON document from a local file or an allowed S3 URL.
///
/// # Errors
/// I/O or S3 failures.
pub async fn fetch(res: &Resource, s3c: Option<&aws_sdk_s3::Client>) -> Result<Vec<u8>, JobError> {
    match res {
        Resource::File(p) => {
            let meta = tokio::fs::metadata(p)
                .await
                .map_err(|e| JobError::Input(format!("{}: {e}", p.display())))?;
            if meta.len() > MAX_GEOJSON {
                return Err(JobError::Input(format!(
                    "{}: larger than {MAX_GEOJSON} bytes",
                    p.display()
                )));
            }
            tokio::fs::read(p)
                .await
                .map_err(|e| JobError::Input(format!("{}: {e}", p.display())))
        }
        Resource::S3 { bucket, key } => {
            let s3c = s3c.ok_or_else(|| JobError::Input(format!("{res}: no S3 client")))?;
            s3::get_small(s3c, bucket, key, MAX_GEOJSON).await
        }
    }
}

/// Upserts locations of one source in the caller's transaction; returns (inserted, updated).
///
/// # Errors
/// Database errors.
pub async fn upsert(
    tx: &impl tokio_postgres::GenericClient,
    source: &str,
    locs: &[NewLocation],
) -> Result<(u64, u64), JobError> {
    let ids: Vec<&str> = locs.iter().map(|l| l.external_id.as_str()).collect();
    let names: Vec<&str> = locs.iter().map(|l| l.name.as_str()).collect();
    let lats: Vec<f64> = locs.iter().map(|l| l.lat).collect();
    let lons: Vec<f64> = locs.iter().map(|l| l.lon).collect();
    let props: Vec<String> = locs
        .iter()
        .map(|l| serde_json::Value::Object(l.properties.clone()).to_string())
        .collect();
    let rows = tx
        .query(
            "INSERT INTO location (source, external_id, name, lat, lon, properties)
             SELECT $1, e, n, la, lo, p::jsonb
             FROM unnest($2::text[], $3::text[], $4::float8[], $5::float8[], $6::text[]) AS t(e, n, la, lo, p)
             ON CONFLICT (source, external_id) DO UPDATE
                SET name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
                    properties = EXCLUDED.properties
             RETURNING (xmax = 0)",
            &[&source, &ids, &names, &lats, &lons, &props],
        )
        .await?;
    let inserted = rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    Ok((inserted, rows.len() as u64 - inserted))
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// A local path or an `s3://bucket/key` URL (the bucket must be allowed).
    pub input: String,
    /// `location.source`; `None`: the input's file name.
    pub source: Option<String>,
    /// How features name and identify their points.
    pub points: PointOptions,
    /// Skip bad features (each logged) instead of refusing the document.
    pub skip_invalid: bool,
}

/// Imports one document's points, all or nothing.
///
/// # Errors
/// `BadFeatures` (nothing written) unless `--skip-invalid`; document, input, database errors.
pub async fn import(
    dbc: &DbConfig,
    awsc: &AwsConfig,
    a: &ImportRequest,
) -> Result<ImportReport, ImportError> {
    let res = if a.input.contains("://") {
        let (bucket, key) =
            crate::message::parse_s3_url(&a.input).map_err(ImportError::Document)?;
        if !awsc.bucket_allowed(&bucket) {
            return Err(ImportError::Document(format!(
                "bucket {bucket:?} is not on the allow-list (--allowed-buckets)"
            )));
        }
        Resource::S3 { bucket, key }
    } else {
        Resource::File(a.input.clone().into())
    };
    let s3c = match &res {
        Resource::S3 { .. } => Some(aws::clients(awsc).await.s3),
        Resource::File(_) => None,
    };
    let doc = fetch(&res, s3c.as_ref()).await?;
    let source = a.source.clone().unwrap_or_else(|| {
        let s = res.to_string();
        s.rsplit('/').next().unwrap_or(&s).to_owned()
    });
    if source.is_empty() || source.len() > 200 {
        return Err(ImportError::Document(
            "--source must be 1..=200 characters".into(),
        ));
    }
    let points = super::read_points(&doc, &a.points).map_err(ImportError::Document)?;
    for b in &points.bad {
        tracing::warn!(index = b.index, reason = %b.reason, "bad feature");
    }
    if !points.bad.is_empty() && !a.skip_invalid {
        return Err(ImportError::BadFeatures(points.bad));
    }
    if points.locations.is_empty() {
        return Err(ImportError::Document("no valid point features".into()));
    }
    let pool = db::pool(dbc, 1)?;
    let mut client = pool.get().await.map_err(JobError::from)?;
    let tx = client.transaction().await.map_err(JobError::from)?;
    let (inserted, updated) = upsert(&*tx, &source, &points.locations).await?;
    tx.commit().await.map_err(JobError::from)?;
    // `nexingest import-locations` prints the report; the log line is for embedders.
    tracing::debug!(source = %source, inserted, updated, skipped = points.bad.len(), "locations imported");
    Ok(ImportReport {
        source,
        inserted,
        updated,
        skipped: points.bad,
    })
}

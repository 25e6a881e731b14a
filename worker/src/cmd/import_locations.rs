//! `nexingest import-locations`: GeoJSON points into `location`, all or nothing
//! ([`crate::locations::import`]).

use crate::cli::ImportLocationsArgs;
use crate::config::{AwsConfig, DbConfig};
use crate::locations::PointOptions;
pub use crate::locations::import::{ImportError, ImportReport};
use crate::locations::import::{ImportRequest, import};

/// Runs the import of `a.input`.
///
/// # Errors
/// `BadFeatures` (nothing written) unless `--skip-invalid`; document, input, database errors.
pub async fn run(
    dbc: &DbConfig,
    awsc: &AwsConfig,
    a: &ImportLocationsArgs,
) -> Result<ImportReport, ImportError> {
    let req = ImportRequest {
        input: a.input.clone(),
        source: a.source.clone(),
        points: PointOptions {
            name_property: a.name_property.clone(),
            id_property: a.id_property.clone(),
        },
        skip_invalid: a.skip_invalid,
    };
    import(dbc, awsc, &req).await
}

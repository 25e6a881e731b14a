//! What the worker adds to the dataset table: the variables it may load and the columns of
//! `climate_data_year` they go to.
//!
//! Everything about the datasets themselves (names, buckets, key templates, scenarios with their
//! year ranges, models with their members and grid labels, grids) is nexdecode's table,
//! [`nexdecode::dataset`]; [`Dataset`] is re-exported here. This module and that table are the
//! source of the seed rows `migrate` writes and of every validation of a job.

pub use nexdecode::dataset::Dataset;

/// Every dataset, in seed order.
pub const DATASETS: [Dataset; 3] = Dataset::ALL;

/// The variables a job may load: `(name in the files, column in climate_data_year)`.
pub const VARIABLES: [(&str, &str); 9] = [
    ("tasmin", "tasmin"),
    ("tasmax", "tasmax"),
    ("pr", "pr"),
    ("tas", "tas"),
    ("hurs", "hurs"),
    ("huss", "huss"),
    ("rlds", "rlds"),
    ("rsds", "rsds"),
    ("sfcWind", "sfcwind"),
];

/// The variables a job loads when it names none.
pub const DEFAULT_VARIABLES: [&str; 3] = ["tasmin", "tasmax", "pr"];

/// The `climate_data_year` column of an allow-listed variable.
pub fn variable_column(var: &str) -> Option<&'static str> {
    VARIABLES.iter().find(|(v, _)| *v == var).map(|(_, c)| *c)
}

/// The canonical spelling of an allow-listed variable (case-insensitive match).
pub fn canonical_variable(var: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|(v, _)| v.eq_ignore_ascii_case(var))
        .map(|(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_allow_listed_case_insensitively() {
        assert_eq!(canonical_variable("SFCWIND"), Some("sfcWind"));
        assert_eq!(variable_column("sfcWind"), Some("sfcwind"));
        assert_eq!(variable_column("password"), None);
        for v in DEFAULT_VARIABLES {
            assert_eq!(canonical_variable(v), Some(v));
        }
    }

    #[test]
    fn the_seeded_catalog_is_the_dataset_table() {
        // As the README's `migrate` row says: 21 NEX-GDDP, 32 LOCA, 35 NEX-GDDP-CMIP6 models.
        let models: Vec<usize> = DATASETS.iter().map(|d| d.models().len()).collect();
        assert_eq!(models, [21, 32, 35]);
        let d: Dataset = "nex_gddp_cmip6".parse().unwrap();
        assert_eq!(
            (d, d.default_bucket()),
            (Dataset::NexGddpCmip6, "nex-gddp-cmip6")
        );
        assert_eq!(Dataset::Loca.member("GISS-E2-H", "rcp45"), "r6i1p3");
        assert_eq!(
            Dataset::NexGddp.scenario("RCP85"),
            Some(("rcp85", 2006, 2100))
        );
        for d in DATASETS {
            for &(scenario, first, last) in d.scenarios() {
                assert_eq!(
                    d.profile().years(scenario),
                    Some(first..=last),
                    "{d} {scenario}"
                );
            }
        }
    }
}

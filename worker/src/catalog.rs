//! The datasets the worker knows: names, buckets, key templates, scenarios with their year
//! ranges, models with their ensemble members, and the variables it may load.
//!
//! This is the source of the seed rows `migrate` writes and of every validation of a job.
//! Dataset identity, LOCA members, year ranges and S3 key templates come from
//! [`nexdecode::profile`]; this module adds what only the worker needs (model lists, CMIP6
//! members and grid labels, allow-listed variables).

use std::fmt;

use nexdecode::profile::{self, Profile};

/// A dataset the worker can ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// NASA NEX-GDDP (CMIP5 BCSD), 0.25° global.
    NexGddp,
    /// LOCA (CMIP5), 1/16° CONUS.
    Loca,
    /// NASA NEX-GDDP-CMIP6, 0.25° (60°S–90°N).
    NexGddpCmip6,
}

/// Every dataset, in seed order.
pub const DATASETS: [Dataset; 3] = [Dataset::NexGddp, Dataset::Loca, Dataset::NexGddpCmip6];

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

const CMIP5_SCENARIOS: &[(&str, i32, i32)] = &[
    ("historical", 1950, 2005),
    ("rcp45", 2006, 2100),
    ("rcp85", 2006, 2100),
];

const CMIP6_SCENARIOS: &[(&str, i32, i32)] = &[
    ("historical", 1950, 2014),
    ("ssp126", 2015, 2100),
    ("ssp245", 2015, 2100),
    ("ssp370", 2015, 2100),
    ("ssp585", 2015, 2100),
];

const NEX_GDDP_MODELS: &[&str] = &[
    "ACCESS1-0",
    "BNU-ESM",
    "CCSM4",
    "CESM1-BGC",
    "CNRM-CM5",
    "CSIRO-Mk3-6-0",
    "CanESM2",
    "GFDL-CM3",
    "GFDL-ESM2G",
    "GFDL-ESM2M",
    "IPSL-CM5A-LR",
    "IPSL-CM5A-MR",
    "MIROC-ESM",
    "MIROC-ESM-CHEM",
    "MIROC5",
    "MPI-ESM-LR",
    "MPI-ESM-MR",
    "MRI-CGCM3",
    "NorESM1-M",
    "bcc-csm1-1",
    "inmcm4",
];

const LOCA_MODELS: &[&str] = &[
    "ACCESS1-0",
    "ACCESS1-3",
    "CCSM4",
    "CESM1-BGC",
    "CESM1-CAM5",
    "CMCC-CM",
    "CMCC-CMS",
    "CNRM-CM5",
    "CSIRO-Mk3-6-0",
    "CanESM2",
    "EC-EARTH",
    "FGOALS-g2",
    "GFDL-CM3",
    "GFDL-ESM2G",
    "GFDL-ESM2M",
    "GISS-E2-H",
    "GISS-E2-R",
    "HadGEM2-AO",
    "HadGEM2-CC",
    "HadGEM2-ES",
    "IPSL-CM5A-LR",
    "IPSL-CM5A-MR",
    "MIROC-ESM",
    "MIROC-ESM-CHEM",
    "MIROC5",
    "MPI-ESM-LR",
    "MPI-ESM-MR",
    "MRI-CGCM3",
    "NorESM1-M",
    "bcc-csm1-1",
    "bcc-csm1-1-m",
    "inmcm4",
];

/// NEX-GDDP-CMIP6 models with their ensemble member and grid label.
const CMIP6_MODELS: &[(&str, &str, &str)] = &[
    ("ACCESS-CM2", "r1i1p1f1", "gn"),
    ("ACCESS-ESM1-5", "r1i1p1f1", "gn"),
    ("BCC-CSM2-MR", "r1i1p1f1", "gn"),
    ("CESM2", "r4i1p1f1", "gn"),
    ("CESM2-WACCM", "r3i1p1f1", "gn"),
    ("CMCC-CM2-SR5", "r1i1p1f1", "gn"),
    ("CMCC-ESM2", "r1i1p1f1", "gn"),
    ("CNRM-CM6-1", "r1i1p1f2", "gr"),
    ("CNRM-ESM2-1", "r1i1p1f2", "gr"),
    ("CanESM5", "r1i1p1f1", "gn"),
    ("EC-Earth3", "r1i1p1f1", "gr"),
    ("EC-Earth3-Veg-LR", "r1i1p1f1", "gr"),
    ("FGOALS-g3", "r3i1p1f1", "gn"),
    ("GFDL-CM4", "r1i1p1f1", "gr1"),
    ("GFDL-CM4_gr2", "r1i1p1f1", "gr2"),
    ("GFDL-ESM4", "r1i1p1f1", "gr1"),
    ("GISS-E2-1-G", "r1i1p1f2", "gn"),
    ("HadGEM3-GC31-LL", "r1i1p1f3", "gn"),
    ("HadGEM3-GC31-MM", "r1i1p1f3", "gn"),
    ("IITM-ESM", "r1i1p1f1", "gn"),
    ("INM-CM4-8", "r1i1p1f1", "gr1"),
    ("INM-CM5-0", "r1i1p1f1", "gr1"),
    ("IPSL-CM6A-LR", "r1i1p1f1", "gr"),
    ("KACE-1-0-G", "r1i1p1f1", "gr"),
    ("KIOST-ESM", "r1i1p1f1", "gr1"),
    ("MIROC-ES2L", "r1i1p1f2", "gn"),
    ("MIROC6", "r1i1p1f1", "gn"),
    ("MPI-ESM1-2-HR", "r1i1p1f1", "gn"),
    ("MPI-ESM1-2-LR", "r1i1p1f1", "gn"),
    ("MRI-ESM2-0", "r1i1p1f1", "gn"),
    ("NESM3", "r1i1p1f1", "gn"),
    ("NorESM2-LM", "r1i1p1f1", "gn"),
    ("NorESM2-MM", "r1i1p1f1", "gn"),
    ("TaiESM1", "r1i1p1f1", "gn"),
    ("UKESM1-0-LL", "r1i1p1f2", "gn"),
];

impl Dataset {
    /// The decoder's profile of this dataset (public bucket and key layout, DESIGN §1).
    pub fn profile(self) -> Profile {
        Profile::new(self.into())
    }

    /// The dataset's name in messages, the database and the CLI.
    pub fn name(self) -> &'static str {
        profile::Dataset::from(self).name()
    }

    /// Looks a dataset up by name (case-insensitive; `_` and `-` are the same).
    pub fn from_name(name: &str) -> Option<Dataset> {
        profile::Dataset::from_name(name).map(Dataset::from)
    }

    /// A one-line description (seeded into `dataset.description`).
    pub fn description(self) -> &'static str {
        match self {
            Dataset::NexGddp => "NASA NEX-GDDP (CMIP5 BCSD), 0.25 deg global daily",
            Dataset::Loca => "LOCA (CMIP5), 1/16 deg CONUS daily",
            Dataset::NexGddpCmip6 => "NASA NEX-GDDP-CMIP6, 0.25 deg daily",
        }
    }

    /// The public bucket the dataset lives in (overridable in the configuration).
    pub fn default_bucket(self) -> &'static str {
        match self {
            Dataset::NexGddp | Dataset::Loca => "nasanex",
            Dataset::NexGddpCmip6 => "nex-gddp-cmip6",
        }
    }

    /// Scenarios with their inclusive year ranges.
    pub fn scenarios(self) -> &'static [(&'static str, i32, i32)] {
        match self {
            Dataset::NexGddp | Dataset::Loca => CMIP5_SCENARIOS,
            Dataset::NexGddpCmip6 => CMIP6_SCENARIOS,
        }
    }

    /// The canonical scenario name and year range, matching case-insensitively (`RCP85`).
    pub fn scenario(self, name: &str) -> Option<(&'static str, i32, i32)> {
        self.scenarios()
            .iter()
            .find(|(s, _, _)| s.eq_ignore_ascii_case(name.trim()))
            .copied()
    }

    /// Model names, in seed order.
    pub fn models(self) -> Vec<&'static str> {
        match self {
            Dataset::NexGddp => NEX_GDDP_MODELS.to_vec(),
            Dataset::Loca => LOCA_MODELS.to_vec(),
            Dataset::NexGddpCmip6 => CMIP6_MODELS.iter().map(|m| m.0).collect(),
        }
    }

    /// The canonical model name (exact match first, then case-insensitive).
    pub fn model(self, name: &str) -> Option<&'static str> {
        let models = self.models();
        let name = name.trim();
        models
            .iter()
            .find(|m| **m == name)
            .or_else(|| models.iter().find(|m| m.eq_ignore_ascii_case(name)))
            .copied()
    }

    /// The ensemble member of a model's files for a scenario.
    pub fn member(self, model: &str, scenario: &str) -> &'static str {
        match self {
            Dataset::NexGddp => "r1i1p1",
            Dataset::Loca => profile::loca_member(model, scenario),
            Dataset::NexGddpCmip6 => CMIP6_MODELS
                .iter()
                .find(|m| m.0 == model)
                .map_or("r1i1p1f1", |m| m.1),
        }
    }

    /// The grid label in NEX-GDDP-CMIP6 file names (`gn` for every other dataset's purposes).
    pub fn grid_label(self, model: &str) -> &'static str {
        CMIP6_MODELS
            .iter()
            .find(|m| m.0 == model)
            .map_or("gn", |m| m.2)
    }

    /// The S3 key of one variable's file for one job. For NEX-GDDP-CMIP6 this is the key
    /// without a version suffix; [`Dataset::key_matches`] accepts the suffixed variants.
    pub fn key(self, scenario: &str, model: &str, year: i32, var: &str) -> String {
        let member = self.member(model, scenario);
        let grid = self.grid_label(model);
        self.profile()
            .key_with_grid(var, scenario, model, member, grid, year)
    }

    /// The listing prefix under which a variable's yearly files live (NEX-GDDP-CMIP6 keys
    /// may carry `_v1.1`/`_v2.0` suffixes, so the worker lists and picks the newest).
    pub fn key_dir(self, scenario: &str, model: &str, var: &str) -> Option<String> {
        match self {
            Dataset::NexGddpCmip6 => {
                let member = self.member(model, scenario);
                Some(format!("NEX-GDDP-CMIP6/{model}/{scenario}/{member}/{var}/"))
            }
            _ => None,
        }
    }

    /// The listing prefix that holds every year's file of one (scenario, model, variable)
    /// and few others: the key up to the part that varies with the year (and, for
    /// NEX-GDDP-CMIP6, the grid label and version). Every key [`Dataset::key_matches`] accepts
    /// starts with it.
    pub fn list_prefix(self, scenario: &str, model: &str, var: &str) -> String {
        match self {
            Dataset::NexGddpCmip6 => {
                let member = self.member(model, scenario);
                let dir = self.key_dir(scenario, model, var).unwrap_or_default();
                format!("{dir}{var}_day_{model}_{scenario}_{member}_")
            }
            // The year is the only varying part of the template: the keys of two years
            // part where it begins.
            _ => {
                let (a, b) = (
                    self.key(scenario, model, 1000, var),
                    self.key(scenario, model, 2000, var),
                );
                let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
                a[..n].to_owned()
            }
        }
    }

    /// Whether `key` is the file of `year` for this job, and its version rank (higher is
    /// newer: unsuffixed = 0, `_v1.1` = 11, `_v2.0` = 20). For NEX-GDDP-CMIP6 any grid label
    /// (`gn`, `gr`, `gr1`, …) is accepted.
    pub fn key_matches(
        self,
        key: &str,
        scenario: &str,
        model: &str,
        year: i32,
        var: &str,
    ) -> Option<u32> {
        if key == self.key(scenario, model, year, var) {
            return Some(0);
        }
        let Dataset::NexGddpCmip6 = self else {
            return None;
        };
        let member = self.member(model, scenario);
        let dir = self.key_dir(scenario, model, var)?;
        let prefix = format!("{dir}{var}_day_{model}_{scenario}_{member}_");
        let rest = key.strip_prefix(&prefix)?.strip_suffix(".nc")?;
        let (grid, rest) = rest.split_once('_')?;
        if grid.is_empty() || !grid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let (y, version) = match rest.split_once('_') {
            Some((y, v)) => (y, Some(v)),
            None => (rest, None),
        };
        if y != year.to_string() {
            return None;
        }
        match version {
            None => Some(0),
            Some(v) => {
                let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
                let major: u32 = major.parse().ok()?;
                let minor: u32 = minor.parse().ok()?;
                Some(major * 10 + minor.min(9))
            }
        }
    }

    /// Cells of the dataset's whole grid (for the memory estimate of an all-cells job).
    pub fn grid_cells(self) -> u64 {
        match self {
            Dataset::NexGddp => 720 * 1440,
            Dataset::Loca => 490 * 944,
            Dataset::NexGddpCmip6 => 600 * 1440,
        }
    }
}

impl From<Dataset> for profile::Dataset {
    fn from(d: Dataset) -> Self {
        match d {
            Dataset::NexGddp => profile::Dataset::NexGddp,
            Dataset::Loca => profile::Dataset::Loca,
            Dataset::NexGddpCmip6 => profile::Dataset::NexGddpCmip6,
        }
    }
}

impl From<profile::Dataset> for Dataset {
    fn from(d: profile::Dataset) -> Self {
        match d {
            profile::Dataset::NexGddp => Dataset::NexGddp,
            profile::Dataset::Loca => Dataset::Loca,
            profile::Dataset::NexGddpCmip6 => Dataset::NexGddpCmip6,
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dataset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dataset::from_name(s).ok_or_else(|| {
            let known: Vec<_> = DATASETS.iter().map(|d| d.name()).collect();
            format!("unknown dataset {s:?} (known: {})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_templates() {
        assert_eq!(
            Dataset::NexGddp.key("rcp85", "CCSM4", 2050, "tasmax"),
            "NEX-GDDP/BCSD/rcp85/day/atmos/tasmax/r1i1p1/v1.0/tasmax_day_BCSD_rcp85_r1i1p1_CCSM4_2050.nc"
        );
        assert_eq!(
            Dataset::Loca.key("rcp45", "EC-EARTH", 2010, "pr"),
            "LOCA/EC-EARTH/16th/rcp45/r8i1p1/pr/pr_day_EC-EARTH_rcp45_r8i1p1_20100101-20101231.LOCA_2016-04-02.16th.nc"
        );
        assert_eq!(
            Dataset::NexGddpCmip6.key("ssp245", "ACCESS-CM2", 2050, "tas"),
            "NEX-GDDP-CMIP6/ACCESS-CM2/ssp245/r1i1p1f1/tas/tas_day_ACCESS-CM2_ssp245_r1i1p1f1_gn_2050.nc"
        );
        let v = "NEX-GDDP-CMIP6/ACCESS-CM2/ssp245/r1i1p1f1/tas/tas_day_ACCESS-CM2_ssp245_r1i1p1f1_gn_2050_v1.1.nc";
        assert_eq!(
            Dataset::NexGddpCmip6.key_matches(v, "ssp245", "ACCESS-CM2", 2050, "tas"),
            Some(11)
        );
        assert_eq!(
            Dataset::NexGddpCmip6.key_matches(v, "ssp245", "ACCESS-CM2", 2051, "tas"),
            None
        );
    }

    #[test]
    fn list_prefixes_cover_every_year_and_no_other_model() {
        for d in DATASETS {
            for &(scenario, first, last) in d.scenarios() {
                for model in d.models() {
                    for var in ["tasmax", "pr"] {
                        let p = d.list_prefix(scenario, model, var);
                        for year in [first, last] {
                            let key = d.key(scenario, model, year, var);
                            assert!(key.starts_with(&p), "{key} under {p}");
                            assert_eq!(d.key_matches(&key, scenario, model, year, var), Some(0));
                        }
                        for other in d.models() {
                            if other != model {
                                let key = d.key(scenario, other, first, var);
                                assert!(!key.starts_with(&p), "{key} under {p}");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(
            Dataset::NexGddp.list_prefix("rcp45", "MIROC-ESM", "pr"),
            "NEX-GDDP/BCSD/rcp45/day/atmos/pr/r1i1p1/v1.0/pr_day_BCSD_rcp45_r1i1p1_MIROC-ESM_"
        );
        assert_eq!(
            Dataset::Loca.list_prefix("rcp45", "CCSM4", "pr"),
            "LOCA/CCSM4/16th/rcp45/r6i1p1/pr/pr_day_CCSM4_rcp45_r6i1p1_"
        );
        assert_eq!(
            Dataset::NexGddpCmip6.list_prefix("ssp245", "CESM2", "tasmax"),
            "NEX-GDDP-CMIP6/CESM2/ssp245/r4i1p1f1/tasmax/tasmax_day_CESM2_ssp245_r4i1p1f1_"
        );
    }

    #[test]
    fn lookups_are_forgiving_about_case_only() {
        assert_eq!(
            Dataset::from_name("nex_gddp_cmip6"),
            Some(Dataset::NexGddpCmip6)
        );
        assert_eq!(
            Dataset::NexGddp.scenario("RCP85"),
            Some(("rcp85", 2006, 2100))
        );
        assert_eq!(Dataset::NexGddp.scenario("ssp585"), None);
        assert_eq!(Dataset::Loca.model("ccsm4"), Some("CCSM4"));
        assert_eq!(Dataset::Loca.member("GISS-E2-H", "rcp45"), "r6i1p3");
        assert_eq!(canonical_variable("SFCWIND"), Some("sfcWind"));
        assert_eq!(variable_column("sfcWind"), Some("sfcwind"));
        assert_eq!(variable_column("password"), None);
    }

    #[test]
    fn seeded_scenarios_agree_with_the_decoder_profiles() {
        for d in DATASETS {
            let p = d.profile();
            for &(scenario, first, last) in d.scenarios() {
                assert_eq!(p.years(scenario), Some(first..=last), "{d} {scenario}");
            }
        }
    }
}

//! Dataset profiles: where NEX-GDDP, LOCA and NEX-GDDP-CMIP6 files live on S3, which members
//! and years exist, and parsing a key or file name back into its parts.
//!
//! ```
//! use nexdecode::profile::{Dataset, FileKey, Profile};
//!
//! let p = Profile::new(Dataset::Loca);
//! let key = p.key("tasmax", "rcp85", "GISS-E2-R", 2050).unwrap();
//! assert_eq!(
//!     key,
//!     "LOCA/GISS-E2-R/16th/rcp85/r2i1p1/tasmax/\
//!      tasmax_day_GISS-E2-R_rcp85_r2i1p1_20500101-20501231.LOCA_2016-04-02.16th.nc"
//! );
//! let parsed = FileKey::parse(&key).unwrap();
//! assert_eq!((parsed.dataset, parsed.year, parsed.member.as_str()), (Dataset::Loca, 2050, "r2i1p1"));
//! ```

use std::fmt;
use std::ops::RangeInclusive;

/// One of the three datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// NEX-GDDP (CMIP5 BCSD), 0.25° global.
    NexGddp,
    /// LOCA (CMIP5), 1/16° CONUS.
    Loca,
    /// NEX-GDDP-CMIP6, 0.25° (60°S..90°N).
    NexGddpCmip6,
}

impl Dataset {
    /// All datasets.
    pub const ALL: [Dataset; 3] = [Dataset::NexGddp, Dataset::Loca, Dataset::NexGddpCmip6];

    /// The dataset's name: `NEX-GDDP`, `LOCA`, `NEX-GDDP-CMIP6`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::NexGddp => "NEX-GDDP",
            Dataset::Loca => "LOCA",
            Dataset::NexGddpCmip6 => "NEX-GDDP-CMIP6",
        }
    }

    /// Parses a name (case-insensitive; `_` and `-` are interchangeable).
    pub fn from_name(name: &str) -> Option<Dataset> {
        let n = name.trim().to_ascii_uppercase().replace('_', "-");
        Dataset::ALL.into_iter().find(|d| d.name() == n)
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one dataset's files live. Defaults are the public layout (DESIGN §1); tests point the
/// bucket elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The dataset.
    pub dataset: Dataset,
    /// S3 bucket (`nasanex`, or `nex-gddp-cmip6` for CMIP6).
    pub bucket: String,
    /// Key prefix before the dataset's own path (`NEX-GDDP/BCSD`, `LOCA`, `NEX-GDDP-CMIP6`),
    /// without a trailing slash; may be empty.
    pub prefix: String,
}

impl Profile {
    /// The public layout of `dataset`.
    pub fn new(dataset: Dataset) -> Profile {
        let (bucket, prefix) = match dataset {
            Dataset::NexGddp => ("nasanex", "NEX-GDDP/BCSD"),
            Dataset::Loca => ("nasanex", "LOCA"),
            Dataset::NexGddpCmip6 => ("nex-gddp-cmip6", "NEX-GDDP-CMIP6"),
        };
        Profile {
            dataset,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    /// Years a scenario covers: historical 1950–2005, RCPs 2006–2100; CMIP6 historical
    /// 1950–2014, SSPs 2015–2100. `None` for a scenario the dataset does not have.
    pub fn years(&self, scenario: &str) -> Option<RangeInclusive<i32>> {
        let s = scenario.to_ascii_lowercase();
        match self.dataset {
            Dataset::NexGddp | Dataset::Loca => match s.as_str() {
                "historical" => Some(1950..=2005),
                _ if s.starts_with("rcp") => Some(2006..=2100),
                _ => None,
            },
            Dataset::NexGddpCmip6 => match s.as_str() {
                "historical" => Some(1950..=2014),
                _ if s.starts_with("ssp") => Some(2015..=2100),
                _ => None,
            },
        }
    }

    /// The ensemble member of a model/scenario: `r1i1p1` for NEX-GDDP; LOCA's exceptions
    /// (CCSM4 `r6i1p1`; GISS-E2-H historical `r6i1p1`, rcp45 `r6i1p3`, rcp85 `r2i1p1`; GISS-E2-R
    /// historical/rcp45 `r6i1p1`, rcp85 `r2i1p1`; EC-EARTH rcp45 `r8i1p1`, rcp85 `r2i1p1`), else
    /// `r1i1p1`. `None` for CMIP6, whose members vary per model (give it explicitly).
    pub fn member(&self, model: &str, scenario: &str) -> Option<String> {
        match self.dataset {
            Dataset::NexGddp => Some("r1i1p1".into()),
            Dataset::Loca => Some(loca_member(model, scenario).into()),
            Dataset::NexGddpCmip6 => None,
        }
    }

    /// The S3 key of a file, with the dataset's default member (see [`Profile::member`]).
    /// `None` for CMIP6 (use [`Profile::key_with_member`]).
    pub fn key(&self, var: &str, scenario: &str, model: &str, year: i32) -> Option<String> {
        let member = self.member(model, scenario)?;
        Some(self.key_with_member(var, scenario, model, &member, year))
    }

    /// The S3 key of a file with an explicit member. Scenario is lower-cased. NEX-GDDP-CMIP6
    /// keys get the grid label `gn` (see [`Profile::key_with_grid`] for models on other grids).
    pub fn key_with_member(
        &self,
        var: &str,
        scenario: &str,
        model: &str,
        member: &str,
        year: i32,
    ) -> String {
        self.key_with_grid(var, scenario, model, member, "gn", year)
    }

    /// The S3 key of a file with an explicit member and, for NEX-GDDP-CMIP6, grid label
    /// (`gn`, `gr`, `gr1`, …; ignored by the other datasets). Scenario is lower-cased.
    pub fn key_with_grid(
        &self,
        var: &str,
        scenario: &str,
        model: &str,
        member: &str,
        grid: &str,
        year: i32,
    ) -> String {
        let scenario = scenario.to_ascii_lowercase();
        let rest = match self.dataset {
            Dataset::NexGddp => format!(
                "{scenario}/day/atmos/{var}/{member}/v1.0/{var}_day_BCSD_{scenario}_{member}_{model}_{year}.nc"
            ),
            Dataset::Loca => format!(
                "{model}/16th/{scenario}/{member}/{var}/\
                 {var}_day_{model}_{scenario}_{member}_{year}0101-{year}1231.LOCA_2016-04-02.16th.nc"
            ),
            Dataset::NexGddpCmip6 => format!(
                "{model}/{scenario}/{member}/{var}/{var}_day_{model}_{scenario}_{member}_{grid}_{year}.nc"
            ),
        };
        if self.prefix.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.prefix.trim_end_matches('/'))
        }
    }
}

/// The ensemble member of a LOCA model's files for a scenario (DESIGN §1): `r1i1p1` except
/// CCSM4 `r6i1p1`; GISS-E2-H historical `r6i1p1`, rcp45 `r6i1p3`, rcp85 `r2i1p1`; GISS-E2-R
/// historical/rcp45 `r6i1p1`, rcp85 `r2i1p1`; EC-EARTH rcp45 `r8i1p1`, rcp85 `r2i1p1`.
pub fn loca_member(model: &str, scenario: &str) -> &'static str {
    let s = scenario.to_ascii_lowercase();
    match (model, s.as_str()) {
        ("CCSM4", _) => "r6i1p1",
        ("GISS-E2-H", "historical") => "r6i1p1",
        ("GISS-E2-H", "rcp45") => "r6i1p3",
        ("GISS-E2-H", "rcp85") => "r2i1p1",
        ("GISS-E2-R", "historical" | "rcp45") => "r6i1p1",
        ("GISS-E2-R", "rcp85") => "r2i1p1",
        ("EC-EARTH", "rcp45") => "r8i1p1",
        ("EC-EARTH", "rcp85") => "r2i1p1",
        _ => "r1i1p1",
    }
}

/// The parts of a dataset file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    /// Dataset.
    pub dataset: Dataset,
    /// Variable, e.g. `tasmax`.
    pub variable: String,
    /// Scenario, lower case.
    pub scenario: String,
    /// Model, e.g. `ACCESS1-0`.
    pub model: String,
    /// Ensemble member, e.g. `r1i1p1`.
    pub member: String,
    /// Year.
    pub year: i32,
    /// CMIP6 version suffix (`v1.1`, `v2.0`), if the name carries one.
    pub version: Option<String>,
}

impl FileKey {
    /// Parses an S3 key or a bare file name of any of the three datasets (only the last path
    /// component is read). Returns `None` when the name does not follow a dataset's template.
    pub fn parse(key: &str) -> Option<FileKey> {
        let name = key.rsplit('/').next()?;
        if let Some(stem) = name.strip_suffix(".LOCA_2016-04-02.16th.nc") {
            // {var}_day_{model}_{scenario}_{member}_{year}0101-{year}1231
            let parts: Vec<&str> = stem.split('_').collect();
            if parts.len() < 6 || parts[1] != "day" {
                return None;
            }
            let n = parts.len();
            let (y0, y1) = parts[n - 1].split_once('-')?;
            let year = y0.strip_suffix("0101")?;
            if y1 != format!("{year}1231") {
                return None;
            }
            return Some(FileKey {
                dataset: Dataset::Loca,
                variable: parts[0].into(),
                scenario: parts[n - 3].into(),
                model: parts[2..n - 3].join("_"),
                member: parts[n - 2].into(),
                year: parse_year(year)?,
                version: None,
            });
        }
        let stem = name.strip_suffix(".nc")?;
        let parts: Vec<&str> = stem.split('_').collect();
        if parts.len() < 7 || parts[1] != "day" {
            return None;
        }
        let n = parts.len();
        if parts[2] == "BCSD" {
            // {var}_day_BCSD_{scenario}_{member}_{model}_{year}
            return Some(FileKey {
                dataset: Dataset::NexGddp,
                variable: parts[0].into(),
                scenario: parts[3].into(),
                model: parts[5..n - 1].join("_"),
                member: parts[4].into(),
                year: parse_year(parts[n - 1])?,
                version: None,
            });
        }
        // {var}_day_{model}_{scenario}_{member}_{grid}_{year}[_{version}]
        let (end, version) = if parts[n - 1].starts_with('v') && parts[n - 1][1..].contains('.') {
            (n - 1, Some(parts[n - 1].to_string()))
        } else {
            (n, None)
        };
        if end < 7 || !parts[end - 2].starts_with('g') {
            return None;
        }
        Some(FileKey {
            dataset: Dataset::NexGddpCmip6,
            variable: parts[0].into(),
            scenario: parts[end - 4].into(),
            model: parts[2..end - 4].join("_"),
            member: parts[end - 3].into(),
            year: parse_year(parts[end - 1])?,
            version,
        })
    }
}

fn parse_year(s: &str) -> Option<i32> {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nex_gddp_key_round_trip() {
        let p = Profile::new(Dataset::NexGddp);
        assert_eq!(p.bucket, "nasanex");
        let key = p.key("tasmin", "rcp85", "ACCESS1-0", 2008).unwrap();
        assert_eq!(
            key,
            "NEX-GDDP/BCSD/rcp85/day/atmos/tasmin/r1i1p1/v1.0/tasmin_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc"
        );
        let k = FileKey::parse(&key).unwrap();
        assert_eq!(
            k,
            FileKey {
                dataset: Dataset::NexGddp,
                variable: "tasmin".into(),
                scenario: "rcp85".into(),
                model: "ACCESS1-0".into(),
                member: "r1i1p1".into(),
                year: 2008,
                version: None,
            }
        );
    }

    #[test]
    fn loca_members_and_keys() {
        let p = Profile::new(Dataset::Loca);
        let cases = [
            ("CCSM4", "historical", "r6i1p1"),
            ("CCSM4", "rcp85", "r6i1p1"),
            ("GISS-E2-H", "historical", "r6i1p1"),
            ("GISS-E2-H", "rcp45", "r6i1p3"),
            ("GISS-E2-H", "rcp85", "r2i1p1"),
            ("GISS-E2-R", "historical", "r6i1p1"),
            ("GISS-E2-R", "rcp45", "r6i1p1"),
            ("GISS-E2-R", "rcp85", "r2i1p1"),
            ("EC-EARTH", "historical", "r1i1p1"),
            ("EC-EARTH", "rcp45", "r8i1p1"),
            ("EC-EARTH", "rcp85", "r2i1p1"),
            ("ACCESS1-0", "rcp45", "r1i1p1"),
        ];
        for (model, scenario, member) in cases {
            assert_eq!(
                p.member(model, scenario).as_deref(),
                Some(member),
                "{model} {scenario}"
            );
            let key = p.key("pr", scenario, model, 2006).unwrap();
            assert!(
                key.starts_with(&format!("LOCA/{model}/16th/{scenario}/{member}/pr/")),
                "{key}"
            );
            let k = FileKey::parse(&key).unwrap();
            assert_eq!(
                (k.dataset, k.model.as_str(), k.scenario.as_str()),
                (Dataset::Loca, model, scenario)
            );
            assert_eq!(
                (k.member.as_str(), k.year, k.variable.as_str()),
                (member, 2006, "pr")
            );
        }
        // The fixture file name of the LOCA job.
        let k = FileKey::parse(
            "tasmin_day_CCSM4_rcp45_r6i1p1_20060101-20061231.LOCA_2016-04-02.16th.nc",
        )
        .unwrap();
        assert_eq!(k.member, "r6i1p1");
        assert!(
            FileKey::parse(
                "tasmin_day_CCSM4_rcp45_r6i1p1_20060101-20071231.LOCA_2016-04-02.16th.nc"
            )
            .is_none()
        );
    }

    #[test]
    fn cmip6_keys_and_version_suffix() {
        let p = Profile::new(Dataset::NexGddpCmip6);
        assert_eq!(p.bucket, "nex-gddp-cmip6");
        assert_eq!(p.key("pr", "ssp245", "CanESM5", 2016), None);
        let key = p.key_with_member("pr", "SSP245", "CanESM5", "r1i1p1f1", 2016);
        assert_eq!(
            key,
            "NEX-GDDP-CMIP6/CanESM5/ssp245/r1i1p1f1/pr/pr_day_CanESM5_ssp245_r1i1p1f1_gn_2016.nc"
        );
        let k = FileKey::parse(&key).unwrap();
        assert_eq!(k.dataset, Dataset::NexGddpCmip6);
        assert_eq!(
            (k.model.as_str(), k.scenario.as_str(), k.member.as_str()),
            ("CanESM5", "ssp245", "r1i1p1f1")
        );
        assert_eq!((k.year, k.version), (2016, None));
        for v in ["v1.1", "v2.0"] {
            let k = FileKey::parse(&format!(
                "tasmax_day_UKESM1-0-LL_ssp585_r1i1p1f2_gn_2015_{v}.nc"
            ))
            .unwrap();
            assert_eq!(k.version.as_deref(), Some(v));
            assert_eq!(
                (k.model.as_str(), k.year, k.member.as_str()),
                ("UKESM1-0-LL", 2015, "r1i1p1f2")
            );
        }
        // `gr` grids parse too.
        let k = FileKey::parse("hurs_day_EC-Earth3_historical_r1i1p1f1_gr_1990.nc").unwrap();
        assert_eq!(k.variable, "hurs");
    }

    #[test]
    fn year_ranges() {
        let gddp = Profile::new(Dataset::NexGddp);
        assert_eq!(gddp.years("historical"), Some(1950..=2005));
        assert_eq!(gddp.years("rcp45"), Some(2006..=2100));
        assert_eq!(gddp.years("ssp245"), None);
        let loca = Profile::new(Dataset::Loca);
        assert_eq!(loca.years("RCP85"), Some(2006..=2100));
        let cmip6 = Profile::new(Dataset::NexGddpCmip6);
        assert_eq!(cmip6.years("historical"), Some(1950..=2014));
        assert_eq!(cmip6.years("ssp585"), Some(2015..=2100));
        assert_eq!(cmip6.years("rcp45"), None);
    }

    #[test]
    fn configurable_prefix_and_bad_names() {
        let mut p = Profile::new(Dataset::NexGddpCmip6);
        p.prefix = String::new();
        p.bucket = "test-bucket".into();
        assert!(
            p.key_with_member("pr", "ssp245", "M", "r1", 2020)
                .starts_with("M/ssp245/")
        );
        assert_eq!(
            Dataset::from_name("nex_gddp_cmip6"),
            Some(Dataset::NexGddpCmip6)
        );
        assert_eq!(Dataset::from_name("loca"), Some(Dataset::Loca));
        assert_eq!(FileKey::parse("readme.txt"), None);
        assert_eq!(FileKey::parse("tas_day_BCSD_rcp85_r1i1p1_M_20x8.nc"), None);
        assert_eq!(FileKey::parse("tas_mon_M_ssp245_r1i1p1f1_gn_2015.nc"), None);
    }
}

//! The dataset table: everything the project knows about NEX-GDDP, LOCA and NEX-GDDP-CMIP6, in
//! one place.
//!
//! Each [`Dataset`] has one [`DatasetInfo`] entry ([`Dataset::info`]): name and description,
//! public bucket and key prefix, scenarios with their years, models with their ensemble members
//! and grid labels, the S3 key template, the grid, and the layout its files are expected to have.
//! The worker's catalog (validation, seeding, the keys it fetches and lists), the fixture
//! generator (names, keys, grids, layouts) and [`FileKey::parse`] all read it from here, so a new
//! dataset is one variant and one table entry (plus a fixture).
//!
//! - Keys: [`Dataset::key`] (a job's file under the public layout), [`Profile`] (the same under
//!   another bucket or prefix), [`Dataset::list_prefix`] and [`Dataset::key_matches`] for keys
//!   with parts a job does not fix (NEX-GDDP-CMIP6's grid label and `_v1.1`/`_v2.0` suffix),
//!   [`FileKey::parse`] (any dataset's key or file name back into its parts).
//! - A template ([`DatasetInfo::template`]) is text with the fields `{var}`, `{scenario}`,
//!   `{model}`, `{member}`, `{grid}`, `{year}` and `{version}` (empty, or `_v1.1`); the same text
//!   renders keys and parses them. Scenarios are lower case in keys.
//!
//! ```
//! use nexdecode::dataset::{Dataset, FileKey};
//!
//! let d: Dataset = "loca".parse()?;
//! assert_eq!(d.scenario("RCP85"), Some(("rcp85", 2006, 2100)));
//! assert_eq!(d.member("GISS-E2-R", "rcp85"), "r2i1p1");
//! let key = d.key("rcp85", "GISS-E2-R", 2050, "tasmax");
//! assert_eq!(
//!     key,
//!     "LOCA/GISS-E2-R/16th/rcp85/r2i1p1/tasmax/\
//!      tasmax_day_GISS-E2-R_rcp85_r2i1p1_20500101-20501231.LOCA_2016-04-02.16th.nc"
//! );
//! let parsed = FileKey::parse(&key).unwrap();
//! assert_eq!((parsed.dataset, parsed.year, parsed.member.as_str()), (d, 2050, "r2i1p1"));
//!
//! // NEX-GDDP-CMIP6 keys carry a grid label and sometimes a version suffix: a job lists them.
//! let cmip6 = Dataset::NexGddpCmip6;
//! let v2 = "NEX-GDDP-CMIP6/EC-Earth3/ssp245/r1i1p1f1/pr/\
//!           pr_day_EC-Earth3_ssp245_r1i1p1f1_gr_2050_v2.0.nc";
//! assert!(v2.starts_with(&cmip6.list_prefix("ssp245", "EC-Earth3", "pr")));
//! assert_eq!(cmip6.key_matches(v2, "ssp245", "EC-Earth3", 2050, "pr"), Some(20));
//! assert_eq!(cmip6.info().grid.cells(), 600 * 1440);
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::calendar::Calendar;

/// One of the datasets. Everything about it is in its [`DatasetInfo`] ([`Dataset::info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// NASA NEX-GDDP (CMIP5 BCSD), 0.25° global.
    NexGddp,
    /// LOCA (CMIP5), 1/16° CONUS.
    Loca,
    /// NASA NEX-GDDP-CMIP6, 0.25° (60°S–90°N).
    NexGddpCmip6,
}

/// A scenario: its name (lower case, as in keys), first and last year (inclusive).
pub type Scenario = (&'static str, i32, i32);

/// A model of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Model {
    /// The name, as in keys and the database (`ACCESS1-0`, `GFDL-CM4_gr2`).
    pub name: &'static str,
    /// The ensemble member of its files (unless [`DatasetInfo::member_exceptions`] says
    /// otherwise for a scenario).
    pub member: &'static str,
    /// The grid label in its file names (`gn`, `gr`, `gr1`, …; NEX-GDDP-CMIP6 only).
    pub grid_label: &'static str,
}

impl Model {
    const fn new(name: &'static str, member: &'static str, grid_label: &'static str) -> Model {
        Model {
            name,
            member,
            grid_label,
        }
    }
}

/// One regular axis of a dataset's grid: `first + k · step` for `k < len`, degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// The first (smallest) value.
    pub first: f64,
    /// The spacing.
    pub step: f64,
    /// The number of points.
    pub len: usize,
}

impl Axis {
    /// The last (largest) value.
    pub fn last(&self) -> f64 {
        self.first + (self.len as f64 - 1.0) * self.step
    }

    /// Where the points sit within a step: `first` modulo `step` (0.125 on a 0.25° grid).
    pub fn offset(&self) -> f64 {
        self.first.rem_euclid(self.step)
    }
}

/// A dataset's whole grid (latitudes ascending, longitudes 0..360).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridInfo {
    /// Latitudes, degrees north.
    pub lat: Axis,
    /// Longitudes, degrees east.
    pub lon: Axis,
}

impl GridInfo {
    /// Cells of the whole grid.
    pub fn cells(&self) -> u64 {
        (self.lat.len * self.lon.len) as u64
    }
}

/// How a dataset's files are laid out (DESIGN §1 "File facts"): what the fixtures copy and what
/// the decoder's fast path expects. Confirmed from real files for NEX-GDDP-CMIP6; for NEX-GDDP
/// the chunk shape is inferred from the files' sizes and the classic model assumed; LOCA's chunk
/// shape, epoch and fill value are assumptions.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FileLayout {
    /// The calendar of every file, or `None` when it varies with the model.
    pub calendar: Option<Calendar>,
    /// The `units` of `time` (steps at 12:00 each day).
    pub time_units: &'static str,
    /// `_FillValue` = `missing_value` of the (float32) data variable.
    pub fill_value: f64,
    /// Chunk shape `[time, lat, lon]` on the whole grid.
    pub chunks: [usize; 3],
    /// HDF5 shuffle filter.
    pub shuffle: bool,
    /// Deflate level.
    pub deflate: u8,
    /// A netCDF-4 classic-model file.
    pub classic_model: bool,
    /// `lat`/`lon` stored as float32 (else float64).
    pub f32_coords: bool,
}

/// Everything about one dataset: one entry of the table.
#[derive(Debug)]
#[non_exhaustive]
pub struct DatasetInfo {
    /// The dataset this entry describes.
    pub dataset: Dataset,
    /// Its name in messages, the database and the CLI (`NEX-GDDP`).
    pub name: &'static str,
    /// A one-line description (seeded into the database).
    pub description: &'static str,
    /// The public S3 bucket.
    pub bucket: &'static str,
    /// The key prefix before [`template`](Self::template), without a trailing slash.
    pub prefix: &'static str,
    /// The key template after the prefix (see the module docs for its fields).
    pub template: &'static str,
    /// Scenarios with their years, in seed order.
    pub scenarios: &'static [Scenario],
    /// Models, in seed order.
    pub models: &'static [Model],
    /// Members that differ from the model's for some scenarios: `(model, scenario, member)`,
    /// scenario `*` for all of them.
    pub member_exceptions: &'static [(&'static str, &'static str, &'static str)],
    /// The member of a model that is not in [`models`](Self::models).
    pub default_member: &'static str,
    /// The whole grid.
    pub grid: GridInfo,
    /// How the files are laid out.
    pub layout: FileLayout,
}

/// The years of the CMIP5 datasets' scenarios.
const CMIP5_SCENARIOS: &[Scenario] = &[
    ("historical", 1950, 2005),
    ("rcp45", 2006, 2100),
    ("rcp85", 2006, 2100),
];

/// The years of NEX-GDDP-CMIP6's scenarios.
const CMIP6_SCENARIOS: &[Scenario] = &[
    ("historical", 1950, 2014),
    ("ssp126", 2015, 2100),
    ("ssp245", 2015, 2100),
    ("ssp370", 2015, 2100),
    ("ssp585", 2015, 2100),
];

/// CMIP5 models: member `r1i1p1` (exceptions in [`DatasetInfo::member_exceptions`]), grid `gn`.
const fn cmip5<const N: usize>(names: [&'static str; N]) -> [Model; N] {
    let mut out = [Model::new("", "r1i1p1", "gn"); N];
    let mut i = 0;
    while i < N {
        out[i].name = names[i];
        i += 1;
    }
    out
}

#[rustfmt::skip]
static NEX_GDDP_MODELS: [Model; 21] = cmip5([
    "ACCESS1-0", "BNU-ESM", "CCSM4", "CESM1-BGC", "CNRM-CM5", "CSIRO-Mk3-6-0", "CanESM2",
    "GFDL-CM3", "GFDL-ESM2G", "GFDL-ESM2M", "IPSL-CM5A-LR", "IPSL-CM5A-MR", "MIROC-ESM",
    "MIROC-ESM-CHEM", "MIROC5", "MPI-ESM-LR", "MPI-ESM-MR", "MRI-CGCM3", "NorESM1-M",
    "bcc-csm1-1", "inmcm4",
]);

#[rustfmt::skip]
static LOCA_MODELS: [Model; 32] = cmip5([
    "ACCESS1-0", "ACCESS1-3", "CCSM4", "CESM1-BGC", "CESM1-CAM5", "CMCC-CM", "CMCC-CMS",
    "CNRM-CM5", "CSIRO-Mk3-6-0", "CanESM2", "EC-EARTH", "FGOALS-g2", "GFDL-CM3", "GFDL-ESM2G",
    "GFDL-ESM2M", "GISS-E2-H", "GISS-E2-R", "HadGEM2-AO", "HadGEM2-CC", "HadGEM2-ES",
    "IPSL-CM5A-LR", "IPSL-CM5A-MR", "MIROC-ESM", "MIROC-ESM-CHEM", "MIROC5", "MPI-ESM-LR",
    "MPI-ESM-MR", "MRI-CGCM3", "NorESM1-M", "bcc-csm1-1", "bcc-csm1-1-m", "inmcm4",
]);

/// LOCA's members other than `r1i1p1` (DESIGN §1).
const LOCA_MEMBERS: &[(&str, &str, &str)] = &[
    ("CCSM4", "*", "r6i1p1"),
    ("GISS-E2-H", "historical", "r6i1p1"),
    ("GISS-E2-H", "rcp45", "r6i1p3"),
    ("GISS-E2-H", "rcp85", "r2i1p1"),
    ("GISS-E2-R", "historical", "r6i1p1"),
    ("GISS-E2-R", "rcp45", "r6i1p1"),
    ("GISS-E2-R", "rcp85", "r2i1p1"),
    ("EC-EARTH", "rcp45", "r8i1p1"),
    ("EC-EARTH", "rcp85", "r2i1p1"),
];

/// NEX-GDDP-CMIP6 models with their member and grid label.
static CMIP6_MODELS: [Model; 35] = [
    Model::new("ACCESS-CM2", "r1i1p1f1", "gn"),
    Model::new("ACCESS-ESM1-5", "r1i1p1f1", "gn"),
    Model::new("BCC-CSM2-MR", "r1i1p1f1", "gn"),
    Model::new("CESM2", "r4i1p1f1", "gn"),
    Model::new("CESM2-WACCM", "r3i1p1f1", "gn"),
    Model::new("CMCC-CM2-SR5", "r1i1p1f1", "gn"),
    Model::new("CMCC-ESM2", "r1i1p1f1", "gn"),
    Model::new("CNRM-CM6-1", "r1i1p1f2", "gr"),
    Model::new("CNRM-ESM2-1", "r1i1p1f2", "gr"),
    Model::new("CanESM5", "r1i1p1f1", "gn"),
    Model::new("EC-Earth3", "r1i1p1f1", "gr"),
    Model::new("EC-Earth3-Veg-LR", "r1i1p1f1", "gr"),
    Model::new("FGOALS-g3", "r3i1p1f1", "gn"),
    Model::new("GFDL-CM4", "r1i1p1f1", "gr1"),
    Model::new("GFDL-CM4_gr2", "r1i1p1f1", "gr2"),
    Model::new("GFDL-ESM4", "r1i1p1f1", "gr1"),
    Model::new("GISS-E2-1-G", "r1i1p1f2", "gn"),
    Model::new("HadGEM3-GC31-LL", "r1i1p1f3", "gn"),
    Model::new("HadGEM3-GC31-MM", "r1i1p1f3", "gn"),
    Model::new("IITM-ESM", "r1i1p1f1", "gn"),
    Model::new("INM-CM4-8", "r1i1p1f1", "gr1"),
    Model::new("INM-CM5-0", "r1i1p1f1", "gr1"),
    Model::new("IPSL-CM6A-LR", "r1i1p1f1", "gr"),
    Model::new("KACE-1-0-G", "r1i1p1f1", "gr"),
    Model::new("KIOST-ESM", "r1i1p1f1", "gr1"),
    Model::new("MIROC-ES2L", "r1i1p1f2", "gn"),
    Model::new("MIROC6", "r1i1p1f1", "gn"),
    Model::new("MPI-ESM1-2-HR", "r1i1p1f1", "gn"),
    Model::new("MPI-ESM1-2-LR", "r1i1p1f1", "gn"),
    Model::new("MRI-ESM2-0", "r1i1p1f1", "gn"),
    Model::new("NESM3", "r1i1p1f1", "gn"),
    Model::new("NorESM2-LM", "r1i1p1f1", "gn"),
    Model::new("NorESM2-MM", "r1i1p1f1", "gn"),
    Model::new("TaiESM1", "r1i1p1f1", "gn"),
    Model::new("UKESM1-0-LL", "r1i1p1f2", "gn"),
];

/// The 0.25° global longitudes (0.125..359.875).
const QUARTER_DEGREE_LON: Axis = Axis {
    first: 0.125,
    step: 0.25,
    len: 1440,
};

/// The table, in [`Dataset::ALL`] order.
static TABLE: [DatasetInfo; 3] = [
    DatasetInfo {
        dataset: Dataset::NexGddp,
        name: "NEX-GDDP",
        description: "NASA NEX-GDDP (CMIP5 BCSD), 0.25 deg global daily",
        bucket: "nasanex",
        prefix: "NEX-GDDP/BCSD",
        template: "{scenario}/day/atmos/{var}/{member}/v1.0/\
                   {var}_day_BCSD_{scenario}_{member}_{model}_{year}.nc",
        scenarios: CMIP5_SCENARIOS,
        models: &NEX_GDDP_MODELS,
        member_exceptions: &[],
        default_member: "r1i1p1",
        grid: GridInfo {
            lat: Axis {
                first: -89.875,
                step: 0.25,
                len: 720,
            },
            lon: QUARTER_DEGREE_LON,
        },
        // Float coordinates and small chunks as the real files (64 chunks a day, ~32 KB
        // compressed each: 759 MiB for 1.4 GiB of data); the classic model is assumed.
        layout: FileLayout {
            calendar: Some(Calendar::Standard),
            time_units: "days since 1950-01-01 00:00:00",
            fill_value: 1e20,
            chunks: [1, 90, 180],
            shuffle: true,
            deflate: 5,
            classic_model: true,
            f32_coords: true,
        },
    },
    DatasetInfo {
        dataset: Dataset::Loca,
        name: "LOCA",
        description: "LOCA (CMIP5), 1/16 deg CONUS daily",
        bucket: "nasanex",
        prefix: "LOCA",
        template: "{model}/16th/{scenario}/{member}/{var}/\
                   {var}_day_{model}_{scenario}_{member}_{year}0101-{year}1231\
                   .LOCA_2016-04-02.16th.nc",
        scenarios: CMIP5_SCENARIOS,
        models: &LOCA_MODELS,
        member_exceptions: LOCA_MEMBERS,
        default_member: "r1i1p1",
        grid: GridInfo {
            lat: Axis {
                first: 23.53125,
                step: 0.0625,
                len: 490,
            },
            lon: Axis {
                first: 234.53125,
                step: 0.0625,
                len: 944,
            },
        },
        // Chunks, epoch and fill are assumptions (several chunks a day, partial edge chunks).
        layout: FileLayout {
            calendar: Some(Calendar::Standard),
            time_units: "days since 1900-01-01 00:00:00",
            fill_value: 1e30,
            chunks: [1, 8, 16],
            shuffle: true,
            deflate: 2,
            classic_model: false,
            f32_coords: false,
        },
    },
    DatasetInfo {
        dataset: Dataset::NexGddpCmip6,
        name: "NEX-GDDP-CMIP6",
        description: "NASA NEX-GDDP-CMIP6, 0.25 deg daily",
        bucket: "nex-gddp-cmip6",
        prefix: "NEX-GDDP-CMIP6",
        template: "{model}/{scenario}/{member}/{var}/\
                   {var}_day_{model}_{scenario}_{member}_{grid}_{year}{version}.nc",
        scenarios: CMIP6_SCENARIOS,
        models: &CMIP6_MODELS,
        member_exceptions: &[],
        default_member: "r1i1p1f1",
        grid: GridInfo {
            lat: Axis {
                first: -59.875,
                step: 0.25,
                len: 600,
            },
            lon: QUARTER_DEGREE_LON,
        },
        // Confirmed from real files: one whole day per chunk.
        layout: FileLayout {
            calendar: None,
            time_units: "days since 1950-01-01",
            fill_value: 1e20,
            chunks: [1, 600, 1440],
            shuffle: true,
            deflate: 5,
            classic_model: false,
            f32_coords: false,
        },
    },
];

impl Dataset {
    /// Every dataset, in seed order.
    pub const ALL: [Dataset; 3] = [Dataset::NexGddp, Dataset::Loca, Dataset::NexGddpCmip6];

    /// The dataset's entry of the table.
    pub fn info(self) -> &'static DatasetInfo {
        &TABLE[self as usize]
    }

    /// The dataset's name in messages, the database and the CLI: `NEX-GDDP`, `LOCA`,
    /// `NEX-GDDP-CMIP6`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Looks a dataset up by name (case-insensitive; `_` and `-` are the same).
    pub fn from_name(name: &str) -> Option<Dataset> {
        let n = name.trim().to_ascii_uppercase().replace('_', "-");
        Dataset::ALL.into_iter().find(|d| d.name() == n)
    }

    /// A one-line description (seeded into `dataset.description`).
    pub fn description(self) -> &'static str {
        self.info().description
    }

    /// The public bucket the dataset lives in (configuration may point elsewhere).
    pub fn default_bucket(self) -> &'static str {
        self.info().bucket
    }

    /// The public layout of the dataset's keys (bucket and prefix).
    pub fn profile(self) -> Profile {
        Profile::new(self)
    }

    /// Scenarios with their inclusive year ranges, in seed order.
    pub fn scenarios(self) -> &'static [Scenario] {
        self.info().scenarios
    }

    /// The canonical scenario name and year range, matching case-insensitively (`RCP85`).
    pub fn scenario(self, name: &str) -> Option<Scenario> {
        let name = name.trim();
        self.scenarios()
            .iter()
            .find(|(s, _, _)| s.eq_ignore_ascii_case(name))
            .copied()
    }

    /// The years a scenario covers; `None` for a scenario the dataset does not have.
    pub fn years(self, scenario: &str) -> Option<RangeInclusive<i32>> {
        self.scenario(scenario).map(|(_, first, last)| first..=last)
    }

    /// Model names, in seed order.
    pub fn models(self) -> Vec<&'static str> {
        self.info().models.iter().map(|m| m.name).collect()
    }

    /// The canonical model name (exact match first, then case-insensitive).
    pub fn model(self, name: &str) -> Option<&'static str> {
        let models = self.info().models;
        let name = name.trim();
        models
            .iter()
            .find(|m| m.name == name)
            .or_else(|| models.iter().find(|m| m.name.eq_ignore_ascii_case(name)))
            .map(|m| m.name)
    }

    /// The ensemble member of a model's files for a scenario: an exception of the table, else
    /// the model's, else the dataset's default.
    pub fn member(self, model: &str, scenario: &str) -> &'static str {
        let info = self.info();
        let scenario = scenario.trim();
        if let Some(&(_, _, member)) = info
            .member_exceptions
            .iter()
            .find(|(m, s, _)| *m == model && (*s == "*" || s.eq_ignore_ascii_case(scenario)))
        {
            return member;
        }
        info.models
            .iter()
            .find(|m| m.name == model)
            .map_or(info.default_member, |m| m.member)
    }

    /// The grid label in a model's file names (`gn` for a model not in the table).
    pub fn grid_label(self, model: &str) -> &'static str {
        self.info()
            .models
            .iter()
            .find(|m| m.name == model)
            .map_or("gn", |m| m.grid_label)
    }

    /// Cells of the dataset's whole grid.
    pub fn grid_cells(self) -> u64 {
        self.info().grid.cells()
    }

    /// The key fields of one variable's file for one job: the table's member and grid label,
    /// no version suffix.
    pub fn fields<'a>(
        self,
        scenario: &'a str,
        model: &'a str,
        year: i32,
        var: &'a str,
    ) -> KeyFields<'a> {
        KeyFields {
            variable: var,
            scenario,
            model,
            member: self.member(model, scenario),
            grid: self.grid_label(model),
            year,
            version: None,
        }
    }

    /// The S3 key of one variable's file for one job, under the public prefix. For
    /// NEX-GDDP-CMIP6 this is the key without a version suffix; [`Dataset::key_matches`]
    /// accepts the suffixed variants.
    pub fn key(self, scenario: &str, model: &str, year: i32, var: &str) -> String {
        self.render(self.info().prefix, &self.fields(scenario, model, year, var))
    }

    /// The file name (the key's last component) for `fields`.
    pub fn file_name(self, fields: &KeyFields<'_>) -> String {
        let mut out = String::with_capacity(96);
        render_into(&mut out, file_part(self.info().template), fields, false);
        out
    }

    /// The listing prefix under which a variable's yearly files live, for datasets whose keys
    /// have parts a job does not fix (NEX-GDDP-CMIP6: grid label, version suffix), so that the
    /// worker lists and picks the newest; `None` where [`Dataset::key`] is the file.
    pub fn key_dir(self, scenario: &str, model: &str, var: &str) -> Option<String> {
        if !self.keys_vary() {
            return None;
        }
        let mut dir = self.list_prefix(scenario, model, var);
        dir.truncate(dir.rfind('/').map_or(0, |i| i + 1));
        Some(dir)
    }

    /// The listing prefix that holds every year's file of one (scenario, model, variable) and
    /// few others: the key up to the first part that varies with the year (or, for
    /// NEX-GDDP-CMIP6, the grid label and version). Every key [`Dataset::key_matches`] accepts
    /// starts with it.
    pub fn list_prefix(self, scenario: &str, model: &str, var: &str) -> String {
        let mut out = prefixed(self.info().prefix);
        let fields = self.fields(scenario, model, 0, var);
        render_into(&mut out, self.info().template, &fields, true);
        out
    }

    /// Whether `key` (under the public prefix) is the file of `year` for this job, and its
    /// version rank (higher is newer: unsuffixed = 0, `_v1.1` = 11, `_v2.0` = 20). For
    /// NEX-GDDP-CMIP6 any grid label (`gn`, `gr`, `gr1`, …) is accepted.
    pub fn key_matches(
        self,
        key: &str,
        scenario: &str,
        model: &str,
        year: i32,
        var: &str,
    ) -> Option<u32> {
        let want = self.fields(scenario, model, year, var);
        if key == self.render(self.info().prefix, &want) {
            return Some(0);
        }
        let got = self.parse_key(self.info().prefix, key)?;
        let same = got.variable == want.variable
            && got
                .scenario
                .bytes()
                .eq(scenario.bytes().map(|b| b.to_ascii_lowercase()))
            && got.model == want.model
            && got.member == want.member
            && got.year == year;
        if !same {
            return None;
        }
        version_rank(got.version)
    }

    /// Parses a whole key under `prefix` with the dataset's template. A field the template
    /// lacks is empty.
    pub fn parse_key<'a>(self, prefix: &str, key: &'a str) -> Option<KeyFields<'a>> {
        let prefix = prefix.trim_end_matches('/');
        let rest = if prefix.is_empty() {
            key
        } else {
            key.strip_prefix(prefix)?.strip_prefix('/')?
        };
        parse(self.info().template, rest)
    }

    /// Parses a file name (a key's last component) with the dataset's template. A field the
    /// template lacks is empty.
    pub fn parse_file_name(self, name: &str) -> Option<KeyFields<'_>> {
        parse(file_part(self.info().template), name)
    }

    /// Whether the keys of a job's files have parts the job does not fix (grid label, version).
    fn keys_vary(self) -> bool {
        tokens(self.info().template)
            .iter()
            .any(|t| matches!(t, Tok::Field(Field::Grid | Field::Version)))
    }

    fn render(self, prefix: &str, fields: &KeyFields<'_>) -> String {
        let mut out = prefixed(prefix);
        render_into(&mut out, self.info().template, fields, false);
        out
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = String;

    /// [`Dataset::from_name`]; the error names the known datasets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dataset::from_name(s).ok_or_else(|| {
            let known: Vec<_> = Dataset::ALL.iter().map(|d| d.name()).collect();
            format!("unknown dataset {s:?} (known: {})", known.join(", "))
        })
    }
}

/// The parts of a key, borrowed: what a template renders from and parses into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFields<'a> {
    /// Variable, e.g. `tasmax`.
    pub variable: &'a str,
    /// Scenario (lower-cased when rendered).
    pub scenario: &'a str,
    /// Model, e.g. `ACCESS1-0`.
    pub model: &'a str,
    /// Ensemble member, e.g. `r1i1p1`.
    pub member: &'a str,
    /// Grid label, e.g. `gn` (NEX-GDDP-CMIP6).
    pub grid: &'a str,
    /// Year.
    pub year: i32,
    /// Version suffix without its `_`, e.g. `v1.1` (NEX-GDDP-CMIP6).
    pub version: Option<&'a str>,
}

/// Where one dataset's files live: the public layout of [`Dataset::profile`], or another bucket
/// or prefix (tests, mirrors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The dataset.
    pub dataset: Dataset,
    /// S3 bucket (`nasanex`, or `nex-gddp-cmip6` for CMIP6).
    pub bucket: String,
    /// Key prefix before the dataset's template (`NEX-GDDP/BCSD`, `LOCA`, `NEX-GDDP-CMIP6`),
    /// without a trailing slash; may be empty.
    pub prefix: String,
}

impl Profile {
    /// The public layout of `dataset`.
    pub fn new(dataset: Dataset) -> Profile {
        let info = dataset.info();
        Profile {
            dataset,
            bucket: info.bucket.into(),
            prefix: info.prefix.into(),
        }
    }

    /// The years a scenario covers ([`Dataset::years`]).
    pub fn years(&self, scenario: &str) -> Option<RangeInclusive<i32>> {
        self.dataset.years(scenario)
    }

    /// The key of one variable's file for one job under this prefix ([`Dataset::key`]).
    pub fn key(&self, scenario: &str, model: &str, year: i32, var: &str) -> String {
        self.key_of(&self.dataset.fields(scenario, model, year, var))
    }

    /// The key of a file with explicit fields (member, grid label, version) under this prefix.
    pub fn key_of(&self, fields: &KeyFields<'_>) -> String {
        self.dataset.render(&self.prefix, fields)
    }
}

/// The parts of a dataset file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    /// Dataset.
    pub dataset: Dataset,
    /// Variable, e.g. `tasmax`.
    pub variable: String,
    /// Scenario, as in the name.
    pub scenario: String,
    /// Model, e.g. `ACCESS1-0`.
    pub model: String,
    /// Ensemble member, e.g. `r1i1p1`.
    pub member: String,
    /// Grid label (`gn`, `gr1`, …), if the name carries one (NEX-GDDP-CMIP6).
    pub grid: Option<String>,
    /// Year.
    pub year: i32,
    /// CMIP6 version suffix (`v1.1`, `v2.0`), if the name carries one.
    pub version: Option<String>,
}

impl FileKey {
    /// Parses an S3 key or a bare file name of any dataset (only the last path component is
    /// read) with the datasets' templates. Returns `None` when the name follows none of them.
    pub fn parse(key: &str) -> Option<FileKey> {
        let name = key.rsplit('/').next()?;
        Dataset::ALL.into_iter().find_map(|dataset| {
            let f = dataset.parse_file_name(name)?;
            Some(FileKey {
                dataset,
                variable: f.variable.into(),
                scenario: f.scenario.into(),
                model: f.model.into(),
                member: f.member.into(),
                grid: (!f.grid.is_empty()).then(|| f.grid.into()),
                year: f.year,
                version: f.version.map(str::to_owned),
            })
        })
    }
}

/// The version rank of [`Dataset::key_matches`]: none = 0, `vM.m` = `10 M + min(m, 9)`;
/// `None` for a suffix that is not `v<number>.<number>`.
fn version_rank(version: Option<&str>) -> Option<u32> {
    let Some(v) = version else {
        return Some(0);
    };
    let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.parse().ok()?;
    Some(major.saturating_mul(10).saturating_add(minor.min(9)))
}

// ---------------------------------------------------------------------------------------------
// Templates.

/// A field of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Var,
    Scenario,
    Model,
    Member,
    Grid,
    Year,
    Version,
}

impl Field {
    const COUNT: usize = 7;

    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "var" => Field::Var,
            "scenario" => Field::Scenario,
            "model" => Field::Model,
            "member" => Field::Member,
            "grid" => Field::Grid,
            "year" => Field::Year,
            "version" => Field::Version,
            _ => return None,
        })
    }

    /// Whether a job (scenario, model, variable) leaves the field open: where a listing prefix
    /// ends.
    fn is_free(self) -> bool {
        matches!(self, Field::Grid | Field::Year | Field::Version)
    }

    /// Whether `v` is a value of the field in a key.
    fn accepts(self, v: &str) -> bool {
        match self {
            Field::Var | Field::Scenario | Field::Member => {
                !v.is_empty() && !v.contains(['_', '/'])
            }
            Field::Model => !v.is_empty() && !v.contains('/'),
            Field::Grid => v.starts_with('g') && v.bytes().all(|b| b.is_ascii_alphanumeric()),
            Field::Year => v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit()),
            Field::Version => {
                v.is_empty()
                    || v.strip_prefix("_v")
                        .is_some_and(|r| r.contains('.') && !r.contains(['_', '/']))
            }
        }
    }

    /// How far into `s` a value of the field can reach (no value contains what follows).
    fn reach(self, s: &str) -> usize {
        let upto = |stop: &[char]| s.find(stop).unwrap_or(s.len());
        match self {
            Field::Var | Field::Scenario | Field::Member => upto(&['_', '/']),
            Field::Model => upto(&['/']),
            Field::Grid => s
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(s.len()),
            Field::Year => s.len().min(4),
            Field::Version => match s.strip_prefix('_') {
                Some(r) => 1 + r.find(['_', '/']).unwrap_or(r.len()),
                None => 0,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'t> {
    Lit(&'t str),
    Field(Field),
}

/// A template's literal runs and fields.
///
/// # Panics
/// On an unknown field or an unclosed `{` (the table's templates are tested).
fn tokens(template: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Tok::Lit(&rest[..open]));
        }
        let close = rest[open..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed field in template {template:?}"))
            + open;
        let name = &rest[open + 1..close];
        let field = Field::from_name(name)
            .unwrap_or_else(|| panic!("unknown field {name:?} in template {template:?}"));
        out.push(Tok::Field(field));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Tok::Lit(rest));
    }
    out
}

/// The file-name part of a template: after its last `/`.
fn file_part(template: &str) -> &str {
    template.rsplit('/').next().unwrap_or(template)
}

/// `prefix/`, or nothing for an empty prefix.
fn prefixed(prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let mut out = String::with_capacity(prefix.len() + 160);
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push('/');
    }
    out
}

/// Appends `template` filled from `f`; with `until_free`, only up to the first field a job
/// leaves open ([`Field::is_free`]).
fn render_into(out: &mut String, template: &str, f: &KeyFields<'_>, until_free: bool) {
    for tok in tokens(template) {
        match tok {
            Tok::Lit(l) => out.push_str(l),
            Tok::Field(field) if until_free && field.is_free() => return,
            Tok::Field(Field::Var) => out.push_str(f.variable),
            Tok::Field(Field::Scenario) => {
                out.extend(f.scenario.chars().map(|c| c.to_ascii_lowercase()));
            }
            Tok::Field(Field::Model) => out.push_str(f.model),
            Tok::Field(Field::Member) => out.push_str(f.member),
            Tok::Field(Field::Grid) => out.push_str(f.grid),
            Tok::Field(Field::Year) => out.push_str(&f.year.to_string()),
            Tok::Field(Field::Version) => {
                if let Some(v) = f.version {
                    out.push('_');
                    out.push_str(v);
                }
            }
        }
    }
}

/// Matches all of `s` against `template`; a field that occurs twice must match the same text.
fn parse<'a>(template: &str, s: &'a str) -> Option<KeyFields<'a>> {
    let toks = tokens(template);
    let mut caps = [None; Field::COUNT];
    if !match_from(&toks, s, &mut caps) {
        return None;
    }
    let get = |f: Field| caps[f as usize].unwrap_or("");
    Some(KeyFields {
        variable: get(Field::Var),
        scenario: get(Field::Scenario),
        model: get(Field::Model),
        member: get(Field::Member),
        grid: get(Field::Grid),
        year: caps[Field::Year as usize]?.parse().ok()?,
        version: get(Field::Version).strip_prefix('_'),
    })
}

/// Backtracking match of `toks` against all of `s`, binding fields in `caps`.
fn match_from<'a>(
    toks: &[Tok<'_>],
    s: &'a str,
    caps: &mut [Option<&'a str>; Field::COUNT],
) -> bool {
    let Some((tok, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match *tok {
        Tok::Lit(lit) => s
            .strip_prefix(lit)
            .is_some_and(|s| match_from(rest, s, caps)),
        Tok::Field(field) => {
            if let Some(bound) = caps[field as usize] {
                return s
                    .strip_prefix(bound)
                    .is_some_and(|s| match_from(rest, s, caps));
            }
            for end in 0..=field.reach(s) {
                if !s.is_char_boundary(end) || !field.accepts(&s[..end]) {
                    continue;
                }
                caps[field as usize] = Some(&s[..end]);
                if match_from(rest, &s[end..], caps) {
                    return true;
                }
            }
            caps[field as usize] = None;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_order_and_its_templates_parse() {
        for (i, d) in Dataset::ALL.into_iter().enumerate() {
            assert_eq!(TABLE[i].dataset, d);
            assert_eq!(Dataset::from_name(d.name()), Some(d));
            assert_eq!(d.to_string().parse::<Dataset>(), Ok(d));
            let toks = tokens(d.info().template);
            for f in [
                Field::Var,
                Field::Scenario,
                Field::Model,
                Field::Member,
                Field::Year,
            ] {
                assert!(toks.contains(&Tok::Field(f)), "{d}: {f:?}");
            }
            assert_eq!(d.models().len(), d.info().models.len());
            for &(m, s, _) in d.info().member_exceptions {
                assert!(d.model(m).is_some(), "{d}: exception for unknown model {m}");
                assert!(s == "*" || d.scenario(s).is_some(), "{d}: {s}");
            }
        }
        assert_eq!(
            "cmip5".parse::<Dataset>(),
            Err("unknown dataset \"cmip5\" (known: NEX-GDDP, LOCA, NEX-GDDP-CMIP6)".into())
        );
    }

    #[test]
    fn grids() {
        let g = Dataset::NexGddp.info().grid;
        assert_eq!(
            (g.lat.first, g.lat.last(), g.lat.offset()),
            (-89.875, 89.875, 0.125)
        );
        assert_eq!((g.lon.first, g.lon.last()), (0.125, 359.875));
        assert_eq!(Dataset::NexGddp.grid_cells(), 720 * 1440);
        let g = Dataset::Loca.info().grid;
        assert_eq!((g.lat.offset(), g.lon.offset()), (0.03125, 0.03125));
        assert_eq!(Dataset::Loca.grid_cells(), 490 * 944);
        let g = Dataset::NexGddpCmip6.info().grid;
        assert_eq!((g.lat.first, g.lat.last()), (-59.875, 89.875));
        assert_eq!(Dataset::NexGddpCmip6.grid_cells(), 600 * 1440);
    }

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
        assert_eq!(
            Dataset::NexGddpCmip6.key("SSP245", "GFDL-CM4_gr2", 2050, "tas"),
            "NEX-GDDP-CMIP6/GFDL-CM4_gr2/ssp245/r1i1p1f1/tas/tas_day_GFDL-CM4_gr2_ssp245_r1i1p1f1_gr2_2050.nc"
        );
        let v = "NEX-GDDP-CMIP6/ACCESS-CM2/ssp245/r1i1p1f1/tas/tas_day_ACCESS-CM2_ssp245_r1i1p1f1_gn_2050_v1.1.nc";
        let d = Dataset::NexGddpCmip6;
        assert_eq!(
            d.key_matches(v, "ssp245", "ACCESS-CM2", 2050, "tas"),
            Some(11)
        );
        assert_eq!(d.key_matches(v, "ssp245", "ACCESS-CM2", 2051, "tas"), None);
        assert_eq!(d.key_matches(v, "ssp245", "ACCESS-CM2", 2050, "pr"), None);
        assert_eq!(d.key_matches(v, "ssp585", "ACCESS-CM2", 2050, "tas"), None);
        let gr = v.replace("_gn_", "_gr1_").replace("_v1.1", "_v2.0");
        assert_eq!(
            d.key_matches(&gr, "ssp245", "ACCESS-CM2", 2050, "tas"),
            Some(20)
        );
        for bad in ["_v1.x", "_x1.1", "_v1.1_v2.0"] {
            let k = v.replace("_v1.1", bad);
            assert_eq!(
                d.key_matches(&k, "ssp245", "ACCESS-CM2", 2050, "tas"),
                None,
                "{k}"
            );
        }
        assert_eq!(
            d.key_dir("ssp245", "CESM2", "pr").as_deref(),
            Some("NEX-GDDP-CMIP6/CESM2/ssp245/r4i1p1f1/pr/")
        );
        assert_eq!(Dataset::NexGddp.key_dir("rcp45", "CCSM4", "pr"), None);
        assert_eq!(Dataset::Loca.key_dir("rcp45", "CCSM4", "pr"), None);
    }

    #[test]
    fn list_prefixes_cover_every_year_and_no_other_model() {
        for d in Dataset::ALL {
            for &(scenario, first, last) in d.scenarios() {
                for model in d.models() {
                    for var in ["tasmax", "pr"] {
                        let p = d.list_prefix(scenario, model, var);
                        for year in [first, last] {
                            let key = d.key(scenario, model, year, var);
                            assert!(key.starts_with(&p), "{key} under {p}");
                            assert_eq!(d.key_matches(&key, scenario, model, year, var), Some(0));
                            let k = FileKey::parse(&key).unwrap();
                            assert_eq!(
                                (k.dataset, k.model.as_str(), k.scenario.as_str(), k.year),
                                (d, model, scenario, year)
                            );
                            assert_eq!(k.member, d.member(model, scenario));
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
        assert_eq!(Dataset::from_name("loca"), Some(Dataset::Loca));
        assert_eq!(
            Dataset::NexGddp.scenario("RCP85"),
            Some(("rcp85", 2006, 2100))
        );
        assert_eq!(Dataset::NexGddp.scenario("ssp585"), None);
        assert_eq!(Dataset::Loca.model("ccsm4"), Some("CCSM4"));
        assert_eq!(Dataset::Loca.model("CCSM5"), None);
    }

    #[test]
    fn nex_gddp_key_round_trip() {
        let p = Dataset::NexGddp.profile();
        assert_eq!(p.bucket, "nasanex");
        let key = p.key("rcp85", "ACCESS1-0", 2008, "tasmin");
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
                grid: None,
                year: 2008,
                version: None,
            }
        );
    }

    #[test]
    fn loca_members_and_keys() {
        let d = Dataset::Loca;
        let cases = [
            ("CCSM4", "historical", "r6i1p1"),
            ("CCSM4", "rcp85", "r6i1p1"),
            ("GISS-E2-H", "historical", "r6i1p1"),
            ("GISS-E2-H", "rcp45", "r6i1p3"),
            ("GISS-E2-H", "rcp85", "r2i1p1"),
            ("GISS-E2-R", "historical", "r6i1p1"),
            ("GISS-E2-R", "rcp45", "r6i1p1"),
            ("GISS-E2-R", "RCP85", "r2i1p1"),
            ("EC-EARTH", "historical", "r1i1p1"),
            ("EC-EARTH", "rcp45", "r8i1p1"),
            ("EC-EARTH", "rcp85", "r2i1p1"),
            ("ACCESS1-0", "rcp45", "r1i1p1"),
        ];
        for (model, scenario, member) in cases {
            assert_eq!(d.member(model, scenario), member, "{model} {scenario}");
            let key = d.key(scenario, model, 2006, "pr");
            let scenario = scenario.to_ascii_lowercase();
            assert!(
                key.starts_with(&format!("LOCA/{model}/16th/{scenario}/{member}/pr/")),
                "{key}"
            );
            let k = FileKey::parse(&key).unwrap();
            assert_eq!(
                (k.dataset, k.model.as_str(), k.scenario.as_str()),
                (Dataset::Loca, model, scenario.as_str())
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
        let p = Dataset::NexGddpCmip6.profile();
        assert_eq!(p.bucket, "nex-gddp-cmip6");
        let key = p.key("SSP245", "CanESM5", 2016, "pr");
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
        assert_eq!(
            (k.year, k.grid.as_deref(), k.version),
            (2016, Some("gn"), None)
        );
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
        // `gr` grids parse too, and a model name with an underscore.
        let k = FileKey::parse("hurs_day_EC-Earth3_historical_r1i1p1f1_gr_1990.nc").unwrap();
        assert_eq!(k.variable, "hurs");
        let k = FileKey::parse("tas_day_GFDL-CM4_gr2_ssp245_r1i1p1f1_gr2_2050_v1.1.nc").unwrap();
        assert_eq!(
            (k.model.as_str(), k.grid.as_deref(), k.version.as_deref()),
            ("GFDL-CM4_gr2", Some("gr2"), Some("v1.1"))
        );
        // Explicit fields render back to the same name.
        let f = Dataset::NexGddpCmip6
            .parse_file_name("tas_day_GFDL-CM4_gr2_ssp245_r1i1p1f1_gr2_2050_v1.1.nc")
            .unwrap();
        assert_eq!(
            Dataset::NexGddpCmip6.file_name(&f),
            "tas_day_GFDL-CM4_gr2_ssp245_r1i1p1f1_gr2_2050_v1.1.nc"
        );
    }

    #[test]
    fn configurable_prefix_and_bad_names() {
        let mut p = Dataset::NexGddpCmip6.profile();
        p.prefix = String::new();
        p.bucket = "test-bucket".into();
        let f = KeyFields {
            member: "r1",
            ..Dataset::NexGddpCmip6.fields("ssp245", "M", 2020, "pr")
        };
        assert_eq!(p.key_of(&f), "M/ssp245/r1/pr/pr_day_M_ssp245_r1_gn_2020.nc");
        p.prefix = "mirror/cmip6/".into();
        assert!(
            p.key("ssp245", "M", 2020, "pr")
                .starts_with("mirror/cmip6/M/ssp245/r1i1p1f1/")
        );
        assert_eq!(FileKey::parse("readme.txt"), None);
        assert_eq!(FileKey::parse("tas_day_BCSD_rcp85_r1i1p1_M_20x8.nc"), None);
        assert_eq!(FileKey::parse("tas_mon_M_ssp245_r1i1p1f1_gn_2015.nc"), None);
        assert_eq!(FileKey::parse("tas_day_M_ssp245_r1i1p1f1_xx_2015.nc"), None);
        assert_eq!(
            FileKey::parse("tas_day_M_ssp245_r1i1p1f1_gn_2015_vfoo.nc"),
            None
        );
    }

    #[test]
    fn year_ranges() {
        let gddp = Dataset::NexGddp.profile();
        assert_eq!(gddp.years("historical"), Some(1950..=2005));
        assert_eq!(gddp.years("rcp45"), Some(2006..=2100));
        assert_eq!(gddp.years("ssp245"), None);
        assert_eq!(Dataset::Loca.years("RCP85"), Some(2006..=2100));
        let cmip6 = Dataset::NexGddpCmip6;
        assert_eq!(cmip6.years("historical"), Some(1950..=2014));
        assert_eq!(cmip6.years("ssp585"), Some(2015..=2100));
        assert_eq!(cmip6.years("rcp45"), None);
    }
}

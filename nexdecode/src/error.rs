//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while opening or decoding a file.
///
/// Every variant names the file and says what is wrong, and how to fix it where there is a fix.
/// The enum is `#[non_exhaustive]`: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The file could not be opened or read by libnetcdf (missing, truncated, corrupt, not NetCDF).
    #[error(
        "{path}: cannot {action}: {source} (is the file complete and a NetCDF-3 or NetCDF-4 file?)"
    )]
    Netcdf {
        /// The file.
        path: PathBuf,
        /// What was being done, e.g. "open the file" or "read variable `tas`".
        action: String,
        /// libnetcdf's error.
        #[source]
        source: netcdf::Error,
    },

    /// The file is shorter than its header says, or its data are damaged.
    #[error("{path}: truncated or corrupt file: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },

    /// The requested variable, or a coordinate variable it needs, does not exist.
    #[error("{path}: no variable `{name}`{hint}")]
    MissingVariable {
        /// The file.
        path: PathBuf,
        /// The variable that was looked for.
        name: String,
        /// Extra help, such as the variables that do exist (starts with "; " when present).
        hint: String,
    },

    /// No `(time, lat, lon)` data variable was found, or more than one.
    #[error("{path}: {detail}")]
    NoDataVariable {
        /// The file.
        path: PathBuf,
        /// What was found instead, and the fix.
        detail: String,
    },

    /// The variable's dimensions are not `(time, lat, lon)` in that order.
    #[error(
        "{path}: variable `{variable}` has dimensions ({found}); expected (time, lat, lon) in that order \
         (reorder with e.g. `ncpdq -a time,lat,lon`)"
    )]
    UnexpectedDims {
        /// The file.
        path: PathBuf,
        /// The data variable.
        variable: String,
        /// The dimensions found, comma-separated.
        found: String,
    },

    /// A coordinate axis is empty, non-monotonic or otherwise unusable.
    #[error("{path}: coordinate `{axis}`: {detail}")]
    BadCoordinate {
        /// The file.
        path: PathBuf,
        /// The coordinate variable.
        axis: String,
        /// What is wrong.
        detail: String,
    },

    /// The variable's type cannot be decoded.
    #[error(
        "{path}: variable `{variable}` has type {dtype}; supported are float, double, short, int and byte \
         (packed integers with scale_factor/add_offset)"
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The data variable.
        variable: String,
        /// The type found.
        dtype: String,
    },

    /// The variable's storage (filters, layout) is not supported by the requested read path.
    #[error("{path}: variable `{variable}`: {detail}")]
    UnsupportedStorage {
        /// The file.
        path: PathBuf,
        /// The data variable.
        variable: String,
        /// What is unsupported, and the fix.
        detail: String,
    },

    /// The time coordinate's calendar is not one of the CF calendars this crate supports.
    #[error(
        "{path}: unsupported calendar `{calendar}`; supported: standard, gregorian, proleptic_gregorian, \
         noleap, 365_day, all_leap, 366_day, 360_day, julian"
    )]
    UnsupportedCalendar {
        /// The file.
        path: PathBuf,
        /// The calendar attribute found.
        calendar: String,
    },

    /// The time coordinate's units are not `<unit> since <date>`, or a date cannot be represented.
    #[error("{path}: time units `{units}`: {detail}")]
    BadTimeUnits {
        /// The file.
        path: PathBuf,
        /// The units attribute found.
        units: String,
        /// What is wrong, and the expected form.
        detail: String,
    },

    /// Time steps are not strictly increasing by day (duplicated, unordered, or sub-daily steps).
    #[error(
        "{path}: time step {index} ({date}) does not come after the step before it ({previous}); \
         time steps must be daily and strictly increasing"
    )]
    UnorderedTime {
        /// The file.
        path: PathBuf,
        /// Index along the time dimension.
        index: usize,
        /// The step's date in the file's calendar.
        date: String,
        /// The previous step's date.
        previous: String,
    },

    /// The requested year is not complete in the file.
    #[error(
        "{path}: year {year} is incomplete: {found} of {expected} days present in the {calendar} calendar{detail}"
    )]
    IncompleteYear {
        /// The file.
        path: PathBuf,
        /// The requested year.
        year: i32,
        /// Days of that year present in the file.
        found: usize,
        /// Days the year has in the file's calendar.
        expected: usize,
        /// The file's calendar.
        calendar: String,
        /// Which days are missing (starts with "; " when present).
        detail: String,
    },

    /// The file holds days outside the requested year, and the options ask for one year per file.
    #[error(
        "{path}: {count} time steps lie outside year {year} (first: {first}); the file must hold exactly \
         that year (or set DecodeOptions::single_year_file = false)"
    )]
    DaysOutsideYear {
        /// The file.
        path: PathBuf,
        /// The requested year.
        year: i32,
        /// Number of steps outside the year.
        count: usize,
        /// The first such step's date.
        first: String,
    },

    /// The `standard`/`gregorian` calendar is Julian before 1582-10-15; such dates are not supported.
    #[error(
        "{path}: date {date} lies before 1582-10-15 in the `{calendar}` calendar (Julian there); only dates \
         from 1582-10-15 on are supported for standard/gregorian (use proleptic_gregorian for earlier dates)"
    )]
    JulianDate {
        /// The file.
        path: PathBuf,
        /// The date (in the Julian calendar).
        date: String,
        /// The calendar attribute.
        calendar: String,
    },

    /// A cell index lies outside the grid.
    #[error("{path}: cell (lat {lat}, lon {lon}) lies outside the {nlat} × {nlon} grid")]
    CellOutOfRange {
        /// The file.
        path: PathBuf,
        /// Latitude index.
        lat: usize,
        /// Longitude index.
        lon: usize,
        /// Grid latitude count.
        nlat: usize,
        /// Grid longitude count.
        nlon: usize,
    },

    /// The bytes of a file read by ranges ([`crate::RemoteFile`]) could not be fetched.
    #[error("{path}: cannot fetch {what}: {source}")]
    Fetch {
        /// The file (its name as given to [`crate::GridFile::open_remote`]).
        path: PathBuf,
        /// What was being fetched, e.g. "the chunk index" or "a chunk of `tas`".
        what: String,
        /// The [`crate::RemoteFile`]'s error.
        #[source]
        source: std::io::Error,
    },
}

impl DecodeError {
    /// Wraps a libnetcdf error with the file and what was being done.
    pub(crate) fn netcdf(
        path: &std::path::Path,
        action: impl Into<String>,
        source: netcdf::Error,
    ) -> Self {
        Self::Netcdf {
            path: path.to_path_buf(),
            action: action.into(),
            source,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Netcdf { path, .. }
            | Self::Corrupt { path, .. }
            | Self::MissingVariable { path, .. }
            | Self::NoDataVariable { path, .. }
            | Self::UnexpectedDims { path, .. }
            | Self::BadCoordinate { path, .. }
            | Self::UnsupportedDtype { path, .. }
            | Self::UnsupportedStorage { path, .. }
            | Self::UnsupportedCalendar { path, .. }
            | Self::BadTimeUnits { path, .. }
            | Self::UnorderedTime { path, .. }
            | Self::IncompleteYear { path, .. }
            | Self::DaysOutsideYear { path, .. }
            | Self::JulianDate { path, .. }
            | Self::CellOutOfRange { path, .. }
            | Self::Fetch { path, .. } => path,
        }
    }
}

//! Options of a decode, and which cells to decode.

use crate::grid::CellIndex;

/// Which read path decodes the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPath {
    /// The chunked fast path when the variable is eligible (NetCDF-4, f32, filters exactly
    /// shuffle + deflate), else the `netcdf` crate.
    #[default]
    Auto,
    /// Always the `netcdf` crate (libnetcdf; sequential).
    Netcdf,
    /// Only the chunked fast path; an ineligible variable is an error.
    Chunked,
}

/// Options of [`GridFile::decode_year`](crate::GridFile::decode_year) and
/// [`GridFile::locate`](crate::GridFile::locate).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Read path (default [`ReadPath::Auto`]).
    pub read_path: ReadPath,
    /// When the nearest cell of a location has no data, the nearest data cell within this
    /// great-circle distance (km) is used instead; beyond it the location is unmatched.
    /// Default 50 km (about two cells of a 0.25° grid).
    pub data_radius_km: f64,
    /// Require the file to hold exactly the requested year: time steps of other years are an
    /// error ([`DecodeError::DaysOutsideYear`](crate::DecodeError::DaysOutsideYear)). True for
    /// the three datasets' one-year files; default false (multi-year files allowed).
    pub single_year_file: bool,
    /// Decode a year even when some of its days are absent from the file (their slots stay
    /// missing) instead of failing with
    /// [`DecodeError::IncompleteYear`](crate::DecodeError::IncompleteYear). Default false.
    pub allow_incomplete_year: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            read_path: ReadPath::Auto,
            data_radius_km: 50.0,
            single_year_file: false,
            allow_incomplete_year: false,
        }
    }
}

/// Which cells of the grid to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellSelection {
    /// Every data cell: cells that are valid on at least one day of the year.
    AllData,
    /// These cells (in any order; the block holds them sorted and without duplicates, with or
    /// without data).
    Cells(Vec<CellIndex>),
}

//! `nexdecode`: NetCDF climate grids (NEX-GDDP, LOCA, NEX-GDDP-CMIP6) to per-cell yearly series.
//!
//! Open a file with [`GridFile::open`], map locations to grid cells with [`GridFile::locate`],
//! and decode one year of the chosen cells with [`GridFile::decode_year`] into a [`YearBlock`]:
//! an `ndarray` `Array2<f32>` of `cells × days`, missing = NaN.
//!
//! # Semantics
//! - Day axis: the real (proleptic Gregorian) days of the year, 365 or 366 slots. A `noleap`
//!   (`365_day`) file in a leap year leaves Feb 29 (0-based slot 59) missing; an `all_leap`
//!   (`366_day`) file in a common year drops the model's Feb 29; a `360_day` year is spread over
//!   the real year like xarray's `convert_calendar(..., align_on="year")`, leaving 5 (6 in a
//!   leap year) slots missing. See [`slot_of`].
//! - `standard`/`gregorian` is Julian before 1582-10-15 in CF: reference dates before the reform
//!   are counted as Julian dates, data dates before it are an error ([`DecodeError::JulianDate`]).
//! - Time values at any time of day map to their date. A file may span several years; the
//!   requested year must be complete ([`DecodeError::IncompleteYear`]).
//! - `_FillValue`, `missing_value` (any type, scalar or list) and NaN decode to NaN; packed
//!   integers are unpacked with `scale_factor`/`add_offset`. Float variables without
//!   `_FillValue` use netCDF's default fill. A cell missing on every day is not a data cell.
//! - Two read paths answer the same internal request and give identical blocks: the `netcdf`
//!   crate, and (for NetCDF-4 f32 variables stored with exactly shuffle + deflate) a chunked fast
//!   path that inflates chunks in parallel. [`ReadPath`] chooses.
//!
//! What is known about each dataset (names, scenarios and years, models, members, grid labels,
//! S3 key templates and key parsing, grids, file layouts) is one table, in [`dataset`].
//!
//! # Example
//! ```
//! use nexdecode::{slot_of, Calendar};
//! // A 365-day model year in a leap year: Mar 1 (model day 59) lands after the empty Feb 29.
//! assert_eq!(slot_of(Calendar::NoLeap, 2000, 59), Some(60));
//! // A 360-day year: the last model day lands on Dec 31.
//! assert_eq!(slot_of(Calendar::Day360, 1961, 359), Some(364));
//! ```
//!
//! ```no_run
//! use nexdecode::{CellSelection, DecodeOptions, GridFile};
//! # fn main() -> Result<(), nexdecode::DecodeError> {
//! let file = GridFile::open("tasmax_day_ACCESS-CM2_ssp245_r1i1p1f1_gn_2050.nc")?;
//! let opts = DecodeOptions { single_year_file: true, ..DecodeOptions::default() };
//! let places = file.locate(2050, &[(40.71, -74.01)], &opts)?;
//! if let Some(cell) = places[0].cell {
//!     let block = file.decode_year(2050, &CellSelection::Cells(vec![cell]), &opts)?;
//!     println!("{} days, {} valid", block.days(), block.valid_count());
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod block;
mod calendar;
mod chunked;
pub mod dataset;
mod error;
mod file;
mod grid;
mod h5index;
mod image;
mod locate;
mod meta;
mod netcdf_read;
mod options;
pub mod profile;
mod remote;
mod series;

pub use calendar::{Calendar, Date, TimeUnits, is_leap_year, real_days_in_year, slot_of};
pub use dataset::Dataset;
pub use error::DecodeError;
pub use file::GridFile;
pub use grid::{CellIndex, EARTH_RADIUS_KM, Grid, LonConvention, haversine_km};
pub use locate::{LocationMatch, MatchReason, ONE_READ_MAX_CANDIDATES};
pub use meta::{Dtype, NC_DEFAULT_FILL, VariableInfo};
pub use options::{CellSelection, DecodeOptions, ReadPath};
pub use remote::RemoteFile;
pub use series::YearBlock;

//! [`GridFile`]: one data variable of one NetCDF file, opened by path.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::block::BlockRequest;
use crate::calendar::{self, Calendar, Date};
use crate::chunked::{self, Remote, Rows};
use crate::error::DecodeError;
use crate::grid::Grid;
use crate::image::{self, MetaImage};
use crate::meta::{self, Dtype, VariableInfo};
use crate::netcdf_read;
use crate::options::{CellSelection, DecodeOptions, ReadPath};
use crate::remote::RemoteFile;
use crate::series::{TimeAxis, YearBlock};

/// Role of a dimension, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Time,
    Lat,
    Lon,
    Other,
}

fn role(dim: &str) -> Role {
    match dim.to_ascii_lowercase().as_str() {
        "time" | "t" | "valid_time" => Role::Time,
        "lat" | "latitude" => Role::Lat,
        "lon" | "long" | "longitude" => Role::Lon,
        _ => Role::Other,
    }
}

/// One `(time, lat, lon)` data variable of a NetCDF-3 or NetCDF-4 file, with its CF metadata,
/// grid and time axis.
///
/// The libnetcdf handle stays open for the life of the value.
#[derive(Debug)]
pub struct GridFile {
    path: PathBuf,
    file: Handle,
    /// Set when the file is read by ranges ([`GridFile::open_remote`]).
    remote: Option<Remote>,
    info: VariableInfo,
    grid: Grid,
    time: TimeAxis,
}

/// The libnetcdf handle: a file on disk, or the metadata image of a remote file.
enum Handle {
    Disk(netcdf::File),
    Image(MetaImage),
}

impl std::ops::Deref for Handle {
    type Target = netcdf::File;
    fn deref(&self) -> &netcdf::File {
        match self {
            Handle::Disk(f) => f,
            Handle::Image(m) => m.file(),
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::Disk(file) => file.fmt(f),
            Handle::Image(_) => f.write_str("MetaImage"),
        }
    }
}

impl GridFile {
    /// Opens a file and finds its data variable: the one variable with dimensions
    /// `(time, lat, lon)` (aliases `latitude`, `longitude` accepted).
    ///
    /// # Errors
    /// [`DecodeError::Netcdf`] when the file cannot be opened (missing, truncated, not NetCDF);
    /// [`DecodeError::NoDataVariable`] when there is no such variable or several;
    /// [`DecodeError::UnexpectedDims`] when the only candidate has its dimensions in another
    /// order; and the errors of [`GridFile::open_variable`].
    pub fn open(path: impl AsRef<Path>) -> Result<GridFile, DecodeError> {
        let path = path.as_ref();
        let file = open_file(path)?;
        let name = find_data_variable(path, &file)?;
        Self::from_file(path, Handle::Disk(file), None, &name)
    }

    /// Opens a file and the named data variable.
    ///
    /// # Errors
    /// [`DecodeError::Netcdf`] when the file cannot be opened or read;
    /// [`DecodeError::MissingVariable`] when the variable or a coordinate variable is absent;
    /// [`DecodeError::UnexpectedDims`] when its dimensions are not `(time, lat, lon)`;
    /// [`DecodeError::UnsupportedDtype`], [`DecodeError::UnsupportedCalendar`],
    /// [`DecodeError::BadTimeUnits`], [`DecodeError::BadCoordinate`],
    /// [`DecodeError::UnorderedTime`], [`DecodeError::JulianDate`] for unusable metadata.
    pub fn open_variable(path: impl AsRef<Path>, name: &str) -> Result<GridFile, DecodeError> {
        let path = path.as_ref();
        let file = open_file(path)?;
        Self::from_file(path, Handle::Disk(file), None, name)
    }

    /// Opens the named data variable of a file that is read by ranges (an S3 object, say),
    /// without ever holding the whole file: its chunk index and metadata are read first (a few
    /// round trips; everything but the variable's chunks), and each decode then fetches only
    /// the chunks it needs, inflating them batch by batch as they arrive (see [`RemoteFile`]).
    /// `name` stands for the file in errors and logs (its URL, say).
    ///
    /// Decodes give the same values as [`GridFile::open_variable`] on the same bytes; they
    /// always take the chunked fast path ([`ReadPath::Netcdf`] is refused).
    ///
    /// # Errors
    /// [`DecodeError::UnsupportedStorage`] when the variable is not stored in a way that can be
    /// read by ranges (NetCDF-3, not chunked, not a 4-byte float with shuffle + deflate or
    /// deflate, a chunk never written, an HDF5 structure the index reader does not handle):
    /// read the whole file and use [`GridFile::open_variable`] instead.
    /// [`DecodeError::Fetch`] when the source fails; otherwise as [`GridFile::open_variable`].
    pub fn open_remote(
        src: std::sync::Arc<dyn RemoteFile>,
        name: impl AsRef<Path>,
        var: &str,
    ) -> Result<GridFile, DecodeError> {
        quiet_hdf5_errors();
        let path = name.as_ref();
        let (image, remote) = image::open(src, path, var)?;
        Self::from_file(path, Handle::Image(image), Some(remote), var)
    }

    /// Whether this file is read by ranges ([`GridFile::open_remote`]).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    fn from_file(
        path: &Path,
        file: Handle,
        remote: Option<Remote>,
        name: &str,
    ) -> Result<GridFile, DecodeError> {
        let _span = tracing::debug_span!("open", path = %path.display(), var = name).entered();
        let var = file
            .variable(name)
            .ok_or_else(|| DecodeError::MissingVariable {
                path: path.to_path_buf(),
                name: name.to_string(),
                hint: format!(
                    "; the file has: {}",
                    file.variables()
                        .map(|v| v.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let dims: Vec<String> = var.dimensions().iter().map(|d| d.name()).collect();
        let roles: Vec<Role> = dims.iter().map(|d| role(d)).collect();
        if roles != [Role::Time, Role::Lat, Role::Lon] {
            return Err(DecodeError::UnexpectedDims {
                path: path.to_path_buf(),
                variable: name.to_string(),
                found: dims.join(", "),
            });
        }
        let shape = [
            var.dimensions()[0].len(),
            var.dimensions()[1].len(),
            var.dimensions()[2].len(),
        ];
        let dtype =
            Dtype::from_nc(&var.vartype()).map_err(|dtype| DecodeError::UnsupportedDtype {
                path: path.to_path_buf(),
                variable: name.to_string(),
                dtype,
            })?;
        let fill = meta::attr_numbers(&var, "_FillValue", path)?
            .first()
            .copied();
        let missing = meta::attr_numbers(&var, "missing_value", path)?;
        let scale = meta::attr_numbers(&var, "scale_factor", path)?
            .first()
            .copied();
        let offset = meta::attr_numbers(&var, "add_offset", path)?
            .first()
            .copied();
        let units = meta::attr_text(&var, "units");

        let lat = read_axis(path, &file, &dims[1])?;
        let lon = read_axis(path, &file, &dims[2])?;
        let grid = Grid::new(lat, lon).map_err(|detail| DecodeError::BadCoordinate {
            path: path.to_path_buf(),
            axis: format!("{}/{}", dims[1], dims[2]),
            detail,
        })?;

        let tvar = file
            .variable(&dims[0])
            .ok_or_else(|| DecodeError::MissingVariable {
                path: path.to_path_buf(),
                name: dims[0].clone(),
                hint: "; the time dimension needs a coordinate variable with CF `units`".into(),
            })?;
        let time_units =
            meta::attr_text(&tvar, "units").ok_or_else(|| DecodeError::BadTimeUnits {
                path: path.to_path_buf(),
                units: String::new(),
                detail: format!("coordinate `{}` has no `units` attribute", dims[0]),
            })?;
        let calendar = match meta::attr_text(&tvar, "calendar") {
            None => Calendar::Standard,
            Some(c) => Calendar::from_cf(&c).ok_or_else(|| DecodeError::UnsupportedCalendar {
                path: path.to_path_buf(),
                calendar: c.clone(),
            })?,
        };
        let tvalues: Vec<f64> = tvar
            .get_values::<f64, _>(..)
            .map_err(|e| DecodeError::netcdf(path, format!("read coordinate `{}`", dims[0]), e))?;
        let time = TimeAxis::new(path, calendar, &time_units, &tvalues)?;

        let info = VariableInfo {
            name: name.to_string(),
            units,
            dtype,
            fill,
            missing,
            scale,
            offset,
            calendar,
            time_units,
            dims: [dims[0].clone(), dims[1].clone(), dims[2].clone()],
            shape,
        };
        drop(var);
        drop(tvar);
        Ok(GridFile {
            path: path.to_path_buf(),
            file,
            remote,
            info,
            grid,
            time,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data variable and its CF metadata.
    pub fn variable(&self) -> &VariableInfo {
        &self.info
    }

    /// The lat/lon grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The calendar of the time axis.
    pub fn calendar(&self) -> Calendar {
        self.info.calendar
    }

    /// Number of time steps.
    pub fn steps(&self) -> usize {
        self.time.len()
    }

    /// Dates (in the file's calendar) of the first and last time steps; `None` without steps.
    pub fn date_range(&self) -> Option<(Date, Date)> {
        let n = self.time.len();
        (n > 0).then(|| (self.time.date(0), self.time.date(n - 1)))
    }

    /// Years (in the file's calendar) with at least one time step, ascending. A year listed here
    /// may still be incomplete; [`GridFile::decode_year`] checks.
    pub fn years(&self) -> Vec<i32> {
        self.time.years()
    }

    /// Decodes one year of the selected cells into a `cells × days` block, days being the real
    /// days of the year (365 or 366; see the crate docs for calendars).
    ///
    /// With [`CellSelection::AllData`] only the data cells are kept (cells valid on at least
    /// one day of the year); on the chunked fast path only their rows are ever written.
    ///
    /// To decode many variable-years in a row without allocating (and page-faulting) a new
    /// output each time, use [`GridFile::decode_year_into`].
    ///
    /// # Errors
    /// [`DecodeError::IncompleteYear`] when any day of the year is absent;
    /// [`DecodeError::DaysOutsideYear`] when `options.single_year_file` and the file holds other
    /// days; [`DecodeError::CellOutOfRange`] for a cell outside the grid;
    /// [`DecodeError::UnsupportedStorage`] when [`ReadPath::Chunked`] is asked for an ineligible
    /// variable; [`DecodeError::Netcdf`]/[`DecodeError::Corrupt`] when reading fails.
    pub fn decode_year(
        &self,
        year: i32,
        cells: &CellSelection,
        options: &DecodeOptions,
    ) -> Result<YearBlock, DecodeError> {
        let mut block = YearBlock::default();
        self.decode_year_into(year, cells, options, &mut block)?;
        Ok(block)
    }

    /// Like [`GridFile::decode_year`], but decodes into `block`, reusing its allocations: the
    /// `values` buffer (when its capacity is large enough for the result, which stays its
    /// capacity afterwards) and the `cells` vector. Every field of `block` is overwritten; its
    /// previous contents do not matter, only its capacity.
    ///
    /// A worker that decodes variable-year after variable-year keeps one `YearBlock` per
    /// variable it holds at once (start with [`YearBlock::default`]) and passes it back in for
    /// the next job. On the chunked fast path the output memory is then already faulted in,
    /// which saves a large part of a decode's time (see `nexdecode/PERF.md`). The fast path's
    /// batch buffers (about 128 MiB) are reused across decodes as well, by the crate itself:
    /// up to two idle sets are kept for the process.
    ///
    /// # Errors
    /// As [`GridFile::decode_year`]. On error `block` is left empty (no cells, `0 × 0` values)
    /// and keeps its allocations.
    ///
    /// # Example
    /// ```no_run
    /// use nexdecode::{CellSelection, DecodeOptions, GridFile, YearBlock};
    /// # fn main() -> Result<(), nexdecode::DecodeError> {
    /// let opts = DecodeOptions { single_year_file: true, ..DecodeOptions::default() };
    /// let mut block = YearBlock::default();
    /// for year in 2015..2020 {
    ///     let file = GridFile::open(format!("tasmax_{year}.nc"))?;
    ///     file.decode_year_into(year, &CellSelection::AllData, &opts, &mut block)?;
    ///     println!("{year}: {} data cells", block.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn decode_year_into(
        &self,
        year: i32,
        cells: &CellSelection,
        options: &DecodeOptions,
        block: &mut YearBlock,
    ) -> Result<(), DecodeError> {
        let flat: Vec<usize> = match cells {
            CellSelection::AllData => (0..self.grid.len()).collect(),
            CellSelection::Cells(list) => {
                let mut flat = Vec::with_capacity(list.len());
                for &c in list {
                    if !self.grid.contains(c) {
                        return Err(DecodeError::CellOutOfRange {
                            path: self.path.clone(),
                            lat: c.lat,
                            lon: c.lon,
                            nlat: self.grid.nlat(),
                            nlon: self.grid.nlon(),
                        });
                    }
                    flat.push(self.grid.flat(c));
                }
                flat.sort_unstable();
                flat.dedup();
                flat
            }
        };
        let rows = match cells {
            CellSelection::AllData => Rows::Valid,
            CellSelection::Cells(_) => Rows::Requested,
        };
        self.decode_flat_into(year, &flat, rows, options, block)
    }

    /// Decodes the cells `flat` (ascending flat indices, no duplicates, inside the grid) of
    /// `year` into `block`: a row for each (`Rows::Requested`) or only for those with a valid
    /// value (`Rows::Valid`).
    pub(crate) fn decode_flat_into(
        &self,
        year: i32,
        flat: &[usize],
        rows: Rows,
        options: &DecodeOptions,
        block: &mut YearBlock,
    ) -> Result<(), DecodeError> {
        let _span = tracing::debug_span!("decode_year", path = %self.path.display(), var = %self.info.name, year)
            .entered();
        let started = std::time::Instant::now();
        let (mut values, _) = std::mem::take(&mut block.values).into_raw_vec_and_offset();
        block.cells.clear();
        let mut kept = Vec::new();
        let result = self.decode_year_raw(year, flat, rows, options, &mut values, &mut kept);
        let days = match result {
            Ok(days) => days,
            Err(e) => {
                values.clear();
                block.values = Array2::from_shape_vec((0, 0), values).expect("empty");
                return Err(e);
            }
        };
        tracing::debug!(
            cells = kept.len(),
            days,
            ms = started.elapsed().as_millis() as u64,
            "decoded"
        );
        block.variable.clone_from(&self.info.name);
        block.units.clone_from(&self.info.units);
        block.year = year;
        block.calendar = self.info.calendar;
        block.cells.extend(kept.iter().map(|&f| self.grid.cell(f)));
        block.values =
            Array2::from_shape_vec((kept.len(), days), values).expect("kept × days values");
        Ok(())
    }

    /// Decodes into `values` (`kept.len() × days`) and `kept` (flat cells); returns `days`.
    fn decode_year_raw(
        &self,
        year: i32,
        flat: &[usize],
        rows: Rows,
        options: &DecodeOptions,
        values: &mut Vec<f32>,
        kept: &mut Vec<usize>,
    ) -> Result<usize, DecodeError> {
        let steps = self.time.plan_year(
            &self.path,
            year,
            options.single_year_file,
            options.allow_incomplete_year,
        )?;
        let days = calendar::real_days_in_year(year);
        let rule = self.info.value_rule();
        let req = BlockRequest {
            var: &self.info.name,
            shape: self.info.shape,
            cells: flat,
            steps: &steps,
            days,
            values: &rule,
        };
        self.read_block_into(&req, options.read_path, rows, values, kept)?;
        Ok(days)
    }

    /// Runs one block request on the chosen read path into `values`/`cells` (see
    /// [`chunked::decode_chunked_into`]).
    pub(crate) fn read_block_into(
        &self,
        req: &BlockRequest<'_>,
        path: ReadPath,
        rows: Rows,
        values: &mut Vec<f32>,
        cells: &mut Vec<usize>,
    ) -> Result<(), DecodeError> {
        quiet_hdf5_errors();
        let chunked = |values: &mut Vec<f32>, cells: &mut Vec<usize>| {
            chunked::decode_chunked_into(&self.path, req, self.remote.as_ref(), rows, values, cells)
        };
        if self.remote.is_some() {
            // Only the chunked path reads the chunks: the metadata image has none.
            if path == ReadPath::Netcdf || !chunked(values, cells)? {
                return Err(DecodeError::UnsupportedStorage {
                    path: self.path.clone(),
                    variable: self.info.name.clone(),
                    detail: "a file read by ranges is decoded on the chunked path only \
                             (ReadPath::Netcdf needs the whole file: use GridFile::open_variable)"
                        .into(),
                });
            }
            return Ok(());
        }
        let eligible = match path {
            ReadPath::Netcdf => false,
            ReadPath::Auto => chunked(values, cells)?,
            ReadPath::Chunked => {
                if !chunked(values, cells)? {
                    return Err(DecodeError::UnsupportedStorage {
                        path: self.path.clone(),
                        variable: self.info.name.clone(),
                        detail: "not eligible for the chunked fast path (it needs a NetCDF-4 float \
                                 variable stored in chunks with exactly shuffle+deflate or deflate); \
                                 use ReadPath::Auto or ReadPath::Netcdf"
                            .into(),
                    });
                }
                true
            }
        };
        if eligible {
            return Ok(());
        }
        // The netcdf path allocates its own block: free the reused one first.
        *values = Vec::new();
        let mut block = netcdf_read::decode_netcdf(&self.path, &self.file, req, self.info.dtype)?;
        cells.clear();
        cells.extend_from_slice(req.cells);
        if rows == Rows::Valid {
            block = drop_empty_rows(block, cells);
        }
        (*values, _) = block.into_raw_vec_and_offset();
        Ok(())
    }
}

/// Removes the all-NaN rows of a `cells × days` block in place (memory stays one block),
/// keeping `cells` in step.
pub(crate) fn drop_empty_rows(values: Array2<f32>, cells: &mut Vec<usize>) -> Array2<f32> {
    let days = values.ncols();
    let rows = values.nrows();
    let (mut v, offset) = values.into_raw_vec_and_offset();
    debug_assert_eq!(offset.unwrap_or(0), 0);
    let mut k = 0;
    for r in 0..rows {
        let row = &v[r * days..(r + 1) * days];
        if row.iter().any(|x| !x.is_nan()) {
            if k != r {
                v.copy_within(r * days..(r + 1) * days, k * days);
                cells[k] = cells[r];
            }
            k += 1;
        }
    }
    v.truncate(k * days);
    cells.truncate(k);
    Array2::from_shape_vec((k, days), v).expect("k × days elements")
}

/// Turns off HDF5's automatic error printing on the calling thread, once per thread.
///
/// Debian's HDF5 is a thread-safe build, which keeps that setting per thread; libnetcdf turns it
/// off only on the thread that initialised it, so on every other thread its routine probes for
/// optional attributes (`_QuantizeBitRoundNumberOfSignificantBits`, …) print error stacks to
/// stderr. Called before this crate enters libnetcdf.
fn quiet_hdf5_errors() {
    thread_local!(static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    QUIET.with(|quiet| {
        if !quiet.get() {
            hdf5_metno::silence_errors(true);
            quiet.set(true);
        }
    });
}

fn open_file(path: &Path) -> Result<netcdf::File, DecodeError> {
    quiet_hdf5_errors();
    if !path.exists() {
        return Err(DecodeError::Netcdf {
            path: path.to_path_buf(),
            action: "open the file".into(),
            source: netcdf::Error::Str("no such file".into()),
        });
    }
    netcdf::open(path).map_err(|e| DecodeError::netcdf(path, "open the file", e))
}

fn read_axis(path: &Path, file: &netcdf::File, dim: &str) -> Result<Vec<f64>, DecodeError> {
    let var = file
        .variable(dim)
        .ok_or_else(|| DecodeError::MissingVariable {
            path: path.to_path_buf(),
            name: dim.to_string(),
            hint: format!("; dimension `{dim}` needs a 1-D coordinate variable of the same name"),
        })?;
    if var.dimensions().len() != 1 {
        return Err(DecodeError::BadCoordinate {
            path: path.to_path_buf(),
            axis: dim.to_string(),
            detail: format!(
                "has {} dimensions; a 1-D axis is required (curvilinear grids are not supported)",
                var.dimensions().len()
            ),
        });
    }
    var.get_values::<f64, _>(..)
        .map_err(|e| DecodeError::netcdf(path, format!("read coordinate `{dim}`"), e))
}

fn find_data_variable(path: &Path, file: &netcdf::File) -> Result<String, DecodeError> {
    let mut good = Vec::new();
    let mut reordered = Vec::new();
    for var in file.variables() {
        let name = var.name();
        let dims: Vec<String> = var.dimensions().iter().map(|d| d.name()).collect();
        if dims.len() != 3 || dims.contains(&name) {
            continue;
        }
        let roles: Vec<Role> = dims.iter().map(|d| role(d)).collect();
        if roles == [Role::Time, Role::Lat, Role::Lon] {
            good.push(name);
        } else if roles.contains(&Role::Time)
            && roles.contains(&Role::Lat)
            && roles.contains(&Role::Lon)
        {
            reordered.push((name, dims.join(", ")));
        }
    }
    match (good.len(), reordered.len()) {
        (1, _) => Ok(good.remove(0)),
        (0, 0) => Err(DecodeError::NoDataVariable {
            path: path.to_path_buf(),
            detail: format!(
                "no variable with dimensions (time, lat, lon); the file has: {}",
                file.variables()
                    .map(|v| {
                        let d: Vec<String> = v.dimensions().iter().map(|d| d.name()).collect();
                        format!("{}({})", v.name(), d.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        (0, _) => {
            let (variable, found) = reordered.remove(0);
            Err(DecodeError::UnexpectedDims {
                path: path.to_path_buf(),
                variable,
                found,
            })
        }
        _ => Err(DecodeError::NoDataVariable {
            path: path.to_path_buf(),
            detail: format!(
                "several (time, lat, lon) variables: {}; open one by name with GridFile::open_variable",
                good.join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_roles() {
        assert_eq!(role("time"), Role::Time);
        assert_eq!(role("Latitude"), Role::Lat);
        assert_eq!(role("longitude"), Role::Lon);
        assert_eq!(role("bnds"), Role::Other);
        assert_eq!(role("rlat"), Role::Other);
    }

    #[test]
    fn drop_empty_rows_compacts_in_place() {
        let n = f32::NAN;
        let values = Array2::from_shape_vec((4, 2), vec![n, n, 1.0, n, n, n, 3.0, 4.0]).unwrap();
        let mut cells = vec![10, 11, 12, 13];
        let out = drop_empty_rows(values, &mut cells);
        assert_eq!(cells, vec![11, 13]);
        assert_eq!(out.shape(), &[2, 2]);
        assert_eq!(out[[0, 0]], 1.0);
        assert!(out[[0, 1]].is_nan());
        assert_eq!(out[[1, 1]], 4.0);
    }
}

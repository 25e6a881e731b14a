//! The request both read paths (the `netcdf`-crate path and the chunked fast path) answer.
//!
//! A [`BlockRequest`] says which grid cells, which time steps into which day slots, and how raw
//! values become clean ones. Both paths fill the same cell-major output (`cells × days`, missing
//! = NaN) so their results can be compared for exact equality.

/// One time step of the file and the day slot (0-based, real day of year) it lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepSlot {
    /// Index along the file's time dimension.
    pub time_index: usize,
    /// Index into the output's day axis (0..days).
    pub slot: usize,
}

/// How a raw stored value becomes a clean value (CF conventions), or missing (NaN).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValueRule {
    /// `_FillValue`, compared in the variable's own type (here as f32).
    pub fill: Option<f32>,
    /// `missing_value` (may be a list in CF).
    pub missing: Vec<f32>,
    /// `scale_factor` (1.0 when absent).
    pub scale: f32,
    /// `add_offset` (0.0 when absent).
    pub offset: f32,
}

impl ValueRule {
    /// Raw stored value → clean value, NaN when the raw value is fill, missing or NaN.
    #[inline]
    pub fn apply(&self, raw: f32) -> f32 {
        if raw.is_nan() || self.fill == Some(raw) || self.missing.contains(&raw) {
            f32::NAN
        } else if self.scale == 1.0 && self.offset == 0.0 {
            raw
        } else {
            raw * self.scale + self.offset
        }
    }
}

/// What to decode from one variable of one file.
#[derive(Debug, Clone)]
pub(crate) struct BlockRequest<'a> {
    /// Variable (HDF5 dataset) name, dims `(time, lat, lon)` in that order.
    pub var: &'a str,
    /// Lengths of the time, lat and lon dimensions in the file.
    pub shape: [usize; 3],
    /// Flat grid indices `lat_index * nlon + lon_index`, strictly ascending.
    pub cells: &'a [usize],
    /// Time steps to read and where they land; ascending by `time_index`.
    pub steps: &'a [StepSlot],
    /// Length of the output day axis (365 or 366).
    pub days: usize,
    /// Raw → clean value rule.
    pub values: &'a ValueRule,
}

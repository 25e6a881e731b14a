//! `nexdecode`: NetCDF climate grids (NEX-GDDP, LOCA, NEX-GDDP-CMIP6) to per-cell yearly series.
#![warn(missing_docs)]

mod block;

//! `pgcopy`: PostgreSQL binary COPY encoding and streaming bulk load.
#![warn(missing_docs)]

pub mod encode;
pub mod error;

pub use encode::{Column, ColumnType, Columns, CopyBuffer, RowWriter, Validity};
pub use error::{EncodeError, LoadError};

//! `pgcopy`: PostgreSQL binary COPY encoding and streaming, idempotent bulk load.
//!
//! - [`encode`] — pure binary COPY encoding, no I/O: free `#[inline]` field functions appending
//!   to a [`bytes::BytesMut`] (scalars, text, bytea, dates, timestamps, 1-D arrays of
//!   `f32`/`f64`/`i32`/`i64` with NULL elements from a [`Validity`]), and [`CopyBuffer`] /
//!   [`RowWriter`], which check every row against declared [`Columns`] so a wrong field count,
//!   order or type is an [`EncodeError`] instead of a corrupt stream.
//! - [`decode`] — the mirror of [`encode`], no I/O: [`decode::Tuples`] frames a
//!   `COPY … TO STDOUT (FORMAT binary)` stream arriving in chunks (zero-copy), and
//!   [`decode::RowReader`] reads each tuple's fields against the same [`Columns`], arrays as
//!   allocation-free [`decode::ArrayView`]s.
//! - [`read`] — [`CopyReader`], the streaming reader of a `COPY … TO` over tokio-postgres.
//! - [`load`](mod@load) — streaming loads over tokio-postgres inside the caller's transaction:
//!   large COPY messages (≥ 1 MiB by default) encoded on a blocking thread while the previous one
//!   is sent, and the [`Strategy`]s append, replace a key's rows, and upsert through a staging
//!   table. Dropping a load or exceeding its timeout rolls it back.
//! - [`error`] — [`EncodeError`], [`DecodeError`] and [`LoadError`], which carries the SQLSTATE and
//!   [`LoadError::is_retryable`].
//!
//! ```
//! use pgcopy::{ColumnType, Columns, CopyBuffer, Validity};
//!
//! let columns = Columns::new([
//!     ("data_source_id", ColumnType::Int4),
//!     ("map_cell_id", ColumnType::Int4),
//!     ("tasmax", ColumnType::Float4Array),
//! ]);
//! let series = vec![280.5_f32; 365];
//! let mut buf = CopyBuffer::with_capacity(&columns, 1 << 20);
//! buf.row().int4(42)?.int4(7)?.float4_array(&series, Validity::NanIsNull)?.finish()?;
//! // A field in the wrong place is an error and leaves the buffer untouched.
//! assert!(buf.row().int4(42)?.float4_array(&series, Validity::AllValid).is_err());
//! let stream = buf.finish();
//! assert_eq!(stream.len(), 19 + 2 + 8 + 8 + 2944 + 2);
//! # Ok::<(), pgcopy::EncodeError>(())
//! ```
#![warn(missing_docs)]

mod column;
pub mod decode;
pub mod encode;
pub mod error;
pub mod load;
pub mod read;

pub use encode::{Column, ColumnType, Columns, CopyBuffer, RowWriter, Validity};
pub use error::{
    DecodeError, EncodeError, LoadError, pg_error_is_retryable, sqlstate_is_retryable,
};
pub use load::{
    KeyValue, LoadStats, LoaderConfig, RowSource, Strategy, Table, load, quote_ident, source_fn,
    with_timeout,
};
pub use read::{CopyReader, copy_out};

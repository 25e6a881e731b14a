//! Streaming reads of `COPY … TO STDOUT (FORMAT binary)` over tokio-postgres.
//!
//! [`CopyReader`] wraps a tokio-postgres [`CopyOutStream`] and a [`Tuples`] framer: each
//! [`next_tuple`](CopyReader::next_tuple) call returns the next complete [`Tuple`] (a zero-copy
//! slice of the message it arrived in), then `None` once the trailer and the end of the COPY
//! are reached. Decode the tuples with [`RowReader`](crate::decode::RowReader).
//!
//! ```no_run
//! # async fn run(client: tokio_postgres::Client) -> Result<(), pgcopy::LoadError> {
//! use pgcopy::decode::RowReader;
//! use pgcopy::{ColumnType, Columns};
//!
//! let columns = Columns::new([("map_cell_id", ColumnType::Int8), ("tasmax", ColumnType::Float4Array)]);
//! let mut rows = pgcopy::copy_out(
//!     &client,
//!     "COPY (SELECT map_cell_id, tasmax FROM climate_data_year ORDER BY 1) TO STDOUT (FORMAT binary)",
//! )
//! .await?;
//! while let Some(tuple) = rows.next_tuple().await? {
//!     let mut r = RowReader::new(&columns, &tuple)?;
//!     let cell = r.int8()?;
//!     let days = r.float4_array()?.map_or(0, |a| a.len());
//!     r.finish()?;
//!     println!("{cell:?}: {days} days");
//! }
//! println!("{} rows, {} bytes", rows.rows(), rows.bytes());
//! # Ok(()) }
//! ```

use std::pin::Pin;

use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use crate::decode::{Tuple, Tuples};
use crate::error::LoadError;

/// Starts `statement` (a `COPY … TO STDOUT (FORMAT binary)`) on `client` and returns its
/// reader. Inside a transaction, use [`CopyReader::new`] with
/// [`Transaction::copy_out`](tokio_postgres::Transaction::copy_out).
///
/// # Errors
/// [`LoadError::Postgres`] when the server refuses the statement.
pub async fn copy_out(client: &Client, statement: &str) -> Result<CopyReader, LoadError> {
    let stream = client
        .copy_out(statement)
        .await
        .map_err(|e| LoadError::postgres("COPY TO", e))?;
    Ok(CopyReader::new(stream))
}

/// Tuples of a binary `COPY … TO STDOUT` as they arrive; see the [module docs](self).
pub struct CopyReader {
    stream: Pin<Box<CopyOutStream>>,
    tuples: Tuples,
    bytes: u64,
    ended: bool,
}

impl std::fmt::Debug for CopyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyReader")
            .field("rows", &self.tuples.rows())
            .field("bytes", &self.bytes)
            .field("ended", &self.ended)
            .finish()
    }
}

impl CopyReader {
    /// Reads a started COPY.
    pub fn new(stream: CopyOutStream) -> Self {
        CopyReader {
            stream: Box::pin(stream),
            tuples: Tuples::new(),
            bytes: 0,
            ended: false,
        }
    }

    /// The next tuple, or `None` after the last one (the trailer was read and the server ended
    /// the COPY).
    ///
    /// # Errors
    /// [`LoadError::Postgres`] from the server or the connection (a lost connection is
    /// retryable, see [`LoadError::is_retryable`]); [`LoadError::Decode`] for a malformed or
    /// truncated stream.
    pub async fn next_tuple(&mut self) -> Result<Option<Tuple>, LoadError> {
        loop {
            if let Some(t) = self.tuples.next_tuple()? {
                return Ok(Some(t));
            }
            if self.ended {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.bytes += chunk.len() as u64;
                    self.tuples.push(chunk);
                }
                Some(Err(e)) => return Err(LoadError::postgres("COPY TO", e)),
                None => {
                    self.ended = true;
                    self.tuples.finish()?;
                }
            }
        }
    }

    /// Tuples returned so far.
    pub fn rows(&self) -> u64 {
        self.tuples.rows()
    }

    /// Bytes received so far (the binary COPY stream's size).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

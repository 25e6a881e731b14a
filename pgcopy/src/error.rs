//! Error types: [`EncodeError`] for the pure encoder, [`DecodeError`] for the pure decoder,
//! [`LoadError`] for loads and reads.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::column::ColumnType;

/// An error raised while encoding binary COPY data.
///
/// Encoding errors are always permanent: retrying the same input produces the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A row was finished before all declared columns were written.
    #[error("row {row}: {got} of {expected} fields written (next expected column {next:?})")]
    MissingFields {
        /// Index of the row in its [`CopyBuffer`](crate::CopyBuffer) (0-based, since creation).
        row: u64,
        /// Number of declared columns.
        expected: usize,
        /// Number of fields written.
        got: usize,
        /// Name of the first column that was not written.
        next: String,
    },
    /// More fields were written than columns were declared.
    #[error("row {row}: more than the {expected} declared fields written")]
    TooManyFields {
        /// Index of the row.
        row: u64,
        /// Number of declared columns.
        expected: usize,
    },
    /// A field was written with a type that differs from its column's declared type
    /// (wrong value or wrong field order).
    #[error("row {row}, column {index} ({column:?}): declared {expected:?}, written {got:?}")]
    WrongType {
        /// Index of the row.
        row: u64,
        /// 0-based index of the column.
        index: usize,
        /// Name of the column.
        column: String,
        /// The column's declared type.
        expected: ColumnType,
        /// The type of the written value.
        got: ColumnType,
    },
    /// A validity mask or bitmap does not cover the array's values.
    #[error("validity has room for {validity} elements but the array has {values}")]
    ValidityLength {
        /// Number of array elements.
        values: usize,
        /// Number of elements the validity covers.
        validity: usize,
    },
    /// A value is larger than a binary COPY field can hold (2 GiB − 1 bytes).
    #[error("value of {len} bytes is too large for a COPY field")]
    TooLarge {
        /// Encoded length in bytes.
        len: usize,
    },
    /// A text value contains a NUL character, which PostgreSQL text cannot store.
    #[error("text value contains a NUL character at byte {offset}")]
    NulInText {
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// Invalid column declarations (empty name, too many columns, …).
    #[error("invalid columns: {0}")]
    InvalidColumns(String),
}

/// An error raised while decoding binary COPY data (a `COPY … TO` stream).
///
/// Decoding errors are permanent: the same bytes give the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The stream does not start with the binary COPY signature.
    #[error("not a binary COPY stream (bad signature)")]
    BadSignature,
    /// The header sets flags this decoder does not support (OIDs, or an incompatible format).
    #[error("unsupported binary COPY header flags {flags:#010x}")]
    UnsupportedFlags {
        /// The header's flags word.
        flags: u32,
    },
    /// The header is malformed.
    #[error("bad binary COPY header: {reason}")]
    BadHeader {
        /// What is wrong.
        reason: &'static str,
    },
    /// A tuple's field count is negative (other than the trailer's -1) or too large.
    #[error("byte {offset}: invalid field count {count}")]
    BadFieldCount {
        /// Offset of the tuple in the stream.
        offset: u64,
        /// The field count read.
        count: i16,
    },
    /// A field's length word is negative (other than -1 for NULL).
    #[error("byte {offset}: invalid field length {len}")]
    BadFieldLength {
        /// Offset of the length word in the stream.
        offset: u64,
        /// The length read.
        len: i32,
    },
    /// The stream ended inside the header or a tuple, or without a trailer.
    #[error("stream ended at byte {offset} without a trailer ({buffered} unframed bytes)")]
    Truncated {
        /// Bytes framed before the end.
        offset: u64,
        /// Bytes left that did not make a whole tuple.
        buffered: usize,
    },
    /// Bytes follow the trailer.
    #[error("{len} bytes after the trailer at byte {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: u64,
        /// Number of extra bytes seen.
        len: usize,
    },
    /// A tuple has another number of fields than the declared columns.
    #[error("tuple has {got} fields, {expected} columns declared")]
    FieldCount {
        /// Number of declared columns.
        expected: usize,
        /// Number of fields in the tuple (or read, for [`RowReader::finish`](crate::decode::RowReader::finish)).
        got: usize,
    },
    /// More fields were read than columns were declared.
    #[error("more than the {expected} declared fields read")]
    TooManyFields {
        /// Number of declared columns.
        expected: usize,
    },
    /// A tuple's bytes end inside a field (bytes not framed by [`Tuples`](crate::decode::Tuples)).
    #[error("tuple ends inside field {field}")]
    TupleTruncated {
        /// 0-based index of the field.
        field: usize,
    },
    /// A field was read as another type than its column's declared type.
    #[error("declared {expected:?}, read as {got:?}")]
    WrongType {
        /// The column's declared type.
        expected: ColumnType,
        /// The type asked for.
        got: ColumnType,
    },
    /// A fixed-size value has the wrong length.
    #[error("{ty:?} value of {got} bytes (expected {expected})")]
    FieldLength {
        /// The type being decoded.
        ty: ColumnType,
        /// Its binary size.
        expected: usize,
        /// The field's length.
        got: usize,
    },
    /// A text value is not UTF-8.
    #[error("text value is not UTF-8 (at byte {offset})")]
    InvalidText {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// An array field is malformed.
    #[error("{ty:?} value: {reason}")]
    Array {
        /// The array type being decoded.
        ty: ColumnType,
        /// What is wrong.
        reason: &'static str,
    },
    /// An array's element type is not the one asked for.
    #[error("{ty:?} value has element type OID {got} (expected {expected})")]
    ElementType {
        /// The array type being decoded.
        ty: ColumnType,
        /// The expected element OID.
        expected: u32,
        /// The element OID in the data.
        got: u32,
    },
    /// An error in one field of a tuple.
    #[error("column {index} ({column:?}): {error}")]
    InField {
        /// 0-based index of the column.
        index: usize,
        /// Name of the column.
        column: String,
        /// The field's error.
        error: Box<DecodeError>,
    },
}

/// An error raised by a load into PostgreSQL, or by reading a `COPY … TO` stream from it.
///
/// Use [`LoadError::is_retryable`] to decide whether running the same load again can help, and
/// [`LoadError::sqlstate`] for the server's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The rows could not be encoded (bad input; never retryable).
    #[error("encoding rows: {0}")]
    Encode(#[from] EncodeError),
    /// A `COPY … TO` stream could not be decoded (never retryable).
    #[error("decoding rows: {0}")]
    Decode(#[from] DecodeError),
    /// PostgreSQL (or the connection to it) reported an error.
    #[error("{context}: {source}{}", fmt_code(.sqlstate.as_ref()))]
    Postgres {
        /// What the loader was doing (`"COPY"`, `"DELETE"`, …).
        context: &'static str,
        /// The SQLSTATE, when the server sent one (`None` for connection-level errors).
        sqlstate: Option<SqlState>,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Getting a connection from a deadpool pool failed.
    #[error("getting a pooled connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The load did not finish before its deadline; everything it did was rolled back.
    #[error("load deadline of {after:?} exceeded")]
    Timeout {
        /// The time limit that was exceeded.
        after: Duration,
    },
    /// The declared columns do not match the target table.
    #[error("column {column:?} of {table}: declared {declared:?}, table has type {actual}")]
    ColumnMismatch {
        /// The quoted, qualified table name.
        table: String,
        /// The column name.
        column: String,
        /// The declared type.
        declared: ColumnType,
        /// The table's type name.
        actual: String,
    },
    /// The load's configuration or strategy is invalid (empty key, NUL in a name, …).
    #[error("invalid load configuration: {0}")]
    Config(String),
    /// The encoding task panicked or was cancelled.
    #[error("encoding task failed: {0}")]
    Task(String),
}

fn fmt_code(code: Option<&SqlState>) -> String {
    code.map(|c| format!(" (SQLSTATE {})", c.code()))
        .unwrap_or_default()
}

impl LoadError {
    /// Wraps a tokio-postgres error, keeping its SQLSTATE.
    pub fn postgres(context: &'static str, source: tokio_postgres::Error) -> Self {
        LoadError::Postgres {
            context,
            sqlstate: source.code().cloned(),
            source,
        }
    }

    /// The SQLSTATE reported by the server, if any.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            LoadError::Postgres { sqlstate, .. } => sqlstate.as_ref(),
            LoadError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }

    /// Whether running the same load again may succeed.
    ///
    /// Retryable: the SQLSTATEs of [`sqlstate_is_retryable`]'s table, connection loss or I/O
    /// errors without a SQLSTATE, pool timeouts, and [`LoadError::Timeout`]. Not retryable:
    /// every other SQLSTATE (data `22`, integrity `23`, syntax or missing objects `42`, …),
    /// encoding and configuration errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            LoadError::Postgres {
                sqlstate, source, ..
            } => match sqlstate {
                Some(code) => sqlstate_is_retryable(code.code()),
                None => pg_error_is_retryable(source),
            },
            LoadError::Pool(e) => match e {
                deadpool_postgres::PoolError::Timeout(_) => true,
                deadpool_postgres::PoolError::Backend(e) => pg_error_is_retryable(e),
                _ => false,
            },
            LoadError::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// Whether a tokio-postgres error may go away by itself: by its SQLSTATE when the server sent
/// one ([`sqlstate_is_retryable`]), else when the connection closed or an I/O error (including
/// a timeout) occurred. Parameter conversion and protocol errors are not retryable.
///
/// This is the one classification of database errors used by `pgcopy` and the nexingest
/// worker alike.
pub fn pg_error_is_retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => sqlstate_is_retryable(code.code()),
        None => is_connection_error(e),
    }
}

/// A tokio-postgres error without SQLSTATE is transient when the connection closed or an I/O
/// error occurred; parameter conversion or protocol errors are not.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether an SQLSTATE code denotes a transient condition. The one table, shared with the
/// nexingest worker:
///
/// | SQLSTATE | meaning | class |
/// |---|---|---|
/// | `08xxx` | connection exception | transient |
/// | `53xxx` | insufficient resources (disk full, out of memory, too many connections) | transient |
/// | `40001`, `40P01` | serialization failure, deadlock | transient |
/// | `55P03` | lock not available (`lock_timeout`) | transient |
/// | `57014` | query canceled (`statement_timeout`) | transient |
/// | `57P01`–`57P03` | admin shutdown, crash shutdown, cannot connect now (failover, restart) | transient |
/// | anything else (`22` data, `23` integrity, `42` syntax/missing object, …) | | permanent |
pub fn sqlstate_is_retryable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
        )
}

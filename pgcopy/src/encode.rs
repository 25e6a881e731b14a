//! PostgreSQL binary COPY encoding, with no I/O.
//!
//! A binary COPY stream is a [`header`], then tuples (an `int16` field count followed by each
//! field as an `int32` byte length, `-1` for NULL, and the value in the type's binary "send"
//! format), then a [`trailer`]. The free functions here append one complete field (length prefix
//! included) to a [`BytesMut`]; [`CopyBuffer`] and [`RowWriter`] add the framing and check every
//! row against declared [`Columns`].
//!
//! Arrays are written straight from a slice plus a [`Validity`], one-dimensional with lower bound
//! 1, with no per-element allocation. A `real[365]` without NULLs takes exactly
//! [`array_field_len::<f32>(365)`](array_field_len) = 2,944 bytes.
//!
//! ```
//! use pgcopy::encode::{self, ColumnType, Columns, CopyBuffer, Validity};
//!
//! let columns = Columns::new([("id", ColumnType::Int4), ("v", ColumnType::Float4Array)]);
//! let mut buf = CopyBuffer::with_capacity(&columns, 1 << 16);
//! buf.row().int4(7)?.float4_array(&[1.0, f32::NAN, 3.0], Validity::NanIsNull)?.finish()?;
//! let bytes = buf.finish(); // header + 1 row + trailer, ready for `COPY … FROM STDIN (FORMAT binary)`
//! assert_eq!(&bytes[..11], b"PGCOPY\n\xff\r\n\0");
//! # Ok::<(), pgcopy::EncodeError>(())
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::column::ColumnType;
use crate::error::EncodeError;

/// The 19-byte binary COPY header: signature, flags (0, no OIDs), header extension length (0).
pub const HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The binary COPY trailer: a field count of -1.
pub const TRAILER: &[u8; 2] = &[0xff, 0xff];

/// Days from 1970-01-01 (Unix epoch) to 2000-01-01 (PostgreSQL epoch).
pub const PG_EPOCH_DAYS_FROM_UNIX: i32 = 10_957;

/// Microseconds from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_MICROS_FROM_UNIX: i64 = 946_684_800_000_000;

/// Largest number of bytes a single field value may have.
pub const MAX_FIELD_LEN: usize = i32::MAX as usize;

/// Most columns a PostgreSQL table can have.
pub const MAX_COLUMNS: usize = 1600;

/// Appends the binary COPY [`HEADER`].
#[inline]
pub fn header(buf: &mut BytesMut) {
    buf.put_slice(HEADER);
}

/// Appends the binary COPY [`TRAILER`].
#[inline]
pub fn trailer(buf: &mut BytesMut) {
    buf.put_slice(TRAILER);
}

/// Appends a tuple's field count. Call it before the tuple's fields.
#[inline]
pub fn tuple_start(fields: i16, buf: &mut BytesMut) {
    buf.put_i16(fields);
}

/// Appends a NULL field.
#[inline]
pub fn null(buf: &mut BytesMut) {
    buf.put_i32(-1);
}

/// Appends a `bool` field.
#[inline]
pub fn bool(v: bool, buf: &mut BytesMut) {
    buf.put_i32(1);
    buf.put_u8(v as u8);
}

/// Appends an `int2` (`smallint`) field.
#[inline]
pub fn int2(v: i16, buf: &mut BytesMut) {
    buf.put_i32(2);
    buf.put_i16(v);
}

/// Appends an `int4` (`integer`) field.
#[inline]
pub fn int4(v: i32, buf: &mut BytesMut) {
    buf.put_i32(4);
    buf.put_i32(v);
}

/// Appends an `int8` (`bigint`) field.
#[inline]
pub fn int8(v: i64, buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i64(v);
}

/// Appends a `float4` (`real`) field. NaN and ±Inf are written as such.
#[inline]
pub fn float4(v: f32, buf: &mut BytesMut) {
    buf.put_i32(4);
    buf.put_f32(v);
}

/// Appends a `float8` (`double precision`) field.
#[inline]
pub fn float8(v: f64, buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_f64(v);
}

/// Appends a `text`/`varchar` field.
///
/// # Panics
///
/// Panics if `v` is longer than [`MAX_FIELD_LEN`] or contains a NUL character; see
/// [`try_text`].
#[inline]
pub fn text(v: &str, buf: &mut BytesMut) {
    try_text(v, buf).unwrap_or_else(|e| panic!("{e}"))
}

/// Appends a `text`/`varchar` field.
///
/// # Errors
///
/// [`EncodeError::TooLarge`] if `v` is longer than [`MAX_FIELD_LEN`]; [`EncodeError::NulInText`]
/// if it contains a NUL character (PostgreSQL text cannot hold one). Nothing is appended then.
#[inline]
pub fn try_text(v: &str, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if let Some(offset) = v.bytes().position(|b| b == 0) {
        return Err(EncodeError::NulInText { offset });
    }
    try_bytea(v.as_bytes(), buf)
}

/// Appends a `bytea` field.
///
/// # Panics
///
/// Panics if `v` is longer than [`MAX_FIELD_LEN`]; see [`try_bytea`].
#[inline]
pub fn bytea(v: &[u8], buf: &mut BytesMut) {
    try_bytea(v, buf).unwrap_or_else(|e| panic!("{e}"))
}

/// Appends a `bytea` field.
///
/// # Errors
///
/// [`EncodeError::TooLarge`] if `v` is longer than [`MAX_FIELD_LEN`]; nothing is appended then.
#[inline]
pub fn try_bytea(v: &[u8], buf: &mut BytesMut) -> Result<(), EncodeError> {
    if v.len() > MAX_FIELD_LEN {
        return Err(EncodeError::TooLarge { len: v.len() });
    }
    buf.reserve(4 + v.len());
    buf.put_i32(v.len() as i32);
    buf.put_slice(v);
    Ok(())
}

/// Appends a `date` field given as days since 2000-01-01 (see [`date_from_ymd`]).
/// `i32::MAX`/`i32::MIN` are `infinity`/`-infinity`.
#[inline]
pub fn date(days_since_2000: i32, buf: &mut BytesMut) {
    int4(days_since_2000, buf);
}

/// Appends a `timestamp` field given as microseconds since 2000-01-01 00:00:00
/// (see [`timestamp_from_unix_micros`]). `i64::MAX`/`i64::MIN` are `infinity`/`-infinity`.
#[inline]
pub fn timestamp(micros_since_2000: i64, buf: &mut BytesMut) {
    int8(micros_since_2000, buf);
}

/// Appends a `timestamptz` field given as microseconds since 2000-01-01 00:00:00 UTC.
#[inline]
pub fn timestamptz(micros_since_2000_utc: i64, buf: &mut BytesMut) {
    int8(micros_since_2000_utc, buf);
}

/// Days since 2000-01-01 of a proleptic Gregorian date (the value [`date`] takes).
///
/// `month` is 1–12 and `day` 1–31; out-of-range values are not checked.
///
/// ```
/// assert_eq!(pgcopy::encode::date_from_ymd(2000, 1, 1), 0);
/// assert_eq!(pgcopy::encode::date_from_ymd(1999, 12, 31), -1);
/// assert_eq!(pgcopy::encode::date_from_ymd(2024, 3, 1), 8826);
/// ```
pub const fn date_from_ymd(year: i32, month: u32, day: u32) -> i32 {
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - PG_EPOCH_DAYS_FROM_UNIX
}

/// Microseconds since 2000-01-01 (the value [`timestamp`]/[`timestamptz`] take) from
/// microseconds since the Unix epoch.
#[inline]
pub const fn timestamp_from_unix_micros(unix_micros: i64) -> i64 {
    unix_micros - PG_EPOCH_MICROS_FROM_UNIX
}

/// Which elements of an array are valid (not NULL).
#[derive(Clone, Copy, Debug, Default)]
pub enum Validity<'a> {
    /// Every element is valid.
    #[default]
    AllValid,
    /// Arrow-style bitmap: bit `i % 8` (least significant first) of byte `i / 8` is set when
    /// element `i` is valid. Must hold at least `ceil(len / 8)` bytes.
    Bitmap(&'a [u8]),
    /// One `bool` per element, `true` when valid. Must have the array's length.
    Mask(&'a [bool]),
    /// Floating-point NaN elements are NULL (for integer arrays: every element is valid).
    NanIsNull,
}

impl Validity<'_> {
    fn check(&self, len: usize) -> Result<(), EncodeError> {
        let covered = match self {
            Validity::Bitmap(b) => b.len().saturating_mul(8),
            Validity::Mask(m) => {
                if m.len() != len {
                    return Err(EncodeError::ValidityLength {
                        values: len,
                        validity: m.len(),
                    });
                }
                len
            }
            _ => len,
        };
        if covered < len {
            return Err(EncodeError::ValidityLength {
                values: len,
                validity: covered,
            });
        }
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// An array element type: `f32` (`real[]`), `f64` (`double precision[]`), `i32` (`integer[]`),
/// `i64` (`bigint[]`).
pub trait ArrayElement: Copy + sealed::Sealed {
    /// OID of the element type.
    const ELEMENT_OID: u32;
    /// Encoded size of one element, without its 4-byte length.
    const SIZE: usize;
    /// The column type of an array of this element.
    const ARRAY_TYPE: ColumnType;
    /// Writes the element's length prefix and big-endian value into `dst` (`4 + SIZE` bytes).
    fn put(self, dst: &mut [u8]);
    /// Whether the value is a floating-point NaN.
    fn is_nan(self) -> bool;
    /// Reads a big-endian value from the first `SIZE` bytes of `src` (decoding).
    ///
    /// # Panics
    /// If `src` is shorter than `SIZE`.
    fn get(src: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $oid:expr, $size:expr, $col:ident, $nan:expr) => {
        impl ArrayElement for $t {
            const ELEMENT_OID: u32 = $oid;
            const SIZE: usize = $size;
            const ARRAY_TYPE: ColumnType = ColumnType::$col;
            #[inline(always)]
            fn put(self, dst: &mut [u8]) {
                dst[..4].copy_from_slice(&($size as u32).to_be_bytes());
                dst[4..4 + $size].copy_from_slice(&self.to_be_bytes());
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                let f: fn($t) -> bool = $nan;
                f(self)
            }
            #[inline(always)]
            fn get(src: &[u8]) -> Self {
                let mut b = [0u8; $size];
                b.copy_from_slice(&src[..$size]);
                <$t>::from_be_bytes(b)
            }
        }
    };
}

element!(f32, 700, 4, Float4Array, |v: f32| v.is_nan());
element!(f64, 701, 8, Float8Array, |v: f64| v.is_nan());
element!(i32, 23, 4, Int4Array, |_| false);
element!(i64, 20, 8, Int8Array, |_| false);

/// Bytes of the array header after the field length: ndim, flags, element OID, size, lower bound.
const ARRAY_HEADER: usize = 20;

/// Encoded length of an array field of `n` valid elements, including its 4-byte field length
/// (an upper bound when some elements are NULL).
///
/// ```
/// assert_eq!(pgcopy::encode::array_field_len::<f32>(365), 2944);
/// assert_eq!(pgcopy::encode::array_field_len::<f32>(0), 16);
/// ```
#[inline]
pub const fn array_field_len<T: ArrayElement>(n: usize) -> usize {
    if n == 0 {
        4 + 12
    } else {
        4 + ARRAY_HEADER + n * (4 + T::SIZE)
    }
}

/// Appends a one-dimensional array field (lower bound 1) of `values`, with NULL elements where
/// `validity` says so. An empty slice is written as an empty array (`'{}'`).
///
/// # Panics
///
/// Panics if `validity` does not cover `values` or the array is too large; see [`try_array`].
#[inline]
pub fn array<T: ArrayElement>(values: &[T], validity: Validity<'_>, buf: &mut BytesMut) {
    try_array(values, validity, buf).unwrap_or_else(|e| panic!("{e}"))
}

/// Appends a one-dimensional array field; see [`array()`].
///
/// # Errors
///
/// [`EncodeError::ValidityLength`] if a bitmap or mask is shorter than `values` (or a mask
/// longer); [`EncodeError::TooLarge`] if the field would exceed [`MAX_FIELD_LEN`]. Nothing is
/// appended then.
pub fn try_array<T: ArrayElement>(
    values: &[T],
    validity: Validity<'_>,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    validity.check(values.len())?;
    let n = values.len();
    if n == 0 {
        buf.reserve(16);
        buf.put_i32(12);
        buf.put_i32(0); // ndim
        buf.put_i32(0); // flags
        buf.put_u32(T::ELEMENT_OID);
        return Ok(());
    }
    let max = n
        .checked_mul(4 + T::SIZE)
        .and_then(|b| b.checked_add(ARRAY_HEADER))
        .filter(|&b| b <= MAX_FIELD_LEN)
        .ok_or(EncodeError::TooLarge {
            len: n.saturating_mul(4 + T::SIZE),
        })?;
    let start = buf.len();
    buf.resize(start + 4 + max, 0);
    let out = &mut buf[start..];
    let body = &mut out[4 + ARRAY_HEADER..];
    let written = match validity {
        Validity::AllValid => dense(values, body),
        Validity::NanIsNull => {
            if values.iter().any(|v| v.is_nan()) {
                sparse(values, body, |i| !values[i].is_nan())
            } else {
                dense(values, body)
            }
        }
        Validity::Mask(m) => {
            if m.iter().all(|&b| b) {
                dense(values, body)
            } else {
                sparse(values, body, |i| m[i])
            }
        }
        Validity::Bitmap(b) => {
            let full = n / 8;
            let rest = n % 8;
            let rest_mask = (1u8 << rest).wrapping_sub(1);
            if b[..full].iter().all(|&x| x == 0xff)
                && (rest == 0 || b[full] & rest_mask == rest_mask)
            {
                dense(values, body)
            } else {
                sparse(values, body, |i| b[i / 8] & (1 << (i % 8)) != 0)
            }
        }
    };
    let has_null = written < n * (4 + T::SIZE);
    let len = ARRAY_HEADER + written;
    out[0..4].copy_from_slice(&(len as i32).to_be_bytes());
    out[4..8].copy_from_slice(&1i32.to_be_bytes()); // ndim
    out[8..12].copy_from_slice(&(has_null as i32).to_be_bytes());
    out[12..16].copy_from_slice(&T::ELEMENT_OID.to_be_bytes());
    out[16..20].copy_from_slice(&(n as i32).to_be_bytes());
    out[20..24].copy_from_slice(&1i32.to_be_bytes()); // lower bound
    buf.truncate(start + 4 + len);
    Ok(())
}

/// Writes every element (all valid); returns the bytes written.
#[inline]
fn dense<T: ArrayElement>(values: &[T], body: &mut [u8]) -> usize {
    let step = 4 + T::SIZE;
    for (dst, &v) in body.chunks_exact_mut(step).zip(values) {
        v.put(dst);
    }
    values.len() * step
}

/// Writes elements with NULLs where `valid(i)` is false; returns the bytes written.
#[inline]
fn sparse<T: ArrayElement>(values: &[T], body: &mut [u8], valid: impl Fn(usize) -> bool) -> usize {
    let step = 4 + T::SIZE;
    let mut pos = 0;
    for (i, &v) in values.iter().enumerate() {
        if valid(i) {
            v.put(&mut body[pos..pos + step]);
            pos += step;
        } else {
            body[pos..pos + 4].copy_from_slice(&(-1i32).to_be_bytes());
            pos += 4;
        }
    }
    pos
}

/// Appends a `real[]` field; see [`array()`].
///
/// # Panics
///
/// Panics if `validity` does not cover `values`; see [`try_array`].
#[inline]
pub fn float4_array(values: &[f32], validity: Validity<'_>, buf: &mut BytesMut) {
    array(values, validity, buf)
}

/// Appends a `double precision[]` field; see [`array()`].
///
/// # Panics
///
/// Panics if `validity` does not cover `values`; see [`try_array`].
#[inline]
pub fn float8_array(values: &[f64], validity: Validity<'_>, buf: &mut BytesMut) {
    array(values, validity, buf)
}

/// Appends an `integer[]` field; see [`array()`].
///
/// # Panics
///
/// Panics if `validity` does not cover `values`; see [`try_array`].
#[inline]
pub fn int4_array(values: &[i32], validity: Validity<'_>, buf: &mut BytesMut) {
    array(values, validity, buf)
}

/// Appends a `bigint[]` field; see [`array()`].
///
/// # Panics
///
/// Panics if `validity` does not cover `values`; see [`try_array`].
#[inline]
pub fn int8_array(values: &[i64], validity: Validity<'_>, buf: &mut BytesMut) {
    array(values, validity, buf)
}

/// One declared column: its name (unquoted; it is quoted when used in SQL) and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name, exactly as in the table (case-sensitive).
    pub name: String,
    /// The column's type.
    pub ty: ColumnType,
}

/// The ordered columns every row of a COPY writes. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Columns {
    cols: Arc<[Column]>,
    types: Arc<[ColumnType]>,
}

impl fmt::Debug for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.cols.iter()).finish()
    }
}

impl Columns {
    /// Declares columns from `(name, type)` pairs.
    ///
    /// # Panics
    ///
    /// Panics if there are no columns, more than [`MAX_COLUMNS`], or a name is empty or contains
    /// a NUL character; see [`Columns::try_new`].
    pub fn new<I, S>(columns: I) -> Self
    where
        I: IntoIterator<Item = (S, ColumnType)>,
        S: Into<String>,
    {
        Self::try_new(columns).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Declares columns from `(name, type)` pairs.
    ///
    /// # Errors
    ///
    /// [`EncodeError::InvalidColumns`] if there are no columns, more than [`MAX_COLUMNS`], or a
    /// name is empty or contains a NUL character.
    pub fn try_new<I, S>(columns: I) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = (S, ColumnType)>,
        S: Into<String>,
    {
        let cols: Vec<Column> = columns
            .into_iter()
            .map(|(name, ty)| Column {
                name: name.into(),
                ty,
            })
            .collect();
        if cols.is_empty() || cols.len() > MAX_COLUMNS {
            return Err(EncodeError::InvalidColumns(format!(
                "{} columns (1..={MAX_COLUMNS} allowed)",
                cols.len()
            )));
        }
        if let Some(c) = cols
            .iter()
            .find(|c| c.name.is_empty() || c.name.contains('\0'))
        {
            return Err(EncodeError::InvalidColumns(format!(
                "invalid column name {:?}",
                c.name
            )));
        }
        let types = cols.iter().map(|c| c.ty).collect();
        Ok(Columns {
            cols: cols.into(),
            types,
        })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// Always false: there is at least one column.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The columns, in order.
    pub fn as_slice(&self) -> &[Column] {
        &self.cols
    }

    /// The column types, in order.
    pub fn types(&self) -> &[ColumnType] {
        &self.types
    }

    /// The position of the column named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|c| c.name == name)
    }
}

/// A growing binary COPY stream checked against declared [`Columns`]:
/// [`with_capacity`](Self::with_capacity) → [`row`](Self::row) … → [`take`](Self::take) /
/// [`finish`](Self::finish).
///
/// The header is written at creation (and again after each `finish`); complete rows are only
/// ever in the buffer, so a row that fails to encode leaves no trace.
#[derive(Debug)]
pub struct CopyBuffer {
    columns: Columns,
    buf: BytesMut,
    rows: u64,
    row_hint: usize,
}

impl CopyBuffer {
    /// Creates a buffer with room for `capacity` bytes, starting with the COPY header.
    pub fn with_capacity(columns: &Columns, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER.len() + TRAILER.len()));
        header(&mut buf);
        CopyBuffer {
            columns: columns.clone(),
            buf,
            rows: 0,
            row_hint: 0,
        }
    }

    /// The declared columns.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Starts a row. Write each declared column in order, then call [`RowWriter::finish`].
    ///
    /// Reserves room for the largest row seen so far, so steady-state rows never reallocate
    /// within a buffer.
    #[inline]
    pub fn row(&mut self) -> RowWriter<'_> {
        self.buf.reserve(self.row_hint);
        let start = self.buf.len();
        tuple_start(self.columns.len() as i16, &mut self.buf);
        RowWriter {
            out: self,
            start,
            next: 0,
            done: false,
        }
    }

    /// Reserves room for at least `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Rows written since creation.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes currently buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffered bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Removes and returns the buffered bytes (header, if not yet taken, and complete rows),
    /// without a trailer; writing continues with more rows of the same stream.
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Appends the trailer and returns the rest of the stream; the buffer then starts a new
    /// stream (with a new header).
    pub fn finish(&mut self) -> Bytes {
        trailer(&mut self.buf);
        let out = self.buf.split().freeze();
        header(&mut self.buf);
        out
    }
}

/// Writes one row's fields in declared order; see [`CopyBuffer::row`].
///
/// ```
/// # use pgcopy::{ColumnType, Columns, CopyBuffer, Validity};
/// # let columns = Columns::new([("id", ColumnType::Int4), ("v", ColumnType::Float4Array)]);
/// # let mut buf = CopyBuffer::with_capacity(&columns, 0);
/// buf.row().int4(1)?.float4_array(&[1.0], Validity::AllValid)?.finish()?;
/// assert!(buf.row().float4_array(&[1.0], Validity::AllValid).is_err()); // wrong order
/// assert_eq!(buf.rows(), 1);
/// # Ok::<(), pgcopy::EncodeError>(())
/// ```
///
/// Each method checks the value's type against the next declared column. Dropping the writer
/// without a successful [`finish`](Self::finish) (e.g. after an error) removes the partial row.
#[must_use = "a row is only kept after RowWriter::finish"]
#[derive(Debug)]
pub struct RowWriter<'a> {
    out: &'a mut CopyBuffer,
    start: usize,
    next: usize,
    done: bool,
}

macro_rules! scalar_field {
    ($(#[$doc:meta])* $name:ident, $t:ty, $col:ident) => {
        $(#[$doc])*
        ///
        /// # Errors
        ///
        /// [`EncodeError::WrongType`] / [`EncodeError::TooManyFields`] if the next declared
        /// column does not have this type.
        #[inline]
        pub fn $name(&mut self, v: $t) -> Result<&mut Self, EncodeError> {
            self.expect(ColumnType::$col)?;
            $name(v, &mut self.out.buf);
            Ok(self)
        }
    };
}

impl RowWriter<'_> {
    #[inline]
    fn expect(&mut self, got: ColumnType) -> Result<(), EncodeError> {
        let types = self.out.columns.types();
        match types.get(self.next) {
            Some(&t) if t == got => {
                self.next += 1;
                Ok(())
            }
            Some(&expected) => Err(EncodeError::WrongType {
                row: self.out.rows,
                index: self.next,
                column: self.out.columns.as_slice()[self.next].name.clone(),
                expected,
                got,
            }),
            None => Err(EncodeError::TooManyFields {
                row: self.out.rows,
                expected: types.len(),
            }),
        }
    }

    /// Writes NULL for the next column (of any type).
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooManyFields`] if all declared columns were written.
    #[inline]
    pub fn null(&mut self) -> Result<&mut Self, EncodeError> {
        if self.next >= self.out.columns.len() {
            return Err(EncodeError::TooManyFields {
                row: self.out.rows,
                expected: self.out.columns.len(),
            });
        }
        self.next += 1;
        null(&mut self.out.buf);
        Ok(self)
    }

    scalar_field!(
        /// Writes a `boolean`.
        bool, bool, Bool
    );
    scalar_field!(
        /// Writes a `smallint`.
        int2, i16, Int2
    );
    scalar_field!(
        /// Writes an `integer`.
        int4, i32, Int4
    );
    scalar_field!(
        /// Writes a `bigint`.
        int8, i64, Int8
    );
    scalar_field!(
        /// Writes a `real`.
        float4, f32, Float4
    );
    scalar_field!(
        /// Writes a `double precision`.
        float8, f64, Float8
    );
    scalar_field!(
        /// Writes a `date` as days since 2000-01-01 (see [`date_from_ymd`]).
        date, i32, Date
    );
    scalar_field!(
        /// Writes a `timestamp` as microseconds since 2000-01-01.
        timestamp, i64, Timestamp
    );
    scalar_field!(
        /// Writes a `timestamptz` as microseconds since 2000-01-01 UTC.
        timestamptz, i64, Timestamptz
    );

    /// Writes a `text`/`varchar`.
    ///
    /// # Errors
    ///
    /// Type mismatch as for the other fields; [`EncodeError::NulInText`] or
    /// [`EncodeError::TooLarge`] for values PostgreSQL cannot take.
    #[inline]
    pub fn text(&mut self, v: &str) -> Result<&mut Self, EncodeError> {
        self.expect(ColumnType::Text)?;
        try_text(v, &mut self.out.buf)?;
        Ok(self)
    }

    /// Writes a `bytea`.
    ///
    /// # Errors
    ///
    /// Type mismatch as for the other fields; [`EncodeError::TooLarge`].
    #[inline]
    pub fn bytea(&mut self, v: &[u8]) -> Result<&mut Self, EncodeError> {
        self.expect(ColumnType::Bytea)?;
        try_bytea(v, &mut self.out.buf)?;
        Ok(self)
    }

    /// Writes a one-dimensional array of `f32`, `f64`, `i32` or `i64` (see [`array()`]).
    ///
    /// # Errors
    ///
    /// Type mismatch as for the other fields; [`EncodeError::ValidityLength`],
    /// [`EncodeError::TooLarge`].
    #[inline]
    pub fn array<T: ArrayElement>(
        &mut self,
        values: &[T],
        validity: Validity<'_>,
    ) -> Result<&mut Self, EncodeError> {
        self.expect(T::ARRAY_TYPE)?;
        try_array(values, validity, &mut self.out.buf)?;
        Ok(self)
    }

    /// Writes a `real[]`; see [`RowWriter::array`].
    ///
    /// # Errors
    ///
    /// As [`RowWriter::array`].
    #[inline]
    pub fn float4_array(
        &mut self,
        values: &[f32],
        validity: Validity<'_>,
    ) -> Result<&mut Self, EncodeError> {
        self.array(values, validity)
    }

    /// Writes a `double precision[]`; see [`RowWriter::array`].
    ///
    /// # Errors
    ///
    /// As [`RowWriter::array`].
    #[inline]
    pub fn float8_array(
        &mut self,
        values: &[f64],
        validity: Validity<'_>,
    ) -> Result<&mut Self, EncodeError> {
        self.array(values, validity)
    }

    /// Writes an `integer[]`; see [`RowWriter::array`].
    ///
    /// # Errors
    ///
    /// As [`RowWriter::array`].
    #[inline]
    pub fn int4_array(
        &mut self,
        values: &[i32],
        validity: Validity<'_>,
    ) -> Result<&mut Self, EncodeError> {
        self.array(values, validity)
    }

    /// Writes a `bigint[]`; see [`RowWriter::array`].
    ///
    /// # Errors
    ///
    /// As [`RowWriter::array`].
    #[inline]
    pub fn int8_array(
        &mut self,
        values: &[i64],
        validity: Validity<'_>,
    ) -> Result<&mut Self, EncodeError> {
        self.array(values, validity)
    }

    /// Completes the row.
    ///
    /// # Errors
    ///
    /// [`EncodeError::MissingFields`] if not every declared column was written; the partial row
    /// is removed when the writer is dropped.
    ///
    /// After `finish`, further fields are [`EncodeError::TooManyFields`] and `finish` again is a
    /// no-op.
    #[inline]
    pub fn finish(&mut self) -> Result<(), EncodeError> {
        if self.done {
            return Ok(());
        }
        let cols = &self.out.columns;
        if self.next != cols.len() {
            return Err(EncodeError::MissingFields {
                row: self.out.rows,
                expected: cols.len(),
                got: self.next,
                next: cols.as_slice()[self.next].name.clone(),
            });
        }
        self.done = true;
        self.out.rows += 1;
        let len = self.out.buf.len() - self.start;
        if len > self.out.row_hint {
            self.out.row_hint = len;
        }
        Ok(())
    }
}

impl Drop for RowWriter<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.out.buf.truncate(self.start);
        }
    }
}

#[cfg(test)]
mod tests;

//! PostgreSQL binary COPY decoding, with no I/O: the mirror of [`crate::encode`].
//!
//! A `COPY … TO STDOUT (FORMAT binary)` stream arrives in chunks of any size. [`Tuples`] frames
//! it: [`Tuples::push`] a chunk, then take complete tuples with [`Tuples::next_tuple`] until it
//! says it needs more, and call [`Tuples::finish`] at the end of the stream (it checks the
//! trailer). A tuple is a [`Bytes`] slice of the chunk it arrived in (PostgreSQL sends one
//! tuple per `CopyData` message, so nothing is copied); only a tuple split across chunks is
//! copied once.
//!
//! [`RowReader`] reads a tuple's fields in declared order against the same [`Columns`] the
//! encoder uses, checking the field count, each field's length and each array's element type,
//! so a stream of another shape is a [`DecodeError`] naming the row and column, never garbage.
//! The free functions ([`int4`], [`float4`], [`array`], …) decode one field's value bytes (the
//! bytes after its length word) and can be used on their own.
//!
//! Arrays are read through an [`ArrayView`] that borrows the field and yields `Option<T>`
//! elements (`None` = NULL) without allocating; [`float4_array_nan_into`] fills a reused
//! `Vec<f32>` with NaN for NULL, the inverse of [`Validity::NanIsNull`](crate::Validity).
//!
//! ```
//! use bytes::Bytes;
//! use pgcopy::decode::{RowReader, Tuples};
//! use pgcopy::{ColumnType, Columns, CopyBuffer, Validity};
//!
//! let columns = Columns::new([("id", ColumnType::Int8), ("v", ColumnType::Float4Array)]);
//! let mut buf = CopyBuffer::with_capacity(&columns, 1 << 10);
//! buf.row().int8(7)?.float4_array(&[1.5, f32::NAN], Validity::NanIsNull)?.finish()?;
//! let stream: Bytes = buf.finish();
//!
//! let mut tuples = Tuples::new();
//! tuples.push(stream);
//! let tuple = tuples.next_tuple()?.expect("one complete tuple");
//! let mut row = RowReader::new(&columns, &tuple)?;
//! assert_eq!(row.int8()?, Some(7));
//! let v = row.float4_array()?.expect("not NULL");
//! assert_eq!(v.iter().collect::<Vec<_>>(), [Some(1.5), None]);
//! row.finish()?;
//! assert!(tuples.next_tuple()?.is_none());
//! assert_eq!(tuples.finish()?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};

use crate::encode::{ArrayElement, ColumnType, Columns, HEADER, MAX_COLUMNS};
use crate::error::DecodeError;

/// Bytes of the COPY signature at the start of [`HEADER`].
const SIGNATURE_LEN: usize = 11;

/// Header flag bit 16: each tuple carries an OID field (servers before 12 only).
const FLAG_OIDS: u32 = 1 << 16;

#[inline]
fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn fixed<const N: usize>(ty: ColumnType, v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.try_into().map_err(|_| DecodeError::FieldLength {
        ty,
        expected: N,
        got: v.len(),
    })
}

/// Decodes a `boolean` field value.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 1 byte.
#[inline]
pub fn bool(v: &[u8]) -> Result<bool, DecodeError> {
    Ok(fixed::<1>(ColumnType::Bool, v)?[0] != 0)
}

/// Decodes an `int2` (`smallint`) field value.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 2 bytes.
#[inline]
pub fn int2(v: &[u8]) -> Result<i16, DecodeError> {
    Ok(i16::from_be_bytes(fixed(ColumnType::Int2, v)?))
}

/// Decodes an `int4` (`integer`) field value.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 4 bytes.
#[inline]
pub fn int4(v: &[u8]) -> Result<i32, DecodeError> {
    Ok(i32::from_be_bytes(fixed(ColumnType::Int4, v)?))
}

/// Decodes an `int8` (`bigint`) field value.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 8 bytes.
#[inline]
pub fn int8(v: &[u8]) -> Result<i64, DecodeError> {
    Ok(i64::from_be_bytes(fixed(ColumnType::Int8, v)?))
}

/// Decodes a `float4` (`real`) field value.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 4 bytes.
#[inline]
pub fn float4(v: &[u8]) -> Result<f32, DecodeError> {
    Ok(f32::from_be_bytes(fixed(ColumnType::Float4, v)?))
}

/// Decodes a `float8` (`double precision`) field value.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 8 bytes.
#[inline]
pub fn float8(v: &[u8]) -> Result<f64, DecodeError> {
    Ok(f64::from_be_bytes(fixed(ColumnType::Float8, v)?))
}

/// Decodes a `text`/`varchar` field value (UTF-8, the encoding of a UTF-8 database).
///
/// # Errors
/// [`DecodeError::InvalidText`] when the bytes are not UTF-8.
#[inline]
pub fn text(v: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(v).map_err(|e| DecodeError::InvalidText {
        offset: e.valid_up_to(),
    })
}

/// Decodes a `date` field value: days since 2000-01-01 (see
/// [`date_from_ymd`](crate::encode::date_from_ymd)).
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 4 bytes.
#[inline]
pub fn date(v: &[u8]) -> Result<i32, DecodeError> {
    Ok(i32::from_be_bytes(fixed(ColumnType::Date, v)?))
}

/// Decodes a `timestamp` field value: microseconds since 2000-01-01 00:00:00.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 8 bytes.
#[inline]
pub fn timestamp(v: &[u8]) -> Result<i64, DecodeError> {
    Ok(i64::from_be_bytes(fixed(ColumnType::Timestamp, v)?))
}

/// Decodes a `timestamptz` field value: microseconds since 2000-01-01 00:00:00 UTC.
///
/// # Errors
/// [`DecodeError::FieldLength`] unless the value is 8 bytes.
#[inline]
pub fn timestamptz(v: &[u8]) -> Result<i64, DecodeError> {
    Ok(i64::from_be_bytes(fixed(ColumnType::Timestamptz, v)?))
}

/// A validated one-dimensional array field, borrowed from its tuple: [`ArrayView::iter`] yields
/// each element, `None` for NULL, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct ArrayView<'a, T> {
    /// The element section (length word + value per element, `-1` alone for NULL).
    body: &'a [u8],
    len: usize,
    lower_bound: i32,
    has_nulls: bool,
    _t: PhantomData<T>,
}

/// Decodes an array field value of element type `T` (`f32`, `f64`, `i32`, `i64`): a
/// one-dimensional array, or an empty one (`'{}'`). The element section is validated here, so
/// iterating cannot fail.
///
/// # Errors
/// [`DecodeError::Array`] for a malformed array (truncated, wrong element length, trailing
/// bytes, more than one dimension); [`DecodeError::ElementType`] when the element OID is not
/// `T`'s.
pub fn array<T: ArrayElement>(v: &[u8]) -> Result<ArrayView<'_, T>, DecodeError> {
    let bad = |reason: &'static str| DecodeError::Array {
        ty: T::ARRAY_TYPE,
        reason,
    };
    if v.len() < 12 {
        return Err(bad("shorter than an array header"));
    }
    let ndim = be_i32(&v[0..4]);
    let flags = be_i32(&v[4..8]);
    let oid = be_i32(&v[8..12]) as u32;
    if oid != T::ELEMENT_OID {
        return Err(DecodeError::ElementType {
            ty: T::ARRAY_TYPE,
            expected: T::ELEMENT_OID,
            got: oid,
        });
    }
    if flags & !1 != 0 {
        return Err(bad("unknown array flags"));
    }
    match ndim {
        0 => {
            if v.len() != 12 {
                return Err(bad("bytes after an empty array"));
            }
            return Ok(ArrayView {
                body: &[],
                len: 0,
                lower_bound: 1,
                has_nulls: false,
                _t: PhantomData,
            });
        }
        1 => {}
        _ => return Err(bad("not one-dimensional")),
    }
    if v.len() < 20 {
        return Err(bad("truncated dimension"));
    }
    let len = be_i32(&v[12..16]);
    let lower_bound = be_i32(&v[16..20]);
    let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
    let body = &v[20..];
    let step = 4 + T::SIZE;
    let has_nulls = flags & 1 != 0;
    if !has_nulls {
        // No NULLs: every element is a length word and a value, so the size says it all; the
        // length words are checked too (cheap, and a wrong one means a corrupt stream).
        if Some(body.len()) != len.checked_mul(step) {
            return Err(bad("element section does not match the length"));
        }
        if body
            .chunks_exact(step)
            .any(|c| be_i32(&c[..4]) != T::SIZE as i32)
        {
            return Err(bad("wrong element length"));
        }
    } else {
        let mut pos = 0;
        for _ in 0..len {
            let Some(w) = body.get(pos..pos + 4) else {
                return Err(bad("truncated element"));
            };
            match be_i32(w) {
                -1 => pos += 4,
                n if n == T::SIZE as i32 => pos += step,
                _ => return Err(bad("wrong element length")),
            }
        }
        if pos > body.len() {
            return Err(bad("truncated element"));
        }
        if pos != body.len() {
            return Err(bad("bytes after the last element"));
        }
    }
    Ok(ArrayView {
        body,
        len,
        lower_bound,
        has_nulls,
        _t: PhantomData,
    })
}

impl<'a, T: ArrayElement> ArrayView<'a, T> {
    /// Number of elements (NULLs included).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The array's lower bound (1 unless the array was built with another).
    #[inline]
    pub fn lower_bound(&self) -> i32 {
        self.lower_bound
    }

    /// Whether the server flagged NULL elements.
    #[inline]
    pub fn has_nulls(&self) -> bool {
        self.has_nulls
    }

    /// The elements in order, `None` for NULL.
    #[inline]
    pub fn iter(&self) -> ArrayIter<'a, T> {
        ArrayIter {
            body: self.body,
            left: self.len,
            dense: !self.has_nulls,
            _t: PhantomData,
        }
    }
}

impl<'a, T: ArrayElement> IntoIterator for ArrayView<'a, T> {
    type Item = Option<T>;
    type IntoIter = ArrayIter<'a, T>;
    fn into_iter(self) -> ArrayIter<'a, T> {
        self.iter()
    }
}

/// The elements of an [`ArrayView`].
#[derive(Clone, Debug)]
pub struct ArrayIter<'a, T> {
    body: &'a [u8],
    left: usize,
    dense: bool,
    _t: PhantomData<T>,
}

impl<T: ArrayElement> Iterator for ArrayIter<'_, T> {
    type Item = Option<T>;

    #[inline]
    fn next(&mut self) -> Option<Option<T>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // `array` validated the layout, so these slices are in bounds.
        if self.dense || be_i32(&self.body[..4]) != -1 {
            let v = T::get(&self.body[4..4 + T::SIZE]);
            self.body = &self.body[4 + T::SIZE..];
            Some(Some(v))
        } else {
            self.body = &self.body[4..];
            Some(None)
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T: ArrayElement> ExactSizeIterator for ArrayIter<'_, T> {}

/// Decodes a `real[]` field value into `out` (cleared first; its capacity is reused), NULL
/// elements as NaN; returns the number of NULLs.
///
/// # Errors
/// As [`array`].
pub fn float4_array_nan_into(v: &[u8], out: &mut Vec<f32>) -> Result<usize, DecodeError> {
    let a = array::<f32>(v)?;
    out.clear();
    out.reserve(a.len());
    let mut nulls = 0;
    out.extend(a.iter().map(|x| {
        nulls += usize::from(x.is_none());
        x.unwrap_or(f32::NAN)
    }));
    Ok(nulls)
}

/// One complete tuple of a binary COPY stream (field count and fields), as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    bytes: Bytes,
}

impl Tuple {
    /// The tuple's bytes, from its field count to the end of its last field.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The tuple's bytes as a cheap, shareable [`Bytes`].
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Number of fields.
    #[inline]
    pub fn field_count(&self) -> usize {
        be_i16(&self.bytes) as usize
    }

    /// The fields in order: `None` for NULL, else the value bytes.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            rest: &self.bytes[2..],
            left: self.field_count(),
        }
    }
}

impl std::ops::Deref for Tuple {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Tuple {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The fields of a framed [`Tuple`].
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Option<&'a [u8]>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // A framed tuple was checked to hold all its fields.
        let n = be_i32(&self.rest[..4]);
        if n < 0 {
            self.rest = &self.rest[4..];
            return Some(None);
        }
        let (v, rest) = self.rest[4..].split_at(n as usize);
        self.rest = rest;
        Some(Some(v))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
}

/// Frames a binary COPY stream into [`Tuple`]s, chunk by chunk:
/// [`new`](Self::new) → [`push`](Self::push) / [`next_tuple`](Self::next_tuple) … →
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct Tuples {
    state: State,
    /// Unparsed input: the rest of the current chunk, or a copy when a tuple spans chunks.
    buf: Bytes,
    /// Bytes consumed before `buf` (for error offsets).
    offset: u64,
    rows: u64,
}

impl Default for Tuples {
    fn default() -> Self {
        Self::new()
    }
}

impl Tuples {
    /// A framer at the start of a stream (expects the header first).
    pub fn new() -> Self {
        Tuples {
            state: State::Header,
            buf: Bytes::new(),
            offset: 0,
            rows: 0,
        }
    }

    /// Adds the next chunk of the stream. Zero-copy unless unparsed bytes of an earlier chunk
    /// remain (a tuple split across chunks), in which case the two are joined once.
    pub fn push(&mut self, chunk: Bytes) {
        if self.buf.is_empty() {
            self.buf = chunk;
        } else if !chunk.is_empty() {
            let mut joined = BytesMut::with_capacity(self.buf.len() + chunk.len());
            joined.extend_from_slice(&self.buf);
            joined.extend_from_slice(&chunk);
            self.buf = joined.freeze();
        }
    }

    /// Tuples framed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether the trailer has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn advance(&mut self, n: usize) -> Bytes {
        self.offset += n as u64;
        self.buf.split_to(n)
    }

    /// The next complete tuple, or `None` when more input is needed or the trailer was read
    /// (see [`is_done`](Self::is_done)).
    ///
    /// # Errors
    /// [`DecodeError::BadSignature`] / [`DecodeError::UnsupportedFlags`] for a bad header,
    /// [`DecodeError::BadFieldCount`] / [`DecodeError::BadFieldLength`] for a corrupt tuple,
    /// [`DecodeError::TrailingData`] for bytes after the trailer.
    pub fn next_tuple(&mut self) -> Result<Option<Tuple>, DecodeError> {
        if self.state == State::Header {
            self.check_signature()?;
            if self.buf.len() < HEADER.len() {
                return Ok(None);
            }
            // Bits 0-15 flag incompatible format changes; of bits 16-31 (compatible ones, to be
            // ignored) only 16, "tuples carry OIDs", changes the layout.
            let flags = be_i32(&self.buf[11..15]) as u32;
            if flags & 0xffff != 0 || flags & FLAG_OIDS != 0 {
                return Err(DecodeError::UnsupportedFlags { flags });
            }
            let ext = be_i32(&self.buf[15..19]);
            let ext = usize::try_from(ext).map_err(|_| DecodeError::BadHeader {
                reason: "negative header extension length",
            })?;
            if self.buf.len() < HEADER.len() + ext {
                return Ok(None);
            }
            self.advance(HEADER.len() + ext);
            self.state = State::Tuples;
        }
        if self.state == State::Done {
            if !self.buf.is_empty() {
                return Err(DecodeError::TrailingData {
                    offset: self.offset,
                    len: self.buf.len(),
                });
            }
            return Ok(None);
        }
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let count = be_i16(b);
        if count == -1 {
            self.advance(2);
            self.state = State::Done;
            if !self.buf.is_empty() {
                return Err(DecodeError::TrailingData {
                    offset: self.offset,
                    len: self.buf.len(),
                });
            }
            return Ok(None);
        }
        if count < 0 || count as usize > MAX_COLUMNS {
            return Err(DecodeError::BadFieldCount {
                offset: self.offset,
                count,
            });
        }
        let mut pos = 2;
        for _ in 0..count {
            let Some(w) = b.get(pos..pos + 4) else {
                return Ok(None);
            };
            let n = be_i32(w);
            pos += 4;
            if n >= 0 {
                pos += n as usize;
            } else if n != -1 {
                return Err(DecodeError::BadFieldLength {
                    offset: self.offset + pos as u64 - 4,
                    len: n,
                });
            }
        }
        if pos > b.len() {
            return Ok(None);
        }
        self.rows += 1;
        Ok(Some(Tuple {
            bytes: self.advance(pos),
        }))
    }

    fn check_signature(&self) -> Result<(), DecodeError> {
        let n = self.buf.len().min(SIGNATURE_LEN);
        if self.buf[..n] != HEADER[..n] {
            return Err(DecodeError::BadSignature);
        }
        Ok(())
    }

    /// Ends the stream: returns the number of tuples, checking that the trailer was read and
    /// nothing is left over.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when the stream ended inside the header or a tuple, or
    /// before the trailer; [`DecodeError::TrailingData`] for bytes after the trailer.
    pub fn finish(&mut self) -> Result<u64, DecodeError> {
        match self.state {
            State::Done if self.buf.is_empty() => Ok(self.rows),
            State::Done => Err(DecodeError::TrailingData {
                offset: self.offset,
                len: self.buf.len(),
            }),
            _ => Err(DecodeError::Truncated {
                offset: self.offset,
                buffered: self.buf.len(),
            }),
        }
    }
}

/// Reads one tuple's fields in declared order; the mirror of [`RowWriter`](crate::RowWriter).
///
/// Every getter checks the next declared column's type and returns `Ok(None)` for NULL.
/// [`finish`](Self::finish) checks that every field was read.
#[derive(Debug)]
pub struct RowReader<'a> {
    columns: &'a Columns,
    rest: &'a [u8],
    next: usize,
}

macro_rules! scalar_get {
    ($(#[$doc:meta])* $name:ident, $t:ty, $col:ident) => {
        $(#[$doc])*
        ///
        /// # Errors
        ///
        /// [`DecodeError::InField`] when the next declared column has another type or the
        /// value has the wrong length; [`DecodeError::TooManyFields`] past the last column.
        #[inline]
        pub fn $name(&mut self) -> Result<Option<$t>, DecodeError> {
            match self.field(ColumnType::$col)? {
                Some(v) => $name(v).map(Some).map_err(|e| self.in_field(e)),
                None => Ok(None),
            }
        }
    };
}

impl<'a> RowReader<'a> {
    /// Starts reading `tuple` (a [`Tuple`] or its bytes) against `columns`.
    ///
    /// # Errors
    /// [`DecodeError::FieldCount`] when the tuple does not have one field per column.
    pub fn new(columns: &'a Columns, tuple: &'a [u8]) -> Result<Self, DecodeError> {
        let got = if tuple.len() >= 2 { be_i16(tuple) } else { -1 };
        if got < 0 || got as usize != columns.len() {
            return Err(DecodeError::FieldCount {
                expected: columns.len(),
                got: got.max(0) as usize,
            });
        }
        Ok(RowReader {
            columns,
            rest: &tuple[2..],
            next: 0,
        })
    }

    fn in_field(&self, e: DecodeError) -> DecodeError {
        let i = self.next - 1;
        DecodeError::InField {
            index: i,
            column: self.columns.as_slice()[i].name.clone(),
            error: Box::new(e),
        }
    }

    /// The next field's bytes (`None` = NULL), after checking the declared type.
    #[inline]
    fn field(&mut self, ty: ColumnType) -> Result<Option<&'a [u8]>, DecodeError> {
        let declared = *self
            .columns
            .types()
            .get(self.next)
            .ok_or(DecodeError::TooManyFields {
                expected: self.columns.len(),
            })?;
        self.next += 1;
        if declared != ty {
            return Err(self.in_field(DecodeError::WrongType {
                expected: declared,
                got: ty,
            }));
        }
        self.raw()
    }

    #[inline]
    fn raw(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let field = self.next - 1;
        let trunc = move || DecodeError::TupleTruncated { field };
        let w = self.rest.get(..4).ok_or_else(trunc)?;
        let n = be_i32(w);
        self.rest = &self.rest[4..];
        if n < 0 {
            return Ok(None);
        }
        let n = n as usize;
        let v = self.rest.get(..n).ok_or_else(trunc)?;
        self.rest = &self.rest[n..];
        Ok(Some(v))
    }

    /// The next field's raw value bytes (`None` = NULL), whatever its declared type.
    ///
    /// # Errors
    /// [`DecodeError::TooManyFields`] past the last column.
    #[inline]
    pub fn skip(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        if self.next >= self.columns.len() {
            return Err(DecodeError::TooManyFields {
                expected: self.columns.len(),
            });
        }
        self.next += 1;
        self.raw()
    }

    scalar_get!(
        /// Reads a `boolean`.
        bool, bool, Bool
    );
    scalar_get!(
        /// Reads a `smallint`.
        int2, i16, Int2
    );
    scalar_get!(
        /// Reads an `integer`.
        int4, i32, Int4
    );
    scalar_get!(
        /// Reads a `bigint`.
        int8, i64, Int8
    );
    scalar_get!(
        /// Reads a `real`.
        float4, f32, Float4
    );
    scalar_get!(
        /// Reads a `double precision`.
        float8, f64, Float8
    );
    scalar_get!(
        /// Reads a `date` (days since 2000-01-01).
        date, i32, Date
    );
    scalar_get!(
        /// Reads a `timestamp` (microseconds since 2000-01-01).
        timestamp, i64, Timestamp
    );
    scalar_get!(
        /// Reads a `timestamptz` (microseconds since 2000-01-01 UTC).
        timestamptz, i64, Timestamptz
    );

    /// Reads a `text`/`varchar`, borrowed from the tuple.
    ///
    /// # Errors
    /// As the other getters; [`DecodeError::InvalidText`] (in [`DecodeError::InField`]).
    #[inline]
    pub fn text(&mut self) -> Result<Option<&'a str>, DecodeError> {
        match self.field(ColumnType::Text)? {
            Some(v) => text(v).map(Some).map_err(|e| self.in_field(e)),
            None => Ok(None),
        }
    }

    /// Reads a `bytea`, borrowed from the tuple.
    ///
    /// # Errors
    /// As the other getters.
    #[inline]
    pub fn bytea(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        self.field(ColumnType::Bytea)
    }

    /// Reads a one-dimensional array of `f32`, `f64`, `i32` or `i64` (see [`array()`]).
    ///
    /// # Errors
    /// As the other getters; [`DecodeError::Array`] / [`DecodeError::ElementType`] (in
    /// [`DecodeError::InField`]).
    #[inline]
    pub fn array<T: ArrayElement>(&mut self) -> Result<Option<ArrayView<'a, T>>, DecodeError> {
        match self.field(T::ARRAY_TYPE)? {
            Some(v) => array::<T>(v).map(Some).map_err(|e| self.in_field(e)),
            None => Ok(None),
        }
    }

    /// Reads a `real[]`; see [`RowReader::array`].
    ///
    /// # Errors
    /// As [`RowReader::array`].
    #[inline]
    pub fn float4_array(&mut self) -> Result<Option<ArrayView<'a, f32>>, DecodeError> {
        self.array()
    }

    /// Reads a `double precision[]`; see [`RowReader::array`].
    ///
    /// # Errors
    /// As [`RowReader::array`].
    #[inline]
    pub fn float8_array(&mut self) -> Result<Option<ArrayView<'a, f64>>, DecodeError> {
        self.array()
    }

    /// Reads an `integer[]`; see [`RowReader::array`].
    ///
    /// # Errors
    /// As [`RowReader::array`].
    #[inline]
    pub fn int4_array(&mut self) -> Result<Option<ArrayView<'a, i32>>, DecodeError> {
        self.array()
    }

    /// Reads a `bigint[]`; see [`RowReader::array`].
    ///
    /// # Errors
    /// As [`RowReader::array`].
    #[inline]
    pub fn int8_array(&mut self) -> Result<Option<ArrayView<'a, i64>>, DecodeError> {
        self.array()
    }

    /// Checks that every declared field was read.
    ///
    /// # Errors
    /// [`DecodeError::FieldCount`] when fields are left.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.next != self.columns.len() {
            return Err(DecodeError::FieldCount {
                expected: self.columns.len(),
                got: self.next,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

use super::*;
use crate::encode::{self, CopyBuffer, Validity};

#[path = "../../tests/support/every_type.rs"]
mod every_type;
use every_type::every_type;

/// Row `i` of the test stream: every type, NULLs in a pattern, arrays with and without NULLs.
fn write_row(buf: &mut CopyBuffer, i: i64) {
    let f4: Vec<f32> = (0..(i as usize % 7))
        .map(|k| {
            if k % 3 == 1 {
                f32::NAN
            } else {
                k as f32 * 0.5 - i as f32
            }
        })
        .collect();
    let f8: Vec<f64> = (0..3).map(|k| k as f64 / 3.0 + i as f64).collect();
    let mut r = buf.row();
    r.bool(i % 2 == 0).unwrap();
    if i % 5 == 0 {
        r.null().unwrap();
    } else {
        r.int2(-(i as i16)).unwrap();
    }
    r.int4(i as i32 * 1000)
        .unwrap()
        .int8(i << 40)
        .unwrap()
        .float4(i as f32 + 0.25)
        .unwrap()
        .float8(-(i as f64) / 7.0)
        .unwrap()
        .text(&format!("row {i} ✓"))
        .unwrap()
        .bytea(&[i as u8, 0, 255])
        .unwrap()
        .date(encode::date_from_ymd(2000 + i as i32, 2, 29))
        .unwrap()
        .timestamp(i * 1_000_000)
        .unwrap()
        .timestamptz(-i)
        .unwrap()
        .float4_array(&f4, Validity::NanIsNull)
        .unwrap();
    if i % 4 == 3 {
        r.null().unwrap();
    } else {
        r.float8_array(&f8, Validity::AllValid).unwrap();
    }
    r.int4_array(&[i as i32, 2, 3], Validity::Mask(&[true, i % 2 == 0, true]))
        .unwrap()
        .int8_array(&[], Validity::AllValid)
        .unwrap()
        .finish()
        .unwrap();
}

fn check_row(columns: &Columns, tuple: &[u8], i: i64) {
    let mut r = RowReader::new(columns, tuple).unwrap();
    assert_eq!(r.bool().unwrap(), Some(i % 2 == 0));
    assert_eq!(r.int2().unwrap(), (i % 5 != 0).then_some(-(i as i16)));
    assert_eq!(r.int4().unwrap(), Some(i as i32 * 1000));
    assert_eq!(r.int8().unwrap(), Some(i << 40));
    assert_eq!(r.float4().unwrap(), Some(i as f32 + 0.25));
    assert_eq!(r.float8().unwrap(), Some(-(i as f64) / 7.0));
    assert_eq!(r.text().unwrap(), Some(format!("row {i} ✓").as_str()));
    assert_eq!(r.bytea().unwrap(), Some(&[i as u8, 0, 255][..]));
    assert_eq!(
        r.date().unwrap(),
        Some(encode::date_from_ymd(2000 + i as i32, 2, 29))
    );
    assert_eq!(r.timestamp().unwrap(), Some(i * 1_000_000));
    assert_eq!(r.timestamptz().unwrap(), Some(-i));
    let f4 = r.float4_array().unwrap().unwrap();
    let want: Vec<Option<f32>> = (0..(i as usize % 7))
        .map(|k| (k % 3 != 1).then_some(k as f32 * 0.5 - i as f32))
        .collect();
    assert_eq!(f4.iter().collect::<Vec<_>>(), want);
    assert_eq!(f4.len(), want.len());
    assert_eq!(f4.has_nulls(), want.iter().any(Option::is_none));
    match r.float8_array().unwrap() {
        None => assert_eq!(i % 4, 3),
        Some(a) => {
            let want: Vec<Option<f64>> = (0..3).map(|k| Some(k as f64 / 3.0 + i as f64)).collect();
            assert_eq!(a.iter().collect::<Vec<_>>(), want);
            assert_eq!(a.lower_bound(), 1);
        }
    }
    let a = r.int4_array().unwrap().unwrap();
    assert_eq!(
        a.iter().collect::<Vec<_>>(),
        [Some(i as i32), (i % 2 == 0).then_some(2), Some(3)]
    );
    let e = r.int8_array().unwrap().unwrap();
    assert!(e.is_empty());
    assert_eq!(e.iter().count(), 0);
    r.finish().unwrap();
}

fn stream(rows: i64) -> Bytes {
    let columns = every_type();
    let mut buf = CopyBuffer::with_capacity(&columns, 1 << 12);
    for i in 0..rows {
        write_row(&mut buf, i);
    }
    buf.finish()
}

/// Frames `stream` fed in chunks of `size` bytes and checks every row.
fn frame_in_chunks(stream: &Bytes, size: usize, rows: i64) {
    let columns = every_type();
    let mut t = Tuples::new();
    let mut got = 0;
    for start in (0..stream.len()).step_by(size) {
        t.push(stream.slice(start..(start + size).min(stream.len())));
        while let Some(tuple) = t.next_tuple().unwrap() {
            check_row(&columns, &tuple, got);
            assert_eq!(tuple.field_count(), columns.len());
            assert_eq!(tuple.fields().count(), columns.len());
            got += 1;
        }
    }
    assert!(t.is_done());
    assert_eq!(t.finish().unwrap(), rows as u64);
    assert_eq!(got, rows);
}

#[test]
fn every_type_round_trips_in_any_chunking() {
    let s = stream(40);
    for size in [1, 2, 3, 7, 19, 20, 64, 333, 4096, s.len()] {
        frame_in_chunks(&s, size, 40);
    }
}

#[test]
fn empty_stream_has_no_tuples() {
    let s = stream(0);
    assert_eq!(s.len(), HEADER.len() + 2);
    frame_in_chunks(&s, 5, 0);
}

#[test]
fn one_chunk_per_tuple_is_not_copied() {
    // As the server sends it: header with the first tuple, then one message per tuple.
    let s = stream(3);
    let mut t = Tuples::new();
    let mut cuts = vec![0];
    let mut probe = Tuples::new();
    probe.push(s.clone());
    let mut pos = HEADER.len();
    while let Some(tuple) = probe.next_tuple().unwrap() {
        pos += tuple.len();
        cuts.push(pos);
    }
    cuts.push(s.len());
    for w in cuts.windows(2) {
        let chunk = s.slice(w[0]..w[1]);
        let base = chunk.as_ptr();
        t.push(chunk);
        if let Some(tuple) = t.next_tuple().unwrap() {
            let p = tuple.as_bytes().as_ptr();
            assert!(
                p >= base && p < base.wrapping_add(w[1] - w[0]),
                "zero-copy slice"
            );
        }
    }
    assert_eq!(t.finish().unwrap(), 3);
}

#[test]
fn float4_array_nan_into_reuses_the_buffer() {
    let mut body = BytesMut::new();
    encode::float4_array(&[1.0, f32::NAN, 3.0], Validity::NanIsNull, &mut body);
    let mut out = Vec::with_capacity(16);
    let cap = out.capacity();
    let nulls = float4_array_nan_into(&body[4..], &mut out).unwrap();
    assert_eq!(nulls, 1);
    assert_eq!(out[0], 1.0);
    assert!(out[1].is_nan());
    assert_eq!(out[2], 3.0);
    assert_eq!(out.capacity(), cap);
}

#[test]
fn bad_headers_and_framing_are_errors() {
    let mut t = Tuples::new();
    t.push(Bytes::from_static(b"PGCOPX\n\xff\r\n\0"));
    assert_eq!(t.next_tuple(), Err(DecodeError::BadSignature));

    let mut t = Tuples::new();
    t.push(Bytes::from_static(b"PG"));
    assert_eq!(t.next_tuple(), Ok(None));
    assert!(matches!(t.finish(), Err(DecodeError::Truncated { .. })));

    // OIDs flag.
    let mut h = HEADER.to_vec();
    h[12] = 1;
    let mut t = Tuples::new();
    t.push(Bytes::from(h));
    assert!(matches!(
        t.next_tuple(),
        Err(DecodeError::UnsupportedFlags { flags: 0x1_0000 })
    ));
    // An incompatible-format bit (0-15).
    let mut h = HEADER.to_vec();
    h[14] = 2;
    let mut t = Tuples::new();
    t.push(Bytes::from(h));
    assert!(matches!(
        t.next_tuple(),
        Err(DecodeError::UnsupportedFlags { flags: 2 })
    ));
    // Compatible bits above 16 are ignored.
    let mut h = HEADER.to_vec();
    h[11] = 0x80;
    h.extend_from_slice(b"\xff\xff");
    let mut t = Tuples::new();
    t.push(Bytes::from(h));
    assert_eq!(t.next_tuple(), Ok(None));
    assert_eq!(t.finish(), Ok(0));

    // A header extension is skipped.
    let mut h = HEADER.to_vec();
    h[18] = 3;
    h.extend_from_slice(b"abc\xff\xff");
    let mut t = Tuples::new();
    t.push(Bytes::from(h));
    assert_eq!(t.next_tuple(), Ok(None));
    assert_eq!(t.finish(), Ok(0));

    // Truncated mid-tuple.
    let s = stream(2);
    let mut t = Tuples::new();
    t.push(s.slice(..s.len() - 10));
    while t.next_tuple().unwrap().is_some() {}
    assert!(matches!(t.finish(), Err(DecodeError::Truncated { .. })));

    // Bytes after the trailer.
    let mut v = stream(1).to_vec();
    v.push(0);
    let mut t = Tuples::new();
    t.push(Bytes::from(v));
    assert!(t.next_tuple().unwrap().is_some());
    assert!(matches!(
        t.next_tuple(),
        Err(DecodeError::TrailingData { len: 1, .. })
    ));

    // Negative field length.
    let mut v = HEADER.to_vec();
    v.extend_from_slice(&1i16.to_be_bytes());
    v.extend_from_slice(&(-7i32).to_be_bytes());
    let mut t = Tuples::new();
    t.push(Bytes::from(v));
    assert!(matches!(
        t.next_tuple(),
        Err(DecodeError::BadFieldLength { len: -7, .. })
    ));
}

#[test]
fn row_reader_checks_shape_and_types() {
    let columns = Columns::new([("id", ColumnType::Int8), ("v", ColumnType::Float4Array)]);
    let mut buf = CopyBuffer::with_capacity(&columns, 1024);
    buf.row()
        .int8(5)
        .unwrap()
        .float4_array(&[1.0], Validity::AllValid)
        .unwrap()
        .finish()
        .unwrap();
    let s = buf.finish();
    let mut t = Tuples::new();
    t.push(s);
    let tuple = t.next_tuple().unwrap().unwrap();

    // Too few columns declared.
    let one = Columns::new([("id", ColumnType::Int8)]);
    assert_eq!(
        RowReader::new(&one, &tuple).unwrap_err(),
        DecodeError::FieldCount {
            expected: 1,
            got: 2
        }
    );
    // Read as the wrong type.
    let mut r = RowReader::new(&columns, &tuple).unwrap();
    let e = r.int4().unwrap_err();
    assert!(matches!(
        e,
        DecodeError::InField { index: 0, ref column, .. } if column == "id"
    ));
    // A column declared with another width.
    let wrong = Columns::new([("id", ColumnType::Int4), ("v", ColumnType::Float4Array)]);
    let mut r = RowReader::new(&wrong, &tuple).unwrap();
    let e = r.int4().unwrap_err();
    let DecodeError::InField { error, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(
        *error,
        DecodeError::FieldLength {
            ty: ColumnType::Int4,
            expected: 4,
            got: 8
        }
    );
    // Array of another element type.
    let other = Columns::new([("id", ColumnType::Int8), ("v", ColumnType::Int4Array)]);
    let mut r = RowReader::new(&other, &tuple).unwrap();
    r.int8().unwrap();
    let e = r.int4_array().unwrap_err();
    let DecodeError::InField { error, .. } = e else {
        panic!("{e:?}")
    };
    assert!(matches!(
        *error,
        DecodeError::ElementType {
            expected: 23,
            got: 700,
            ..
        }
    ));
    // Not all fields read.
    let mut r = RowReader::new(&columns, &tuple).unwrap();
    r.int8().unwrap();
    assert!(matches!(r.finish(), Err(DecodeError::FieldCount { .. })));
    // skip() then too many.
    let mut r = RowReader::new(&columns, &tuple).unwrap();
    assert!(r.skip().unwrap().is_some());
    assert!(r.skip().unwrap().is_some());
    assert_eq!(
        r.skip().unwrap_err(),
        DecodeError::TooManyFields { expected: 2 }
    );
}

#[test]
fn malformed_arrays_are_errors() {
    let mut body = BytesMut::new();
    encode::float4_array(&[1.0, f32::NAN, 3.0], Validity::NanIsNull, &mut body);
    let v = &body[4..];
    assert!(array::<f32>(v).is_ok());
    assert!(matches!(
        array::<f32>(&v[..v.len() - 1]),
        Err(DecodeError::Array { .. })
    ));
    let mut extra = v.to_vec();
    extra.extend_from_slice(&[0, 0, 0, 0]);
    assert!(matches!(
        array::<f32>(&extra),
        Err(DecodeError::Array { .. })
    ));
    // Two dimensions.
    let mut two = v.to_vec();
    two[3] = 2;
    assert!(matches!(array::<f32>(&two), Err(DecodeError::Array { .. })));
    // A dense array with a wrong element length.
    let mut body = BytesMut::new();
    encode::float4_array(&[1.0, 2.0], Validity::AllValid, &mut body);
    let mut bad = body[4..].to_vec();
    bad[23] = 5;
    assert!(matches!(array::<f32>(&bad), Err(DecodeError::Array { .. })));
    assert!(matches!(
        array::<f64>(&body[4..]),
        Err(DecodeError::ElementType { .. })
    ));
}

#[test]
fn scalar_lengths_are_checked() {
    assert_eq!(int4(&[0, 0, 1, 0]), Ok(256));
    assert!(int4(&[0, 0, 1]).is_err());
    assert!(int8(&[0; 4]).is_err());
    assert_eq!(bool(&[1]), Ok(true));
    assert!(text(&[0xff]).is_err());
    assert_eq!(float8(&1.5f64.to_be_bytes()), Ok(1.5));
}

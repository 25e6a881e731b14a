use super::*;
use postgres_protocol::types as pt;
use postgres_types::Type;
use tokio_postgres::fallible_iterator::FallibleIterator;

/// Splits one length-prefixed field off `b`: `None` for NULL.
fn field<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = i32::from_be_bytes(b[..4].try_into().unwrap());
    *b = &b[4..];
    if len < 0 {
        assert_eq!(len, -1);
        return None;
    }
    let (v, rest) = b.split_at(len as usize);
    *b = rest;
    Some(v)
}

/// Parses a whole binary COPY stream into rows of raw fields.
fn parse_stream(mut b: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
    assert_eq!(&b[..19], HEADER);
    b = &b[19..];
    let mut rows = Vec::new();
    loop {
        let n = i16::from_be_bytes(b[..2].try_into().unwrap());
        b = &b[2..];
        if n == -1 {
            assert!(b.is_empty(), "bytes after trailer");
            return rows;
        }
        rows.push((0..n).map(|_| field(&mut b).map(<[u8]>::to_vec)).collect());
    }
}

/// Decodes an array field body into (element oid, dims as (len, lbound), values).
type DecodedArray = (u32, bool, Vec<(i32, i32)>, Vec<Option<Vec<u8>>>);

fn decode_array(body: &[u8]) -> DecodedArray {
    let a = pt::array_from_sql(body).unwrap();
    let dims = a
        .dimensions()
        .map(|d| Ok((d.len, d.lower_bound)))
        .collect()
        .unwrap();
    let vals = a
        .values()
        .map(|v| Ok(v.map(<[u8]>::to_vec)))
        .collect()
        .unwrap();
    (a.element_type(), a.has_nulls(), dims, vals)
}

fn one_field(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f(&mut buf);
    let mut s: &[u8] = &buf;
    let v = field(&mut s).expect("not null").to_vec();
    assert!(s.is_empty(), "field length prefix does not match its body");
    v
}

#[test]
fn header_and_trailer() {
    let mut b = BytesMut::new();
    header(&mut b);
    trailer(&mut b);
    assert_eq!(&b[..], b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\xff\xff");
    assert!(parse_stream(&b).is_empty());
}

#[test]
fn scalars_round_trip() {
    assert!(pt::bool_from_sql(&one_field(|b| bool(true, b))).unwrap());
    assert!(!pt::bool_from_sql(&one_field(|b| bool(false, b))).unwrap());
    assert_eq!(pt::int2_from_sql(&one_field(|b| int2(-7, b))).unwrap(), -7);
    assert_eq!(
        pt::int4_from_sql(&one_field(|b| int4(i32::MIN, b))).unwrap(),
        i32::MIN
    );
    assert_eq!(
        pt::int8_from_sql(&one_field(|b| int8(i64::MAX, b))).unwrap(),
        i64::MAX
    );
    assert_eq!(
        pt::float4_from_sql(&one_field(|b| float4(1.5, b))).unwrap(),
        1.5
    );
    assert!(
        pt::float4_from_sql(&one_field(|b| float4(f32::NAN, b)))
            .unwrap()
            .is_nan()
    );
    assert_eq!(
        pt::float8_from_sql(&one_field(|b| float8(f64::NEG_INFINITY, b))).unwrap(),
        f64::NEG_INFINITY
    );
    assert_eq!(
        pt::text_from_sql(&one_field(|b| text("héllo", b))).unwrap(),
        "héllo"
    );
    assert_eq!(pt::text_from_sql(&one_field(|b| text("", b))).unwrap(), "");
    assert_eq!(
        pt::bytea_from_sql(&one_field(|b| bytea(&[0, 1, 255], b))),
        &[0, 1, 255]
    );
    assert_eq!(pt::date_from_sql(&one_field(|b| date(-1, b))).unwrap(), -1);
    assert_eq!(
        pt::timestamp_from_sql(&one_field(|b| timestamp(123, b))).unwrap(),
        123
    );
    assert_eq!(
        pt::timestamp_from_sql(&one_field(|b| timestamptz(-5, b))).unwrap(),
        -5
    );
    let mut b = BytesMut::new();
    null(&mut b);
    assert_eq!(&b[..], &[0xff; 4]);
}

#[test]
fn text_with_nul_is_an_error_and_appends_nothing() {
    let mut b = BytesMut::new();
    assert_eq!(
        try_text("a\0b", &mut b),
        Err(EncodeError::NulInText { offset: 1 })
    );
    assert!(b.is_empty());
}

#[test]
fn dates_and_timestamps() {
    assert_eq!(date_from_ymd(2000, 1, 1), 0);
    assert_eq!(date_from_ymd(1970, 1, 1), -PG_EPOCH_DAYS_FROM_UNIX);
    assert_eq!(date_from_ymd(2000, 3, 1), 60); // 2000 is a leap year
    assert_eq!(date_from_ymd(2100, 3, 1) - date_from_ymd(2100, 2, 28), 1); // 2100 is not
    assert_eq!(date_from_ymd(1950, 1, 1), -18262);
    assert_eq!(date_from_ymd(1, 1, 1), -730_119);
    assert_eq!(date_from_ymd(-1, 12, 31), -730_486); // year 0 (1 BC) is a leap year
    assert_eq!(timestamp_from_unix_micros(PG_EPOCH_MICROS_FROM_UNIX), 0);
    assert_eq!(timestamp_from_unix_micros(0), -946_684_800_000_000);
}

#[test]
fn float4_365_is_2944_bytes_on_the_wire() {
    let v: Vec<f32> = (0..365).map(|i| i as f32 * 0.5).collect();
    let mut b = BytesMut::new();
    float4_array(&v, Validity::AllValid, &mut b);
    assert_eq!(b.len(), 2944);
    assert_eq!(array_field_len::<f32>(365), 2944);
    let body = one_field(|x| x.extend_from_slice(&b));
    let (oid, has_nulls, dims, vals) = decode_array(&body);
    assert_eq!(oid, 700);
    assert!(!has_nulls);
    assert_eq!(dims, vec![(365, 1)]);
    for (i, val) in vals.iter().enumerate() {
        assert_eq!(
            pt::float4_from_sql(val.as_ref().unwrap()).unwrap(),
            i as f32 * 0.5
        );
    }
}

fn check_f32_array(b: &[u8], expect: &[Option<f32>]) {
    let mut s = b;
    let body = field(&mut s).unwrap();
    assert!(s.is_empty());
    let (oid, has_nulls, dims, vals) = decode_array(body);
    assert_eq!(oid, 700);
    assert_eq!(has_nulls, expect.iter().any(Option::is_none));
    assert_eq!(dims, vec![(expect.len() as i32, 1)]);
    let got: Vec<Option<f32>> = vals
        .iter()
        .map(|v| v.as_ref().map(|x| pt::float4_from_sql(x).unwrap()))
        .collect();
    assert_eq!(got.len(), expect.len());
    for (g, e) in got.iter().zip(expect) {
        match (g, e) {
            (Some(g), Some(e)) => assert!(g.to_bits() == e.to_bits(), "{g} != {e}"),
            (None, None) => {}
            _ => panic!("{got:?} != {expect:?}"),
        }
    }
}

#[test]
fn nulls_from_every_validity_kind() {
    let n: usize = 366;
    let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let valid: Vec<bool> = (0..n).map(|i| i % 7 != 3 && i != 365).collect();
    let mut bitmap = vec![0u8; n.div_ceil(8_usize)];
    for (i, &ok) in valid.iter().enumerate() {
        if ok {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    let expect: Vec<Option<f32>> = v
        .iter()
        .zip(&valid)
        .map(|(&x, &ok)| ok.then_some(x))
        .collect();

    let mut b = BytesMut::new();
    float4_array(&v, Validity::Mask(&valid), &mut b);
    check_f32_array(&b, &expect);
    let nulls = valid.iter().filter(|&&ok| !ok).count();
    assert_eq!(b.len(), array_field_len::<f32>(n) - 4 * nulls);

    let mut b2 = BytesMut::new();
    float4_array(&v, Validity::Bitmap(&bitmap), &mut b2);
    assert_eq!(b, b2);

    let with_nan: Vec<f32> = v
        .iter()
        .zip(&valid)
        .map(|(&x, &ok)| if ok { x } else { f32::NAN })
        .collect();
    let mut b3 = BytesMut::new();
    float4_array(&with_nan, Validity::NanIsNull, &mut b3);
    assert_eq!(b, b3);
}

#[test]
fn all_valid_masks_take_the_dense_path_and_match() {
    let v = [1.0f32, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::NAN];
    let mut a = BytesMut::new();
    float4_array(&v, Validity::AllValid, &mut a);
    for validity in [Validity::Mask(&[true; 5]), Validity::Bitmap(&[0b1_1111])] {
        let mut b = BytesMut::new();
        float4_array(&v, validity, &mut b);
        assert_eq!(a, b);
    }
    // NaN stays NaN unless NanIsNull.
    check_f32_array(&a, &v.map(Some));
    let mut b = BytesMut::new();
    float4_array(&v, Validity::NanIsNull, &mut b);
    check_f32_array(
        &b,
        &[
            Some(1.0),
            Some(f32::INFINITY),
            Some(f32::NEG_INFINITY),
            Some(-0.0),
            None,
        ],
    );
}

#[test]
fn all_null_and_empty_arrays() {
    let mut b = BytesMut::new();
    float4_array(&[f32::NAN; 3], Validity::NanIsNull, &mut b);
    check_f32_array(&b, &[None, None, None]);

    for (oid, bytes) in [
        (700, one_field(|b| float4_array(&[], Validity::AllValid, b))),
        (
            701,
            one_field(|b| float8_array(&[], Validity::NanIsNull, b)),
        ),
        (23, one_field(|b| int4_array(&[], Validity::Mask(&[]), b))),
        (20, one_field(|b| int8_array(&[], Validity::Bitmap(&[]), b))),
    ] {
        let (o, has_nulls, dims, vals) = decode_array(&bytes);
        assert_eq!((o, has_nulls), (oid, false));
        assert!(dims.is_empty() && vals.is_empty());
    }
    assert_eq!(array_field_len::<f64>(0), 16);
}

#[test]
fn other_element_types() {
    let body = one_field(|b| {
        float8_array(
            &[1.25, f64::NAN, 3.0],
            Validity::Mask(&[true, false, true]),
            b,
        )
    });
    let (oid, has_nulls, dims, vals) = decode_array(&body);
    assert_eq!((oid, has_nulls, dims), (701, true, vec![(3, 1)]));
    assert_eq!(
        pt::float8_from_sql(vals[0].as_ref().unwrap()).unwrap(),
        1.25
    );
    assert!(vals[1].is_none());

    let body = one_field(|b| int4_array(&[i32::MIN, 0, i32::MAX], Validity::NanIsNull, b));
    let (oid, has_nulls, _, vals) = decode_array(&body);
    assert_eq!((oid, has_nulls), (23, false));
    assert_eq!(
        pt::int4_from_sql(vals[2].as_ref().unwrap()).unwrap(),
        i32::MAX
    );

    let body = one_field(|b| int8_array(&[-1, 2], Validity::Bitmap(&[0b10]), b));
    let (oid, has_nulls, _, vals) = decode_array(&body);
    assert_eq!((oid, has_nulls), (20, true));
    assert!(vals[0].is_none());
    assert_eq!(pt::int8_from_sql(vals[1].as_ref().unwrap()).unwrap(), 2);
    assert_eq!(array_field_len::<i64>(2), 4 + 20 + 24);
}

#[test]
fn short_validity_is_an_error_and_appends_nothing() {
    let mut b = BytesMut::new();
    b.extend_from_slice(b"xy");
    let v = [0f32; 9];
    assert_eq!(
        try_array(&v, Validity::Bitmap(&[0xff]), &mut b),
        Err(EncodeError::ValidityLength {
            values: 9,
            validity: 8
        })
    );
    assert_eq!(
        try_array(&v, Validity::Mask(&[true; 10]), &mut b),
        Err(EncodeError::ValidityLength {
            values: 9,
            validity: 10
        })
    );
    assert_eq!(&b[..], b"xy");
}

#[test]
#[should_panic(expected = "validity")]
fn array_panics_on_short_validity() {
    float4_array(&[1.0, 2.0], Validity::Mask(&[true]), &mut BytesMut::new());
}

fn project_columns() -> Columns {
    Columns::new([
        ("data_source_id", ColumnType::Int4),
        ("map_cell_id", ColumnType::Int4),
        ("tasmin", ColumnType::Float4Array),
        ("tasmax", ColumnType::Float4Array),
        ("pr", ColumnType::Float4Array),
    ])
}

#[test]
fn copy_buffer_writes_a_valid_stream() {
    let cols = Columns::new([
        ("b", ColumnType::Bool),
        ("t", ColumnType::Text),
        ("i", ColumnType::Int8),
        ("a", ColumnType::Int4Array),
    ]);
    let mut buf = CopyBuffer::with_capacity(&cols, 0);
    buf.row()
        .bool(true)
        .unwrap()
        .text("x")
        .unwrap()
        .int8(9)
        .unwrap()
        .int4_array(&[1, 2], Validity::AllValid)
        .unwrap()
        .finish()
        .unwrap();
    buf.row()
        .null()
        .unwrap()
        .null()
        .unwrap()
        .null()
        .unwrap()
        .null()
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(buf.rows(), 2);
    let s = buf.finish();
    let rows = parse_stream(&s);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][1].as_deref(), Some(&b"x"[..]));
    assert_eq!(rows[1], vec![None, None, None, None]);
    // After finish the buffer starts a new stream.
    assert_eq!(buf.as_bytes(), HEADER);
}

#[test]
fn take_and_finish_concatenate_to_one_stream() {
    let cols = project_columns();
    let v = vec![1.0f32; 365];
    let mut buf = CopyBuffer::with_capacity(&cols, 1 << 12);
    let mut all = Vec::new();
    for i in 0..10 {
        buf.row()
            .int4(1)
            .and_then(|r| r.int4(i))
            .and_then(|r| r.float4_array(&v, Validity::AllValid))
            .and_then(|r| r.float4_array(&v, Validity::AllValid))
            .and_then(|r| r.float4_array(&v, Validity::AllValid))
            .unwrap()
            .finish()
            .unwrap();
        if i % 3 == 0 {
            all.extend_from_slice(&buf.take());
        }
    }
    all.extend_from_slice(&buf.finish());
    assert_eq!(all.len(), 19 + 10 * (2 + 8 + 8 + 3 * 2944) + 2);
    let rows = parse_stream(&all);
    assert_eq!(rows.len(), 10);
    assert_eq!(pt::int4_from_sql(rows[9][1].as_ref().unwrap()).unwrap(), 9);
}

#[test]
fn wrong_order_count_and_type_are_errors_not_corrupt_streams() {
    let cols = project_columns();
    let v = [0f32; 3];
    let mut buf = CopyBuffer::with_capacity(&cols, 0);
    let before = buf.as_bytes().to_vec();

    // Wrong order: an array where the second int4 key belongs.
    let err = buf
        .row()
        .int4(1)
        .unwrap()
        .float4_array(&v, Validity::AllValid)
        .unwrap_err();
    assert_eq!(
        err,
        EncodeError::WrongType {
            row: 0,
            index: 1,
            column: "map_cell_id".into(),
            expected: ColumnType::Int4,
            got: ColumnType::Float4Array
        }
    );
    assert_eq!(buf.as_bytes(), &before[..]);

    // Too few fields.
    let err = buf
        .row()
        .int4(1)
        .unwrap()
        .int4(2)
        .unwrap()
        .finish()
        .unwrap_err();
    assert!(
        matches!(err, EncodeError::MissingFields { expected: 5, got: 2, ref next, .. } if next == "tasmin"),
        "{err}"
    );
    assert_eq!(buf.as_bytes(), &before[..]);

    // Too many fields.
    {
        let mut r = buf.row();
        r.int4(1).unwrap().int4(2).unwrap();
        for _ in 0..3 {
            r.float4_array(&v, Validity::AllValid).unwrap();
        }
        assert_eq!(
            r.null().unwrap_err(),
            EncodeError::TooManyFields {
                row: 0,
                expected: 5
            }
        );
        assert_eq!(
            r.int4(3).unwrap_err(),
            EncodeError::TooManyFields {
                row: 0,
                expected: 5
            }
        );
    }
    assert_eq!(buf.as_bytes(), &before[..]);

    // Wrong element type (f64 into real[]).
    let err = buf
        .row()
        .int4(1)
        .unwrap()
        .int4(2)
        .unwrap()
        .float8_array(&[1.0], Validity::AllValid)
        .unwrap_err();
    assert!(matches!(
        err,
        EncodeError::WrongType {
            expected: ColumnType::Float4Array,
            got: ColumnType::Float8Array,
            ..
        }
    ));
    // A row dropped without finish leaves nothing either.
    {
        let mut r = buf.row();
        r.int4(5).unwrap();
    }
    assert_eq!(buf.as_bytes(), &before[..]);
    assert_eq!(buf.rows(), 0);

    // A good row after all that; fields after finish are errors and keep the row intact.
    {
        let mut r = buf.row();
        r.int4(1).unwrap().int4(2).unwrap();
        for _ in 0..3 {
            r.float4_array(&v, Validity::AllValid).unwrap();
        }
        r.finish().unwrap();
        assert!(r.int4(1).is_err());
        r.finish().unwrap();
    }
    assert_eq!(buf.rows(), 1);
    assert_eq!(parse_stream(&buf.finish()).len(), 1);
}

#[test]
fn invalid_columns() {
    assert!(Columns::try_new(Vec::<(String, ColumnType)>::new()).is_err());
    assert!(Columns::try_new([("", ColumnType::Int4)]).is_err());
    assert!(Columns::try_new([("a\0", ColumnType::Int4)]).is_err());
    assert!(Columns::try_new((0..1601).map(|i| (format!("c{i}"), ColumnType::Int4))).is_err());
    assert_eq!(project_columns().position("pr"), Some(4));
}

#[test]
fn column_type_accepts() {
    assert!(ColumnType::Text.accepts(&Type::VARCHAR));
    assert!(ColumnType::Float4Array.accepts(&Type::FLOAT4_ARRAY));
    assert!(!ColumnType::Float4Array.accepts(&Type::FLOAT8_ARRAY));
    assert!(!ColumnType::Int4.accepts(&Type::INT8));
}

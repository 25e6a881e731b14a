//! Binary COPY encoding throughput for the project's row shape: two `integer` keys and three
//! `real[365]` series, with and without NULL elements.
//!
//! ```sh
//! cargo bench -p nexingest-benches --bench encode
//! ```
//!
//! Reports MB/s (`encode_bytes`) and rows/s (`encode_rows`) for one core; the target is ≥ 1 GB/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgcopy::{ColumnType, Columns, CopyBuffer, Validity};

const ROWS: usize = 2_000;
const DAYS: usize = 365;
/// Distinct series reused round-robin (keeps the input in cache-sized memory like a decoded block).
const DISTINCT: usize = 256;

fn columns() -> Columns {
    Columns::new([
        ("data_source_id", ColumnType::Int4),
        ("map_cell_id", ColumnType::Int4),
        ("tasmin", ColumnType::Float4Array),
        ("tasmax", ColumnType::Float4Array),
        ("pr", ColumnType::Float4Array),
    ])
}

/// `DISTINCT` cells × 3 variables × 365 days; every `nan_every`-th value NaN (0: none).
fn series(nan_every: usize) -> Vec<[Vec<f32>; 3]> {
    (0..DISTINCT)
        .map(|c| {
            std::array::from_fn(|v| {
                (0..DAYS)
                    .map(|d| {
                        if nan_every > 0 && (c * 7 + d + v).is_multiple_of(nan_every) {
                            f32::NAN
                        } else {
                            250.0 + (c + d + v * 10) as f32 * 0.01
                        }
                    })
                    .collect()
            })
        })
        .collect()
}

fn encode_all(buf: &mut CopyBuffer, data: &[[Vec<f32>; 3]], validity: Validity<'_>) -> usize {
    for i in 0..ROWS {
        let [a, b, c] = &data[i % DISTINCT];
        buf.row()
            .int4(1)
            .and_then(|r| r.int4(i as i32))
            .and_then(|r| r.float4_array(a, validity))
            .and_then(|r| r.float4_array(b, validity))
            .and_then(|r| r.float4_array(c, validity))
            .and_then(|r| r.finish())
            .expect("encode");
    }
    let out = buf.finish();
    let n = out.len();
    black_box(out);
    n
}

fn bench(c: &mut Criterion) {
    let cols = columns();
    let dense = series(0);
    let sparse = series(50); // ~2% NULL elements, like coastal cells
    let mask = vec![true; DAYS];

    type Case<'a> = (&'a str, &'a [[Vec<f32>; 3]], Validity<'a>);
    let cases: [Case<'_>; 4] = [
        ("all_valid", &dense, Validity::AllValid),
        ("nan_is_null_no_nulls", &dense, Validity::NanIsNull),
        ("nan_is_null_2pct_nulls", &sparse, Validity::NanIsNull),
        ("mask_all_valid", &dense, Validity::Mask(&mask)),
    ];

    let mut buf = CopyBuffer::with_capacity(&cols, 20 << 20);
    for unit in ["bytes", "rows"] {
        let mut group = c.benchmark_group(format!("encode_{unit}"));
        for (name, data, validity) in &cases {
            let bytes = encode_all(&mut buf, data, *validity);
            group.throughput(if unit == "bytes" {
                Throughput::Bytes(bytes as u64)
            } else {
                Throughput::Elements(ROWS as u64)
            });
            group.bench_function(*name, |b| b.iter(|| encode_all(&mut buf, data, *validity)));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);

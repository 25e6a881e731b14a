//! The columns of one of every [`ColumnType`], named as the test tables and queries name them.
//!
//! Shared by the decoder's unit tests (`src/decode/tests.rs`) and the server tests
//! (`tests/server.rs`), which include this file as a module with `#[path]`; the includer must
//! have `Columns` and `ColumnType` in scope.

use super::{ColumnType, Columns};

/// `b i2 i4 i8 f4 f8 t by d ts tz af4 af8 ai4 ai8`: every column type, in declaration order.
pub fn every_type() -> Columns {
    Columns::new([
        ("b", ColumnType::Bool),
        ("i2", ColumnType::Int2),
        ("i4", ColumnType::Int4),
        ("i8", ColumnType::Int8),
        ("f4", ColumnType::Float4),
        ("f8", ColumnType::Float8),
        ("t", ColumnType::Text),
        ("by", ColumnType::Bytea),
        ("d", ColumnType::Date),
        ("ts", ColumnType::Timestamp),
        ("tz", ColumnType::Timestamptz),
        ("af4", ColumnType::Float4Array),
        ("af8", ColumnType::Float8Array),
        ("ai4", ColumnType::Int4Array),
        ("ai8", ColumnType::Int8Array),
    ])
}

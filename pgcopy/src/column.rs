//! [`ColumnType`]: the PostgreSQL type of a column, as far as its binary encoding is concerned.
//!
//! Its own module so that [`crate::encode`] (which writes fields of these types) and
//! [`crate::error`] (whose errors name them) can both use it without importing each other.

use postgres_types::Type;

/// The PostgreSQL type of a column, as far as its binary encoding is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    /// `boolean`
    Bool,
    /// `smallint`
    Int2,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `text`, `varchar`, `char(n)`, `name` (same binary format)
    Text,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `timestamp without time zone`
    Timestamp,
    /// `timestamp with time zone`
    Timestamptz,
    /// `real[]`
    Float4Array,
    /// `double precision[]`
    Float8Array,
    /// `integer[]`
    Int4Array,
    /// `bigint[]`
    Int8Array,
}

impl ColumnType {
    /// The canonical PostgreSQL type.
    pub fn pg_type(self) -> Type {
        match self {
            ColumnType::Bool => Type::BOOL,
            ColumnType::Int2 => Type::INT2,
            ColumnType::Int4 => Type::INT4,
            ColumnType::Int8 => Type::INT8,
            ColumnType::Float4 => Type::FLOAT4,
            ColumnType::Float8 => Type::FLOAT8,
            ColumnType::Text => Type::TEXT,
            ColumnType::Bytea => Type::BYTEA,
            ColumnType::Date => Type::DATE,
            ColumnType::Timestamp => Type::TIMESTAMP,
            ColumnType::Timestamptz => Type::TIMESTAMPTZ,
            ColumnType::Float4Array => Type::FLOAT4_ARRAY,
            ColumnType::Float8Array => Type::FLOAT8_ARRAY,
            ColumnType::Int4Array => Type::INT4_ARRAY,
            ColumnType::Int8Array => Type::INT8_ARRAY,
        }
    }

    /// Whether a table column of type `ty` accepts this binary encoding.
    pub fn accepts(self, ty: &Type) -> bool {
        match self {
            ColumnType::Text => {
                matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
            }
            _ => *ty == self.pg_type(),
        }
    }

    /// Whether this is an array type.
    pub fn is_array(self) -> bool {
        matches!(
            self,
            ColumnType::Float4Array
                | ColumnType::Float8Array
                | ColumnType::Int4Array
                | ColumnType::Int8Array
        )
    }
}

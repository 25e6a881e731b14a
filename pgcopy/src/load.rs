//! Streaming binary COPY loads inside a caller's transaction.
//!
//! [`load`] runs one [`Strategy`] (append, replace a key's rows, or upsert through a staging
//! table) inside a [`Transaction`] the caller owns, so the caller can run its own statements
//! (mark a job done, write a ledger entry) before committing, and everything commits or rolls
//! back together.
//!
//! Rows come from a [`RowSource`], which is run on tokio's blocking pool: it encodes the next
//! buffer (≥ [`LoaderConfig::buffer_size`]) while the current one is being sent.
//!
//! **Cancellation.** Dropping the future returned by [`load`] (or hitting its
//! [`LoaderConfig::timeout`]) aborts the COPY (`CopyFail`); dropping the transaction then queues
//! a `ROLLBACK` on the connection ahead of anything else, so a connection returned to a
//! deadpool pool is never left inside a transaction or a COPY. A connection that was lost is
//! closed and deadpool discards it on recycle.

use std::error::Error as StdError;
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::Transaction;
use tracing::{Instrument, debug, info_span};

use crate::encode::{Columns, CopyBuffer};
use crate::error::{EncodeError, LoadError};

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer names are truncated by the
/// server, so they are rejected here.
pub const MAX_IDENT_LEN: usize = 63;

/// Quotes an SQL identifier: wraps it in double quotes and doubles any double quote inside.
///
/// The result is always quoted, so it is case-sensitive and may contain any character except
/// NUL (which [`Table::new`] rejects).
///
/// ```
/// assert_eq!(pgcopy::quote_ident("climate_data_year"), r#""climate_data_year""#);
/// assert_eq!(pgcopy::quote_ident(r#"My "odd" table"#), r#""My ""odd"" table""#);
/// ```
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn check_ident(kind: &str, name: &str) -> Result<(), LoadError> {
    if name.is_empty() || name.contains('\0') || name.len() > MAX_IDENT_LEN {
        return Err(LoadError::Config(format!(
            "invalid {kind} name {name:?} (must be 1..={MAX_IDENT_LEN} bytes without NUL)"
        )));
    }
    Ok(())
}

/// A target table: optional schema, name and the declared [`Columns`] each row writes.
#[derive(Clone, Debug)]
pub struct Table {
    schema: Option<String>,
    name: String,
    columns: Columns,
    qualified: String,
    column_list: String,
}

impl Table {
    /// Declares a target table. Names are used exactly as given (quoted, case-sensitive).
    ///
    /// # Errors
    ///
    /// [`LoadError::Config`] if a schema, table or column name is empty, longer than
    /// [`MAX_IDENT_LEN`] bytes, contains NUL, or a column name repeats.
    pub fn new(schema: Option<&str>, name: &str, columns: Columns) -> Result<Self, LoadError> {
        if let Some(s) = schema {
            check_ident("schema", s)?;
        }
        check_ident("table", name)?;
        for (i, c) in columns.as_slice().iter().enumerate() {
            check_ident("column", &c.name)?;
            if columns.as_slice()[..i].iter().any(|d| d.name == c.name) {
                return Err(LoadError::Config(format!(
                    "column {:?} declared twice",
                    c.name
                )));
            }
        }
        let qualified = match schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(name)),
            None => quote_ident(name),
        };
        let column_list = join_idents(columns.as_slice().iter().map(|c| c.name.as_str()));
        Ok(Table {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
            columns,
            qualified,
            column_list,
        })
    }

    /// The schema, if given (otherwise the connection's `search_path` decides).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared columns.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The quoted, schema-qualified name, e.g. `"nexingest"."climate_data_year"`.
    pub fn qualified_name(&self) -> &str {
        &self.qualified
    }

    /// The `COPY … FROM STDIN (FORMAT binary)` statement for this table and its columns.
    pub fn copy_statement(&self) -> String {
        copy_sql(&self.qualified, &self.column_list)
    }
}

fn copy_sql(target: &str, column_list: &str) -> String {
    format!("COPY {target} ({column_list}) FROM STDIN (FORMAT binary)")
}

fn join_idents<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, n) in names.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&quote_ident(n));
    }
    out
}

/// A key value for [`Strategy::ReplaceKey`]; converts to the key column's type on the server
/// side (`smallint`/`integer`/`bigint` for [`KeyValue::Int`], text types for
/// [`KeyValue::Text`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyValue {
    /// An integer key (range-checked against the column's type).
    Int(i64),
    /// A text key.
    Text(String),
}

impl From<i16> for KeyValue {
    fn from(v: i16) -> Self {
        KeyValue::Int(v.into())
    }
}
impl From<i32> for KeyValue {
    fn from(v: i32) -> Self {
        KeyValue::Int(v.into())
    }
}
impl From<i64> for KeyValue {
    fn from(v: i64) -> Self {
        KeyValue::Int(v)
    }
}
impl From<&str> for KeyValue {
    fn from(v: &str) -> Self {
        KeyValue::Text(v.to_owned())
    }
}
impl From<String> for KeyValue {
    fn from(v: String) -> Self {
        KeyValue::Text(v)
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Text(v) => write!(f, "{v:?}"),
        }
    }
}

impl ToSql for KeyValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match (self, ty) {
            (KeyValue::Int(v), &Type::INT2) => out.put_i16(i16::try_from(*v)?),
            (KeyValue::Int(v), &Type::INT4) => out.put_i32(i32::try_from(*v)?),
            (KeyValue::Int(v), &Type::INT8) => out.put_i64(*v),
            (KeyValue::Text(v), t) if !is_int(t) => out.put_slice(v.as_bytes()),
            _ => return Err(format!("key value {self} does not fit column type {ty}").into()),
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        is_int(ty) || matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
    }

    to_sql_checked!();
}

fn is_int(ty: &Type) -> bool {
    matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
}

/// How rows are written into the target table. Every strategy runs inside the caller's
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// COPY the rows into the table.
    Append,
    /// Delete the rows whose key columns equal the given values, then COPY: running the same
    /// load twice leaves one copy. The rows loaded should carry the same key.
    ReplaceKey {
        /// `(column, value)` pairs, combined with `AND`.
        key: Vec<(String, KeyValue)>,
    },
    /// COPY into a temporary staging table, then
    /// `INSERT … SELECT … ON CONFLICT (conflict) DO UPDATE SET` every other loaded column:
    /// a partial update that leaves columns that are not loaded untouched on existing rows.
    Upsert {
        /// The columns of a unique index or constraint (all must be loaded columns).
        conflict: Vec<String>,
    },
    /// Like [`Strategy::Upsert`], but an existing row keeps every non-NULL value it has:
    /// `ON CONFLICT (conflict) DO UPDATE SET c = coalesce(target.c, EXCLUDED.c)`. New rows are
    /// inserted; existing rows only gain the columns they lack (e.g. a variable loaded later).
    FillNulls {
        /// The columns of a unique index or constraint (all must be loaded columns).
        conflict: Vec<String>,
    },
}

impl Strategy {
    /// [`Strategy::ReplaceKey`] on one column.
    ///
    /// ```
    /// let s = pgcopy::Strategy::replace_key("data_source_id", 42);
    /// ```
    pub fn replace_key(column: impl Into<String>, value: impl Into<KeyValue>) -> Self {
        Strategy::ReplaceKey {
            key: vec![(column.into(), value.into())],
        }
    }

    /// [`Strategy::Upsert`] on the given conflict columns.
    pub fn upsert<I, S>(conflict: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Strategy::Upsert {
            conflict: conflict.into_iter().map(Into::into).collect(),
        }
    }

    /// [`Strategy::FillNulls`] on the given conflict columns.
    ///
    /// ```
    /// let s = pgcopy::Strategy::fill_nulls(["data_source_id", "map_cell_id"]);
    /// ```
    pub fn fill_nulls<I, S>(conflict: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Strategy::FillNulls {
            conflict: conflict.into_iter().map(Into::into).collect(),
        }
    }
}

/// Loader settings; `Default` gives 1 MiB buffers, two in flight, no timeout, column check on.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Bytes per COPY message sent to the server (a buffer is sent once it reaches this size).
    pub buffer_size: usize,
    /// Encoded buffers that may wait for the connection while the next one is encoded.
    pub buffers_in_flight: usize,
    /// Time limit for the whole [`load`] call; also set as `SET LOCAL statement_timeout` so the
    /// server stops work of an abandoned load. Exceeding it gives [`LoadError::Timeout`].
    pub timeout: Option<Duration>,
    /// Before loading, check that the table has the declared columns with matching types
    /// (one extra round trip); a mismatch is [`LoadError::ColumnMismatch`].
    pub check_columns: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            buffer_size: 1 << 20,
            buffers_in_flight: 2,
            timeout: None,
            check_columns: true,
        }
    }
}

/// What a [`load`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadStats {
    /// Rows deleted by [`Strategy::ReplaceKey`].
    pub rows_deleted: u64,
    /// Rows copied (into the table, or into the staging table for [`Strategy::Upsert`]).
    pub rows_copied: u64,
    /// Rows inserted or updated by [`Strategy::Upsert`].
    pub rows_upserted: u64,
    /// Bytes of COPY data sent.
    pub bytes_sent: u64,
    /// COPY messages sent.
    pub buffers_sent: u64,
}

/// Produces the rows of a load, one call per row, on a blocking thread.
///
/// Implemented for closures `FnMut(&mut CopyBuffer) -> Result<bool, EncodeError>`.
pub trait RowSource: Send + 'static {
    /// Writes the next row with [`CopyBuffer::row`] and returns `Ok(true)`, or returns
    /// `Ok(false)` (writing nothing) when there are no more rows.
    ///
    /// # Errors
    ///
    /// An [`EncodeError`] aborts the load.
    fn write_next(&mut self, buf: &mut CopyBuffer) -> Result<bool, EncodeError>;
}

impl<F> RowSource for F
where
    F: FnMut(&mut CopyBuffer) -> Result<bool, EncodeError> + Send + 'static,
{
    #[inline]
    fn write_next(&mut self, buf: &mut CopyBuffer) -> Result<bool, EncodeError> {
        self(buf)
    }
}

/// Passes a closure through unchanged, fixing its signature so closures written inline get
/// their argument and error types inferred.
///
/// ```
/// let mut left = 3;
/// let source = pgcopy::source_fn(move |buf| {
///     if left == 0 {
///         return Ok(false);
///     }
///     left -= 1;
///     buf.row().int4(left)?.finish()?;
///     Ok(true)
/// });
/// # let _ = source;
/// ```
pub fn source_fn<F>(f: F) -> F
where
    F: FnMut(&mut CopyBuffer) -> Result<bool, EncodeError> + Send + 'static,
{
    f
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LoadError {
    move |e| LoadError::postgres(context, e)
}

/// Loads the rows of `source` into `table` with `strategy`, inside `tx`.
///
/// Nothing is committed: run any other statements the job needs on `tx`, then commit it. On
/// error the transaction is aborted or holds partial work, so drop it or roll it back (a
/// tokio-postgres or deadpool [`Transaction`] rolls back when dropped).
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// use pgcopy::{ColumnType, Columns, LoaderConfig, Strategy, Table, Validity};
///
/// let table = Table::new(
///     Some("nexingest"),
///     "climate_data_year",
///     Columns::new([
///         ("data_source_id", ColumnType::Int4),
///         ("map_cell_id", ColumnType::Int4),
///         ("tasmax", ColumnType::Float4Array),
///     ]),
/// )?;
/// let cells: Vec<(i32, Vec<f32>)> = vec![(1, vec![280.5; 365])];
/// let mut rows = cells.into_iter();
/// let source = pgcopy::source_fn(move |buf| match rows.next() {
///     Some((cell, series)) => {
///         buf.row().int4(42)?.int4(cell)?.float4_array(&series, Validity::NanIsNull)?.finish()?;
///         Ok(true)
///     }
///     None => Ok(false),
/// });
///
/// let mut client = pool.get().await?;
/// let tx = client.transaction().await?;
/// let stats = pgcopy::load(
///     &tx,
///     &table,
///     &Strategy::replace_key("data_source_id", 42),
///     source,
///     &LoaderConfig::default(),
/// )
/// .await?;
/// tx.execute("UPDATE nexingest.data_source SET state = 'done' WHERE id = $1", &[&42i32])
///     .await?;
/// tx.commit().await?;
/// println!("{} rows", stats.rows_copied);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`LoadError::Encode`] from the source; [`LoadError::Postgres`] (with SQLSTATE) from the
/// server or a lost connection; [`LoadError::Timeout`] past [`LoaderConfig::timeout`];
/// [`LoadError::ColumnMismatch`] / [`LoadError::Config`] for a table or strategy that does not
/// fit. See [`LoadError::is_retryable`].
pub async fn load<S: RowSource>(
    tx: &Transaction<'_>,
    table: &Table,
    strategy: &Strategy,
    source: S,
    config: &LoaderConfig,
) -> Result<LoadStats, LoadError> {
    let span = info_span!("pgcopy_load", table = %table.qualified_name());
    let work = load_inner(tx, table, strategy, source, config).instrument(span);
    match config.timeout {
        Some(after) => match tokio::time::timeout(after, work).await {
            Ok(Err(e))
                if e.sqlstate() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
            {
                Err(LoadError::Timeout { after })
            }
            Ok(r) => r,
            Err(_) => Err(LoadError::Timeout { after }),
        },
        None => work.await,
    }
}

async fn load_inner<S: RowSource>(
    tx: &Transaction<'_>,
    table: &Table,
    strategy: &Strategy,
    source: S,
    config: &LoaderConfig,
) -> Result<LoadStats, LoadError> {
    let started = Instant::now();
    let columns = table.columns();
    let mut stats = LoadStats::default();
    validate_strategy(table, strategy)?;
    if let Some(t) = config.timeout {
        // Milliseconds, at least 1 (0 would disable the limit).
        let ms = t.as_millis().clamp(1, i32::MAX as u128);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await
            .map_err(pg("SET statement_timeout"))?;
    }
    if config.check_columns {
        check_columns(tx, table).await?;
    }
    match strategy {
        Strategy::Append | Strategy::ReplaceKey { .. } => {
            if let Strategy::ReplaceKey { key } = strategy {
                let mut sql = format!("DELETE FROM {} WHERE ", table.qualified_name());
                for (i, (col, _)) in key.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(" AND ");
                    }
                    sql.push_str(&format!("{} = ${}", quote_ident(col), i + 1));
                }
                let params: Vec<&(dyn ToSql + Sync)> =
                    key.iter().map(|(_, v)| v as &(dyn ToSql + Sync)).collect();
                stats.rows_deleted = tx.execute(&sql, &params).await.map_err(pg("DELETE"))?;
                debug!(
                    rows = stats.rows_deleted,
                    "deleted previous rows of the key"
                );
            }
            copy(
                tx,
                &table.copy_statement(),
                columns,
                source,
                config,
                &mut stats,
            )
            .await?;
        }
        Strategy::Upsert { conflict } | Strategy::FillNulls { conflict } => {
            let fill = matches!(strategy, Strategy::FillNulls { .. });
            let stage = quote_ident(&format!(
                "pgcopy_stage_{}",
                STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let cols = &table.column_list;
            let mut setup = format!(
                "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA",
                table.qualified_name()
            );
            let arrays: Vec<String> = columns
                .as_slice()
                .iter()
                .filter(|c| c.ty.is_array())
                .map(|c| format!("ALTER COLUMN {} SET STORAGE EXTERNAL", quote_ident(&c.name)))
                .collect();
            if !arrays.is_empty() {
                setup.push_str(&format!("; ALTER TABLE {stage} {}", arrays.join(", ")));
            }
            tx.batch_execute(&setup)
                .await
                .map_err(pg("CREATE staging table"))?;
            copy(
                tx,
                &copy_sql(&stage, cols),
                columns,
                source,
                config,
                &mut stats,
            )
            .await?;
            let updates: Vec<String> = columns
                .as_slice()
                .iter()
                .filter(|c| !conflict.contains(&c.name))
                .map(|c| {
                    let q = quote_ident(&c.name);
                    if fill {
                        format!("{q} = coalesce(t.{q}, EXCLUDED.{q})")
                    } else {
                        format!("{q} = EXCLUDED.{q}")
                    }
                })
                .collect();
            let action = if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            let sql = format!(
                "INSERT INTO {} AS t ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) {action}",
                table.qualified_name(),
                join_idents(conflict.iter().map(String::as_str)),
            );
            stats.rows_upserted = tx
                .execute(&sql, &[])
                .await
                .map_err(pg("INSERT … ON CONFLICT"))?;
            tx.batch_execute(&format!("DROP TABLE {stage}"))
                .await
                .map_err(pg("DROP staging table"))?;
        }
    }
    debug!(
        rows = stats.rows_copied,
        bytes = stats.bytes_sent,
        buffers = stats.buffers_sent,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded"
    );
    Ok(stats)
}

fn validate_strategy(table: &Table, strategy: &Strategy) -> Result<(), LoadError> {
    let (kind, names): (&str, Vec<&str>) = match strategy {
        Strategy::Append => return Ok(()),
        Strategy::ReplaceKey { key } => ("key", key.iter().map(|(c, _)| c.as_str()).collect()),
        Strategy::Upsert { conflict } | Strategy::FillNulls { conflict } => {
            ("conflict", conflict.iter().map(String::as_str).collect())
        }
    };
    if names.is_empty() {
        return Err(LoadError::Config(format!("empty {kind} column list")));
    }
    for n in names {
        check_ident("column", n)?;
        if kind == "conflict" && table.columns().position(n).is_none() {
            return Err(LoadError::Config(format!(
                "conflict column {n:?} is not one of the loaded columns"
            )));
        }
    }
    Ok(())
}

async fn check_columns(tx: &Transaction<'_>, table: &Table) -> Result<(), LoadError> {
    let sql = format!(
        "SELECT {} FROM {} LIMIT 0",
        table.column_list,
        table.qualified_name()
    );
    let stmt = tx.prepare(&sql).await.map_err(pg("checking columns"))?;
    for (declared, actual) in table.columns().as_slice().iter().zip(stmt.columns()) {
        if !declared.ty.accepts(actual.type_()) {
            return Err(LoadError::ColumnMismatch {
                table: table.qualified_name().to_owned(),
                column: declared.name.clone(),
                declared: declared.ty,
                actual: actual.type_().name().to_owned(),
            });
        }
    }
    Ok(())
}

/// Streams the rows of `source` through `COPY` (`statement`), encoding on a blocking thread.
async fn copy<S: RowSource>(
    tx: &Transaction<'_>,
    statement: &str,
    columns: &Columns,
    mut source: S,
    config: &LoaderConfig,
    stats: &mut LoadStats,
) -> Result<(), LoadError> {
    let buffer_size = config.buffer_size.max(4096);
    let (chunk_tx, mut chunk_rx) =
        tokio::sync::mpsc::channel::<Bytes>(config.buffers_in_flight.max(1));
    let columns = columns.clone();
    let encoder = tokio::task::spawn_blocking(move || -> Result<u64, EncodeError> {
        // Slack so the row that crosses the threshold rarely reallocates.
        let capacity = buffer_size + buffer_size / 8;
        let mut buf = CopyBuffer::with_capacity(&columns, capacity);
        loop {
            if !source.write_next(&mut buf)? {
                let rows = buf.rows();
                // The receiver is gone only if the load was cancelled.
                let _ = chunk_tx.blocking_send(buf.finish());
                return Ok(rows);
            }
            if buf.len() >= buffer_size {
                if chunk_tx.blocking_send(buf.take()).is_err() {
                    return Ok(buf.rows());
                }
                buf.reserve(capacity);
            }
        }
    });

    let sink = tx
        .copy_in::<_, Bytes>(statement)
        .await
        .map_err(pg("COPY"))?;
    let mut sink = pin!(sink);
    while let Some(chunk) = chunk_rx.recv().await {
        stats.bytes_sent += chunk.len() as u64;
        stats.buffers_sent += 1;
        sink.send(chunk).await.map_err(pg("COPY"))?;
    }
    let encoded = match encoder.await {
        Ok(r) => r?,
        Err(e) => return Err(LoadError::Task(e.to_string())),
    };
    // Dropping `sink` without `finish` (the early returns above) aborts the COPY.
    stats.rows_copied = sink.as_mut().finish().await.map_err(pg("COPY"))?;
    debug_assert_eq!(stats.rows_copied, encoded);
    Ok(())
}

/// Runs `work` with a deadline: past `after` it is dropped (rolling back whatever it holds)
/// and [`LoadError::Timeout`] is returned. Use it to bound a whole job, including its commit.
///
/// # Errors
///
/// [`LoadError::Timeout`], or `work`'s own error.
pub async fn with_timeout<T, F>(after: Duration, work: F) -> Result<T, LoadError>
where
    F: Future<Output = Result<T, LoadError>>,
{
    tokio::time::timeout(after, work)
        .await
        .unwrap_or(Err(LoadError::Timeout { after }))
}

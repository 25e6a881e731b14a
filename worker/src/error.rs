//! The worker's concrete error: every failure of a job is sorted into transient (retry, let
//! another delivery try again) or permanent (record on `data_source`, leave for the DLQ); a bad
//! setting is a [`ConfigError`], reported before anything connects. The lowest layer of the
//! crate: it imports nothing of it.

use std::fmt;

/// A configuration error, reported before any connection is made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{0} is required (flag or environment variable)")]
    Missing(&'static str),
    /// A setting has an invalid value.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// Setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// A setting with an invalid value: `name` (the flag) and why, with the fix.
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name,
            reason: reason.into(),
        }
    }
}

/// A server certificate the TLS verifier ([`crate::tls`]) refused, with the fix in its text.
#[derive(Debug)]
pub struct VerifyError(pub String);

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyError {}

/// Whether a failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network, throttling, S3 5xx, Postgres 08xxx/40001/40P01/53xxx/57P0x: retry.
    Transient,
    /// Bad message, missing object, corrupt file, data errors: record and give up.
    Permanent,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        })
    }
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The message is not a valid job (bad JSON, unknown dataset, year out of range, URL not
    /// allowed, …). Nothing is written for it.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// An input object does not exist.
    #[error("s3://{bucket}/{key}: object not found")]
    NotFound {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A bucket does not exist.
    #[error("s3://{bucket}: no such bucket")]
    NoSuchBucket {
        /// Bucket.
        bucket: String,
    },
    /// Any other S3 failure.
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key (or prefix).
        key: String,
        /// What went wrong (SDK error chain, no credentials in it).
        message: String,
        /// Whether retrying may help (5xx, throttling, timeouts, dispatch failures).
        transient: bool,
    },
    /// A local input file is missing or unreadable.
    #[error("{0}")]
    Input(String),
    /// The file could not be decoded (corrupt, wrong layout, missing days, …).
    #[error("decode {file}: {message}")]
    Decode {
        /// The file (key or path).
        file: String,
        /// The decoder's error.
        message: String,
    },
    /// The data do not make a valid job (e.g. variables on different grids).
    #[error("data: {0}")]
    Data(String),
    /// A database error.
    #[error("database: {message}")]
    Database {
        /// The error text with SQLSTATE.
        message: String,
        /// SQLSTATE when the server sent one.
        code: Option<String>,
        /// Whether retrying may help.
        transient: bool,
    },
    /// Local I/O (temp files).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The message's visibility could not be extended: another worker may get it, so the
    /// job's transaction is rolled back instead of committed.
    #[error("lost the message: {0}")]
    VisibilityLost(String),
    /// Stopped by shutdown before it could finish.
    #[error("cancelled by shutdown")]
    Cancelled,
    /// The job exceeded its time limit.
    #[error("job timed out after {0} s")]
    TimedOut(u64),
}

impl JobError {
    /// Transient or permanent.
    pub fn class(&self) -> ErrorClass {
        match self {
            JobError::InvalidMessage(_)
            | JobError::NotFound { .. }
            | JobError::NoSuchBucket { .. }
            | JobError::Input(_)
            | JobError::Decode { .. }
            | JobError::Data(_) => ErrorClass::Permanent,
            JobError::S3 { transient, .. } | JobError::Database { transient, .. } => {
                if *transient {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            }
            JobError::Io(_)
            | JobError::VisibilityLost(_)
            | JobError::Cancelled
            | JobError::TimedOut(_) => ErrorClass::Transient,
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// Whether this ends the attempt without being a failure of the job itself (shutdown or
    /// lost visibility): no retry here, no failure recorded.
    pub fn is_abort(&self) -> bool {
        matches!(self, JobError::Cancelled | JobError::VisibilityLost(_))
    }
}

/// Whether a SQLSTATE is worth retrying: the one table, [`pgcopy::sqlstate_is_retryable`],
/// shared with the loader (connection `08`, resources `53`, `40001`, `40P01`, `55P03`, `57014`,
/// `57P01`–`57P03`).
pub fn sqlstate_is_transient(code: &str) -> bool {
    pgcopy::sqlstate_is_retryable(code)
}

impl From<tokio_postgres::Error> for JobError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_owned());
        // One classification for the worker and the loader (pgcopy): by SQLSTATE, else a
        // closed connection or an I/O error (timeouts included) is transient; but a server
        // certificate that does not verify is a setting to fix, not worth a retry.
        let transient = pgcopy::pg_error_is_retryable(&e) && !is_tls_verification_error(&e);
        let mut message = match (e.as_db_error(), tls_verification_message(&e)) {
            (None, Some(why)) => why,
            (Some(db), _) => format!(
                "{} ({}){}",
                db.message(),
                db.code().code(),
                db.detail().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            (None, None) => {
                let mut s = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(inner) = src {
                    // tokio-postgres already displays its cause: add only what is new.
                    let text = inner.to_string();
                    if !s.contains(&text) {
                        s.push_str(": ");
                        s.push_str(&text);
                    }
                    src = inner.source();
                }
                s
            }
        };
        if let Some(hint) = tls_hint(&e) {
            message.push_str("; ");
            message.push_str(hint);
        }
        JobError::Database {
            message,
            code,
            transient,
        }
    }
}

impl From<deadpool_postgres::PoolError> for JobError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => JobError::Database {
                message: format!("connection pool: {other}"),
                code: None,
                transient: true,
            },
        }
    }
}

/// Hints for connection errors whose cause is the TLS setting: the server refuses a plain
/// connection (`pg_hba.conf` `hostssl`, RDS `rds.force_ssl=1`), or offers no TLS where it is
/// required.
fn tls_hint(e: &tokio_postgres::Error) -> Option<&'static str> {
    if let Some(db) = e.as_db_error() {
        let m = db.message();
        if db.code() == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && (m.contains("no encryption") || m.contains("SSL off"))
        {
            return Some(
                "the server accepts this connection only over TLS: set sslmode=require (better: \
                 verify-full with sslrootcert) in the database URL",
            );
        }
        return None;
    }
    let text = e.to_string();
    if text.contains("server does not support TLS") {
        return Some(
            "the server does not offer TLS: turn on ssl on the server, or use sslmode=prefer or \
             disable",
        );
    }
    None
}

/// The explanation of a certificate the verifier refused (what to change), when that is why
/// the connection failed.
fn tls_verification_message(e: &tokio_postgres::Error) -> Option<String> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
                io.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>())
            && let Some(v) = other.0.downcast_ref::<VerifyError>()
        {
            return Some(format!("TLS handshake failed: {v}"));
        }
        src = s.source();
    }
    None
}

/// Whether a connection error is a TLS verification failure (a setting to fix, not worth a
/// retry).
fn is_tls_verification_error(e: &tokio_postgres::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>())
            && matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        {
            return true;
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sort_into_classes() {
        assert!(sqlstate_is_transient("08006"));
        assert!(sqlstate_is_transient("40001"));
        assert!(sqlstate_is_transient("53100"));
        assert!(sqlstate_is_transient("55P03"));
        assert!(sqlstate_is_transient("57014"));
        assert!(!sqlstate_is_transient("22P02"));
        assert!(!sqlstate_is_transient("42P01"));
    }

    #[test]
    fn classes() {
        assert_eq!(
            JobError::InvalidMessage("x".into()).class(),
            ErrorClass::Permanent
        );
        assert_eq!(JobError::Cancelled.class(), ErrorClass::Transient);
        assert!(JobError::Cancelled.is_abort());
        let e = JobError::S3 {
            bucket: "b".into(),
            key: "k".into(),
            message: "503".into(),
            transient: true,
        };
        assert!(e.is_transient());
    }
}

//! Validated settings: raw flags ([`crate::cli`]) become these before anything connects.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::error::ConfigError;

use crate::catalog::Dataset;
use crate::cli;

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(name, reason)
}

/// A validated schema name: `[a-z_][a-z0-9_]{0,62}`. Displayed as a quoted identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// Validates a schema name.
    ///
    /// # Errors
    /// When the name is empty, too long, or has characters outside `[a-z0-9_]`.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
            && !name.starts_with("pg_");
        if ok {
            Ok(Schema(name.to_owned()))
        } else {
            Err(invalid(
                "schema",
                format!("{name:?}: use lower-case letters, digits and _ (max 63, not pg_*)"),
            ))
        }
    }

    /// The bare name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// `"schema"."table"`.
    pub fn table(&self, table: &str) -> String {
        format!("\"{}\".\"{}\"", self.0, table)
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Where the database is.
#[derive(Clone)]
pub struct DbConfig {
    /// Connection URL (may hold a password: never printed).
    pub url: String,
    /// Schema of every table.
    pub schema: Schema,
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .finish()
    }
}

/// A URL (or `key=value` connection string) with any password replaced by `***`: in the user
/// info (`postgres://user:secret@host`) and in a `password` parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user info ends at the last `@` before the query.
        let query = rest.find('?').unwrap_or(rest.len());
        if let Some(at) = rest[..query].rfind('@')
            && let Some((user, _)) = rest[..at].split_once(':')
        {
            out = format!("{scheme}://{user}:***{}", &rest[at..]);
        }
    }
    // `password=…` as a URL query parameter or a key/value pair (quoted or not).
    let mut from = 0;
    while let Some(i) = out[from..].find("password").map(|i| i + from) {
        let before_ok = i == 0 || matches!(out.as_bytes()[i - 1], b'?' | b'&' | b' ' | b'\t');
        let mut j = i + "password".len();
        while out.as_bytes().get(j) == Some(&b' ') {
            j += 1;
        }
        if !before_ok || out.as_bytes().get(j) != Some(&b'=') {
            from = i + 1;
            continue;
        }
        j += 1;
        while out.as_bytes().get(j) == Some(&b' ') {
            j += 1;
        }
        let bytes = out.as_bytes();
        let end = if bytes.get(j) == Some(&b'\'') {
            let mut k = j + 1;
            while k < bytes.len() && bytes[k] != b'\'' {
                k += if bytes[k] == b'\\' { 2 } else { 1 };
            }
            (k + 1).min(bytes.len())
        } else {
            let mut k = j;
            while k < bytes.len() && !matches!(bytes[k], b'&' | b' ' | b'\t') {
                k += 1;
            }
            k
        };
        out.replace_range(j..end, "***");
        from = j + 3;
    }
    out
}

impl DbConfig {
    /// From the global flags: the URL with `--db-sslrootcert` folded in as its `sslrootcert`,
    /// checked (URL, `sslmode`, the CA file) before anything connects.
    ///
    /// # Errors
    /// When the URL is missing or unparsable, its TLS settings are invalid or the CA file
    /// cannot be read, or the schema name is invalid.
    pub fn from_args(g: &cli::GlobalArgs) -> Result<Self, ConfigError> {
        let mut url =
            g.database_url
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or(ConfigError::Missing(
                    "--database-url / NEXINGEST_DATABASE_URL",
                ))?;
        if let Some(ca) = &g.db_sslrootcert {
            url = crate::tls::with_root_cert(&url, ca)?;
        }
        let settings = crate::tls::parse_database_url(&url)?;
        settings.tls.load_roots()?;
        Ok(DbConfig {
            url,
            schema: Schema::new(&g.schema)?,
        })
    }
}

/// Limits on every AWS call (S3 and SQS), applied by [`crate::aws::clients`] through the SDK's
/// timeout configuration, and by [`crate::s3`] to download bodies (which the SDK's own timeouts
/// do not cover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    /// Establishing a connection (TCP and TLS): `--aws-connect-timeout`.
    pub connect: Duration,
    /// Waiting for the first byte of a response after sending a request, and for the next bytes
    /// of a response body while reading it: `--aws-read-timeout`. Must exceed the SQS long-poll
    /// wait, during which the server sends nothing.
    pub read: Duration,
    /// One call in all, retries included (the headers of a streamed S3 download; its body gets
    /// [`AwsTimeouts::transfer_deadline`]): `--aws-operation-timeout`.
    pub operation: Duration,
    /// One attempt of a call, after which the SDK retries it; `None`: attempts are bounded by
    /// the other timeouts only. `--aws-attempt-timeout`.
    pub attempt: Option<Duration>,
}

impl AwsTimeouts {
    /// Default `--aws-connect-timeout`, seconds.
    pub const DEFAULT_CONNECT_SECS: u64 = cli::DEFAULT_AWS_CONNECT_SECS;
    /// Default `--aws-read-timeout`, seconds (above the 20 s SQS long poll).
    pub const DEFAULT_READ_SECS: u64 = cli::DEFAULT_AWS_READ_SECS;
    /// Default `--aws-operation-timeout`, seconds.
    pub const DEFAULT_OPERATION_SECS: u64 = cli::DEFAULT_AWS_OPERATION_SECS;
    /// The slowest transfer rate (bytes/s) a download body may have before it is abandoned as
    /// stuck: see [`AwsTimeouts::transfer_deadline`].
    pub const MIN_TRANSFER_RATE: u64 = 32 * 1024;
    /// Upper limit of every timeout flag, seconds (a day).
    pub const MAX_SECS: u64 = 86_400;
    /// How much longer than the long-poll wait the read timeout must be.
    pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(5);

    /// From flags.
    ///
    /// # Errors
    /// When a timeout is zero or above a day, or the attempt timeout exceeds the operation
    /// timeout.
    pub fn from_args(a: &cli::AwsArgs) -> Result<Self, ConfigError> {
        let secs = |name: &'static str, v: u64| {
            if !(1..=Self::MAX_SECS).contains(&v) {
                Err(invalid(
                    name,
                    format!("{v}: use 1..={} seconds", Self::MAX_SECS),
                ))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        let t = AwsTimeouts {
            connect: secs("--aws-connect-timeout", a.aws_connect_timeout)?,
            read: secs("--aws-read-timeout", a.aws_read_timeout)?,
            operation: secs("--aws-operation-timeout", a.aws_operation_timeout)?,
            attempt: a
                .aws_attempt_timeout
                .map(|v| secs("--aws-attempt-timeout", v))
                .transpose()?,
        };
        if let Some(at) = t.attempt
            && at > t.operation
        {
            return Err(invalid(
                "--aws-attempt-timeout",
                format!(
                    "{} s is longer than --aws-operation-timeout ({} s), which bounds all attempts \
                     together",
                    at.as_secs(),
                    t.operation.as_secs()
                ),
            ));
        }
        Ok(t)
    }

    /// Checks the timeouts against an SQS long-poll wait: the server answers a receive only
    /// when a message arrives or the wait ends, so every timeout covering the wait for the
    /// response must be longer.
    ///
    /// # Errors
    /// Naming the flag that is too short.
    pub fn check_long_poll(&self, wait: Duration) -> Result<(), ConfigError> {
        let need = wait + Self::LONG_POLL_MARGIN;
        let too_short = |name: &'static str, d: Duration| {
            if d < need {
                Err(invalid(
                    name,
                    format!(
                        "{} s is too short for --wait-time {} s: an SQS long poll sends nothing \
                         until a message arrives or the wait ends, so it must be at least {} s \
                         (wait time + {} s)",
                        d.as_secs(),
                        wait.as_secs(),
                        need.as_secs(),
                        Self::LONG_POLL_MARGIN.as_secs()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        too_short("--aws-read-timeout", self.read)?;
        too_short("--aws-operation-timeout", self.operation)?;
        if let Some(a) = self.attempt {
            too_short("--aws-attempt-timeout", a)?;
        }
        Ok(())
    }

    /// How long downloading `bytes` of a body may take in all: the operation timeout (for the
    /// request) plus one second per [`AwsTimeouts::MIN_TRANSFER_RATE`] bytes. A body that
    /// stops altogether fails sooner, after the read timeout.
    pub fn transfer_deadline(&self, bytes: u64) -> Duration {
        self.operation + Duration::from_secs(bytes.div_ceil(Self::MIN_TRANSFER_RATE))
    }
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            connect: Duration::from_secs(Self::DEFAULT_CONNECT_SECS),
            read: Duration::from_secs(Self::DEFAULT_READ_SECS),
            operation: Duration::from_secs(Self::DEFAULT_OPERATION_SECS),
            attempt: None,
        }
    }
}

/// How the data buckets are read: their region and whether requests are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Access {
    /// Region of the data buckets (`--s3-region`), apart from the queue's.
    pub region: String,
    /// Send S3 requests unsigned (`--s3-no-sign-request`): public buckets, no credentials.
    pub no_sign_request: bool,
}

impl S3Access {
    /// Default `--s3-region`: where `nasanex` and `nex-gddp-cmip6` live.
    pub const DEFAULT_REGION: &str = cli::DEFAULT_S3_REGION;

    /// From flags.
    ///
    /// # Errors
    /// When the region is not a plausible AWS region name.
    pub fn from_args(a: &cli::AwsArgs) -> Result<Self, ConfigError> {
        let region = a.s3_region.trim();
        let ok = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(invalid(
                "--s3-region",
                format!("{region:?} is not an AWS region name (e.g. us-west-2)"),
            ));
        }
        Ok(S3Access {
            region: region.to_owned(),
            no_sign_request: a.s3_no_sign_request,
        })
    }
}

impl Default for S3Access {
    fn default() -> Self {
        S3Access {
            region: Self::DEFAULT_REGION.into(),
            no_sign_request: false,
        }
    }
}

/// AWS endpoint, data buckets and the bucket allow-list.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Custom endpoint (path-style S3, checksums when required).
    pub endpoint_url: Option<String>,
    /// Bucket per dataset.
    pub nex_gddp_bucket: String,
    /// LOCA bucket.
    pub loca_bucket: String,
    /// NEX-GDDP-CMIP6 bucket.
    pub cmip6_bucket: String,
    /// Every bucket a message may name (data buckets included).
    pub allowed_buckets: BTreeSet<String>,
    /// Timeouts of every S3 and SQS call.
    pub timeouts: AwsTimeouts,
    /// Region and signing of S3 requests.
    pub s3: S3Access,
}

/// Whether a string is a plausible S3 bucket name (3–63 of `[a-z0-9.-]`).
pub fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
}

impl AwsConfig {
    /// From flags.
    ///
    /// # Errors
    /// On an invalid endpoint URL, bucket name or timeout.
    pub fn from_args(a: &cli::AwsArgs) -> Result<Self, ConfigError> {
        let endpoint_url = a
            .aws_endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|u| !u.is_empty());
        if let Some(u) = &endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid("AWS endpoint URL", format!("{u:?} is not http(s)")));
        }
        let mut allowed = BTreeSet::new();
        for b in [&a.nex_gddp_bucket, &a.loca_bucket, &a.cmip6_bucket]
            .into_iter()
            .chain(a.allowed_buckets.iter())
        {
            let b = b.trim();
            if b.is_empty() {
                continue;
            }
            if !valid_bucket_name(b) {
                return Err(invalid(
                    "bucket",
                    format!("{b:?} is not a valid bucket name"),
                ));
            }
            allowed.insert(b.to_owned());
        }
        Ok(AwsConfig {
            endpoint_url,
            nex_gddp_bucket: a.nex_gddp_bucket.clone(),
            loca_bucket: a.loca_bucket.clone(),
            cmip6_bucket: a.cmip6_bucket.clone(),
            allowed_buckets: allowed,
            timeouts: AwsTimeouts::from_args(a)?,
            s3: S3Access::from_args(a)?,
        })
    }

    /// The configured bucket of a dataset.
    pub fn bucket(&self, d: Dataset) -> &str {
        match d {
            Dataset::NexGddp => &self.nex_gddp_bucket,
            Dataset::Loca => &self.loca_bucket,
            Dataset::NexGddpCmip6 => &self.cmip6_bucket,
        }
    }

    /// Whether a message may name this bucket.
    pub fn bucket_allowed(&self, b: &str) -> bool {
        self.allowed_buckets.contains(b)
    }
}

/// Validated pipeline tuning.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Memory budget for decoded grids, bytes.
    pub memory_budget: u64,
    /// Where downloads go.
    pub work_dir: PathBuf,
    /// Parallel ranged GETs per file.
    pub download_concurrency: usize,
    /// Bytes per ranged GET (the largest coalesced GET of a file read by ranges).
    pub download_part: u64,
    /// Read S3 files by ranges while they decode (no temp file); `false`: download each file
    /// whole to `work_dir` first (`--download-to-disk`).
    pub stream: bool,
    /// Chunks at most this many bytes apart are fetched by one GET (`--range-gap-kb`).
    pub range_gap: u64,
    /// Nearest-data-cell search radius, km.
    pub search_radius_km: f64,
    /// Per-job time limit (waits for a load slot excluded).
    pub job_timeout: Duration,
    /// Load transactions allowed in flight at once across the fleet (`None`: no limit).
    pub max_db_loads: Option<u32>,
}

impl PipelineConfig {
    /// From flags.
    ///
    /// # Errors
    /// On out-of-range values.
    pub fn from_args(p: &cli::PipelineArgs) -> Result<Self, ConfigError> {
        if p.memory_budget_mb < 64 {
            return Err(invalid("--memory-budget-mb", "at least 64"));
        }
        if !(1..=64).contains(&p.download_concurrency) {
            return Err(invalid("--download-concurrency", "1..=64"));
        }
        if !(1..=1024).contains(&p.download_part_mb) {
            return Err(invalid("--download-part-mb", "1..=1024"));
        }
        if p.range_gap_kb > 65536 {
            return Err(invalid("--range-gap-kb", "0..=65536"));
        }
        if !(p.search_radius_km >= 0.0 && p.search_radius_km <= 1000.0) {
            return Err(invalid("--search-radius-km", "0..=1000"));
        }
        if p.job_timeout == 0 {
            return Err(invalid("--job-timeout", "must be positive"));
        }
        if let Some(n) = p.max_db_loads
            && !(1..=MAX_DB_LOADS).contains(&n)
        {
            return Err(invalid(
                "--max-db-loads",
                format!("{n}: use 1..={} (unset for no limit)", MAX_DB_LOADS),
            ));
        }
        let work_dir = p.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(PipelineConfig {
            memory_budget: p.memory_budget_mb * 1024 * 1024,
            work_dir,
            download_concurrency: p.download_concurrency,
            download_part: p.download_part_mb * 1024 * 1024,
            stream: !p.download_to_disk,
            range_gap: p.range_gap_kb * 1024,
            search_radius_km: p.search_radius_km,
            job_timeout: Duration::from_secs(p.job_timeout),
            max_db_loads: p.max_db_loads,
        })
    }
}

/// The largest `--max-db-loads`: the load slots are advisory locks numbered 1..=this
/// ([`crate::pipeline::throttle`]).
pub const MAX_DB_LOADS: u32 = 1024;

/// Which queue.
#[derive(Debug, Clone)]
pub enum QueueRef {
    /// By URL.
    Url(String),
    /// By name.
    Name(String),
}

impl QueueRef {
    /// From flags.
    ///
    /// # Errors
    /// When neither is given, or the name is invalid.
    pub fn from_args(q: &cli::QueueArgs) -> Result<Self, ConfigError> {
        match (&q.queue_url, &q.queue_name) {
            (Some(u), _) if !u.is_empty() => Ok(QueueRef::Url(u.clone())),
            (_, Some(n)) if !n.is_empty() => {
                let ok = n.len() <= 80
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if ok {
                    Ok(QueueRef::Name(n.clone()))
                } else {
                    Err(invalid("--queue-name", format!("{n:?}")))
                }
            }
            _ => Err(ConfigError::Missing("--queue-url or --queue-name")),
        }
    }
}

/// `host:pid`, for the ledger and logs.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(Schema::new("nexingest").is_ok());
        assert!(Schema::new("t_1").is_ok());
        assert!(Schema::new("Bad").is_err());
        assert!(Schema::new("a\"; drop").is_err());
        assert!(Schema::new("1a").is_err());
        assert!(Schema::new("").is_err());
        assert_eq!(
            Schema::new("x").unwrap().table("map_cell"),
            "\"x\".\"map_cell\""
        );
    }

    #[test]
    fn transfer_deadline_scales_with_the_part() {
        let t = AwsTimeouts::default();
        assert_eq!(t.transfer_deadline(0), Duration::from_secs(120));
        assert_eq!(t.transfer_deadline(1), Duration::from_secs(121));
        assert_eq!(
            t.transfer_deadline(16 << 20),
            Duration::from_secs(120 + 512)
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db?sslmode=verify-full&password=x&app=password"),
            "postgres://u:***@h/db?sslmode=verify-full&password=***&app=password"
        );
        assert_eq!(
            redact_url(r"host=h password = 'it\'s secret' user=u"),
            "host=h password = *** user=u"
        );
        assert_eq!(redact_url("host=h password=s3cret"), "host=h password=***");
    }
}

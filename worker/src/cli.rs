//! Command-line flags (clap). Every flag also reads an environment variable, so an ECS task
//! definition can configure the worker through its environment alone. Raw flags become a
//! validated [`crate::config`] value before anything connects anywhere.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::metrics::MetricsFormat;

/// Default of `--aws-connect-timeout`, seconds (also [`crate::config::AwsTimeouts`]'s).
pub const DEFAULT_AWS_CONNECT_SECS: u64 = 5;
/// Default of `--aws-read-timeout`, seconds.
pub const DEFAULT_AWS_READ_SECS: u64 = 60;
/// Default of `--aws-operation-timeout`, seconds.
pub const DEFAULT_AWS_OPERATION_SECS: u64 = 120;
/// Default of `--s3-region`: the public NEX buckets' region.
pub const DEFAULT_S3_REGION: &str = "us-west-2";

/// nexingest: load NEX-GDDP, LOCA and NEX-GDDP-CMIP6 daily grids into PostgreSQL.
///
/// Jobs are (dataset, scenario, model, year). `enqueue` publishes them to SQS, `run` consumes
/// them (S3 download, decode, binary COPY in one transaction with the job state), `ingest` runs
/// the same pipeline on local files. AWS credentials come from the standard AWS chain
/// (environment, profile, ECS task role); they are never logged.
#[derive(Debug, Parser)]
#[command(
    name = "nexingest",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL connection URL (`postgres://user@host:port/db`); a password in it is never
    /// logged. Needed by every subcommand that touches the database. TLS as libpq:
    /// `?sslmode=disable|prefer|require|verify-ca|verify-full` (default `prefer`: TLS when the
    /// server offers it) and `&sslrootcert=PATH`; in production use
    /// `sslmode=verify-full` with the server's CA bundle (RDS: `global-bundle.pem`).
    #[arg(
        long,
        env = "NEXINGEST_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// CA certificates (PEM) the database server's certificate must chain to, as the URL's
    /// `sslrootcert` (for RDS: `global-bundle.pem`). With `sslmode` `prefer` or `require` it
    /// turns on the chain check (as libpq); `verify-full` also checks the host name. Without
    /// it, `verify-ca`/`verify-full` use the system's CA certificates.
    #[arg(long, env = "NEXINGEST_DB_SSLROOTCERT", global = true)]
    pub db_sslrootcert: Option<PathBuf>,

    /// Database schema holding every table (created by `migrate`). Lower-case letters, digits
    /// and `_`, at most 63 characters.
    #[arg(
        long,
        env = "NEXINGEST_SCHEMA",
        default_value = "nexingest",
        global = true
    )]
    pub schema: String,

    /// Log format: `text` for terminals, `json` (one object per line) for CloudWatch.
    #[arg(long, env = "NEXINGEST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,worker=debug`). `RUST_LOG` also works.
    #[arg(long, env = "NEXINGEST_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (CloudWatch Logs friendly).
    Json,
}

/// AWS endpoint and where the data files live.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Custom AWS endpoint for S3 and SQS (local moto, LocalStack, a VPC endpoint). With it,
    /// S3 uses path-style addressing and checksums only when required. `AWS_ENDPOINT_URL` is
    /// honoured too when this is unset.
    #[arg(long, env = "NEXINGEST_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Bucket holding NEX-GDDP files (key template of DESIGN §1).
    #[arg(long, env = "NEXINGEST_NEX_GDDP_BUCKET", default_value = "nasanex")]
    pub nex_gddp_bucket: String,

    /// Bucket holding LOCA files.
    #[arg(long, env = "NEXINGEST_LOCA_BUCKET", default_value = "nasanex")]
    pub loca_bucket: String,

    /// Bucket holding NEX-GDDP-CMIP6 files.
    #[arg(long, env = "NEXINGEST_CMIP6_BUCKET", default_value = "nex-gddp-cmip6")]
    pub cmip6_bucket: String,

    /// Send S3 requests unsigned, like the AWS CLI's `--no-sign-request`: reads the public
    /// buckets (`nasanex`, `nex-gddp-cmip6`) with no AWS account. Only S3: SQS still signs
    /// with the standard credential chain.
    #[arg(
        long,
        env = "NEXINGEST_S3_NO_SIGN_REQUEST",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub s3_no_sign_request: bool,

    /// Region of the data buckets (S3), apart from the queue's: SQS takes the standard chain's
    /// region (`AWS_REGION`, profile).
    #[arg(long, env = "NEXINGEST_S3_REGION", default_value = DEFAULT_S3_REGION)]
    pub s3_region: String,

    /// Further buckets a message may name (data `bucket` override, GeoJSON location URLs),
    /// comma-separated. The three data buckets above are always allowed.
    #[arg(long, env = "NEXINGEST_ALLOWED_BUCKETS", value_delimiter = ',')]
    pub allowed_buckets: Vec<String>,

    /// Seconds to wait for a connection (TCP and TLS) to S3 or SQS before the attempt fails
    /// and is retried.
    #[arg(
        long,
        env = "NEXINGEST_AWS_CONNECT_TIMEOUT",
        value_name = "SECS",
        default_value_t = DEFAULT_AWS_CONNECT_SECS
    )]
    pub aws_connect_timeout: u64,

    /// Seconds to wait for the first byte of an S3 or SQS response, and, while an S3 file is
    /// downloading, for its next bytes (a stalled part fails as transient and the job is
    /// retried). For `run` it must be at least `--wait-time` + 5 s: an SQS long poll sends
    /// nothing until a message arrives or the wait ends.
    #[arg(
        long,
        env = "NEXINGEST_AWS_READ_TIMEOUT",
        value_name = "SECS",
        default_value_t = DEFAULT_AWS_READ_SECS
    )]
    pub aws_read_timeout: u64,

    /// Seconds one S3 or SQS call may take in all, retries included. A ranged GET of a
    /// download gets this for its request plus 1 s per 32 KiB of the part for its body.
    #[arg(
        long,
        env = "NEXINGEST_AWS_OPERATION_TIMEOUT",
        value_name = "SECS",
        default_value_t = DEFAULT_AWS_OPERATION_SECS
    )]
    pub aws_operation_timeout: u64,

    /// Seconds a single attempt of an S3 or SQS call may take before the SDK retries it
    /// (at most `--aws-operation-timeout`). Unset: attempts are bounded only by the timeouts
    /// above.
    #[arg(long, env = "NEXINGEST_AWS_ATTEMPT_TIMEOUT", value_name = "SECS")]
    pub aws_attempt_timeout: Option<u64>,
}

/// Which queue to use.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Queue URL. Either this or `--queue-name`.
    #[arg(long, env = "NEXINGEST_QUEUE_URL", conflicts_with = "queue_name")]
    pub queue_url: Option<String>,

    /// Queue name, resolved to its URL (or created by `enqueue --create-queue`).
    #[arg(long, env = "NEXINGEST_QUEUE_NAME")]
    pub queue_name: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the database schema (versioned, embedded migrations) and seed the
    /// datasets, models and scenarios. Safe to run repeatedly and concurrently.
    Migrate,

    /// Publish the job matrix to SQS, like the old `create_jobs`: one message per
    /// (model, year) of one dataset and scenario.
    Enqueue(EnqueueArgs),

    /// Consume jobs from SQS until stopped (SIGTERM/SIGINT drain) or, with `--until-empty`,
    /// until the queue is empty. Besides job messages, the queue may receive S3
    /// `ObjectCreated` event notifications of dataset files (see `--event-locations`).
    Run(RunArgs),

    /// Run the pipeline on local NetCDF files (no AWS): one job from the given files or a
    /// directory holding them.
    Ingest(IngestArgs),

    /// Import GeoJSON points (a FeatureCollection) into the `location` table.
    ImportLocations(ImportLocationsArgs),

    /// Show job counts by dataset, scenario and state, rows, throughput and recent failures.
    Status(StatusArgs),

    /// List data sources with their state and latest job-ledger entry (attempts, last error,
    /// rows, durations). A `running` data source whose attempt started longer ago than
    /// `--stale-after` is shown as `stale`: its worker is gone.
    Jobs(JobsArgs),

    /// Send failed or stale jobs again: moves matching data sources `failed → pending` (or
    /// stale `running → pending`) and sends their job (same variables and location source as
    /// their last attempt) as a native message, in batches. With `--from-dlq`, moves the
    /// dead-letter queue's messages back to the queue instead.
    Requeue(RequeueArgs),

    /// Check the database before a load: version, TLS, schema version, array storage,
    /// connections for the planned workers, WAL and checkpoint settings, autovacuum, current
    /// and planned size. Prints the parameters to set for the load and what to revert after
    /// it; exits non-zero when a check fails (a blocker).
    Doctor(DoctorArgs),

    /// After a load: `VACUUM (ANALYZE)` of the tables a load writes, with their sizes and dead
    /// rows before and after (the runbook's closing `VACUUM ANALYZE`).
    Finalize(FinalizeArgs),

    /// Quick-look PNG plots for QA: a location's daily series across models from the database,
    /// or one day of a NetCDF file as a map.
    Plot(PlotArgs),

    /// Derive the historic data the API serves from the loaded `historical` scenario (the old
    /// `generate_historic`): per dataset and period, each cell's average year (366 slots by
    /// calendar date, Feb 29 from leap years only) and its percentile baselines (1, 5, 95, 99:
    /// each model's percentile over the period, pr on wet days only, then the mean over the
    /// models). Each (dataset, period) replaces its earlier results in one transaction; then
    /// the tables are analyzed. Run it after a load.
    DeriveHistoric(DeriveHistoricArgs),

    /// Size a load by trying it: generate a full-size job (tasmin, tasmax and pr of one
    /// NEX-GDDP-CMIP6 year, 365 × 600 × 1440, with the fixture generator; cached in
    /// `--work-dir`), load it through the real job pipeline (as `ingest` does) into a scratch
    /// schema made for the run and dropped after it, and report the job time, rows/s, MB/s
    /// of the binary COPY stream, bytes per row on disk and WAL bytes per job. The result
    /// is kept in the main schema's `bench_result` table (when it is migrated), where `doctor`
    /// takes it for its size and time estimates. Needs a role that may create schemas in the
    /// database; no AWS.
    Bench(BenchArgs),
}

/// Which data sources (`jobs`, `requeue`).
#[derive(Debug, Clone, Args)]
pub struct JobFilterArgs {
    /// Only this dataset (NEX-GDDP, LOCA, NEX-GDDP-CMIP6; case-insensitive).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Only this scenario (case-insensitive).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Only this model (case-insensitive).
    #[arg(long)]
    pub model: Option<String>,
    /// Only these years: comma-separated years and ranges (`2006,2010-2020`).
    #[arg(long)]
    pub years: Option<String>,
    /// Only data sources with activity (created, attempt started or finished) since this: a
    /// time ago (`90s`, `30m`, `6h`, `2d`) or a timestamp PostgreSQL reads (`2026-11-25`,
    /// `2026-11-25 08:00:00+00`).
    #[arg(long, value_name = "AGO|TIMESTAMP")]
    pub since: Option<String>,
    /// Seconds without a heartbeat after which a `running` data source counts as `stale`
    /// (its worker is gone). A worker records one when an attempt starts and at each extension
    /// of the message's visibility (every third of `NEXINGEST_VISIBILITY_TIMEOUT`, 120 s;
    /// `ingest` every 30 s), so the default, 300 s, is 2.5 visibility timeouts.
    #[arg(
        long,
        env = "NEXINGEST_STALE_AFTER",
        value_name = "SECS",
        default_value_t = 300
    )]
    pub stale_after: u64,
}

/// The values of `jobs --state`: the data source states the listing shows.
pub const SHOWN_STATES: [&str; 5] = ["pending", "running", "stale", "done", "failed"];

/// `jobs` flags.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Which data sources.
    #[command(flatten)]
    pub filter: JobFilterArgs,
    /// Only these states, comma-separated: pending (waiting for an attempt), running (started
    /// within --stale-after), stale (running, but started longer ago), done, failed (the last
    /// attempt failed permanently).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(SHOWN_STATES)
    )]
    pub state: Vec<String>,
    /// Print at most this many data sources (0: all).
    #[arg(long, default_value_t = 200)]
    pub limit: u64,
    /// Print JSON (one object with a `jobs` array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A state `requeue` moves to `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequeueState {
    /// `failed → pending`.
    Failed,
    /// `running → pending` for `running` data sources older than `--stale-after`.
    Stale,
}

/// `requeue` flags.
#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// Queue to send to (not needed for a `--dry-run` of data sources).
    #[command(flatten)]
    pub queue: QueueArgs,
    /// AWS endpoint and allowed buckets (GeoJSON location URLs are checked again).
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Which data sources.
    #[command(flatten)]
    pub filter: JobFilterArgs,
    /// Which data sources to move to `pending`.
    #[arg(long, value_enum, default_value_t = RequeueState::Failed, conflicts_with = "from_dlq")]
    pub state: RequeueState,
    /// For data sources whose ledger does not record their location source (an attempt that
    /// failed before resolving it, or a first attempt whose worker died): send them with this
    /// one (`all`, `cities[:SOURCE]`, `geojson:URL`, `boundary:URL`). Without it they are
    /// listed and left alone.
    #[arg(long, conflicts_with = "from_dlq")]
    pub locations: Option<String>,
    /// Variables for data sources whose ledger records none (with `--locations`).
    #[arg(long, value_delimiter = ',', default_value = "tasmin,tasmax,pr")]
    pub variables: Vec<String>,
    /// Data sources per transaction (their state changes commit after their messages were
    /// sent).
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Redrive this dead-letter queue (name or URL) instead: receive its messages, send each
    /// to the queue, delete it from the dead-letter queue only after the send succeeded (a
    /// message is never lost; one whose delete fails may be sent twice, and a job delivered
    /// twice runs once).
    #[arg(long, value_name = "QUEUE")]
    pub from_dlq: Option<String>,
    /// With `--from-dlq`: move at most this many messages (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_messages: usize,
    /// Print what would be done; change nothing, send nothing (with `--from-dlq`, messages
    /// are received, printed and made visible again).
    #[arg(long)]
    pub dry_run: bool,
}

/// `doctor` flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Worker processes (ECS tasks) planned for the load.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Jobs each worker runs at once (`run --jobs`); each worker's connection pool holds up
    /// to 2 × this + 2 connections.
    #[arg(long, env = "NEXINGEST_JOBS", default_value_t = 2)]
    pub worker_jobs: u32,
    /// Jobs (data sources × location sources) the planned load will run, for the size it
    /// adds.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u64>,
    /// Cells each planned job loads: `all` (the dataset's data cells: measured from a loaded
    /// `all` job of the dataset, else its whole grid as an upper bound) or a number (e.g. the
    /// number of cities).
    #[arg(long, default_value = "all")]
    pub cells: String,
    /// Dataset of the planned load (for `--cells all`).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Variables each planned row holds.
    #[arg(long, value_delimiter = ',', default_value = "tasmin,tasmax,pr")]
    pub variables: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Pipeline tuning, as for `run`: `--work-dir` holds the generated files (about 600 MB
    /// for the whole grid, kept for the next run), `--memory-budget-mb` limits how many jobs
    /// decode at once, `--max-db-loads` how many COPYs run at once.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Data cells each job loads: `all` (the whole grid's 383,727 data cells: one job as
    /// production runs it) or a number N for a quick try (N data cells spread evenly over
    /// the grid, loaded as GeoJSON points; the files are still generated in full).
    #[arg(long, default_value = "all")]
    pub cells: String,
    /// Jobs to run at once, the way `run --jobs K` runs them (one pipeline, one connection
    /// pool, the memory budget): the same files under K model names. Rows/s is then the
    /// aggregate over the K jobs.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Do not record the result in the main schema's `bench_result` table (for `doctor`).
    #[arg(long)]
    pub no_save: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress bars (logs only).
    #[arg(long)]
    pub no_progress: bool,
    /// Test only: a 365 × 20 × 20 grid instead of the full one (fast to generate).
    #[arg(long, hide = true)]
    pub test_grid: bool,
    /// Then run the jobs again with their files in S3, read through a link of this many
    /// megabits per second (2500: an m5.2xlarge's baseline): once by ranges (the default
    /// path), once downloaded whole first (`--download-to-disk`), each in a fresh scratch
    /// schema. Prints each one's time ÷ max(transfer at this rate, the local run's time): how
    /// close a job gets to its link. The link is a local proxy in front of
    /// `--aws-endpoint-url`, which must be a plain `http://` S3 (the local moto of
    /// `scripts/services.sh`); the files are uploaded to `--cmip6-bucket` (created when
    /// missing) under the jobs' keys, once.
    #[arg(long, value_name = "MBPS")]
    pub link_mbps: Option<f64>,
    /// With `--link-mbps`: milliseconds added to each request (a round trip to S3).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub link_latency_ms: u64,
    /// With `--link-mbps`: the S3 endpoint and the bucket the files go to.
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `finalize` flags.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// Tables to vacuum, comma-separated (default: every table a load writes).
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// `VACUUM (FREEZE, ANALYZE)`: also freeze the rows now, so the table's first
    /// anti-wraparound vacuum does not rewrite the whole load later (more I/O now).
    #[arg(long)]
    pub freeze: bool,
    /// Print the tables, sizes and statements; vacuum nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `plot` flags.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Which plot.
    #[command(subcommand)]
    pub kind: PlotKind,
}

/// The plots.
#[derive(Debug, Subcommand)]
pub enum PlotKind {
    /// Daily values of one location across models, from the database: the median of the
    /// models per day as a line, their minimum–maximum as a band, units on the value axis.
    Series(PlotSeriesArgs),
    /// One day of a NetCDF file on a colour scale (2nd–98th percentile of the day), cells
    /// without data grey.
    Map(PlotMapArgs),
}

/// `plot series` flags.
#[derive(Debug, Args)]
pub struct PlotSeriesArgs {
    /// Latitude of the location (degrees north).
    #[arg(long, allow_hyphen_values = true)]
    pub lat: f64,
    /// Longitude of the location (degrees east, -180..360).
    #[arg(long, allow_hyphen_values = true)]
    pub lon: f64,
    /// Dataset.
    #[arg(long)]
    pub dataset: String,
    /// Scenario.
    #[arg(long)]
    pub scenario: String,
    /// Years to plot: `2050` or `2040-2060`.
    #[arg(long)]
    pub year_range: String,
    /// Variable.
    #[arg(long, default_value = "tasmax")]
    pub variable: String,
    /// `all` or a comma-separated list of models.
    #[arg(long, default_value = "all")]
    pub models: String,
    /// Output PNG file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Image width, pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: u32,
    /// Image height, pixels.
    #[arg(long, default_value_t = 600)]
    pub height: u32,
}

/// `plot map` flags.
#[derive(Debug, Clone, Args)]
pub struct PlotMapArgs {
    /// NetCDF file. The whole year is decoded (about cells × days × 4 bytes of memory).
    pub file: PathBuf,
    /// Day of the year, 1-based (1 = Jan 1; 366 only in leap years).
    #[arg(long)]
    pub day: u32,
    /// Year (default: the file's first year).
    #[arg(long)]
    pub year: Option<i32>,
    /// Variable (default: the file's `(time, lat, lon)` variable).
    #[arg(long)]
    pub variable: Option<String>,
    /// Output PNG file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Image width, pixels (default: about 2 pixels per cell, within 600..1600).
    #[arg(long)]
    pub width: Option<u32>,
    /// Image height, pixels (default: from the width and the grid's aspect).
    #[arg(long)]
    pub height: Option<u32>,
}

/// `derive-historic` flags.
#[derive(Debug, Args)]
pub struct DeriveHistoricArgs {
    /// Dataset (NEX-GDDP, LOCA, NEX-GDDP-CMIP6); default: every dataset with historical data.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Periods as START-END, comma-separated (`1971-2000,1981-2010`); each must be fully
    /// loaded. Default: every 30-year window starting at a year ending in 1 (1951-1980,
    /// 1961-1990, …) whose years are all loaded.
    #[arg(long)]
    pub periods: Option<String>,
    /// Cells: `all` (every cell with historical data) or `cities` / `cities:SOURCE` (the cells
    /// of the imported locations; only their earlier results are replaced).
    #[arg(long, default_value = "all")]
    pub cells: String,
    /// Threads computing cells (default: the number of cores).
    #[arg(long, env = "NEXINGEST_DERIVE_JOBS")]
    pub jobs: Option<usize>,
    /// Parallel input streams (`COPY … TO` connections, each over a range of cells).
    #[arg(long, env = "NEXINGEST_DERIVE_STREAMS", default_value_t = 2)]
    pub streams: usize,
    /// No progress bar (logs only).
    #[arg(long)]
    pub no_progress: bool,
}

/// `enqueue` flags.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Queue to publish to.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// AWS endpoint and allowed buckets (to validate location URLs up front).
    #[command(flatten)]
    pub aws: AwsArgs,

    /// Dataset: NEX-GDDP, LOCA or NEX-GDDP-CMIP6.
    #[arg(long)]
    pub dataset: String,
    /// Scenario (`historical`, `rcp45`, `rcp85`, `ssp245`, …; case-insensitive).
    #[arg(long)]
    pub scenario: String,
    /// `all` or a comma-separated list of models.
    #[arg(long, default_value = "all")]
    pub models: String,
    /// `all` (the scenario's whole range) or a comma-separated list of years and ranges
    /// (`2006,2010-2020`).
    #[arg(long, default_value = "all")]
    pub years: String,
    /// Variables to load, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "tasmin,tasmax,pr")]
    pub variables: Vec<String>,
    /// Location source: `all` (every data cell), `cities` (the `location` table, optionally
    /// `cities:SOURCE` for one import source), `geojson:URL` (points) or `boundary:URL`
    /// (polygon: every cell it touches). URLs are `s3://bucket/key` or S3 https URLs of an
    /// allowed bucket.
    #[arg(long, default_value = "all")]
    pub locations: String,
    /// Reload jobs that are already done (otherwise a finished job's message is dropped).
    #[arg(long)]
    pub update_existing: bool,
    /// Publish the old Django system's message form (`scenario_id`, `model_id`, `year` as a
    /// string); ids are looked up in the database, so `--database-url` is needed.
    #[arg(long)]
    pub legacy_format: bool,

    /// Create the queue (and its dead-letter queue) if missing.
    #[arg(long)]
    pub create_queue: bool,
    /// Dead-letter queue name (default: `<queue>-dlq`), used with `--create-queue`.
    #[arg(long)]
    pub dlq_name: Option<String>,
    /// Receives before SQS moves a message to the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    pub max_receive_count: u32,
    /// Queue visibility timeout in seconds, used with `--create-queue`.
    #[arg(long, default_value_t = 300)]
    pub queue_visibility_timeout: u32,
    /// Print the messages instead of sending them (the input check still runs and reports
    /// what it would skip).
    #[arg(long)]
    pub dry_run: bool,
    /// Enqueue only jobs whose every variable file exists: list the bucket once per model and
    /// variable, resolve each year's key as the worker does (versions, grid labels) and print
    /// a table of the skipped jobs. This is the default; given explicitly, a listing that fails
    /// (no network, no credentials, access denied) is an error instead of a warning.
    #[arg(long, overrides_with = "no_check_inputs")]
    pub check_inputs: bool,
    /// Enqueue the whole matrix without looking at S3.
    #[arg(long, overrides_with = "check_inputs")]
    pub no_check_inputs: bool,
}

/// `run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Queue to consume.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// AWS endpoint and buckets.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Pipeline tuning.
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Maximum jobs in flight at once (further bounded by `--memory-budget-mb`).
    #[arg(long, env = "NEXINGEST_JOBS", default_value_t = 2)]
    pub jobs: usize,
    /// Visibility timeout (seconds) each heartbeat extends an in-flight message to; the
    /// heartbeat fires every third of it.
    #[arg(long, env = "NEXINGEST_VISIBILITY_TIMEOUT", default_value_t = 120)]
    pub visibility_timeout: u32,
    /// Long-poll wait per receive, seconds (0–20).
    #[arg(long, env = "NEXINGEST_WAIT_TIME", default_value_t = 20)]
    pub wait_time: u32,
    /// On SIGTERM/SIGINT: seconds to let in-flight jobs finish before rolling them back and
    /// releasing their messages (ECS allows at most 120 s after SIGTERM).
    #[arg(long, env = "NEXINGEST_DRAIN_TIMEOUT", default_value_t = 90)]
    pub drain_timeout: u64,
    /// Exit once a receive finds the queue empty and no job is in flight.
    #[arg(long)]
    pub until_empty: bool,
    /// Attempts for transient failures within one delivery (jittered exponential backoff).
    #[arg(long, env = "NEXINGEST_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: usize,
    /// Visibility (seconds) given to a message whose job failed permanently, before SQS
    /// delivers it again (and, after maxReceiveCount, moves it to the dead-letter queue).
    #[arg(long, env = "NEXINGEST_FAILED_VISIBILITY", default_value_t = 0)]
    pub failed_visibility: u32,
    /// Visibility (seconds) given to a message released after a transient failure (database
    /// or S3 unavailable after `--max-attempts` tries): it doubles with each receive of the
    /// message (jittered down to half), up to `--retry-visibility-max`, so an outage does not
    /// use up the queue's maxReceiveCount in seconds.
    #[arg(long, env = "NEXINGEST_RETRY_VISIBILITY", default_value_t = 30)]
    pub retry_visibility: u32,
    /// Largest release visibility (seconds) after transient failures.
    #[arg(long, env = "NEXINGEST_RETRY_VISIBILITY_MAX", default_value_t = 900)]
    pub retry_visibility_max: u32,
    /// Metrics: `emf` writes a CloudWatch Embedded Metric Format JSON line to stdout per
    /// message (rows, bytes, download/decode/load seconds, queue wait, outcome; dimensions
    /// dataset and scenario) and the worker's totals when it stops.
    #[arg(long, env = "NEXINGEST_METRICS", value_enum, default_value_t = MetricsFormat::None)]
    pub metrics: MetricsFormat,
    /// CloudWatch namespace of the metrics.
    #[arg(long, env = "NEXINGEST_METRICS_NAMESPACE", default_value = "nexingest")]
    pub metrics_namespace: String,
    /// Location source of the jobs made from S3 `ObjectCreated` event notifications (`all`,
    /// `cities`, `cities:SOURCE`, `geojson:URL`, `boundary:URL`).
    #[arg(long, env = "NEXINGEST_EVENT_LOCATIONS", default_value = "cities")]
    pub event_locations: String,
}

/// Tuning shared by `run` and `ingest`.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Memory budget (MiB) for decoded grids of all jobs in flight; a job needs about
    /// cells × days × 4 bytes per variable (~1.5 GB for a whole 0.25° global variable-year).
    #[arg(long, env = "NEXINGEST_MEMORY_BUDGET_MB", default_value_t = 6144)]
    pub memory_budget_mb: u64,
    /// Directory for files downloaded whole (default: the system temp directory): those
    /// that cannot be read by ranges, or all with --download-to-disk. Files are removed when
    /// their job ends.
    #[arg(long, env = "NEXINGEST_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Download each S3 file whole to --work-dir before decoding it, instead of reading it by
    /// ranges while it decodes (which needs no disk, fetches only the chunks a job's cells
    /// need and holds at most 96 MiB ahead of the decoder per file). For hosts with little
    /// memory, or to compare.
    #[arg(long, env = "NEXINGEST_DOWNLOAD_TO_DISK")]
    pub download_to_disk: bool,
    /// Parallel ranged GETs per file.
    #[arg(long, env = "NEXINGEST_DOWNLOAD_CONCURRENCY", default_value_t = 8)]
    pub download_concurrency: usize,
    /// Size (MiB) of each ranged GET (the most one GET of a file read by ranges asks for).
    #[arg(long, env = "NEXINGEST_DOWNLOAD_PART_MB", default_value_t = 16)]
    pub download_part_mb: u64,
    /// Reading by ranges, chunks at most this many KiB apart are fetched by one GET (the
    /// bytes between them are dropped): fewer requests against a few more bytes.
    #[arg(long, env = "NEXINGEST_RANGE_GAP_KB", default_value_t = 16)]
    pub range_gap_kb: u64,
    /// Radius (km) within which a location without data in its own cell takes the nearest
    /// data cell.
    #[arg(long, env = "NEXINGEST_SEARCH_RADIUS_KM", default_value_t = 50.0)]
    pub search_radius_km: f64,
    /// Seconds a single job may take before it is abandoned (rolled back) as transient
    /// (time spent waiting for a `--max-db-loads` slot does not count).
    #[arg(long, env = "NEXINGEST_JOB_TIMEOUT", default_value_t = 3600)]
    pub job_timeout: u64,
    /// Fleet-wide throttle: at most this many load transactions (COPYs) in flight at once
    /// across every worker and `ingest` using the same schema (PostgreSQL advisory-lock
    /// slots). A job waits for a free slot after decoding, keeps its message's heartbeat and
    /// shows as `waiting` in `status`. Unset: no limit. Give every worker the same value.
    #[arg(long, env = "NEXINGEST_MAX_DB_LOADS", value_name = "N")]
    pub max_db_loads: Option<u32>,
}

/// `ingest` flags.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Pipeline tuning.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Dataset of the files.
    #[arg(long)]
    pub dataset: String,
    /// Scenario.
    #[arg(long)]
    pub scenario: String,
    /// Model.
    #[arg(long)]
    pub model: String,
    /// Year.
    #[arg(long)]
    pub year: i32,
    /// Variables to load (a file for each must be among the inputs).
    #[arg(long, value_delimiter = ',', default_value = "tasmin,tasmax,pr")]
    pub variables: Vec<String>,
    /// Location source: `all`, `cities[:SOURCE]`, `geojson:FILE` or `boundary:FILE`.
    #[arg(long, default_value = "all")]
    pub locations: String,
    /// Replace the job's rows even if it is already done.
    #[arg(long)]
    pub update_existing: bool,
    /// NetCDF files, or directories searched for the job's files (by the dataset's file
    /// names; a file named after the variable, e.g. `tasmin.nc`, also matches).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// No progress bars (logs only).
    #[arg(long)]
    pub no_progress: bool,
}

/// `import-locations` flags.
#[derive(Debug, Args)]
pub struct ImportLocationsArgs {
    /// AWS endpoint and allowed buckets (for URL input).
    #[command(flatten)]
    pub aws: AwsArgs,
    /// GeoJSON file path, or an `s3://bucket/key` / S3 https URL of an allowed bucket.
    pub input: String,
    /// Name of this set of locations (`location.source`); default: the file name.
    #[arg(long)]
    pub source: Option<String>,
    /// Feature property holding the location's name.
    #[arg(long, default_value = "name")]
    pub name_property: String,
    /// Feature property holding the location's id; a feature without it uses its GeoJSON
    /// `id`, else its index in the collection.
    #[arg(long, default_value = "id")]
    pub id_property: String,
    /// Skip bad features (reported by index) instead of rejecting the whole file.
    #[arg(long)]
    pub skip_invalid: bool,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many recent failures to list.
    #[arg(long, default_value_t = 10)]
    pub failures: i64,
}

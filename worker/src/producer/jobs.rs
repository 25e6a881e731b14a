//! Data sources with their state and latest job-ledger entry: takes a [`JobFilter`], hands
//! on [`JobRow`]s ([`select`] on a connection, [`list`] with a limit). `nexingest jobs` prints
//! them; [`crate::requeue`] selects with the same filter.
//!
//! A data source's *shown* state is its `data_source.state`, except that a `running` one whose
//! worker has not shown it is alive for longer than the filter's `stale_after` is shown as
//! `stale`. The worker records that it is alive in `data_source.heartbeat_at` when an attempt
//! starts and each time it extends the message's visibility (every third of the visibility
//! timeout; `ingest` every 30 s). A worker that dies stops the heartbeat; SQS delivers the
//! message again once its visibility lapses, and the next attempt starts the clock again. So
//! `stale` means: no worker has been alive on it for longer than a visibility timeout and then
//! some.

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::parse_years;
use crate::catalog::Dataset;
use crate::config::DbConfig;
use crate::db;

/// A data source's state as shown: its `data_source.state`, or `stale` for an old `running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShownState {
    /// Waiting for an attempt.
    Pending,
    /// An attempt is running (and its worker was alive within `stale_after`).
    Running,
    /// `running`, but its worker has not been seen for longer than `stale_after`.
    Stale,
    /// Loaded.
    Done,
    /// The last attempt failed permanently.
    Failed,
}

impl ShownState {
    /// Every state, in the order `jobs` lists them.
    pub const ALL: [ShownState; 5] = [
        ShownState::Pending,
        ShownState::Running,
        ShownState::Stale,
        ShownState::Done,
        ShownState::Failed,
    ];

    /// The state spelled `name` (as [`ShownState::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<ShownState> {
        ShownState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The spelling `jobs` prints and the query compares.
    pub fn as_str(self) -> &'static str {
        match self {
            ShownState::Pending => "pending",
            ShownState::Running => "running",
            ShownState::Stale => "stale",
            ShownState::Done => "done",
            ShownState::Failed => "failed",
        }
    }
}

/// When `--since` starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// This many seconds ago.
    Ago(f64),
    /// A timestamp, parsed by PostgreSQL (`timestamptz`).
    At(String),
}

impl Since {
    /// Parses `90s`, `30m`, `6h`, `2d`, `1w`, or takes anything else as a timestamp for
    /// PostgreSQL to read.
    ///
    /// # Errors
    /// An empty value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("--since: empty".into());
        }
        let last = s.char_indices().last().map_or(0, |(i, _)| i);
        let (num, unit) = s.split_at(last);
        let mult = match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            _ => 0.0,
        };
        match num.parse::<f64>() {
            Ok(n) if mult > 0.0 && n.is_finite() && n >= 0.0 => Ok(Since::Ago(n * mult)),
            _ => Ok(Since::At(s.to_owned())),
        }
    }
}

/// Validated filters over data sources.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Dataset name (canonical).
    pub dataset: Option<String>,
    /// Scenario (matched case-insensitively).
    pub scenario: Option<String>,
    /// Model (matched case-insensitively).
    pub model: Option<String>,
    /// Years.
    pub years: Option<Vec<i32>>,
    /// Activity since.
    pub since: Option<Since>,
    /// Seconds after which a `running` attempt is `stale`.
    pub stale_after: f64,
    /// Shown states (empty: all).
    pub states: Vec<ShownState>,
    /// At most this many rows (`None`: all).
    pub limit: Option<i64>,
}

impl JobFilter {
    /// Validates a filter's values as typed (`nexingest jobs`/`requeue` flags): dataset,
    /// scenario and model names, years and ranges (`2006,2010-2020`), `since` (see
    /// [`Since::parse`]) and `stale_after` seconds. No state filter, no limit.
    ///
    /// # Errors
    /// An unknown dataset, a scenario or model the dataset does not have, a bad year list or
    /// `stale_after` 0.
    pub fn new(
        dataset: Option<&str>,
        scenario: Option<&str>,
        model: Option<&str>,
        years: Option<&str>,
        since: Option<&str>,
        stale_after: u64,
    ) -> anyhow::Result<Self> {
        let dataset = dataset
            .map(|d| d.parse::<Dataset>().map_err(anyhow::Error::msg))
            .transpose()?;
        if let (Some(d), Some(s)) = (dataset, scenario)
            && d.scenario(s).is_none()
        {
            bail!("unknown scenario {s:?} for {d}");
        }
        if let (Some(d), Some(m)) = (dataset, model)
            && d.model(m).is_none()
        {
            bail!("unknown model {m:?} for {d}");
        }
        let years = years
            .map(|y| parse_years(y, 1800, 2300).map_err(anyhow::Error::msg))
            .transpose()
            .context("--years")?;
        if stale_after == 0 {
            bail!("--stale-after must be positive");
        }
        Ok(JobFilter {
            dataset: dataset.map(|d| d.name().to_owned()),
            scenario: scenario.map(str::to_owned),
            model: model.map(str::to_owned),
            years,
            since: since
                .map(Since::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            stale_after: stale_after as f64,
            states: Vec::new(),
            limit: None,
        })
    }
}

/// A data source's latest ledger entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerInfo {
    /// `done`, `failed`, `released` or `skipped`.
    pub outcome: String,
    /// The job's variables (sorted).
    pub variables: Vec<String>,
    /// The job's location-source key, when the attempt got that far.
    pub location_key: Option<String>,
    /// The attempt's number on the data source.
    pub attempt: Option<i32>,
    /// Rows appended.
    pub rows_written: i64,
    /// Its error.
    pub error: Option<String>,
    /// Worker (`host:pid`).
    pub worker: String,
    /// SQS message id.
    pub message_id: Option<String>,
    /// Started (UTC, ISO 8601).
    pub started_at: String,
    /// Finished (UTC, ISO 8601).
    pub finished_at: String,
    /// Seconds from start to finish.
    pub seconds: f64,
    /// Whether the job asked to update existing rows.
    pub update_existing: bool,
}

/// A data source's ledger entries by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LedgerCounts {
    /// Attempts that committed.
    pub done: i64,
    /// Attempts that failed permanently.
    pub failed: i64,
    /// Attempts released after a transient failure or an abort.
    pub released: i64,
    /// Deliveries of a job that was already done.
    pub skipped: i64,
}

/// One data source as `jobs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// `data_source.id`.
    pub id: i64,
    /// Dataset.
    pub dataset: String,
    /// Scenario.
    pub scenario: String,
    /// Model.
    pub model: String,
    /// Year.
    pub year: i32,
    /// Shown state (`stale` for an old `running`).
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Rows it holds.
    pub rows: i64,
    /// Variables loaded.
    pub variables: Vec<String>,
    /// Location source of the latest load.
    pub location_source: Option<String>,
    /// Bytes downloaded by the latest load.
    pub bytes_downloaded: Option<i64>,
    /// Download / decode / load milliseconds of the latest load.
    pub download_ms: Option<i64>,
    /// Decode milliseconds.
    pub decode_ms: Option<i64>,
    /// Load milliseconds.
    pub load_ms: Option<i64>,
    /// Latest attempt started (UTC).
    pub started_at: Option<String>,
    /// Seconds since the latest attempt started.
    pub started_ago_s: Option<f64>,
    /// Latest attempt finished (UTC).
    pub finished_at: Option<String>,
    /// Last error on the data source.
    pub last_error: Option<String>,
    /// Its ledger entries by outcome.
    pub ledger: LedgerCounts,
    /// The latest ledger entry.
    pub last: Option<LedgerInfo>,
}

const TS: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;

/// The shown-state expression; `$1` is `stale_after` in seconds.
const SHOWN_STATE: &str = "CASE WHEN ds.state = 'running' \
     AND coalesce(ds.heartbeat_at, ds.started_at) < now() - make_interval(secs => $1::float8) \
     THEN 'stale' ELSE ds.state END";

/// Data sources matching a filter, ordered by dataset, scenario, model, year.
///
/// # Errors
/// Database errors, or a `--since` timestamp PostgreSQL cannot read.
pub async fn select(client: &impl GenericClient, f: &JobFilter) -> anyhow::Result<Vec<JobRow>> {
    let (since_ago, since_at) = match &f.since {
        None => (None, None),
        Some(Since::Ago(s)) => (Some(*s), None),
        Some(Since::At(t)) => (None, Some(t.clone())),
    };
    let states: Option<Vec<&str>> = if f.states.is_empty() {
        None
    } else {
        Some(f.states.iter().map(|s| s.as_str()).collect())
    };
    let sql = format!(
        "SELECT ds.id, d.name, s.name, m.name, ds.year, {SHOWN_STATE} AS shown,
                ds.attempts, ds.rows_written, ds.variables, ds.location_source,
                ds.bytes_downloaded, ds.download_ms, ds.decode_ms, ds.load_ms,
                to_char(ds.started_at AT TIME ZONE 'UTC', {TS}),
                extract(epoch FROM now() - ds.started_at)::float8,
                to_char(ds.finished_at AT TIME ZONE 'UTC', {TS}),
                ds.last_error,
                c.done, c.failed, c.released, c.skipped,
                l.outcome, l.variables, l.location_key, l.attempt, l.rows_written, l.error,
                l.worker, l.message_id,
                to_char(l.started_at AT TIME ZONE 'UTC', {TS}),
                to_char(l.finished_at AT TIME ZONE 'UTC', {TS}),
                extract(epoch FROM l.finished_at - l.started_at)::float8,
                l.update_existing
         FROM data_source ds
         JOIN dataset d ON d.id = ds.dataset_id
         JOIN scenario s ON s.id = ds.scenario_id
         JOIN climate_model m ON m.id = ds.model_id
         LEFT JOIN LATERAL (
             SELECT count(*) FILTER (WHERE outcome = 'done') AS done,
                    count(*) FILTER (WHERE outcome = 'failed') AS failed,
                    count(*) FILTER (WHERE outcome = 'released') AS released,
                    count(*) FILTER (WHERE outcome = 'skipped') AS skipped
             FROM job_ledger WHERE data_source_id = ds.id) c ON true
         LEFT JOIN LATERAL (
             SELECT * FROM job_ledger WHERE data_source_id = ds.id
             ORDER BY finished_at DESC, id DESC LIMIT 1) l ON true
         WHERE ($2::text IS NULL OR d.name = $2)
           AND ($3::text IS NULL OR lower(s.name) = lower($3))
           AND ($4::text IS NULL OR lower(m.name) = lower($4))
           AND ($5::int4[] IS NULL OR ds.year = ANY($5))
           AND ($6::float8 IS NULL
                OR greatest(ds.created_at, ds.started_at, ds.finished_at)
                   >= now() - make_interval(secs => $6))
           AND ($7::text IS NULL
                OR greatest(ds.created_at, ds.started_at, ds.finished_at) >= $7::timestamptz)
           AND ($8::text[] IS NULL OR {SHOWN_STATE} = ANY($8))
         ORDER BY d.name, s.name, m.name, ds.year
         LIMIT $9"
    );
    let rows = client
        .query(
            &sql,
            &[
                &f.stale_after,
                &f.dataset,
                &f.scenario,
                &f.model,
                &f.years,
                &since_ago,
                &since_at,
                &states,
                &f.limit,
            ],
        )
        .await
        .context("listing data sources")?;
    Ok(rows
        .iter()
        .map(|r| JobRow {
            id: r.get(0),
            dataset: r.get(1),
            scenario: r.get(2),
            model: r.get(3),
            year: r.get(4),
            state: r.get(5),
            attempts: r.get(6),
            rows: r.get(7),
            variables: r.get(8),
            location_source: r.get(9),
            bytes_downloaded: r.get(10),
            download_ms: r.get(11),
            decode_ms: r.get(12),
            load_ms: r.get(13),
            started_at: r.get(14),
            started_ago_s: r.get(15),
            finished_at: r.get(16),
            last_error: r.get(17),
            ledger: LedgerCounts {
                done: r.get(18),
                failed: r.get(19),
                released: r.get(20),
                skipped: r.get(21),
            },
            last: r.get::<_, Option<String>>(22).map(|outcome| LedgerInfo {
                outcome,
                variables: r.get(23),
                location_key: r.get(24),
                attempt: r.get(25),
                rows_written: r.get(26),
                error: r.get(27),
                worker: r.get(28),
                message_id: r.get(29),
                started_at: r.get(30),
                finished_at: r.get(31),
                seconds: r.get(32),
                update_existing: r.get(33),
            }),
        })
        .collect())
}

/// A listing: the rows and whether more matched than the limit.
#[derive(Debug)]
pub struct JobsReport {
    /// The rows (at most the limit).
    pub rows: Vec<JobRow>,
    /// True when more data sources matched.
    pub truncated: bool,
}

/// Lists the data sources matching `f` (its `limit` is replaced by `limit`; 0: all).
///
/// # Errors
/// Database errors, or a `since` timestamp PostgreSQL cannot read.
pub async fn list(dbc: &DbConfig, f: &JobFilter, limit: u64) -> anyhow::Result<JobsReport> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut f = f.clone();
    f.limit = (limit > 0).then_some(limit.saturating_add(1));
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    let mut rows = select(&**client, &f).await?;
    let truncated = limit > 0 && rows.len() as i64 > limit;
    rows.truncate(if limit > 0 {
        limit as usize
    } else {
        rows.len()
    });
    Ok(JobsReport { rows, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_ages_and_passes_timestamps_on() {
        assert_eq!(Since::parse("90s").unwrap(), Since::Ago(90.0));
        assert_eq!(Since::parse("30m").unwrap(), Since::Ago(1800.0));
        assert_eq!(Since::parse("1.5h").unwrap(), Since::Ago(5400.0));
        assert_eq!(Since::parse("2d").unwrap(), Since::Ago(172_800.0));
        assert_eq!(
            Since::parse("2026-11-25").unwrap(),
            Since::At("2026-11-25".into())
        );
        assert_eq!(
            Since::parse("2026-11-25 08:00:00+00").unwrap(),
            Since::At("2026-11-25 08:00:00+00".into())
        );
        assert!(Since::parse(" ").is_err());
    }

    #[test]
    fn filters_are_validated() {
        let f = JobFilter::new(
            Some("nex-gddp"),
            Some("rcp85"),
            None,
            Some("2006-2007"),
            Some("1h"),
            300,
        )
        .unwrap();
        assert_eq!(f.dataset.as_deref(), Some("NEX-GDDP"));
        assert_eq!(f.years.as_deref(), Some(&[2006, 2007][..]));
        assert_eq!(f.since, Some(Since::Ago(3600.0)));
        assert!(JobFilter::new(Some("LOCA"), Some("ssp585"), None, None, None, 300).is_err());
        assert!(JobFilter::new(None, None, None, None, None, 0).is_err());
    }
}

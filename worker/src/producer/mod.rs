//! The producer side of the queue: takes a job [`Matrix`] (dataset, scenario, models, years,
//! variables, locations) and an [`EnqueueConfig`]; checks the jobs' input files on S3
//! ([`inputs`]), builds the message bodies (native, or the old system's form with ids from the
//! database) and sends them in batches, optionally creating the queue and its dead-letter
//! queue; hands on an [`EnqueueReport`]. [`jobs`] lists the data sources those jobs became,
//! with their state and ledger (`nexingest jobs`, and `requeue`'s selection).
//!
//! `nexingest enqueue` (`cmd::enqueue`) builds the settings from its flags and prints the
//! report.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::catalog::{self, Dataset};
use crate::config::{AwsConfig, DbConfig, QueueRef};
use crate::error::JobError;
use crate::message::{JobSpec, LocationSource, Resource};
use crate::{aws, db, queue};

pub mod inputs;
pub mod jobs;

pub use inputs::Skipped;

/// Whether `enqueue` checks that the jobs' input files exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckInputs {
    /// The default: check; if S3 cannot be listed (network, credentials, permissions), warn
    /// and enqueue unchecked. A missing bucket is still an error.
    Auto,
    /// `--check-inputs`: check, and fail when S3 cannot be listed.
    Required,
    /// `--no-check-inputs`: do not look at S3.
    Off,
}

/// A queue to create, with its dead-letter queue and redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueue {
    /// Queue name.
    pub name: String,
    /// Dead-letter queue name.
    pub dlq: String,
    /// Receives before SQS moves a message to the dead-letter queue.
    pub max_receive_count: u32,
    /// Visibility timeout, seconds.
    pub visibility_timeout: u32,
}

/// Validated `enqueue` settings.
#[derive(Debug, Clone)]
pub struct EnqueueConfig {
    /// AWS.
    pub aws: AwsConfig,
    /// Queue.
    pub queue: QueueRef,
    /// Database (needed for the old message form's ids).
    pub db: Option<DbConfig>,
    /// Every job, validated ([`Matrix::jobs`]).
    pub jobs: Vec<JobSpec>,
    /// Old-system bodies.
    pub legacy: bool,
    /// Create the queue and its dead-letter queue first.
    pub create_queue: Option<NewQueue>,
    /// Build the bodies, send nothing ([`EnqueueReport::bodies`]).
    pub dry_run: bool,
    /// Input check.
    pub check_inputs: CheckInputs,
}

/// What the input check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputCheck {
    /// `--no-check-inputs`.
    Off,
    /// The default check could not list S3 (the reason); every job was enqueued.
    Unavailable(String),
    /// Every job was checked.
    Done,
}

/// The outcome of [`enqueue`].
#[derive(Debug, Clone)]
pub struct EnqueueReport {
    /// Jobs in the matrix.
    pub planned: usize,
    /// Jobs sent (with `dry_run`: built).
    pub enqueued: usize,
    /// Jobs left out because an input file is missing, grouped.
    pub skipped: Vec<Skipped>,
    /// What the input check did.
    pub check: InputCheck,
    /// With `dry_run`: the bodies that would have been sent.
    pub bodies: Vec<String>,
}

impl EnqueueReport {
    /// How many jobs were skipped.
    pub fn skipped_jobs(&self) -> usize {
        self.skipped.iter().map(|s| s.years.len()).sum()
    }
}

/// `2006,2096-2100` from ascending years.
pub fn compact_years(years: &[i32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < years.len() {
        let mut j = i;
        while j + 1 < years.len() && years[j + 1] == years[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            let _ = write!(out, "{}", years[i]);
        } else {
            let _ = write!(out, "{}-{}", years[i], years[j]);
        }
        i = j + 1;
    }
    out
}

/// Parses `all` or `2006,2010-2020` within `[first, last]`.
///
/// # Errors
/// On syntax errors or years out of range.
pub fn parse_years(s: &str, first: i32, last: i32) -> Result<Vec<i32>, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok((first..=last).collect());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: i32 = a.trim().parse().map_err(|_| format!("bad year {part:?}"))?;
        let b: i32 = b.trim().parse().map_err(|_| format!("bad year {part:?}"))?;
        if a > b || a < first || b > last {
            return Err(format!("years {part} outside {first}-{last}"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("no years".into());
    }
    Ok(out)
}

/// The jobs of one (dataset, scenario): every model × year, with the same variables and
/// locations.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Dataset.
    pub dataset: Dataset,
    /// Scenario, as the catalog spells it.
    pub scenario: &'static str,
    /// Models, as the catalog spells them.
    pub models: Vec<&'static str>,
    /// Years, ascending.
    pub years: Vec<i32>,
    /// Variables of each job.
    pub variables: Vec<String>,
    /// Location source of each job.
    pub locations: LocationSource,
    /// Reload jobs that are already done.
    pub update_existing: bool,
}

impl Matrix {
    /// The matrix of `dataset`'s `scenario` (case-insensitive): `models` `all` or a
    /// comma-separated list, `years` `all` or years and ranges (`2006,2010-2020`) within the
    /// scenario's range.
    ///
    /// # Errors
    /// An unknown dataset, scenario or model; bad years.
    pub fn new(
        dataset: &str,
        scenario: &str,
        models: &str,
        years: &str,
        variables: &[String],
        locations: LocationSource,
    ) -> anyhow::Result<Self> {
        let d: Dataset = dataset.parse().map_err(anyhow::Error::msg)?;
        let (scenario, first, last) = d
            .scenario(scenario)
            .with_context(|| format!("unknown scenario {scenario:?} for {d}"))?;
        let models: Vec<&'static str> = if models.trim().eq_ignore_ascii_case("all") {
            d.models()
        } else {
            models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    d.model(m)
                        .with_context(|| format!("unknown model {m:?} for {d}"))
                })
                .collect::<anyhow::Result<_>>()?
        };
        let years = parse_years(years, first, last).map_err(anyhow::Error::msg)?;
        Ok(Matrix {
            dataset: d,
            scenario,
            models,
            years,
            variables: variables.to_vec(),
            locations,
            update_existing: false,
        })
    }

    /// Fails unless the old system's message form can carry these jobs: the default
    /// variables, and cities, `geojson:URL` or `boundary:URL` locations.
    ///
    /// # Errors
    /// Other variables or locations.
    pub fn check_legacy(&self) -> anyhow::Result<()> {
        let defaults: Vec<&str> = catalog::DEFAULT_VARIABLES.to_vec();
        let vars = crate::message::validate_variables(&self.variables)?;
        if vars != defaults {
            bail!("the old message form always loads tasmin,tasmax,pr; drop --variables");
        }
        if matches!(
            self.locations,
            LocationSource::All | LocationSource::Cities(Some(_))
        ) {
            bail!("the old message form carries only cities, geojson:URL or boundary:URL");
        }
        Ok(())
    }

    /// Every job, years outer, models inner, validated.
    ///
    /// # Errors
    /// An invalid job (variables, locations not allowed by `aws`).
    pub fn jobs(&self, aws: &AwsConfig) -> anyhow::Result<Vec<JobSpec>> {
        let mut jobs = Vec::with_capacity(self.models.len() * self.years.len());
        for &y in &self.years {
            for &m in &self.models {
                jobs.push(JobSpec::new(
                    self.dataset.name(),
                    self.scenario,
                    m,
                    y,
                    &self.variables,
                    self.locations.clone(),
                    self.update_existing,
                    None,
                    Some(aws),
                )?);
            }
        }
        Ok(jobs)
    }
}

/// Checks the inputs (unless [`CheckInputs::Off`]), builds the bodies of the jobs to send and
/// sends them; with `dry_run` returns them in the report instead.
///
/// # Errors
/// A missing bucket; S3 failures of an explicit [`CheckInputs::Required`]; database (old form)
/// and SQS failures.
pub async fn enqueue(cfg: &EnqueueConfig) -> anyhow::Result<EnqueueReport> {
    let needs_sqs = !cfg.dry_run;
    let clients = if needs_sqs || cfg.check_inputs != CheckInputs::Off {
        Some(aws::clients(&cfg.aws).await)
    } else {
        None
    };
    let (keep, skipped, check) = match (&clients, cfg.check_inputs) {
        (Some(c), CheckInputs::Auto | CheckInputs::Required) => {
            match inputs::check_inputs(&c.s3, &cfg.aws, &cfg.jobs).await {
                Ok((keep, skipped)) => (keep, skipped, InputCheck::Done),
                Err(JobError::NoSuchBucket { bucket }) => bail!(
                    "checking inputs: bucket {bucket:?} does not exist (set the dataset's \
                     bucket with --nex-gddp-bucket, --loca-bucket or --cmip6-bucket)"
                ),
                Err(e) if cfg.check_inputs == CheckInputs::Required => {
                    return Err(anyhow::Error::new(e).context(
                        "checking inputs (pass --no-check-inputs to enqueue without checking)",
                    ));
                }
                Err(e) => {
                    let unsigned = if cfg.aws.s3.no_sign_request {
                        ""
                    } else {
                        "; --s3-no-sign-request reads public buckets without credentials"
                    };
                    tracing::warn!(
                        error = %e,
                        "cannot list the input files, enqueuing every job unchecked (pass \
                         --check-inputs to make this an error, --no-check-inputs to skip the \
                         check{unsigned})"
                    );
                    let all = (0..cfg.jobs.len()).collect();
                    (all, Vec::new(), InputCheck::Unavailable(e.to_string()))
                }
            }
        }
        _ => ((0..cfg.jobs.len()).collect(), Vec::new(), InputCheck::Off),
    };
    let jobs: Vec<&JobSpec> = keep.iter().map(|&i| &cfg.jobs[i]).collect();
    let mut report = EnqueueReport {
        planned: cfg.jobs.len(),
        enqueued: 0,
        skipped,
        check,
        bodies: Vec::new(),
    };
    let bodies = if cfg.legacy {
        let dbc = cfg.db.as_ref().context("old form needs the database")?;
        legacy_bodies(dbc, &jobs).await?
    } else {
        jobs.iter().map(|j| j.to_native_json()).collect()
    };
    if cfg.dry_run {
        report.enqueued = bodies.len();
        report.bodies = bodies;
        return Ok(report);
    }
    if bodies.is_empty() && cfg.create_queue.is_none() {
        return Ok(report);
    }
    let clients = clients.context("AWS clients")?;
    let url = match &cfg.create_queue {
        Some(q) => {
            let (url, dlq_url) = queue::create_with_dlq(
                &clients.sqs,
                &q.name,
                &q.dlq,
                q.max_receive_count,
                q.visibility_timeout,
            )
            .await?;
            tracing::info!(queue = %url, dlq = %dlq_url, max_receive_count = q.max_receive_count, "queue ready");
            url
        }
        None => queue::resolve_url(&clients.sqs, &cfg.queue).await?,
    };
    report.enqueued = queue::send_all(&clients.sqs, &url, &bodies).await?;
    tracing::debug!(queue = %url, jobs = report.enqueued, "enqueued");
    Ok(report)
}

/// The old system's bodies: ids of scenario and model from the database's catalog, the year as
/// a string, the locations as URLs.
async fn legacy_bodies(dbc: &DbConfig, jobs: &[&JobSpec]) -> anyhow::Result<Vec<String>> {
    let pool = db::pool(dbc, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let ids = db::catalog_ids(&**client, j.dataset.name(), j.model, j.scenario).await?;
        let url = |r: &Resource| r.to_string();
        let (geo, boundary) = match &j.locations {
            LocationSource::GeoJson(r) => (Some(url(r)), None),
            LocationSource::Boundary(r) => (None, Some(url(r))),
            _ => (None, None),
        };
        out.push(
            serde_json::json!({
                "dataset": j.dataset.name(),
                "scenario_id": ids.scenario,
                "model_id": ids.model,
                "year": j.year.to_string(),
                "import_geojson_url": geo,
                "import_boundary_url": boundary,
                "update_existing": j.update_existing,
            })
            .to_string(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_are_compacted_into_ranges() {
        assert_eq!(compact_years(&[2100]), "2100");
        assert_eq!(
            compact_years(&[2006, 2096, 2097, 2098, 2099, 2100]),
            "2006,2096-2100"
        );
        assert_eq!(compact_years(&[2015, 2016, 2018]), "2015-2016,2018");
        assert_eq!(compact_years(&[]), "");
        // The compact form is valid `--years` input.
        assert_eq!(
            parse_years("2006,2096-2100", 2006, 2100).unwrap(),
            [2006, 2096, 2097, 2098, 2099, 2100]
        );
    }

    #[test]
    fn years() {
        assert_eq!(parse_years("all", 2006, 2008).unwrap(), [2006, 2007, 2008]);
        assert_eq!(
            parse_years("2008,2006-2007,2006", 2006, 2100).unwrap(),
            [2006, 2007, 2008]
        );
        assert!(parse_years("2005", 2006, 2100).is_err());
        assert!(parse_years("x", 2006, 2100).is_err());
    }

    #[test]
    fn a_matrix_is_years_by_models() {
        let vars = ["tasmax".to_owned()];
        let m = Matrix::new(
            "nex-gddp",
            "RCP45",
            "MIROC5,access1-0",
            "2099-2100",
            &vars,
            LocationSource::All,
        )
        .unwrap();
        assert_eq!(
            (m.scenario, &m.models[..]),
            ("rcp45", &["MIROC5", "ACCESS1-0"][..])
        );
        assert!(m.check_legacy().is_err(), "neither the variables nor `all`");
        assert!(Matrix::new("LOCA", "rcp45", "nobody", "all", &vars, LocationSource::All).is_err());
        assert!(Matrix::new("LOCA", "rcp45", "all", "1900", &vars, LocationSource::All).is_err());
    }
}

//! `enqueue`: publish the job matrix (like the old `create_jobs`), optionally creating the
//! queue and its dead-letter queue.
//!
//! Before sending, the input check (on by default) lists the dataset's bucket once per
//! (model, variable) under [`Dataset::list_prefix`] and keeps only the jobs for which
//! [`s3::pick_key`] — the rule the worker resolves keys with — finds every variable's file;
//! the rest are reported as [`Skipped`] rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::catalog::{self, Dataset};
use crate::cli::{EnqueueArgs, GlobalArgs};
use crate::config::{AwsConfig, DbConfig, QueueRef};
use crate::error::JobError;
use crate::message::{JobSpec, LocationSource, Resource};
use crate::{aws, db, queue, s3};

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

/// Listings in flight at once during the input check.
const LIST_CONCURRENCY: usize = 8;

/// Validated `enqueue` settings.
#[derive(Debug, Clone)]
pub struct EnqueueConfig {
    /// AWS.
    pub aws: AwsConfig,
    /// Queue.
    pub queue: QueueRef,
    /// Database (needed for the old message form's ids).
    pub db: Option<DbConfig>,
    /// Every job, validated.
    pub jobs: Vec<JobSpec>,
    /// Old-system bodies.
    pub legacy: bool,
    /// Create queue + DLQ.
    pub create_queue: Option<(String, String, u32, u32)>,
    /// Print instead of send.
    pub dry_run: bool,
    /// Input check.
    pub check_inputs: CheckInputs,
}

/// Jobs of one model skipped for the same missing variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Model.
    pub model: &'static str,
    /// Scenario.
    pub scenario: &'static str,
    /// The skipped jobs' years, ascending.
    pub years: Vec<i32>,
    /// Variables without a file in those years, in the jobs' order.
    pub missing: Vec<&'static str>,
}

impl Skipped {
    /// The years as compact ranges, `2006,2096-2100` (the `--years` syntax).
    pub fn years_compact(&self) -> String {
        compact_years(&self.years)
    }
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

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct EnqueueReport {
    /// Jobs in the matrix.
    pub planned: usize,
    /// Jobs sent (with `--dry-run`: printed).
    pub enqueued: usize,
    /// Jobs left out because an input file is missing, grouped.
    pub skipped: Vec<Skipped>,
    /// What the input check did.
    pub check: InputCheck,
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

/// The skipped jobs as an aligned text table (`model scenario years missing`).
pub fn skipped_table(skipped: &[Skipped]) -> String {
    let rows: Vec<[String; 4]> = skipped
        .iter()
        .map(|s| {
            [
                s.model.to_owned(),
                s.scenario.to_owned(),
                s.years_compact(),
                s.missing.join(","),
            ]
        })
        .collect();
    let head = ["model", "scenario", "years", "missing"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(head.map(str::to_owned)).chain(rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
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

impl EnqueueConfig {
    /// Validates flags and expands the job matrix.
    ///
    /// # Errors
    /// On any invalid setting or job.
    pub fn from_args(g: &GlobalArgs, a: &EnqueueArgs) -> anyhow::Result<Self> {
        let aws = AwsConfig::from_args(&a.aws)?;
        let d: Dataset = a.dataset.parse().map_err(anyhow::Error::msg)?;
        let (scenario, first, last) = d
            .scenario(&a.scenario)
            .with_context(|| format!("unknown scenario {:?} for {d}", a.scenario))?;
        let models: Vec<&str> = if a.models.trim().eq_ignore_ascii_case("all") {
            d.models()
        } else {
            a.models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| {
                    d.model(m)
                        .with_context(|| format!("unknown model {m:?} for {d}"))
                })
                .collect::<anyhow::Result<_>>()?
        };
        let years = parse_years(&a.years, first, last).map_err(anyhow::Error::msg)?;
        let locations =
            LocationSource::parse(&a.locations, Some(&aws), false).map_err(anyhow::Error::msg)?;
        if a.legacy_format {
            let defaults: Vec<&str> = catalog::DEFAULT_VARIABLES.to_vec();
            let vars = crate::message::validate_variables(&a.variables)?;
            if vars != defaults {
                bail!("the old message form always loads tasmin,tasmax,pr; drop --variables");
            }
            if matches!(
                locations,
                LocationSource::All | LocationSource::Cities(Some(_))
            ) {
                bail!("the old message form carries only cities, geojson:URL or boundary:URL");
            }
        }
        let mut jobs = Vec::with_capacity(models.len() * years.len());
        for &y in &years {
            for &m in &models {
                jobs.push(JobSpec::new(
                    d.name(),
                    scenario,
                    m,
                    y,
                    &a.variables,
                    locations.clone(),
                    a.update_existing,
                    None,
                    Some(&aws),
                )?);
            }
        }
        let queue = QueueRef::from_args(&a.queue)?;
        let create_queue = if a.create_queue {
            let QueueRef::Name(name) = &queue else {
                bail!("--create-queue needs --queue-name");
            };
            if !(1..=1000).contains(&a.max_receive_count) {
                bail!("--max-receive-count must be 1..=1000");
            }
            let dlq = a.dlq_name.clone().unwrap_or_else(|| format!("{name}-dlq"));
            Some((
                name.clone(),
                dlq,
                a.max_receive_count,
                a.queue_visibility_timeout,
            ))
        } else {
            None
        };
        let db = if a.legacy_format {
            Some(DbConfig::from_args(g)?)
        } else {
            None
        };
        let check_inputs = if a.no_check_inputs {
            CheckInputs::Off
        } else if a.check_inputs {
            CheckInputs::Required
        } else {
            CheckInputs::Auto
        };
        Ok(EnqueueConfig {
            aws,
            queue,
            db,
            jobs,
            legacy: a.legacy_format,
            create_queue,
            dry_run: a.dry_run,
            check_inputs,
        })
    }
}

fn resource_url(r: &Resource) -> String {
    r.to_string()
}

/// Which jobs have every input file: lists each (model, variable) prefix once. Returns the
/// jobs to keep (by index) and the skipped ones, grouped.
///
/// # Errors
/// S3 failures (`NoSuchBucket` when the bucket does not exist).
pub async fn check_inputs(
    s3: &aws_sdk_s3::Client,
    aws: &AwsConfig,
    jobs: &[JobSpec],
) -> Result<(Vec<usize>, Vec<Skipped>), JobError> {
    // One listing per (bucket, dataset, scenario, model, variable).
    type Listing = (String, Dataset, &'static str, &'static str, &'static str);
    let listing = |j: &JobSpec, var: &'static str| -> Listing {
        let bucket = j.bucket.as_deref().unwrap_or(aws.bucket(j.dataset));
        (bucket.to_owned(), j.dataset, j.scenario, j.model, var)
    };
    let wanted: HashSet<Listing> = jobs
        .iter()
        .flat_map(|j| j.variables.iter().map(move |&v| listing(j, v)))
        .collect();
    let listed: HashMap<Listing, Vec<String>> = stream::iter(wanted)
        .map(|l| async move {
            let (bucket, d, scenario, model, var) = &l;
            let prefix = d.list_prefix(scenario, model, var);
            let keys = s3::list_keys(s3, bucket, &prefix).await?;
            tracing::debug!(bucket = %bucket, prefix = %prefix, keys = keys.len(), "listed");
            Ok::<_, JobError>((l, keys))
        })
        .buffer_unordered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    let mut keep = Vec::with_capacity(jobs.len());
    // (model, scenario, missing) -> years
    let mut groups: BTreeMap<(&'static str, &'static str, Vec<&'static str>), Vec<i32>> =
        BTreeMap::new();
    for (i, j) in jobs.iter().enumerate() {
        let missing: Vec<&'static str> = j
            .variables
            .iter()
            .copied()
            .filter(|&v| {
                let keys = listed[&listing(j, v)].iter().map(String::as_str);
                s3::pick_key(j.dataset, j.scenario, j.model, j.year, v, keys).is_none()
            })
            .collect();
        if missing.is_empty() {
            keep.push(i);
        } else {
            groups
                .entry((j.model, j.scenario, missing))
                .or_default()
                .push(j.year);
        }
    }
    let mut skipped: Vec<Skipped> = groups
        .into_iter()
        .map(|((model, scenario, missing), mut years)| {
            years.sort_unstable();
            Skipped {
                model,
                scenario,
                years,
                missing,
            }
        })
        .collect();
    skipped.sort_by_key(|s| (s.model, s.scenario, s.years[0]));
    Ok((keep, skipped))
}

/// Checks the inputs (unless `--no-check-inputs`), builds the bodies of the jobs to send and
/// sends them, or prints them with `--dry-run`.
///
/// # Errors
/// A missing bucket; S3 failures of an explicit `--check-inputs`; database (old form), SQS
/// failures.
pub async fn run(cfg: &EnqueueConfig) -> anyhow::Result<EnqueueReport> {
    let needs_sqs = !cfg.dry_run;
    let clients = if needs_sqs || cfg.check_inputs != CheckInputs::Off {
        Some(aws::clients(&cfg.aws).await)
    } else {
        None
    };
    let (keep, skipped, check) = match (&clients, cfg.check_inputs) {
        (Some(c), CheckInputs::Auto | CheckInputs::Required) => {
            match check_inputs(&c.s3, &cfg.aws, &cfg.jobs).await {
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
    let report = |enqueued| EnqueueReport {
        planned: cfg.jobs.len(),
        enqueued,
        skipped: skipped.clone(),
        check: check.clone(),
    };
    let bodies: Vec<String> = if cfg.legacy {
        let dbc = cfg.db.as_ref().context("old form needs the database")?;
        let pool = db::pool(dbc, 1)?;
        let client = pool.get().await.context("connecting to the database")?;
        let mut out = Vec::with_capacity(jobs.len());
        for j in &jobs {
            let ids = db::catalog_ids(&**client, j.dataset.name(), j.model, j.scenario).await?;
            let (geo, boundary) = match &j.locations {
                LocationSource::GeoJson(r) => (Some(resource_url(r)), None),
                LocationSource::Boundary(r) => (None, Some(resource_url(r))),
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
        out
    } else {
        jobs.iter().map(|j| j.to_native_json()).collect()
    };
    if cfg.dry_run {
        for b in &bodies {
            println!("{b}");
        }
        return Ok(report(bodies.len()));
    }
    if bodies.is_empty() && cfg.create_queue.is_none() {
        return Ok(report(0));
    }
    let clients = clients.context("AWS clients")?;
    let url = match &cfg.create_queue {
        Some((name, dlq, max, vis)) => {
            let (url, dlq_url) =
                queue::create_with_dlq(&clients.sqs, name, dlq, *max, *vis).await?;
            tracing::info!(queue = %url, dlq = %dlq_url, max_receive_count = max, "queue ready");
            url
        }
        None => queue::resolve_url(&clients.sqs, &cfg.queue).await?,
    };
    let n = queue::send_all(&clients.sqs, &url, &bodies).await?;
    tracing::debug!(queue = %url, jobs = n, "enqueued");
    Ok(report(n))
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
    fn skipped_table_is_aligned() {
        let t = skipped_table(&[
            Skipped {
                model: "GFDL-CM3",
                scenario: "rcp45",
                years: (2096..=2100).collect(),
                missing: vec!["pr"],
            },
            Skipped {
                model: "MIROC5",
                scenario: "rcp45",
                years: vec![2100],
                missing: vec!["tasmin", "tasmax", "pr"],
            },
        ]);
        assert_eq!(
            t,
            "model     scenario  years      missing\n\
             GFDL-CM3  rcp45     2096-2100  pr\n\
             MIROC5    rcp45     2100       tasmin,tasmax,pr\n"
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
}

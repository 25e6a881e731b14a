//! `enqueue`: publish the job matrix (like the old `create_jobs`), optionally creating the
//! queue and its dead-letter queue.

use anyhow::{Context, bail};

use crate::catalog::{self, Dataset};
use crate::cli::{EnqueueArgs, GlobalArgs};
use crate::config::{AwsConfig, DbConfig, QueueRef};
use crate::message::{JobSpec, LocationSource, Resource};
use crate::{aws, db, queue};

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
        Ok(EnqueueConfig {
            aws,
            queue,
            db,
            jobs,
            legacy: a.legacy_format,
            create_queue,
            dry_run: a.dry_run,
        })
    }
}

fn resource_url(r: &Resource) -> String {
    r.to_string()
}

/// Builds the bodies and sends them. Returns the number of jobs.
///
/// # Errors
/// Database (old form), SQS failures.
pub async fn run(cfg: &EnqueueConfig) -> anyhow::Result<usize> {
    let bodies: Vec<String> = if cfg.legacy {
        let dbc = cfg.db.as_ref().context("old form needs the database")?;
        let pool = db::pool(dbc, 1)?;
        let client = pool.get().await.context("connecting to the database")?;
        let mut out = Vec::with_capacity(cfg.jobs.len());
        for j in &cfg.jobs {
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
        cfg.jobs.iter().map(JobSpec::to_native_json).collect()
    };
    if cfg.dry_run {
        for b in &bodies {
            println!("{b}");
        }
        return Ok(bodies.len());
    }
    let clients = aws::clients(&cfg.aws).await;
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
    tracing::info!(queue = %url, jobs = n, "enqueued");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::parse_years;

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

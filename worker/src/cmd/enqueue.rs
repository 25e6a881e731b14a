//! `nexingest enqueue`: its flags as an [`EnqueueConfig`] (the job [`Matrix`] expanded),
//! [`producer::enqueue`], the bodies of a dry run on stdout and the skipped jobs as a table.

use anyhow::bail;

use crate::cli::{EnqueueArgs, GlobalArgs};
use crate::config::{AwsConfig, DbConfig, QueueRef};
use crate::message::LocationSource;
use crate::producer::{self, CheckInputs, EnqueueReport, Matrix, NewQueue, Skipped};
/// What [`crate::cmd::dispatch`] calls: the library's settings and input-check outcome.
pub use crate::producer::{EnqueueConfig, InputCheck};

impl EnqueueConfig {
    /// Validates `enqueue`'s flags and expands the job matrix.
    ///
    /// # Errors
    /// On any invalid setting or job.
    pub fn from_args(g: &GlobalArgs, a: &EnqueueArgs) -> anyhow::Result<Self> {
        let aws = AwsConfig::from_args(&a.aws)?;
        let locations =
            LocationSource::parse(&a.locations, Some(&aws), false).map_err(anyhow::Error::msg)?;
        let mut matrix = Matrix::new(
            &a.dataset,
            &a.scenario,
            &a.models,
            &a.years,
            &a.variables,
            locations,
        )?;
        matrix.update_existing = a.update_existing;
        if a.legacy_format {
            matrix.check_legacy()?;
        }
        let jobs = matrix.jobs(&aws)?;
        let queue = QueueRef::from_args(&a.queue)?;
        let create_queue = if a.create_queue {
            let QueueRef::Name(name) = &queue else {
                bail!("--create-queue needs --queue-name");
            };
            if !(1..=1000).contains(&a.max_receive_count) {
                bail!("--max-receive-count must be 1..=1000");
            }
            Some(NewQueue {
                name: name.clone(),
                dlq: a.dlq_name.clone().unwrap_or_else(|| format!("{name}-dlq")),
                max_receive_count: a.max_receive_count,
                visibility_timeout: a.queue_visibility_timeout,
            })
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

/// [`producer::enqueue`], printing a dry run's bodies, one a line.
///
/// # Errors
/// As [`producer::enqueue`].
pub async fn run(cfg: &EnqueueConfig) -> anyhow::Result<EnqueueReport> {
    let r = producer::enqueue(cfg).await?;
    for b in &r.bodies {
        println!("{b}");
    }
    Ok(r)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

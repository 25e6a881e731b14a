//! The input check: takes the jobs and the S3 client, lists the dataset's bucket once per
//! (model, variable) under [`Dataset::list_prefix`] and keeps only the jobs for which
//! [`s3::pick_key`] — the rule the worker resolves keys with — finds every variable's file;
//! hands on the jobs to keep and the rest as [`Skipped`] rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::{StreamExt, TryStreamExt, stream};

use super::compact_years;
use crate::catalog::Dataset;
use crate::config::AwsConfig;
use crate::error::JobError;
use crate::message::JobSpec;
use crate::s3;

/// Listings in flight at once during the input check.
const LIST_CONCURRENCY: usize = 8;

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

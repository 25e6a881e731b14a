//! `bench --link-mbps R`: the bench's jobs again with their files in S3, read through a link of
//! R Mbit/s. Takes the [`LinkBench`] settings and the generated [`Files`]; uploads the files
//! under the jobs' keys ([`upload`]), puts a [`linkproxy::LinkProxy`] in front of the S3
//! endpoint ([`Link`]) and hands on each path's figures ([`LinkRun`], [`LinkReport`]).
//!
//! The proxy is a TCP relay, so the endpoint must be plain `http://` (the local moto of
//! `scripts/services.sh`, a MinIO): TLS would name the proxy's address, not the endpoint's
//! certificate. A real bucket over its own network link is what `run` measures in production
//! (its `fetched` log lines); this is the same job on a link of known rate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use linkproxy::{LinkConfig, LinkProxy, Stats};
use serde::Serialize;

use super::files::Files;
use super::{DATASET, SCENARIO, YEAR};
use crate::config::AwsConfig;

/// The link's settings, validated.
#[derive(Debug, Clone)]
pub struct LinkBench {
    /// Megabits (10⁶ bit) per second of the link.
    pub mbps: f64,
    /// Added to each request.
    pub latency: Duration,
    /// The S3 endpoint (`http://host:port`) and the bucket (`cmip6_bucket`).
    pub aws: AwsConfig,
}

impl LinkBench {
    /// Checks the rate and that the endpoint is one a TCP proxy can sit in front of.
    ///
    /// # Errors
    /// A rate that is not a positive number; no endpoint, or not `http://`.
    pub fn new(mbps: f64, latency: Duration, aws: AwsConfig) -> anyhow::Result<Self> {
        if !(mbps.is_finite() && mbps > 0.0) {
            bail!(
                "--link-mbps {mbps}: use a positive rate in megabits per second (2500 for an m5.2xlarge)"
            );
        }
        match aws.endpoint_url.as_deref() {
            None => bail!(
                "--link-mbps needs a local S3 to put the link in front of: set \
                 --aws-endpoint-url / NEXINGEST_AWS_ENDPOINT_URL to a plain http:// endpoint \
                 (the local moto: `scripts/services.sh start && eval \"$(scripts/services.sh env)\"`)"
            ),
            Some(u) if !u.starts_with("http://") => bail!(
                "--link-mbps: the endpoint {u} is not plain http://; the link is a TCP proxy \
                 and cannot sit in front of TLS (use a local S3 such as moto or MinIO)"
            ),
            Some(_) => {}
        }
        Ok(LinkBench { mbps, latency, aws })
    }

    /// The bucket the files go to.
    pub fn bucket(&self) -> &str {
        &self.aws.cmip6_bucket
    }

    /// The endpoint's address.
    async fn upstream(&self) -> anyhow::Result<SocketAddr> {
        let url = self.aws.endpoint_url.as_deref().unwrap_or_default();
        let hostport = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:80")
        };
        tokio::net::lookup_host(&hostport)
            .await
            .with_context(|| format!("resolving the S3 endpoint {url}"))?
            .next()
            .with_context(|| format!("the S3 endpoint {url} resolves to no address"))
    }
}

/// One way of reading the files through the link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkRun {
    /// `by ranges` (the default) or `download, then decode` (`--download-to-disk`).
    pub path: String,
    /// Rows the jobs wrote.
    pub rows: u64,
    /// From the first job's start to the last job's commit, seconds.
    pub wall_seconds: f64,
    /// Bytes the link carried down (responses with their headers).
    pub bytes_fetched: u64,
    /// GETs and HEADs sent through the link.
    pub requests: u64,
    /// The time those bytes take at the link's rate (the link busy), seconds.
    pub transfer_seconds: f64,
    /// `wall_seconds` ÷ max(`transfer_seconds`, the local run's wall time).
    pub ratio: f64,
}

/// What the link runs measured.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// The link's rate, Mbit/s.
    pub mbps: f64,
    /// Added to each request, milliseconds.
    pub latency_ms: u64,
    /// The S3 endpoint behind the link.
    pub endpoint: String,
    /// The bucket holding the uploaded files.
    pub bucket: String,
    /// Bytes of the jobs' files in S3 (each job's three).
    pub file_bytes: u64,
    /// The jobs' wall time from local files (decode + load alone), seconds.
    pub local_seconds: f64,
    /// Each path.
    pub runs: Vec<LinkRun>,
}

/// Uploads `files` under each of `models`' keys into the bucket (created in `region` when
/// missing); an
/// object already there with the file's size is kept (the generated files never change).
/// Returns the bytes of all the jobs' objects.
///
/// # Errors
/// S3 refuses the bucket or an upload.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    models: &[&str],
    files: &Files,
) -> anyhow::Result<u64> {
    if s3.head_bucket().bucket(bucket).send().await.is_err() {
        // Outside us-east-1, S3 wants the bucket's region named.
        let mut create = s3.create_bucket().bucket(bucket);
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        create
            .send()
            .await
            .with_context(|| format!("creating the bucket {bucket} for --link-mbps (or name an existing one with --cmip6-bucket)"))?;
    }
    let mut total = 0;
    for model in models {
        for (var, path) in &files.paths {
            let size = std::fs::metadata(path)
                .with_context(|| format!("{}", path.display()))?
                .len();
            let key = DATASET.key(SCENARIO, model, YEAR, var);
            let there = s3
                .head_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .ok()
                .and_then(|h| h.content_length());
            if there != Some(size as i64) {
                tracing::info!(key = %key, bytes = size, "uploading a bench file");
                let body = ByteStream::from_path(path)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?;
                s3.put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(body)
                    .send()
                    .await
                    .with_context(|| {
                        format!("uploading {} to s3://{bucket}/{key}", path.display())
                    })?;
            }
            total += size;
        }
    }
    Ok(total)
}

/// A link in front of the S3 endpoint, with an S3 client that goes through it.
pub struct Link {
    proxy: LinkProxy,
    /// The client through the link.
    pub s3: aws_sdk_s3::Client,
}

impl Link {
    /// Starts the proxy.
    ///
    /// # Errors
    /// The endpoint does not resolve, or no local port is free.
    pub async fn start(l: &LinkBench) -> anyhow::Result<Link> {
        let mut cfg = LinkConfig::mbps(l.mbps);
        cfg.latency = l.latency;
        let proxy = LinkProxy::start(l.upstream().await?, cfg)
            .await
            .context("starting the link proxy on 127.0.0.1")?;
        let aws = AwsConfig {
            endpoint_url: Some(format!("http://{}", proxy.addr())),
            ..l.aws.clone()
        };
        let s3 = crate::aws::clients(&aws).await.s3;
        Ok(Link { proxy, s3 })
    }

    /// What went through so far.
    pub fn stats(&self) -> Stats {
        self.proxy.stats()
    }
}

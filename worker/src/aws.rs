//! AWS clients from the standard credential chain, pointed at a custom endpoint when one is
//! configured (path-style S3, checksums only when required), with the configured timeouts.
//!
//! S3 has a region of its own (`--s3-region`, the data buckets' region) and may send unsigned
//! requests (`--s3-no-sign-request`): its client then has no credentials provider, so the
//! SDK's auth resolver falls back from SigV4 to its no-auth scheme and the requests carry no
//! `Authorization` header, as the AWS CLI's `--no-sign-request` does. SQS always signs with the
//! standard chain's credentials and region.
//!
//! How the SDK's timeouts behave (aws-smithy-types `TimeoutConfig`, aws-smithy-http-client):
//! the connect timeout bounds opening a connection; the read timeout bounds the wait from
//! sending a request until the response *headers* arrive (it wraps the HTTP call, not the
//! body); the operation timeout bounds a whole call with its retries, and the attempt timeout
//! one attempt. For a streamed response (S3 `GetObject`) the call ends when the headers are
//! in, so none of them covers reading the body: the SDK's stalled-stream protection does (an
//! error once the body has moved under 1 B/s for its grace period), which is set here to the
//! read timeout, and [`crate::s3`] bounds each body itself as well.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};

use crate::config::{AwsConfig, AwsTimeouts};

/// The S3 and SQS clients.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
}

/// Loads the shared AWS configuration (credentials from the standard chain, never logged)
/// and builds the clients: SQS from it as it is, S3 with the data buckets' region and, for
/// unsigned requests, without credentials.
pub async fn clients(cfg: &AwsConfig) -> Clients {
    let t = &cfg.timeouts;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeout_config(t))
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(t.read)
                .build(),
        );
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let shared = loader.load().await;
    let mut s3 = if cfg.s3.no_sign_request {
        let mut unsigned = shared.to_builder();
        unsigned.set_credentials_provider(None);
        aws_sdk_s3::config::Builder::from(&unsigned.build()).allow_no_auth()
    } else {
        aws_sdk_s3::config::Builder::from(&shared)
    };
    s3 = s3.region(Region::new(cfg.s3.region.clone()));
    if cfg.endpoint_url.is_some() {
        s3 = s3
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Clients {
        s3: aws_sdk_s3::Client::from_conf(s3.build()),
        sqs: aws_sdk_sqs::Client::new(&shared),
    }
}

/// The SDK form of the timeouts.
pub fn timeout_config(t: &AwsTimeouts) -> TimeoutConfig {
    let mut b = TimeoutConfig::builder()
        .connect_timeout(t.connect)
        .read_timeout(t.read)
        .operation_timeout(t.operation);
    if let Some(a) = t.attempt {
        b = b.operation_attempt_timeout(a);
    }
    b.build()
}

/// The timeouts an S3 client was built with by [`clients`] (defaults for any it lacks).
pub fn s3_timeouts(s3: &aws_sdk_s3::Client) -> AwsTimeouts {
    let d = AwsTimeouts::default();
    let Some(tc) = s3.config().timeout_config() else {
        return d;
    };
    AwsTimeouts {
        connect: tc.connect_timeout().unwrap_or(d.connect),
        read: tc.read_timeout().unwrap_or(d.read),
        operation: tc.operation_timeout().unwrap_or(d.operation),
        attempt: tc.operation_attempt_timeout(),
    }
}

/// One of the configured AWS timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// `--aws-connect-timeout`.
    Connect,
    /// `--aws-read-timeout` (first byte of a response, or a stalled body).
    Read,
    /// `--aws-operation-timeout` (a whole call, or a download part's deadline).
    Operation,
    /// `--aws-attempt-timeout`.
    Attempt,
}

impl TimeoutKind {
    /// Which timeout an SDK error chain (see [`error_chain`]) reports, if any.
    pub fn of_error_chain(chain: &str) -> Option<Self> {
        // Texts of aws-smithy-http-client (`HTTP connect|read timeout occurred after …`),
        // aws-smithy-runtime (`operation [attempt] timeout … occurred after …`) and its
        // stalled-stream protection (`minimum throughput was specified at …`).
        if chain.contains("HTTP connect timeout") {
            Some(TimeoutKind::Connect)
        } else if chain.contains("HTTP read timeout") || chain.contains("minimum throughput") {
            Some(TimeoutKind::Read)
        } else if chain.contains("operation attempt timeout") {
            Some(TimeoutKind::Attempt)
        } else if chain.contains("operation timeout") {
            Some(TimeoutKind::Operation)
        } else {
            None
        }
    }

    /// The flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "--aws-connect-timeout",
            TimeoutKind::Read => "--aws-read-timeout",
            TimeoutKind::Operation => "--aws-operation-timeout",
            TimeoutKind::Attempt => "--aws-attempt-timeout",
        }
    }

    /// The environment variable that sets it.
    pub fn env(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "NEXINGEST_AWS_CONNECT_TIMEOUT",
            TimeoutKind::Read => "NEXINGEST_AWS_READ_TIMEOUT",
            TimeoutKind::Operation => "NEXINGEST_AWS_OPERATION_TIMEOUT",
            TimeoutKind::Attempt => "NEXINGEST_AWS_ATTEMPT_TIMEOUT",
        }
    }

    /// `"<name> timeout"`.
    pub fn name(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect timeout",
            TimeoutKind::Read => "read timeout",
            TimeoutKind::Operation => "operation timeout",
            TimeoutKind::Attempt => "attempt timeout",
        }
    }

    /// `"timed out (<name>; raise <flag> / <ENV> if the endpoint is only slow): <detail>"`.
    pub fn message(self, detail: &str) -> String {
        format!(
            "timed out ({}; raise {} / {} if the endpoint is only slow): {detail}",
            self.name(),
            self.flag(),
            self.env()
        )
    }
}

/// `1.5 s`, `60 s`.
pub fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The full message of an SDK error, with its source chain (no credentials appear in it).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_recognised_in_sdk_errors() {
        let k = |s: &str| TimeoutKind::of_error_chain(s);
        assert_eq!(
            k("dispatch failure: timeout: HTTP connect timeout occurred after 1s"),
            Some(TimeoutKind::Connect)
        );
        assert_eq!(
            k("dispatch failure: timeout: HTTP read timeout occurred after 1s: timed out"),
            Some(TimeoutKind::Read)
        );
        assert_eq!(
            k("minimum throughput was specified at 1 B/s, but throughput of 0 B/s was observed"),
            Some(TimeoutKind::Read)
        );
        assert_eq!(
            k(
                "request has timed out: operation timeout (all attempts including retries) \
               occurred after 3s"
            ),
            Some(TimeoutKind::Operation)
        );
        assert_eq!(
            k(
                "request has timed out: operation attempt timeout (single attempt) occurred after 2s"
            ),
            Some(TimeoutKind::Attempt)
        );
        assert_eq!(k("dispatch failure: io error: connection refused"), None);
        let m = TimeoutKind::Read.message("no data for 60 s");
        assert_eq!(
            m,
            "timed out (read timeout; raise --aws-read-timeout / NEXINGEST_AWS_READ_TIMEOUT if \
             the endpoint is only slow): no data for 60 s"
        );
    }

    #[test]
    fn sdk_timeout_config_matches() {
        let t = AwsTimeouts {
            attempt: Some(Duration::from_secs(50)),
            ..AwsTimeouts::default()
        };
        let c = timeout_config(&t);
        assert_eq!(c.connect_timeout(), Some(t.connect));
        assert_eq!(c.read_timeout(), Some(t.read));
        assert_eq!(c.operation_timeout(), Some(t.operation));
        assert_eq!(c.operation_attempt_timeout(), t.attempt);
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
    }
}

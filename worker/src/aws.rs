//! AWS clients from the standard credential chain, pointed at a custom endpoint when one is
//! configured (path-style S3, checksums only when required).

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};

use crate::config::AwsConfig;

/// The S3 and SQS clients.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
}

/// Loads the shared AWS configuration (credentials from the standard chain, never logged)
/// and builds the clients.
pub async fn clients(cfg: &AwsConfig) -> Clients {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let shared = loader.load().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&shared);
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

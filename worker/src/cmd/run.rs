//! `nexingest run`: the queue consumer ([`crate::consumer`]) with its flags validated and the
//! process's signals wired in (SIGTERM or Ctrl-C start the drain).

use std::time::Duration;

use crate::cli::{GlobalArgs, RunArgs};
use crate::config::{AwsConfig, ConfigError, DbConfig, PipelineConfig, QueueRef, worker_id};
use crate::consumer::{self, RunConfig};
use crate::message::LocationSource;

/// Validates `run`'s flags into the consumer's settings, before anything connects.
///
/// # Errors
/// On any invalid or missing setting, naming the flag.
pub fn config(g: &GlobalArgs, r: &RunArgs) -> Result<RunConfig, ConfigError> {
    if !(1..=64).contains(&r.jobs) {
        return Err(ConfigError::invalid("--jobs", "1..=64"));
    }
    if !(3..=43_200).contains(&r.visibility_timeout) {
        return Err(ConfigError::invalid(
            "--visibility-timeout",
            "3..=43200 seconds",
        ));
    }
    if r.wait_time > 20 {
        return Err(ConfigError::invalid("--wait-time", "0..=20 seconds"));
    }
    if r.drain_timeout > 3600 {
        return Err(ConfigError::invalid(
            "--drain-timeout",
            "at most 3600 seconds",
        ));
    }
    if !(1..=20).contains(&r.max_attempts) {
        return Err(ConfigError::invalid("--max-attempts", "1..=20"));
    }
    if r.failed_visibility > 43_200 {
        return Err(ConfigError::invalid(
            "--failed-visibility",
            "0..=43200 seconds",
        ));
    }
    if !(1..=43_200).contains(&r.retry_visibility) {
        return Err(ConfigError::invalid(
            "--retry-visibility",
            "1..=43200 seconds",
        ));
    }
    if !(r.retry_visibility..=43_200).contains(&r.retry_visibility_max) {
        return Err(ConfigError::invalid(
            "--retry-visibility-max",
            "at least --retry-visibility and at most 43200 seconds",
        ));
    }
    let wait_time = Duration::from_secs(r.wait_time.into());
    let aws = AwsConfig::from_args(&r.aws)?;
    aws.timeouts.check_long_poll(wait_time)?;
    let event_locations = LocationSource::parse(&r.event_locations, Some(&aws), false)
        .map_err(|e| ConfigError::invalid("--event-locations", e))?;
    let ns = r.metrics_namespace.trim();
    if ns.is_empty()
        || ns.len() > 255
        || ns.starts_with(':')
        || !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_/#:".contains(&b))
    {
        return Err(ConfigError::invalid(
            "--metrics-namespace",
            format!("{ns:?}: 1-255 of letters, digits and . - _ / # :"),
        ));
    }
    Ok(RunConfig {
        db: DbConfig::from_args(g)?,
        aws,
        queue: QueueRef::from_args(&r.queue)?,
        pipeline: PipelineConfig::from_args(&r.pipeline)?,
        jobs: r.jobs,
        visibility_timeout: Duration::from_secs(r.visibility_timeout.into()),
        wait_time,
        drain_timeout: Duration::from_secs(r.drain_timeout),
        until_empty: r.until_empty,
        max_attempts: r.max_attempts,
        failed_visibility: Duration::from_secs(r.failed_visibility.into()),
        retry_visibility: Duration::from_secs(r.retry_visibility.into()),
        retry_visibility_max: Duration::from_secs(r.retry_visibility_max.into()),
        worker_id: worker_id(),
        metrics: r.metrics,
        metrics_namespace: ns.to_owned(),
        event_locations,
    })
}

/// Runs the consumer until SIGTERM/SIGINT (or, with `--until-empty`, an empty queue); it logs
/// its summary (and writes its metrics' totals) when it stops.
///
/// # Errors
/// Invalid flags and startup failures (queue, database, schema not migrated).
pub async fn run(g: &GlobalArgs, a: &RunArgs) -> anyhow::Result<consumer::RunSummary> {
    let cfg = config(g, a)?;
    consumer::run(cfg, super::shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AwsTimeouts, S3Access};
    use crate::consumer::release_visibility;
    use std::time::Duration;

    #[test]
    fn release_visibility_grows_with_receives_and_is_capped() {
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "nexingest",
            "--database-url",
            "postgres://u@h/d",
            "run",
            "--queue-name",
            "q",
        ])
        .unwrap();
        let crate::cli::Command::Run(r) = &cli.command else {
            unreachable!()
        };
        let cfg = config(&cli.global, r).unwrap();
        assert_eq!(cfg.retry_visibility, Duration::from_secs(30));
        for (n, full) in [
            (1, 30),
            (2, 60),
            (3, 120),
            (4, 240),
            (5, 480),
            (6, 900),
            (30, 900),
        ] {
            for seed in ["a", "b", "c", "d"] {
                let v = release_visibility(&cfg, Some(n), seed);
                assert!(
                    v <= Duration::from_secs(full) && v >= Duration::from_secs(full) / 2,
                    "receive {n}: {v:?} not in [{}/2, {full}] s",
                    full
                );
            }
        }
        assert!(release_visibility(&cfg, None, "x") <= Duration::from_secs(30));
    }

    fn run_config(extra: &[&str]) -> Result<RunConfig, ConfigError> {
        use clap::Parser;
        let mut argv = vec![
            "nexingest",
            "--database-url",
            "postgres://u@h/db",
            "run",
            "--queue-name",
            "q",
        ];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("flags parse");
        let crate::cli::Command::Run(r) = &cli.command else {
            unreachable!()
        };
        config(&cli.global, r)
    }

    fn rejected(extra: &[&str]) -> String {
        match run_config(extra) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{extra:?} accepted: {:?}", c.aws.timeouts),
        }
    }

    #[test]
    fn aws_timeouts_default_and_flags() {
        let t = run_config(&[]).unwrap().aws.timeouts;
        assert_eq!(t, AwsTimeouts::default());
        assert_eq!(t.connect, Duration::from_secs(5));
        assert_eq!(t.read, Duration::from_secs(60));
        assert_eq!(t.operation, Duration::from_secs(120));
        assert_eq!(t.attempt, None);
        let t = run_config(&[
            "--aws-connect-timeout",
            "2",
            "--aws-read-timeout",
            "30",
            "--aws-operation-timeout",
            "300",
            "--aws-attempt-timeout",
            "100",
        ])
        .unwrap()
        .aws
        .timeouts;
        assert_eq!(
            t,
            AwsTimeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_secs(30),
                operation: Duration::from_secs(300),
                attempt: Some(Duration::from_secs(100)),
            }
        );
        // A shorter long poll allows a shorter read timeout.
        let t = run_config(&["--wait-time", "1", "--aws-read-timeout", "6"]).unwrap();
        assert_eq!(t.aws.timeouts.read, Duration::from_secs(6));
    }

    #[test]
    fn aws_timeouts_are_validated_naming_the_flag() {
        for flag in [
            "--aws-connect-timeout",
            "--aws-read-timeout",
            "--aws-operation-timeout",
            "--aws-attempt-timeout",
        ] {
            let e = rejected(&[flag, "0"]);
            assert!(e.contains(flag) && e.contains("1..=86400"), "{e}");
        }
        let e = rejected(&["--aws-read-timeout", "20"]);
        assert!(
            e.contains("--aws-read-timeout") && e.contains("--wait-time 20") && e.contains("25"),
            "{e}"
        );
        let e = rejected(&["--wait-time", "10", "--aws-operation-timeout", "12"]);
        assert!(e.contains("--aws-operation-timeout"), "{e}");
        let e = rejected(&["--aws-attempt-timeout", "10"]);
        assert!(e.contains("--aws-attempt-timeout"), "{e}");
        let e = rejected(&["--aws-attempt-timeout", "200"]);
        assert!(
            e.contains("--aws-attempt-timeout") && e.contains("--aws-operation-timeout"),
            "{e}"
        );
    }

    #[test]
    fn s3_access_defaults_and_flags() {
        let a = run_config(&[]).unwrap().aws.s3;
        assert_eq!(a, S3Access::default());
        assert_eq!((a.region.as_str(), a.no_sign_request), ("us-west-2", false));
        let a = run_config(&["--s3-no-sign-request", "--s3-region", "eu-central-1"])
            .unwrap()
            .aws
            .s3;
        assert_eq!(
            (a.region.as_str(), a.no_sign_request),
            ("eu-central-1", true)
        );
        for bad in ["", "US West", "us_west_2"] {
            let e = rejected(&["--s3-region", bad]);
            assert!(e.contains("--s3-region"), "{e}");
        }
    }
}

//! `nexingest requeue`: its flags as a [`RequeueConfig`], [`crate::requeue::run`], and the
//! report as text.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::cli::{GlobalArgs, QueueArgs, RequeueArgs, RequeueState};
use crate::config::{AwsConfig, DbConfig, QueueRef};
use crate::message::LocationSource;
use crate::requeue::{Mode, RequeueReport, Target};
/// What [`crate::cmd::dispatch`] calls: the library's settings and run.
pub use crate::requeue::{RequeueConfig, run};

impl RequeueConfig {
    /// From `requeue`'s flags.
    ///
    /// # Errors
    /// Any invalid setting.
    pub fn from_args(g: &GlobalArgs, a: &RequeueArgs) -> anyhow::Result<Self> {
        let aws = AwsConfig::from_args(&a.aws)?;
        let queue = match QueueRef::from_args(&a.queue) {
            Ok(q) => Some(q),
            // A dry run of data sources sends nothing, so it needs no queue.
            Err(_) if a.dry_run && a.from_dlq.is_none() => None,
            Err(e) => return Err(e.into()),
        };
        let mode = match &a.from_dlq {
            Some(d) => {
                let d = d.trim();
                let dlq = if d.starts_with("http://") || d.starts_with("https://") {
                    QueueRef::Url(d.to_owned())
                } else {
                    QueueRef::from_args(&QueueArgs {
                        queue_url: None,
                        queue_name: Some(d.to_owned()),
                    })
                    .context("--from-dlq")?
                };
                Mode::FromDlq {
                    dlq,
                    max_messages: (a.max_messages > 0).then_some(a.max_messages),
                }
            }
            None => {
                if !(1..=1000).contains(&a.batch_size) {
                    bail!("--batch-size must be 1..=1000");
                }
                let fallback_locations = a
                    .locations
                    .as_deref()
                    .map(|l| LocationSource::parse(l, Some(&aws), false))
                    .transpose()
                    .map_err(anyhow::Error::msg)
                    .context("--locations")?;
                crate::message::validate_variables(&a.variables).context("--variables")?;
                Mode::DataSources {
                    filter: super::job_filter(&a.filter)?,
                    state: match a.state {
                        RequeueState::Failed => Target::Failed,
                        RequeueState::Stale => Target::Stale,
                    },
                    fallback_locations,
                    fallback_variables: a.variables.clone(),
                    batch_size: a.batch_size,
                }
            }
        };
        Ok(RequeueConfig {
            db: DbConfig::from_args(g)?,
            aws,
            queue,
            mode,
            dry_run: a.dry_run,
        })
    }
}

impl RequeueReport {
    /// What `requeue` prints.
    pub fn render(&self, cfg: &RequeueConfig) -> String {
        let mut out = String::new();
        let verb = if cfg.dry_run {
            "would requeue"
        } else {
            "requeued"
        };
        for r in &self.requeued {
            if let Ok(j) = &r.job {
                let _ = writeln!(
                    out,
                    "{verb} {} ({}{}): variables {}, locations {}{}",
                    r.name,
                    r.from,
                    if r.from.starts_with("done") {
                        ""
                    } else {
                        " → pending"
                    },
                    j.variables.join(","),
                    j.locations,
                    if j.update_existing {
                        ", update_existing"
                    } else {
                        ""
                    }
                );
            }
        }
        for r in &self.left {
            let _ = writeln!(
                out,
                "left {} ({}): {}",
                r.name,
                r.from,
                r.job.as_ref().err().map_or("", String::as_str)
            );
        }
        for b in &self.dry_run_bodies {
            let _ = writeln!(out, "{b}");
        }
        match &cfg.mode {
            Mode::DataSources { .. } => {
                let _ = writeln!(
                    out,
                    "{} jobs {verb}, {} messages {}, {} left alone",
                    self.requeued.len(),
                    self.sent,
                    if cfg.dry_run { "to send" } else { "sent" },
                    self.left.len()
                );
            }
            Mode::FromDlq { .. } => {
                if cfg.dry_run {
                    let _ = writeln!(
                        out,
                        "{} messages in the dead-letter queue would be moved (dry run: left \
                         where they are)",
                        self.sent
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "moved {} messages from the dead-letter queue{}",
                        self.sent,
                        if self.delete_failed > 0 {
                            format!(
                                "; {} of them could not be deleted from it and will be sent \
                                 again by the next redrive",
                                self.delete_failed
                            )
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        out
    }
}

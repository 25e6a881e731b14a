//! Each delivery's one log line at the default level and its metrics record.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::message::JobSpec;
use crate::metrics::JobMetrics;
use crate::pipeline;

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Done,
    Skipped,
    Failed,
    Released,
    Rejected,
    Ignored,
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Released => "released",
            Outcome::Rejected => "rejected",
            Outcome::Ignored => "ignored",
        }
    }
}

/// What one delivery did: its one log line and its metrics.
pub(super) struct Report {
    pub(super) outcome: Outcome,
    pub(super) loaded: Option<pipeline::Loaded>,
    pub(super) data_source: Option<i64>,
    pub(super) reason: Option<String>,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1e3
}

impl Report {
    pub(super) fn new(outcome: Outcome) -> Self {
        Report {
            outcome,
            loaded: None,
            data_source: None,
            reason: None,
        }
    }

    pub(super) fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub(super) fn data_source(mut self, id: i64) -> Self {
        self.data_source = Some(id);
        self
    }

    /// The delivery's one line at the default level (phases are at `debug`).
    pub(super) fn log(&self) {
        let outcome = self.outcome.as_str();
        let reason = self.reason.as_deref().unwrap_or("");
        match (self.outcome, &self.loaded) {
            (Outcome::Done, Some(l)) => info!(
                outcome,
                data_source = l.data_source_id,
                rows = l.rows,
                new = l.rows_new,
                updated = l.rows_updated,
                mb = (l.bytes as f64 / 1e5).round() / 10.0,
                files_mb = (l.file_bytes as f64 / 1e5).round() / 10.0,
                download_s = secs(l.download_ms),
                decode_s = secs(l.decode_ms),
                load_s = secs(l.load_ms),
                slot_wait_s = secs(l.slot_wait_ms),
                unmatched = l.unmatched,
                "job done"
            ),
            (Outcome::Skipped, _) => info!(
                outcome,
                data_source = self.data_source,
                "job already done; delivery dropped"
            ),
            (Outcome::Ignored, _) => info!(outcome, reason, "not a job; deleted"),
            (Outcome::Failed, _) => error!(outcome, reason, "job failed permanently"),
            (Outcome::Rejected, _) => warn!(outcome, reason, "message rejected"),
            _ => warn!(outcome, reason, "job released"),
        }
    }

    pub(super) fn metrics(
        &self,
        spec: Option<&JobSpec>,
        message_id: &str,
        receive_count: Option<i32>,
        queue_wait_s: Option<f64>,
        took: Duration,
    ) -> JobMetrics {
        let l = self.loaded.clone().unwrap_or_default();
        JobMetrics {
            outcome: self.outcome.as_str(),
            dataset: spec.map(|s| s.dataset.name().to_owned()),
            scenario: spec.map(|s| s.scenario.to_owned()),
            model: spec.map(|s| s.model.to_owned()),
            year: spec.map(|s| s.year),
            data_source: self.data_source,
            message_id: Some(message_id.to_owned()),
            receive_count,
            object: spec.and_then(|s| s.object.as_ref()).map(|o| o.identity()),
            reason: self.reason.clone(),
            rows: l.rows,
            rows_new: l.rows_new,
            rows_updated: l.rows_updated,
            bytes: l.bytes,
            download_s: secs(l.download_ms),
            decode_s: secs(l.decode_ms),
            load_s: secs(l.load_ms),
            slot_wait_s: secs(l.slot_wait_ms),
            queue_wait_s,
            job_s: took.as_secs_f64(),
        }
    }
}

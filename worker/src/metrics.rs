//! Metrics of `run` (`--metrics emf`): one CloudWatch Embedded Metric Format (EMF) JSON line
//! on stdout per delivery, and one with the worker's totals when it stops. The CloudWatch agent
//! or the ECS `awslogs` driver sends stdout to CloudWatch Logs, which turns the lines into
//! metrics; logs go to stderr, so stdout holds nothing else.
//!
//! Per delivery (namespace `--metrics-namespace`, default `nexingest`):
//! - `Jobs` (Count), by `Dataset`, `Scenario`, `Outcome` and by `Outcome` alone (a message
//!   that is not a valid job has only `Outcome`): `done`, `skipped`, `failed`, `released`,
//!   `rejected`, `ignored`.
//! - For `done` jobs, by `Dataset` and `Scenario`: `Rows`, `RowsNew`, `RowsUpdated` (Count),
//!   `BytesDownloaded` (Bytes), `DownloadSeconds`, `DecodeSeconds`, `LoadSeconds`,
//!   `LoadSlotWaitSeconds`, `QueueWaitSeconds` (from the message's `SentTimestamp` to its
//!   receipt), `JobSeconds` (receipt to the end of the delivery) (Seconds).
//! - Properties for CloudWatch Logs Insights (not metrics): `Model`, `Year`, `MessageId`,
//!   `ReceiveCount`, `DataSource`, `Worker`, `Object` (S3 events), `Reason` (failures).
//!
//! At exit, without dimensions: `WorkerJobsDone`, `WorkerJobsSkipped`, `WorkerJobsFailed`,
//! `WorkerJobsReleased`, `WorkerJobsRejected`, `WorkerJobsIgnored`, `WorkerRows` (Count),
//! `WorkerBytesDownloaded` (Bytes), `WorkerLoadSlotWaitSeconds`, `WorkerUptimeSeconds`
//! (Seconds), with the `Worker` property.
//!
//! ```
//! use worker::metrics::{JobMetrics, emf_job};
//! let m = JobMetrics { outcome: "done", dataset: Some("LOCA".into()), scenario: Some("rcp45".into()),
//!                      rows: 10, ..JobMetrics::default() };
//! let line = emf_job("nexingest", "host:1", &m, 1_700_000_000_000);
//! assert_eq!(line["Rows"], 10);
//! assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "Dataset");
//! ```

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

/// Where metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MetricsFormat {
    /// No metrics.
    #[default]
    None,
    /// CloudWatch Embedded Metric Format lines on stdout.
    Emf,
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMetrics {
    /// `done`, `skipped`, `failed`, `released`, `rejected` or `ignored`.
    pub outcome: &'static str,
    /// Dataset (unknown for an invalid message).
    pub dataset: Option<String>,
    /// Scenario.
    pub scenario: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Year.
    pub year: Option<i32>,
    /// `data_source.id`.
    pub data_source: Option<i64>,
    /// SQS message id.
    pub message_id: Option<String>,
    /// SQS receive count.
    pub receive_count: Option<i32>,
    /// `s3://bucket/key#etag` of an S3-event job.
    pub object: Option<String>,
    /// Why it failed, was released or rejected.
    pub reason: Option<String>,
    /// Rows written.
    pub rows: u64,
    /// New rows.
    pub rows_new: u64,
    /// Existing rows filled or replaced.
    pub rows_updated: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Seconds downloading.
    pub download_s: f64,
    /// Seconds decoding.
    pub decode_s: f64,
    /// Seconds in the load transaction.
    pub load_s: f64,
    /// Seconds waiting for a database load slot.
    pub slot_wait_s: f64,
    /// Seconds from the message's sending to its receipt.
    pub queue_wait_s: Option<f64>,
    /// Seconds from receipt to the end of the delivery.
    pub job_s: f64,
}

#[derive(Debug, Default)]
struct Totals {
    by_outcome: [u64; 6],
    rows: u64,
    bytes: u64,
    slot_wait_s: f64,
}

const OUTCOMES: [&str; 6] = [
    "done", "skipped", "failed", "released", "rejected", "ignored",
];

/// The metrics sink of one worker: writes lines when enabled, keeps totals always.
pub struct Metrics {
    format: MetricsFormat,
    namespace: String,
    worker: String,
    out: Mutex<Box<dyn Write + Send>>,
    totals: Mutex<Totals>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("format", &self.format)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Metrics {
    /// A sink writing to stdout.
    pub fn stdout(format: MetricsFormat, namespace: &str, worker: &str) -> Self {
        Self::with_writer(format, namespace, worker, Box::new(std::io::stdout()))
    }

    /// A sink writing to `out`.
    pub fn with_writer(
        format: MetricsFormat,
        namespace: &str,
        worker: &str,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Metrics {
            format,
            namespace: namespace.to_owned(),
            worker: worker.to_owned(),
            out: Mutex::new(out),
            totals: Mutex::new(Totals::default()),
        }
    }

    /// Records one delivery.
    pub fn job(&self, m: &JobMetrics) {
        {
            let mut t = self.totals.lock().expect("metrics totals");
            if let Some(i) = OUTCOMES.iter().position(|o| *o == m.outcome) {
                t.by_outcome[i] += 1;
            }
            t.rows += m.rows;
            t.bytes += m.bytes;
            t.slot_wait_s += m.slot_wait_s;
        }
        if self.format == MetricsFormat::Emf {
            self.write(&emf_job(&self.namespace, &self.worker, m, now_ms()));
        }
    }

    /// Writes the worker's totals (call once, when it stops).
    pub fn finish(&self, uptime: Duration) {
        if self.format != MetricsFormat::Emf {
            return;
        }
        let t = self.totals.lock().expect("metrics totals");
        let mut names = Vec::new();
        let mut line = json!({ "Worker": self.worker });
        let mut put = |name: &str, unit: &str, v: Value| {
            names.push(json!({"Name": name, "Unit": unit}));
            line[name] = v;
        };
        for (i, o) in OUTCOMES.iter().enumerate() {
            let mut name = String::from("WorkerJobs");
            name.push_str(&o[..1].to_ascii_uppercase());
            name.push_str(&o[1..]);
            put(&name, "Count", json!(t.by_outcome[i]));
        }
        put("WorkerRows", "Count", json!(t.rows));
        put("WorkerBytesDownloaded", "Bytes", json!(t.bytes));
        put(
            "WorkerLoadSlotWaitSeconds",
            "Seconds",
            json!(round3(t.slot_wait_s)),
        );
        put(
            "WorkerUptimeSeconds",
            "Seconds",
            json!(round3(uptime.as_secs_f64())),
        );
        line["_aws"] = json!({
            "Timestamp": now_ms(),
            "CloudWatchMetrics": [{
                "Namespace": self.namespace,
                "Dimensions": [[]],
                "Metrics": names,
            }],
        });
        drop(t);
        self.write(&line);
    }

    fn write(&self, v: &Value) {
        let mut out = self.out.lock().expect("metrics writer");
        let mut s = v.to_string();
        s.push('\n');
        if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "could not write a metrics line");
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The EMF line of one delivery (see the module docs), at `timestamp_ms`.
pub fn emf_job(namespace: &str, worker: &str, m: &JobMetrics, timestamp_ms: u64) -> Value {
    let mut line = json!({
        "Outcome": m.outcome,
        "Worker": worker,
        "Jobs": 1,
    });
    let mut props = |k: &str, v: Value| {
        if !v.is_null() {
            line[k] = v;
        }
    };
    props("Model", json!(m.model));
    props("Year", json!(m.year));
    props("DataSource", json!(m.data_source));
    props("MessageId", json!(m.message_id));
    props("ReceiveCount", json!(m.receive_count));
    props("Object", json!(m.object));
    props("Reason", json!(m.reason));
    let jobs = json!({"Name": "Jobs", "Unit": "Count"});
    let mut directives = Vec::new();
    match (&m.dataset, &m.scenario) {
        (Some(d), Some(s)) => {
            line["Dataset"] = json!(d);
            line["Scenario"] = json!(s);
            directives.push(json!({
                "Namespace": namespace,
                "Dimensions": [["Dataset", "Scenario", "Outcome"], ["Outcome"]],
                "Metrics": [jobs],
            }));
            if m.outcome == "done" {
                let mut names = Vec::new();
                let mut put = |name: &str, unit: &str, v: Value| {
                    names.push(json!({"Name": name, "Unit": unit}));
                    line[name] = v;
                };
                put("Rows", "Count", json!(m.rows));
                put("RowsNew", "Count", json!(m.rows_new));
                put("RowsUpdated", "Count", json!(m.rows_updated));
                put("BytesDownloaded", "Bytes", json!(m.bytes));
                put("DownloadSeconds", "Seconds", json!(round3(m.download_s)));
                put("DecodeSeconds", "Seconds", json!(round3(m.decode_s)));
                put("LoadSeconds", "Seconds", json!(round3(m.load_s)));
                put(
                    "LoadSlotWaitSeconds",
                    "Seconds",
                    json!(round3(m.slot_wait_s)),
                );
                if let Some(q) = m.queue_wait_s {
                    put("QueueWaitSeconds", "Seconds", json!(round3(q)));
                }
                put("JobSeconds", "Seconds", json!(round3(m.job_s)));
                directives.push(json!({
                    "Namespace": namespace,
                    "Dimensions": [["Dataset", "Scenario"]],
                    "Metrics": names,
                }));
            }
        }
        _ => directives.push(json!({
            "Namespace": namespace,
            "Dimensions": [["Outcome"]],
            "Metrics": [jobs],
        })),
    }
    line["_aws"] = json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": directives,
    });
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric a directive names is a number at the top level, every dimension a string.
    fn check_emf(v: &Value) {
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some());
        for d in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert!(d["Namespace"].is_string());
            for set in d["Dimensions"].as_array().unwrap() {
                for k in set.as_array().unwrap() {
                    assert!(v[k.as_str().unwrap()].is_string(), "dimension {k}");
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                assert!(v[m["Name"].as_str().unwrap()].is_number(), "metric {m}");
            }
        }
    }

    #[test]
    fn job_lines_follow_emf() {
        let done = JobMetrics {
            outcome: "done",
            dataset: Some("NEX-GDDP".into()),
            scenario: Some("rcp85".into()),
            model: Some("CCSM4".into()),
            year: Some(2050),
            rows: 5,
            rows_new: 5,
            bytes: 1000,
            load_s: 1.23456,
            queue_wait_s: Some(2.0),
            ..JobMetrics::default()
        };
        let v = emf_job("ns", "w:1", &done, 1);
        check_emf(&v);
        assert_eq!(v["LoadSeconds"], 1.235);
        assert_eq!(v["Model"], "CCSM4");
        assert_eq!(v["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(), 2);
        let rejected = JobMetrics {
            outcome: "rejected",
            reason: Some("invalid message: not JSON".into()),
            ..JobMetrics::default()
        };
        let v = emf_job("ns", "w:1", &rejected, 1);
        check_emf(&v);
        assert!(v.get("Rows").is_none() && v.get("Dataset").is_none());
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Outcome"]])
        );
    }

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn totals_add_up() {
        let buf = Buf::default();
        let m = Metrics::with_writer(MetricsFormat::Emf, "ns", "w:1", Box::new(buf.clone()));
        for (o, rows) in [("done", 3), ("done", 4), ("skipped", 0), ("rejected", 0)] {
            m.job(&JobMetrics {
                outcome: o,
                rows,
                ..JobMetrics::default()
            });
        }
        m.finish(Duration::from_secs(9));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        lines.iter().for_each(check_emf);
        let t = &lines[4];
        assert_eq!(t["WorkerJobsDone"], 2);
        assert_eq!(t["WorkerJobsSkipped"], 1);
        assert_eq!(t["WorkerJobsRejected"], 1);
        assert_eq!(t["WorkerRows"], 7);
        assert_eq!(t["WorkerUptimeSeconds"], 9.0);
        assert_eq!(t["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));

        let off = Metrics::with_writer(MetricsFormat::None, "ns", "w", Box::new(buf.clone()));
        off.job(&JobMetrics::default());
        off.finish(Duration::ZERO);
        assert_eq!(buf.0.lock().unwrap().len(), text.len());
    }
}

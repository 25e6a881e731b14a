//! Sends failed or stale jobs again, or redrives the dead-letter queue: takes a
//! [`RequeueConfig`] (the database, AWS, the queue and a [`Mode`]), hands on a
//! [`RequeueReport`] of what was sent and what was left alone. `nexingest requeue`
//! (`cmd::requeue`) builds the settings from its flags and prints the report.
//!
//! **Data sources** ([`Mode::DataSources`]: [`Target::Failed`] or [`Target::Stale`], and a
//! [`JobFilter`]): each matching data source's job is rebuilt from its last attempt in the
//! ledger (its variables, its location source — recovered from the identity key, see
//! [`location_of_key`] — and `update_existing`), then, batch by batch, in one transaction: a
//! guarded `UPDATE data_source SET state = 'pending' WHERE state = ANY(<the requested state ∩
//! the states allowed to become pending>) … RETURNING id` (rows another worker moved meanwhile
//! are not returned and get no message), the native messages of the returned rows are sent,
//! and only then the transaction commits. A failed send rolls the state change back; a message
//! sent before a failed commit only runs a job whose data source is still `failed`, which the
//! worker allows (`failed → running`).
//!
//! With [`Target::Failed`], a data source that is `done` can still hold a failed job: a later
//! job for new locations or variables (another identity) that failed permanently leaves the
//! data source `done` with its earlier rows. Each such identity whose latest attempt failed is
//! sent again as it was recorded; no state changes (a `done` data source takes new identities,
//! and one that meanwhile loaded is skipped by the worker).
//!
//! **Dead-letter queue** ([`Mode::FromDlq`], [`dlq`]): receive up to 10 messages, send their
//! bodies to the queue, delete them from the dead-letter queue only after the send succeeded,
//! repeat until the dead-letter queue is empty. A message is never lost; one whose delete
//! failed comes back to the dead-letter queue and may be sent twice (a job delivered twice runs
//! once).

use std::collections::HashMap;

use anyhow::{Context, bail};

use crate::config::{AwsConfig, DbConfig, QueueRef};
use crate::message::{JobSpec, LocationSource};
use crate::pipeline::state::JobState;
use crate::producer::jobs::{self, JobFilter, JobRow, ShownState};
use crate::{aws, db, queue};

pub mod dlq;

/// Validated `requeue` settings (`nexingest requeue` builds them from its flags).
#[derive(Debug, Clone)]
pub struct RequeueConfig {
    /// Database.
    pub db: DbConfig,
    /// AWS.
    pub aws: AwsConfig,
    /// The queue to send to (`None` only for a dry run of data sources, which sends nothing).
    pub queue: Option<QueueRef>,
    /// What to do.
    pub mode: Mode,
    /// Change and send nothing: list what would be sent ([`RequeueReport::dry_run_bodies`]).
    pub dry_run: bool,
}

/// What [`run`] does.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per command
pub enum Mode {
    /// Move data sources to `pending` and send their jobs.
    DataSources {
        /// Which ones.
        filter: JobFilter,
        /// `failed` or `stale`.
        state: Target,
        /// Location source for data sources whose ledger has none.
        fallback_locations: Option<LocationSource>,
        /// Variables for data sources whose ledger has none.
        fallback_variables: Vec<String>,
        /// Data sources per transaction.
        batch_size: usize,
    },
    /// Redrive a dead-letter queue.
    FromDlq {
        /// The dead-letter queue.
        dlq: QueueRef,
        /// At most this many messages (`None`: all).
        max_messages: Option<usize>,
    },
}

/// Which data sources [`Mode::DataSources`] moves to `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `failed → pending`; also the failed later jobs of `done` data sources.
    Failed,
    /// `running → pending` for `running` data sources whose worker has not been seen for
    /// longer than the filter's `stale_after`.
    Stale,
}

impl RequeueConfig {
    /// The queue to send to; an error when none was given.
    fn queue(&self) -> anyhow::Result<&QueueRef> {
        self.queue
            .as_ref()
            .context("--queue-url or --queue-name is required")
    }
}

/// The location source a ledger identity key stands for (`None` for a key this version does
/// not know). Keys are written by [`crate::pipeline::plan`]: `all`, `cities:SOURCE:N:HASH`
/// (`SOURCE` `*` for every source), `geojson:URL:SIZE:HASH`, `boundary:URL:SIZE:HASH`; the URL
/// and the source may hold `:` themselves, the last two fields never do.
pub fn location_of_key(key: &str) -> Option<String> {
    if key == "all" {
        return Some("all".into());
    }
    let (kind, rest) = key.split_once(':')?;
    let mut tail = rest.rsplitn(3, ':');
    let hash = tail.next()?;
    let count = tail.next()?;
    let what = tail.next()?;
    if what.is_empty()
        || count.parse::<u64>().is_err()
        || hash.len() != 16
        || !hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    match kind {
        "cities" if what == "*" => Some("cities".into()),
        "cities" => Some(format!("cities:{what}")),
        "geojson" | "boundary" => Some(format!("{kind}:{what}")),
        _ => None,
    }
}

/// One data source `requeue` handled.
#[derive(Debug, Clone)]
pub struct Requeued {
    /// `dataset/scenario/model/year`.
    pub name: String,
    /// `failed` or `stale`.
    pub from: String,
    /// The job sent, or why none was.
    pub job: Result<JobSpec, String>,
}

/// What `requeue` did.
#[derive(Debug, Default)]
pub struct RequeueReport {
    /// Data sources moved to `pending` (or, in a dry run, that would be), with their jobs.
    pub requeued: Vec<Requeued>,
    /// Data sources left alone: their job is unknown, or another worker changed their state
    /// first.
    pub left: Vec<Requeued>,
    /// Messages sent (or, from the dead-letter queue, moved).
    pub sent: usize,
    /// From the dead-letter queue: messages whose delete from the dead-letter queue failed after they were
    /// sent (they will be sent again by a later redrive).
    pub delete_failed: usize,
    /// Lines describing a dry run's messages.
    pub dry_run_bodies: Vec<String>,
}

impl RequeueReport {
    /// A dry run's job: its body listed, counted as to send, reported as requeued `from`.
    fn would_send(&mut self, job: JobSpec, from: String) {
        self.dry_run_bodies.push(job.to_native_json());
        self.sent += 1;
        self.requeued.push(Requeued {
            name: job.id(),
            from,
            job: Ok(job),
        });
    }
}

/// Runs the settings' [`Mode`].
///
/// # Errors
/// Database and SQS failures; what was done before a failure is committed and reported in the
/// logs.
pub async fn run(cfg: &RequeueConfig) -> anyhow::Result<RequeueReport> {
    match &cfg.mode {
        Mode::DataSources {
            filter,
            state,
            fallback_locations,
            fallback_variables,
            batch_size,
        } => {
            let mut report = requeue_data_sources(
                cfg,
                filter,
                *state,
                fallback_locations.as_ref(),
                fallback_variables,
                *batch_size,
            )
            .await?;
            if *state == Target::Failed {
                requeue_failed_of_done(cfg, filter, &mut report).await?;
            }
            Ok(report)
        }
        Mode::FromDlq { dlq, max_messages } => dlq::redrive(cfg, dlq, *max_messages).await,
    }
}

/// Recorded job of a ledger entry: (variables, location key, update_existing).
type LedgerJob = (Vec<String>, Option<String>, bool);

/// Rows `(data_source_id, variables, location_key, update_existing)` of a ledger query over
/// the data sources `ids` (`$1`), as any collection of (id, job).
async fn ledger_jobs<C: FromIterator<(i64, LedgerJob)>>(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
    ids: &[i64],
) -> anyhow::Result<C> {
    let rows = client
        .query(sql, &[&ids])
        .await
        .context("reading the job ledger")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect())
}

/// The failed identities of `done` data sources: for each data source, every (variables,
/// location key) whose latest attempt that is not `skipped` failed.
async fn failed_identities(
    client: &impl tokio_postgres::GenericClient,
    ids: &[i64],
) -> anyhow::Result<Vec<(i64, LedgerJob)>> {
    ledger_jobs(
        client,
        "SELECT data_source_id, variables, location_key, update_existing
             FROM (SELECT DISTINCT ON (data_source_id, variables, location_key)
                          data_source_id, variables, location_key, update_existing, outcome
                   FROM job_ledger
                   WHERE data_source_id = ANY($1) AND outcome <> 'skipped'
                   ORDER BY data_source_id, variables, location_key, finished_at DESC, id DESC) l
             WHERE outcome = 'failed'
             ORDER BY data_source_id, location_key, variables",
        ids,
    )
    .await
}

/// The last attempt's job of each data source: (variables, location key, update_existing) of
/// its latest ledger entry that is not `skipped`.
async fn last_jobs(
    client: &impl tokio_postgres::GenericClient,
    ids: &[i64],
) -> anyhow::Result<HashMap<i64, LedgerJob>> {
    ledger_jobs(
        client,
        "SELECT DISTINCT ON (data_source_id) data_source_id, variables, location_key,
                    update_existing
             FROM job_ledger
             WHERE data_source_id = ANY($1) AND outcome <> 'skipped'
             ORDER BY data_source_id, finished_at DESC, id DESC",
        ids,
    )
    .await
}

fn rebuild(
    row: &JobRow,
    last: Option<&LedgerJob>,
    aws: &AwsConfig,
    fallback_locations: Option<&LocationSource>,
    fallback_variables: &[String],
) -> Result<JobSpec, String> {
    let recorded = last.and_then(|(_, key, _)| key.as_deref());
    let locations = match recorded.map(|k| (k, location_of_key(k))) {
        Some((_, Some(l))) => LocationSource::parse(&l, Some(aws), false)
            .map_err(|e| format!("its recorded location source no longer passes: {e}"))?,
        Some((k, None)) => {
            return Err(format!("unknown location key {k:?} in the ledger"));
        }
        None => fallback_locations.cloned().ok_or_else(|| {
            "the ledger does not record its location source (its attempt failed before \
             resolving it, or never ended); pass --locations"
                .to_owned()
        })?,
    };
    let variables: Vec<String> = match last {
        Some((v, _, _)) if !v.is_empty() => v.clone(),
        _ => fallback_variables.to_vec(),
    };
    let update = last.is_some_and(|(_, _, u)| *u);
    JobSpec::new(
        &row.dataset,
        &row.scenario,
        &row.model,
        row.year,
        &variables,
        locations,
        update,
        None,
        Some(aws),
    )
    .map_err(|e| e.to_string())
}

async fn requeue_data_sources(
    cfg: &RequeueConfig,
    filter: &JobFilter,
    state: Target,
    fallback_locations: Option<&LocationSource>,
    fallback_variables: &[String],
    batch_size: usize,
) -> anyhow::Result<RequeueReport> {
    let (shown, from) = match state {
        Target::Failed => (ShownState::Failed, JobState::Failed),
        Target::Stale => (ShownState::Stale, JobState::Running),
    };
    // The state machine is the authority: requeue only moves what may become `pending`.
    if !from.can_become(JobState::Pending) {
        bail!("{} → pending is not an allowed transition", from.as_str());
    }
    let mut f = filter.clone();
    f.states = vec![shown];
    f.limit = None;
    let pool = db::pool(&cfg.db, 1)?;
    let mut client = pool.get().await.context("connecting to the database")?;
    let rows = jobs::select(&**client, &f).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let last = last_jobs(&**client, &ids).await?;
    let mut report = RequeueReport::default();
    let mut todo: Vec<(&JobRow, JobSpec)> = Vec::new();
    for r in &rows {
        let name = format!("{}/{}/{}/{}", r.dataset, r.scenario, r.model, r.year);
        match rebuild(
            r,
            last.get(&r.id),
            &cfg.aws,
            fallback_locations,
            fallback_variables,
        ) {
            Ok(job) => todo.push((r, job)),
            Err(why) => report.left.push(Requeued {
                name,
                from: shown.as_str().into(),
                job: Err(why),
            }),
        }
    }
    if cfg.dry_run {
        for (r, job) in todo {
            report.would_send(job, r.state.clone());
        }
        return Ok(report);
    }
    if todo.is_empty() {
        return Ok(report);
    }
    let clients = aws::clients(&cfg.aws).await;
    let url = queue::resolve_url(&clients.sqs, cfg.queue()?).await?;
    let sources = JobState::sources_of(JobState::Pending);
    let guard: Vec<&str> = sources
        .into_iter()
        .filter(|s| *s == from.as_str())
        .collect();
    let stale_only = state == Target::Stale;
    for batch in todo.chunks(batch_size) {
        let ids: Vec<i64> = batch.iter().map(|(r, _)| r.id).collect();
        let tx = client.transaction().await?;
        let moved: Vec<i64> = tx
            .query(
                "UPDATE data_source SET state = 'pending'
                 WHERE id = ANY($1) AND state = ANY($2)
                   AND (NOT $3 OR coalesce(heartbeat_at, started_at)
                                  < now() - make_interval(secs => $4::float8))
                 RETURNING id",
                &[&ids, &guard, &stale_only, &filter.stale_after],
            )
            .await
            .context("moving data sources to pending")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut bodies = Vec::with_capacity(moved.len());
        for (r, job) in batch {
            if moved.contains(&r.id) {
                bodies.push(job.to_native_json());
            }
        }
        let sent = queue::send_all(&clients.sqs, &url, &bodies)
            .await
            .context("sending the jobs (their data sources stay as they were)")?;
        tx.commit()
            .await
            .context("committing the state change (the jobs were sent)")?;
        report.sent += sent;
        for (r, job) in batch {
            let entry = Requeued {
                name: job.id(),
                from: r.state.clone(),
                job: Ok(job.clone()),
            };
            if moved.contains(&r.id) {
                tracing::info!(job = %job.id(), from = %r.state, locations = %job.locations, "requeued");
                report.requeued.push(entry);
            } else {
                report.left.push(Requeued {
                    job: Err("its state changed meanwhile (another worker took it)".into()),
                    ..entry
                });
            }
        }
    }
    Ok(report)
}

/// `--state failed`, second part: the failed identities of `done` data sources (see the module
/// doc), sent again as recorded, in batches of 10.
async fn requeue_failed_of_done(
    cfg: &RequeueConfig,
    filter: &JobFilter,
    report: &mut RequeueReport,
) -> anyhow::Result<()> {
    let pool = db::pool(&cfg.db, 1)?;
    let client = pool.get().await.context("connecting to the database")?;
    let client = &**client;
    let mut f = filter.clone();
    f.states = vec![ShownState::Done];
    f.limit = None;
    let rows = jobs::select(client, &f).await?;
    let by_id: HashMap<i64, &JobRow> = rows.iter().map(|r| (r.id, r)).collect();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let from = "done, a later job failed";
    let mut todo = Vec::new();
    for (id, recorded) in failed_identities(client, &ids).await? {
        let row = by_id[&id];
        let name = format!(
            "{}/{}/{}/{}",
            row.dataset, row.scenario, row.model, row.year
        );
        if recorded.1.is_none() {
            // Failed before its locations were resolved: nothing says what it was.
            report.left.push(Requeued {
                name,
                from: from.into(),
                job: Err("a failed job's location source is not recorded; send it again with                           `enqueue`"
                    .into()),
            });
            continue;
        }
        match rebuild(row, Some(&recorded), &cfg.aws, None, &[]) {
            Ok(job) => todo.push(job),
            Err(why) => report.left.push(Requeued {
                name,
                from: from.into(),
                job: Err(why),
            }),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    if cfg.dry_run {
        for job in todo {
            report.would_send(job, from.into());
        }
        return Ok(());
    }
    let clients = aws::clients(&cfg.aws).await;
    let url = queue::resolve_url(&clients.sqs, cfg.queue()?).await?;
    for batch in todo.chunks(10) {
        let bodies: Vec<String> = batch.iter().map(JobSpec::to_native_json).collect();
        report.sent += queue::send_all(&clients.sqs, &url, &bodies)
            .await
            .context("sending the failed jobs of done data sources")?;
        for job in batch {
            tracing::info!(job = %job.id(), locations = %job.locations, "requeued a failed job of a done data source");
            report.requeued.push(Requeued {
                name: job.id(),
                from: from.into(),
                job: Ok(job.clone()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::plan::cities_key;

    #[test]
    fn location_keys_give_back_their_source() {
        assert_eq!(location_of_key("all").as_deref(), Some("all"));
        assert_eq!(
            location_of_key(&cities_key(None, &[3, 1])).as_deref(),
            Some("cities")
        );
        assert_eq!(
            location_of_key(&cities_key(Some("us:top200"), &[7])).as_deref(),
            Some("cities:us:top200")
        );
        assert_eq!(
            location_of_key("geojson:s3://b-1/dir/x.geojson:1234:00ff00ff00ff00ff").as_deref(),
            Some("geojson:s3://b-1/dir/x.geojson")
        );
        assert_eq!(
            location_of_key("boundary:s3://b-1/y.json:9:0123456789abcdef").as_deref(),
            Some("boundary:s3://b-1/y.json")
        );
        assert_eq!(location_of_key("geojson:s3://b/x:12"), None);
        assert_eq!(location_of_key("teleport:x:1:0123456789abcdef"), None);
        assert_eq!(location_of_key("cities::1:0123456789abcdef"), None);
    }
}

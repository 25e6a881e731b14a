//! Stage 1 and the end of every attempt: the job's `data_source` row, its state machine, and
//! the job ledger.
//!
//! # The state machine of `data_source.state`
//!
//! | from | to | when |
//! |---|---|---|
//! | `pending` | `running` | an attempt starts |
//! | `running` | `done` | an attempt commits (in the same transaction as its rows) |
//! | `running` | `failed` | an attempt fails permanently |
//! | `running` | `pending` | an attempt fails transiently or is released (shutdown, lost message) |
//! | `failed` | `pending` | requeued (a later delivery, or an operator) |
//! | `failed` | `running` | a redelivery retries it |
//! | `pending`, `failed` | `done` | a commit of an attempt that raced a failure record |
//! | `done` | — | never: later jobs on a done data source (new locations, new variables) keep it `done`; their own failures go to the ledger only |
//!
//! Every write of the state is one guarded `UPDATE … WHERE state = ANY(allowed sources)`, so a
//! late failure of one delivery can never turn another delivery's `done` back.
//!
//! # The ledger
//! One `job_ledger` entry per attempt that ends: `done` (with its rows, in the load's
//! transaction), `failed` (permanent), `released` (transient, or aborted: tried again later)
//! or `skipped` (a delivery of a job that is already done). Each carries the job's identity:
//! its variables and the key of its location source ([`crate::pipeline::plan`]).

use tokio_postgres::GenericClient;
use tracing::debug;

use super::{Attempt, JobPlan, Pipeline};
use crate::db::{self, CatalogIds};
use crate::error::JobError;
use crate::message::{JobSpec, SourceObject};

/// `data_source.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Created, or released for a later attempt.
    Pending,
    /// An attempt is running.
    Running,
    /// Loaded; stays so.
    Done,
    /// The last attempt failed permanently.
    Failed,
}

/// Every allowed transition (see the module docs).
pub const TRANSITIONS: &[(JobState, JobState)] = &[
    (JobState::Pending, JobState::Running),
    (JobState::Running, JobState::Done),
    (JobState::Running, JobState::Failed),
    (JobState::Running, JobState::Pending),
    (JobState::Failed, JobState::Pending),
    (JobState::Failed, JobState::Running),
    (JobState::Pending, JobState::Done),
    (JobState::Failed, JobState::Done),
];

impl JobState {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Whether `self → to` is allowed.
    pub fn can_become(self, to: JobState) -> bool {
        TRANSITIONS.contains(&(self, to))
    }

    /// The states that may become `to`, as the database spells them.
    pub fn sources_of(to: JobState) -> Vec<&'static str> {
        TRANSITIONS
            .iter()
            .filter(|(_, t)| *t == to)
            .map(|(f, _)| f.as_str())
            .collect()
    }
}

/// When an attempt started (seconds since the Unix epoch, for `to_timestamp($n)`).
#[derive(Debug, Clone, Copy)]
pub struct Started(pub f64);

impl Started {
    /// Now.
    pub fn now() -> Self {
        Started(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        )
    }
}

/// A job's `data_source` row.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    /// Catalog ids.
    pub ids: CatalogIds,
    /// `data_source.id`.
    pub data_source_id: i64,
    /// The state when prepared.
    pub state: JobState,
}

/// How an attempt ended, for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed with its rows.
    Done,
    /// Failed permanently.
    Failed,
    /// Failed transiently or was aborted; tried again later.
    Released,
    /// The job was already done.
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Released => "released",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One ledger entry.
pub(crate) struct LedgerEntry<'a> {
    pub outcome: Outcome,
    pub plan: Option<&'a JobPlan>,
    pub spec: &'a JobSpec,
    pub attempt_no: Option<i32>,
    pub rows_written: i64,
    pub rows_updated: i64,
    pub started: Started,
    pub error: Option<String>,
}

impl Pipeline {
    /// Finds or creates the job's `data_source` row in one statement that always returns it,
    /// also when two first deliveries race (the conflict branch locks and returns the row).
    ///
    /// # Errors
    /// `InvalidMessage` when the catalog lacks the names; database errors.
    pub async fn prepare(&self, spec: &JobSpec) -> Result<Prepared, JobError> {
        let client = self.pool.get().await?;
        let ids =
            db::catalog_ids(&**client, spec.dataset.name(), spec.model, spec.scenario).await?;
        let row = client
            .query_one(
                "INSERT INTO data_source (dataset_id, model_id, scenario_id, year)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (dataset_id, model_id, scenario_id, year)
                 DO UPDATE SET year = EXCLUDED.year
                 RETURNING id, state",
                &[&ids.dataset, &ids.model, &ids.scenario, &spec.year],
            )
            .await?;
        let state: String = row.get(1);
        Ok(Prepared {
            ids,
            data_source_id: row.get(0),
            state: JobState::parse(&state).unwrap_or(JobState::Pending),
        })
    }

    /// Whether this job (its data source, variables and location source) is already done and
    /// the spec does not ask to update: a `done` ledger entry with the same location key whose
    /// variables include the job's.
    ///
    /// # Errors
    /// Database errors.
    pub async fn is_done(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: &JobPlan,
    ) -> Result<bool, JobError> {
        if let Some(o) = &spec.object {
            let client = self.pool.get().await?;
            return Ok(object_versions(&**client, p.data_source_id, o).await?.same);
        }
        if spec.update_existing {
            return Ok(false);
        }
        let client = self.pool.get().await?;
        identity_done(&**client, p.data_source_id, plan).await
    }

    /// The job of an S3 event as it should run: a first version of an object fills its
    /// variable's column where it is missing; an object loaded before whose content has
    /// changed since (another ETag) replaces that column for the job's cells
    /// (`update_existing`). `None`: run the job as it is.
    ///
    /// # Errors
    /// Database errors.
    pub async fn object_job(
        &self,
        spec: &JobSpec,
        p: &Prepared,
    ) -> Result<Option<JobSpec>, JobError> {
        let Some(o) = &spec.object else {
            return Ok(None);
        };
        if spec.update_existing {
            return Ok(None);
        }
        let client = self.pool.get().await?;
        let v = object_versions(&**client, p.data_source_id, o).await?;
        Ok((v.other && !v.same).then(|| JobSpec {
            update_existing: true,
            ..spec.clone()
        }))
    }

    /// Starts an attempt: `attempts + 1`, and `running` unless the data source is `done`.
    /// Returns the attempt's number.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_attempt(&self, p: &Prepared) -> Result<i32, JobError> {
        let client = self.pool.get().await?;
        let from = JobState::sources_of(JobState::Running);
        let row = client
            .query_one(
                "UPDATE data_source
                 SET attempts = attempts + 1,
                     state = CASE WHEN state = ANY($2) THEN 'running' ELSE state END,
                     started_at = clock_timestamp(), heartbeat_at = clock_timestamp()
                 WHERE id = $1
                 RETURNING attempts",
                &[&p.data_source_id, &from],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Notes that the worker running an attempt of this data source is alive
    /// (`data_source.heartbeat_at`; `jobs` shows a `running` data source without a recent one as
    /// `stale`). Best effort: a failure is only logged.
    pub async fn beat(&self, data_source_id: i64) {
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE data_source SET heartbeat_at = clock_timestamp()
                     WHERE id = $1 AND state = 'running'",
                    &[&data_source_id],
                )
                .await?;
            Ok::<_, JobError>(())
        })
        .await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::debug!(
                data_source = data_source_id,
                "could not record the heartbeat"
            );
        }
    }

    /// Records an attempt that did not load: a ledger entry (`failed` when permanent, else
    /// `released`) with the error, and on `data_source` (unless it is `done`) the error and
    /// the state `failed`/`pending` when it was `running`. Rows are untouched.
    ///
    /// # Errors
    /// Database errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_failure(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: Option<&JobPlan>,
        err: &JobError,
        permanent: bool,
        attempt: &Attempt,
        attempt_no: Option<i32>,
        started: Started,
    ) -> Result<(), JobError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let to = if permanent {
            JobState::Failed
        } else {
            JobState::Pending
        };
        let msg = err.to_string();
        tx.execute(
            "UPDATE data_source
             SET state = CASE WHEN state = ANY($3) THEN $2 ELSE state END,
                 last_error = $4, finished_at = clock_timestamp()
             WHERE id = $1 AND state <> 'done'",
            &[
                &p.data_source_id,
                &to.as_str(),
                // Only the attempt's own `running` moves; `pending`/`failed` stay as they are.
                &[JobState::Running.as_str()].as_slice(),
                &msg,
            ],
        )
        .await?;
        self.ledger(
            &*tx,
            p,
            attempt,
            LedgerEntry {
                outcome: if permanent {
                    Outcome::Failed
                } else {
                    Outcome::Released
                },
                plan,
                spec,
                attempt_no,
                rows_written: 0,
                rows_updated: 0,
                started,
                error: Some(msg),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a delivery of a job that is already done (ledger `skipped`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_skip(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: Option<&JobPlan>,
        attempt: &Attempt,
    ) -> Result<(), JobError> {
        let client = self.pool.get().await?;
        debug!(
            data_source = p.data_source_id,
            "job already done; delivery dropped"
        );
        self.ledger(
            &**client,
            p,
            attempt,
            LedgerEntry {
                outcome: Outcome::Skipped,
                plan,
                spec,
                attempt_no: None,
                rows_written: 0,
                rows_updated: 0,
                started: Started::now(),
                error: None,
            },
        )
        .await
    }

    /// Writes one ledger entry (`finished_at` = the statement's clock time).
    pub(crate) async fn ledger(
        &self,
        client: &impl GenericClient,
        p: &Prepared,
        attempt: &Attempt,
        e: LedgerEntry<'_>,
    ) -> Result<(), JobError> {
        let (vars, key) = match e.plan {
            Some(plan) => (plan.variables_sorted(), Some(plan.key.clone())),
            None => {
                let mut v: Vec<String> = e.spec.variables.iter().map(|s| (*s).into()).collect();
                v.sort();
                (v, None)
            }
        };
        client
            .execute(
                "INSERT INTO job_ledger (data_source_id, message_id, receive_count, worker,
                                         outcome, rows_written, rows_updated, started_at,
                                         finished_at, error, variables, location_key, attempt,
                                         update_existing)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8), clock_timestamp(), $9,
                         $10, $11, $12, $13)",
                &[
                    &p.data_source_id,
                    &attempt.message_id,
                    &attempt.receive_count,
                    &self.worker_id,
                    &e.outcome.as_str(),
                    &e.rows_written,
                    &e.rows_updated,
                    &e.started.0,
                    &e.error,
                    &vars,
                    &key,
                    &e.attempt_no,
                    &e.spec.update_existing,
                ],
            )
            .await?;
        Ok(())
    }
}

/// Whether a `done` ledger entry of the data source has the plan's location key and covers
/// its variables.
pub(crate) async fn identity_done(
    client: &impl GenericClient,
    data_source_id: i64,
    plan: &JobPlan,
) -> Result<bool, JobError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM job_ledger
                            WHERE data_source_id = $1 AND outcome = 'done'
                              AND location_key = $2 AND variables @> $3)",
            &[&data_source_id, &plan.key, &plan.variables_sorted()],
        )
        .await?;
    Ok(row.get(0))
}

/// Which versions of an S3 object a data source's `done` ledger entries hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectVersions {
    /// This version (same key and ETag) was loaded.
    pub same: bool,
    /// Another version of the same key was loaded.
    pub other: bool,
}

/// Looks an S3 object up among the `done` ledger entries of a data source: their identity
/// keys end with `|` + [`SourceObject::identity`].
pub(crate) async fn object_versions(
    client: &impl GenericClient,
    data_source_id: i64,
    o: &SourceObject,
) -> Result<ObjectVersions, JobError> {
    let same = format!("|{}", o.identity());
    let any = format!("|{}", o.identity_base());
    let row = client
        .query_one(
            "SELECT coalesce(bool_or(right(location_key, length($2)) = $2), false),
                    coalesce(bool_or(strpos(location_key, $3) > 0
                                     AND right(location_key, length($2)) <> $2), false)
             FROM job_ledger
             WHERE data_source_id = $1 AND outcome = 'done' AND location_key IS NOT NULL",
            &[&data_source_id, &same, &any],
        )
        .await?;
    Ok(ObjectVersions {
        same: row.get(0),
        other: row.get(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_never_goes_back() {
        for to in [JobState::Pending, JobState::Running, JobState::Failed] {
            assert!(!JobState::Done.can_become(to), "done -> {to:?}");
        }
        assert!(JobState::Running.can_become(JobState::Done));
        assert!(JobState::Failed.can_become(JobState::Pending));
        assert!(!JobState::Pending.can_become(JobState::Failed));
        assert_eq!(JobState::sources_of(JobState::Failed), ["running"]);
        for s in ["pending", "running", "done", "failed"] {
            assert_eq!(JobState::parse(s).unwrap().as_str(), s);
        }
    }
}

//! One attempt of a job: the delivery's context ([`Attempt`]: commit gate, fetched files,
//! memory share, progress), and [`Pipeline::run_attempt`], the one way an attempt starts, runs
//! and ends on the ledger — used by the queue consumer (which retries transient failures) and
//! by `ingest` alike.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

use super::state::Started;
use super::{Event, FetchCache, Inputs, JobPlan, KeptDecode, Loaded, Observer, Pipeline, Prepared};
use crate::error::JobError;
use crate::message::JobSpec;

/// Decides, once, between committing an attempt and abandoning it because its message is
/// lost (the heartbeat could not extend its visibility, so another worker may have it).
///
/// The commit itself is guarded: [`CommitGate::begin_commit`] and [`CommitGate::lose`] race
/// on one atomic, so either the heartbeat learns the message is lost first and the attempt
/// rolls back, or the commit was already under way (and a later delivery finds the job done
/// and drops itself).
#[derive(Debug, Default)]
pub struct CommitGate(AtomicU8);

const GATE_OPEN: u8 = 0;
const GATE_LOST: u8 = 1;
const GATE_COMMITTING: u8 = 2;

impl CommitGate {
    /// Marks the message lost. Returns false when a commit had already begun.
    pub fn lose(&self) -> bool {
        match self
            .0
            .compare_exchange(GATE_OPEN, GATE_LOST, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(v) => v == GATE_LOST,
        }
    }

    /// Whether the message is known lost.
    pub fn is_lost(&self) -> bool {
        self.0.load(Ordering::SeqCst) == GATE_LOST
    }

    /// Claims the right to commit. Returns false when the message is known lost.
    pub fn begin_commit(&self) -> bool {
        match self.0.compare_exchange(
            GATE_OPEN,
            GATE_COMMITTING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(v) => v == GATE_COMMITTING,
        }
    }

    /// Re-opens the gate after an attempt that did not commit (a retry may commit).
    pub fn reopen(&self) {
        let _ = self.0.compare_exchange(
            GATE_COMMITTING,
            GATE_OPEN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// One delivery's context, shared by its attempts.
#[derive(Clone, Default)]
pub struct Attempt {
    /// SQS message id (ledger).
    pub message_id: Option<String>,
    /// SQS receive count (ledger).
    pub receive_count: Option<i32>,
    /// Whether the attempt may still commit.
    pub gate: Arc<CommitGate>,
    /// Files fetched so far, reused by later attempts of the same delivery.
    pub files: Arc<FetchCache>,
    /// What files read by ranges decoded to, reused by later attempts of the same delivery.
    pub decoded: Arc<KeptDecode>,
    /// Progress receiver.
    pub observer: Option<Arc<dyn Observer>>,
    /// Milliseconds this delivery's attempts have waited for a database load slot so far
    /// (grows while they wait; not counted against the job timeout).
    pub slot_wait_ms: Arc<AtomicU64>,
    /// The delivery's share of `run`'s memory budget (none for `ingest`).
    pub memory: Arc<MemoryGrant>,
}

/// A job's share of `run`'s memory budget (`--memory-budget-mb`, MiB permits of a
/// semaphore). Taken at the job's worst case ([`estimate_bytes`]) before it decodes; once its
/// variables are decoded it is cut to what the decoded blocks hold, so the next job can
/// download and decode while this one loads (a whole-grid NEX-GDDP-CMIP6 job is estimated at
/// 3.6 GB, the full grid, but holds ~1.7 GB, its data cells).
#[derive(Debug, Default)]
pub struct MemoryGrant(std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>);

impl MemoryGrant {
    /// Holds `permit` (giving back any earlier one).
    pub fn hold(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        *self.0.lock().expect("memory grant") = Some(permit);
    }

    /// Gives back all but `mb` MiB of the share; returns the MiB held now (0 when none).
    pub fn shrink_to(&self, mb: u32) -> u32 {
        let mut g = self.0.lock().expect("memory grant");
        match g.as_mut() {
            Some(p) => {
                let held = p.num_permits();
                if (mb as usize) < held {
                    drop(p.split(held - mb.max(1) as usize));
                }
                p.num_permits() as u32
            }
            None => 0,
        }
    }

    /// Gives the whole share back.
    pub fn release(&self) {
        self.0.lock().expect("memory grant").take();
    }
}

impl Attempt {
    pub(super) fn emit(&self, e: Event) {
        if let Some(o) = &self.observer {
            o.event(e);
        }
    }
}

/// How an attempt ended when it failed.
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: JobError,
    /// The attempt's number on the ledger (`None` when it could not even be started).
    pub attempt_no: Option<i32>,
}

impl Pipeline {
    /// One attempt of a planned job: counts it on `data_source` ([`Pipeline::begin_attempt`]),
    /// executes it ([`Pipeline::execute`]) within `limit` (time spent waiting for a database
    /// load slot does not count; `None`: no limit), and records a failure on the ledger
    /// (permanent when the error is, bounded by [`Pipeline::record_failure_logged`]).
    ///
    /// # Errors
    /// The attempt's [`JobError`], already recorded when `attempt_no` is `Some`.
    pub async fn run_attempt(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: &JobPlan,
        inputs: &Inputs,
        attempt: &Attempt,
        limit: Option<Duration>,
    ) -> Result<Loaded, Failed> {
        let started = Started::now();
        let n = self.begin_attempt(p).await.map_err(|error| Failed {
            error,
            attempt_no: None,
        })?;
        let work = self.execute(spec, p, plan, inputs, attempt);
        let r = match limit {
            Some(limit) => timeout_excluding(limit, &attempt.slot_wait_ms, work)
                .await
                .unwrap_or(Err(JobError::TimedOut(limit.as_secs()))),
            None => work.await,
        };
        match r {
            Ok(l) => Ok(l),
            Err(error) => {
                self.record_failure_logged(spec, p, Some(plan), &error, attempt, Some(n), started)
                    .await;
                Err(Failed {
                    error,
                    attempt_no: Some(n),
                })
            }
        }
    }

    /// Records a failure on the ledger ([`Pipeline::record_failure`]; permanent when `e` is),
    /// within 5 s; a failure to record is logged, not returned (the job's outcome stands).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_failure_logged(
        &self,
        spec: &JobSpec,
        p: &Prepared,
        plan: Option<&JobPlan>,
        e: &JobError,
        attempt: &Attempt,
        attempt_no: Option<i32>,
        started: Started,
    ) {
        let permanent = !e.is_transient();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            self.record_failure(spec, p, plan, e, permanent, attempt, attempt_no, started),
        )
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(error = %err, "could not record the failure"),
            Err(_) => warn!("recording the failure timed out"),
        }
    }
}

/// Runs `fut` for at most `limit`, not counting the time its attempts spend waiting for a
/// database load slot (`waited_ms` grows while they wait). `None` when the limit passed.
pub async fn timeout_excluding<T>(
    limit: Duration,
    waited_ms: &AtomicU64,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let mut counted = waited_ms.load(Ordering::Relaxed);
    let mut deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = tokio::time::sleep_until(deadline) => {
                let w = waited_ms.load(Ordering::Relaxed);
                if w <= counted {
                    return None;
                }
                deadline += Duration::from_millis(w - counted);
                counted = w;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_job_timeout_does_not_count_waits_for_a_load_slot() {
        let waited = Arc::new(AtomicU64::new(0));
        let limit = Duration::from_millis(150);
        // 400 ms, most of it counted as waiting for a slot (generously, so a loaded machine's
        // late timers do not matter): within 150 ms of work.
        let w = Arc::clone(&waited);
        let waits = async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                w.fetch_add(100, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            "done"
        };
        assert_eq!(timeout_excluding(limit, &waited, waits).await, Some("done"));
        // 400 ms of work without waiting: timed out.
        let busy = tokio::time::sleep(Duration::from_millis(400));
        assert_eq!(timeout_excluding(limit, &waited, busy).await, None);
    }
}

//! The fleet-wide load throttle (`--max-db-loads N`): at most N load transactions (COPYs) in
//! flight at once across every worker and `ingest` of one schema, counted by PostgreSQL
//! advisory-lock slots, so a fleet of workers cannot drive the database to 100% CPU.
//!
//! Takes: the job's data source, just before its load transaction ([`super::load`]). Hands
//! on: a [`Slot`], held until the transaction has committed or rolled back.
//!
//! - A slot is one of the N session-level advisory locks
//!   `(hashtext('nexingest.load.' || schema), 0..N)`. A job tries them in turn with
//!   `pg_try_advisory_lock` and, while all are taken, polls again after a jittered backoff
//!   (0.1 s growing to 2 s). Its message's heartbeat goes on meanwhile, and the time spent
//!   waiting does not count against `--job-timeout`.
//! - The locks live on a connection of the job's own, taken out of the pool for good: a
//!   session-level lock can never go back to the pool with the connection, and when the
//!   worker dies the server drops the connection and the slot with it.
//! - While it waits the job holds the shared lock `(hashtext('nexingest.wait.' || schema),
//!   data source id)`: `status` reads those from `pg_locks` and shows the data source as
//!   `waiting` (and counts the slots in use), nothing to clean up after a crash.
//! - After a commit the slot is released at once. After a failure or a cancellation it is
//!   released once the load's server process has gone or is idle (an abandoned COPY or
//!   `INSERT … SELECT` may keep the server busy after its client went away), at most
//!   [`DRAIN_LIMIT`] later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object, Pool};
use tracing::debug;

use crate::error::JobError;

/// Prefix of the slots' lock key (`hashtext(prefix || schema)`).
pub const LOAD_KEY: &str = "nexingest.load.";
/// Prefix of the waiting markers' lock key (`hashtext(prefix || schema)`).
pub const WAIT_KEY: &str = "nexingest.wait.";
/// Largest `--max-db-loads`.
pub const MAX_SLOTS: u32 = crate::config::MAX_DB_LOADS;
/// How long a slot stays held after a failed load, waiting for the load's server process to
/// go away.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(120);

const POLL_MIN: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

/// The slots of one schema.
#[derive(Debug, Clone)]
pub struct LoadSlots {
    n: u32,
}

/// The advisory-lock `objid` of a data source's waiting marker (advisory keys are 32-bit).
pub fn wait_marker(data_source_id: i64) -> i32 {
    (data_source_id % i64::from(i32::MAX)) as i32
}

impl LoadSlots {
    /// `n` slots (1..=[`MAX_SLOTS`]).
    pub fn new(n: u32) -> Self {
        LoadSlots {
            n: n.clamp(1, MAX_SLOTS),
        }
    }

    /// How many.
    pub fn len(&self) -> u32 {
        self.n
    }

    /// Always false: there is at least one slot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Waits for a free slot for a load of `data_source_id`. `waited_ms` grows while the job
    /// waits (for the job timeout and the metrics); `on_wait` is called once if it has to.
    ///
    /// # Errors
    /// Database errors (transient when the connection failed).
    pub async fn acquire(
        &self,
        pool: &Pool,
        data_source_id: i64,
        waited_ms: &AtomicU64,
        on_wait: impl FnOnce(),
    ) -> Result<Slot, JobError> {
        // Out of the pool for good: the session's locks leave with it.
        let client = Object::take(pool.get().await?);
        let keys = client
            .query_one(
                "SELECT hashtext($1 || current_schema()), hashtext($2 || current_schema())",
                &[&LOAD_KEY, &WAIT_KEY],
            )
            .await?;
        let (load_key, wait_key): (i32, i32) = (keys.get(0), keys.get(1));
        // Start at a different slot per job so N waiting jobs do not all probe slot 0 first.
        let first = (jitter(data_source_id as u64) * f64::from(self.n)) as u32 % self.n;
        let mut delay = POLL_MIN;
        let mut on_wait = Some(on_wait);
        let mut waiting = false;
        loop {
            let t = Instant::now();
            for i in 0..self.n {
                let slot = (first + i) % self.n;
                let got: bool = client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, $2)",
                        &[&load_key, &(slot as i32)],
                    )
                    .await?
                    .get(0);
                if got {
                    if waiting {
                        client
                            .execute(
                                "SELECT pg_advisory_unlock_shared($1, $2)",
                                &[&wait_key, &wait_marker(data_source_id)],
                            )
                            .await?;
                        waited_ms.fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    debug!(slot, of = self.n, "database load slot taken");
                    return Ok(Slot {
                        client: Some(client),
                        slot,
                        load_pid: None,
                        released: false,
                    });
                }
            }
            if !waiting {
                waiting = true;
                client
                    .execute(
                        "SELECT pg_advisory_lock_shared($1, $2)",
                        &[&wait_key, &wait_marker(data_source_id)],
                    )
                    .await?;
                debug!(slots = self.n, "every database load slot is taken; waiting");
                if let Some(f) = on_wait.take() {
                    f();
                }
            }
            let nap = delay.mul_f64(0.5 + 0.5 * jitter(t.elapsed().as_nanos() as u64));
            tokio::time::sleep(nap).await;
            waited_ms.fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            delay = (delay * 3 / 2).min(POLL_MAX);
        }
    }
}

/// A held load slot. [`Slot::release`] when the load transaction has ended cleanly; dropped
/// unreleased (failure, cancellation), it is released once the load's server process has gone
/// or is idle.
pub struct Slot {
    client: Option<ClientWrapper>,
    slot: u32,
    load_pid: Option<i32>,
    released: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("slot", &self.slot)
            .field("load_pid", &self.load_pid)
            .finish()
    }
}

impl Slot {
    /// Which slot.
    pub fn number(&self) -> u32 {
        self.slot
    }

    /// The server process of the load transaction this slot covers.
    pub fn covers(&mut self, backend_pid: i32) {
        self.load_pid = Some(backend_pid);
    }

    /// Releases the slot now (the load committed, or ended without writing).
    pub async fn release(mut self) {
        self.released = true;
        if let Some(c) = self.client.take() {
            // Closing the connection releases it too; unlocking first makes it immediate.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                c.execute("SELECT pg_advisory_unlock_all()", &[]),
            )
            .await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (Some(client), false) = (self.client.take(), self.released) else {
            return;
        };
        let Some(pid) = self.load_pid else {
            return; // no load started: dropping the connection frees the slot
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Keep the slot until the abandoned load's server process has gone.
        rt.spawn(async move {
            let t = Instant::now();
            while t.elapsed() < DRAIN_LIMIT {
                // Busy: running a statement or still inside the transaction.
                let alive = client
                    .query_opt(
                        "SELECT 1 FROM pg_stat_activity
                         WHERE pid = $1 AND state IS DISTINCT FROM 'idle'",
                        &[&pid],
                    )
                    .await;
                if !matches!(alive, Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            debug!(
                pid,
                ms = t.elapsed().as_millis() as u64,
                "database load slot released after the failed load"
            );
            drop(client);
        });
    }
}

/// A number in [0, 1) from a seed and the clock.
fn jitter(seed: u64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let h = super::plan::fnv1a(seed.to_le_bytes().into_iter().chain(nanos.to_le_bytes()));
    (h % 1024) as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_fit_an_advisory_key() {
        assert_eq!(wait_marker(7), 7);
        assert!(wait_marker(i64::MAX) >= 0);
        assert_eq!(LoadSlots::new(0).len(), 1);
        assert_eq!(LoadSlots::new(5000).len(), MAX_SLOTS);
        for s in 0..100 {
            let j = jitter(s);
            assert!((0.0..1.0).contains(&j));
        }
    }
}

//! The writes of one attempt, retried through transient store errors until they succeed, are
//! fenced, or the attempt's lease is over (shared by the attempt and its artifacts).

use crate::{metrics, Running, Shared, StopReason};
use smith_core::TaskId;
use smith_store::Error as StoreError;
use std::future::Future;
use std::time::Duration;

/// The first and the longest wait between two tries of a write the store failed transiently.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The writes of one attempt: each is retried through transient store errors (with jittered,
/// capped backoff) until it succeeds, is fenced, or the attempt's lease is over.
pub(crate) struct Writes<'a> {
    pub s: &'a Shared,
    pub id: TaskId,
    pub attempt: u32,
    pub running: &'a Running,
    pub started: tokio::time::Instant,
}

impl Writes<'_> {
    pub(crate) async fn retry<T, F, Fut>(&self, op: &'static str, mut write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = RETRY_FIRST;
        let mut first_failure = None;
        loop {
            let e = match write().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // an error that keeps coming back while the lease is renewed is given one lease
            // period, then the task is handed back like an orphan
            let since = *first_failure.get_or_insert_with(tokio::time::Instant::now);
            if !matches!(e, StoreError::Unavailable(_) | StoreError::Backend(_)) {
                return Err(e);
            }
            if self.running.reason() == Some(StopReason::Lost) {
                return Err(e);
            }
            // Every lease ends `lease` after the later of its claim and its last renewal; past
            // that the reaper may have handed the task to another attempt.
            let renewed = *self.s.renewed_at.lock().expect("renewed lock");
            let lease_end = (renewed.max(self.started) + self.s.opts.lease).min(since + self.s.opts.lease);
            let jittered = wait.mul_f64(0.5 + fastrand::f64() / 2.0);
            if tokio::time::Instant::now() + jittered >= lease_end {
                return Err(e);
            }
            metrics::write_retried(op);
            tracing::warn!(task_id = %self.id, attempt = self.attempt, op, error = %e, "store write failed; retrying");
            tokio::time::sleep(jittered).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}

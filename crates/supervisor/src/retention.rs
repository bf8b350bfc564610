//! Retention (docs/retention.md): the leading supervisor deletes, in bounded batches, finished
//! tasks older than their tenant's age with everything that belongs to them, artifacts older
//! than theirs, and audit records older than theirs. Every batch is one short store write (the
//! usage rollup, the feed horizon and the deletes together); an artifact's object is deleted
//! from the artifact storage before its record, and a task whose object could not be deleted
//! keeps its records until a later pass manages it.

use smith_artifacts::Storage;
use smith_core::Micros;
use smith_store::{Cutoff, Expired, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long each kind of record is kept; `None`: forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ages {
    /// Finished tasks, with their events, artifacts, approvals and webhook deliveries.
    pub tasks: Option<Duration>,
    /// Artifacts of finished tasks (the task itself stays until its own age).
    pub artifacts: Option<Duration>,
    /// Audit records.
    pub audit: Option<Duration>,
}

impl Ages {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_none() && self.artifacts.is_none() && self.audit.is_none()
    }
}

/// What the leader deletes, and how.
#[derive(Clone)]
pub struct RetentionOptions {
    /// Every tenant's ages, unless it has its own.
    pub default: Ages,
    /// Tenants with ages of their own (already merged with the defaults).
    pub tenants: BTreeMap<String, Ages>,
    /// Rows one batch deletes at most.
    pub batch: usize,
    /// How often the leader looks for expired rows.
    pub every: Duration,
    /// Where artifacts' objects are (`None`: no artifact has an object to delete).
    pub storage: Option<Arc<dyn Storage>>,
}

impl RetentionOptions {
    /// Nothing is ever deleted: the loop need not run.
    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.tenants.values().all(Ages::is_empty)
    }

    /// Each scope with its age for one kind of record: every tenant with ages of its own,
    /// then everyone else.
    fn cutoffs(&self, age: fn(&Ages) -> Option<Duration>, now: Micros) -> Vec<Cutoff> {
        let before = |d: Duration| Micros(now.0.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)));
        let mut out = Vec::new();
        for (tenant, ages) in &self.tenants {
            if let Some(d) = age(ages) {
                out.push(Cutoff { tenant: Some(tenant.clone()), except: vec![], before: before(d) });
            }
        }
        if let Some(d) = age(&self.default) {
            out.push(Cutoff { tenant: None, except: self.tenants.keys().cloned().collect(), before: before(d) });
        }
        out
    }
}

impl std::fmt::Debug for RetentionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionOptions")
            .field("default", &self.default)
            .field("tenants", &self.tenants)
            .field("batch", &self.batch)
            .field("every", &self.every)
            .field("storage", &self.storage.as_ref().map(|s| s.describe()))
            .finish()
    }
}

/// Batches a pass runs at most for one scope and kind before moving on (the next pass goes on).
const MAX_BATCHES: usize = 1000;

/// The leader's retention loop; cheap to clone.
#[derive(Clone)]
pub struct Retention {
    opts: Arc<RetentionOptions>,
    store: Arc<dyn Store>,
    leader: Arc<AtomicBool>,
}

/// What one pass deleted, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub tasks: u64,
    pub events: u64,
    pub artifacts: u64,
    pub audit: u64,
    /// Artifact objects the storage would not delete (their tasks wait for a later pass).
    pub failed_objects: u64,
}

impl Retention {
    /// Deletes while `leader` says this supervisor leads.
    pub fn new(opts: RetentionOptions, store: Arc<dyn Store>, leader: Arc<AtomicBool>) -> Retention {
        Retention { opts: Arc::new(opts), store, leader }
    }

    /// Runs a pass every `every` while this supervisor leads.
    pub async fn run_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut tick = tokio::time::interval(self.opts.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if !self.leader.load(Ordering::Acquire) {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                pass = self.pass(Micros::now()) => {
                    if pass != Pass::default() {
                        tracing::debug!(?pass, "retention pass deleted expired records");
                    }
                }
            }
        }
    }

    /// One pass over every kind and scope, as of `now`. A store error ends that kind's pass
    /// (logged, counted); the next pass tries again.
    pub async fn pass(&self, now: Micros) -> Pass {
        let mut pass = Pass::default();
        for cutoff in self.opts.cutoffs(|a| a.tasks, now) {
            if let Err(e) = self.tasks(&cutoff, &mut pass).await {
                failed("tasks", &e);
            }
        }
        for cutoff in self.opts.cutoffs(|a| a.artifacts, now) {
            if let Err(e) = self.artifacts(&cutoff, &mut pass).await {
                failed("artifacts", &e);
            }
        }
        for cutoff in self.opts.cutoffs(|a| a.audit, now) {
            if let Err(e) = self.audit(&cutoff, &mut pass).await {
                failed("audit", &e);
            }
        }
        pass
    }

    async fn tasks(&self, cutoff: &Cutoff, pass: &mut Pass) -> smith_store::Result<()> {
        for _ in 0..MAX_BATCHES {
            if !self.leader.load(Ordering::Acquire) {
                return Ok(());
            }
            let start = Instant::now();
            let expired = self.store.expired_tasks(cutoff, self.opts.batch).await?;
            if expired.is_empty() {
                return Ok(());
            }
            let (ids, failures) = self.delete_objects(&expired).await;
            pass.failed_objects += failures;
            let purged = self.store.purge_tasks(ids.iter().map(|(id, _)| *id).collect()).await?;
            metrics::histogram!(BATCH_DURATION, "kind" => "tasks").record(start.elapsed().as_secs_f64());
            for (kind, n) in [
                ("tasks", purged.tasks),
                ("events", purged.events),
                ("artifacts", purged.artifacts),
                ("approvals", purged.approvals),
                ("webhook_deliveries", purged.deliveries),
            ] {
                metrics::counter!(DELETED, "kind" => kind).increment(n);
            }
            metrics::gauge!(HORIZON).set(purged.horizon as f64);
            pass.tasks += purged.tasks;
            pass.events += purged.events;
            pass.artifacts += purged.artifacts;
            // a batch that deleted nothing (kept: the feed's newest event, or objects that would
            // not go) waits for the next pass rather than asking again at once
            if purged.tasks == 0 || expired.len() < self.opts.batch {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn artifacts(&self, cutoff: &Cutoff, pass: &mut Pass) -> smith_store::Result<()> {
        for _ in 0..MAX_BATCHES {
            if !self.leader.load(Ordering::Acquire) {
                return Ok(());
            }
            let start = Instant::now();
            let expired = self.store.expired_artifacts(cutoff, self.opts.batch).await?;
            if expired.is_empty() {
                return Ok(());
            }
            let (gone, failures) = self.delete_objects(&expired).await;
            pass.failed_objects += failures;
            let records: Vec<_> =
                gone.into_iter().flat_map(|(id, names)| names.into_iter().map(move |n| (id, n))).collect();
            let n = if records.is_empty() { 0 } else { self.store.purge_artifacts(records).await? };
            metrics::histogram!(BATCH_DURATION, "kind" => "artifacts").record(start.elapsed().as_secs_f64());
            metrics::counter!(DELETED, "kind" => "artifacts").increment(n);
            pass.artifacts += n;
            if n == 0 || expired.len() < self.opts.batch {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn audit(&self, cutoff: &Cutoff, pass: &mut Pass) -> smith_store::Result<()> {
        for _ in 0..MAX_BATCHES {
            if !self.leader.load(Ordering::Acquire) {
                return Ok(());
            }
            let start = Instant::now();
            let n = self.store.purge_audit(cutoff, self.opts.batch).await?;
            metrics::histogram!(BATCH_DURATION, "kind" => "audit").record(start.elapsed().as_secs_f64());
            metrics::counter!(DELETED, "kind" => "audit").increment(n);
            pass.audit += n;
            if (n as usize) < self.opts.batch {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Deletes the objects of the tasks' artifacts; returns the tasks whose objects are all
    /// gone (with the names), and how many objects would not go. A missing object is gone.
    async fn delete_objects(&self, expired: &[Expired]) -> (Vec<(smith_core::TaskId, Vec<String>)>, u64) {
        let mut gone = Vec::with_capacity(expired.len());
        let mut failures = 0;
        for e in expired {
            let mut ok = true;
            if let Some(storage) = &self.opts.storage {
                for name in &e.artifacts {
                    let key = smith_artifacts::key(&e.tenant, e.id, name);
                    if let Err(err) = storage.delete(&key).await {
                        tracing::warn!(task_id = %e.id, artifact = %name, error = %err, "cannot delete an expired artifact; its task waits for the next pass");
                        metrics::counter!(FAILURES, "kind" => "artifact_object").increment(1);
                        failures += 1;
                        ok = false;
                    }
                }
            }
            if ok {
                gone.push((e.id, e.artifacts.clone()));
            }
        }
        (gone, failures)
    }
}

fn failed(kind: &'static str, e: &smith_store::Error) {
    tracing::warn!(kind, error = %e, "retention pass failed; the next pass tries again");
    metrics::counter!(FAILURES, "kind" => kind).increment(1);
}

const DELETED: &str = "smith_retention_deleted_total";
const BATCH_DURATION: &str = "smith_retention_batch_duration_seconds";
const HORIZON: &str = "smith_retention_horizon";
const FAILURES: &str = "smith_retention_failures_total";

/// Describes retention's metrics.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DELETED,
        "Rows retention deleted, by kind (tasks, events, artifacts, approvals, webhook_deliveries, audit)"
    );
    describe_histogram!(BATCH_DURATION, "Seconds one retention batch took (list, object deletes, the purge), by kind");
    describe_gauge!(HORIZON, "The feed's retention horizon: the highest event position retention deleted (0: none)");
    describe_counter!(FAILURES, "Retention batches or artifact objects that failed (retried next pass), by kind");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_with_their_own_ages_are_left_out_of_the_default_scope() {
        let day = Duration::from_secs(86_400);
        let mut tenants = BTreeMap::new();
        tenants.insert("acme".to_string(), Ages { tasks: Some(day), ..Ages::default() });
        tenants.insert("keep".to_string(), Ages::default());
        let opts = RetentionOptions {
            default: Ages { tasks: Some(day * 30), audit: Some(day * 90), artifacts: None },
            tenants,
            batch: 10,
            every: Duration::from_secs(1),
            storage: None,
        };
        let now = Micros(100 * 86_400_000_000);
        let tasks = opts.cutoffs(|a| a.tasks, now);
        assert_eq!(tasks.len(), 2);
        assert_eq!((tasks[0].tenant.as_deref(), tasks[0].before), (Some("acme"), Micros(99 * 86_400_000_000)));
        assert_eq!(tasks[1].tenant, None);
        assert_eq!(tasks[1].except, ["acme", "keep"], "a tenant kept forever is left out too");
        assert_eq!(tasks[1].before, Micros(70 * 86_400_000_000));
        let audit = opts.cutoffs(|a| a.audit, now);
        assert_eq!(audit.len(), 1, "the default's, for every tenant without an audit age of its own");
        assert!(opts.cutoffs(|a| a.artifacts, now).is_empty());
        assert!(!opts.is_empty());
    }
}

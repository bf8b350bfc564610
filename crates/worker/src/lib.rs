//! The worker: claims tasks for the agents it runs, runs them under leases, streams their
//! events, and honours cancels, timeouts and drains.
//!
//! A worker is a set of long-lived components — the claim loop, the lease keeper (heartbeat
//! and lease renewal in one statement) and the cancel listener — that the node's supervision
//! tree runs, plus one tokio task per running attempt.

mod artifacts;
mod attempt;
mod breaker;
mod holds;
pub mod metrics;
mod pool;
mod rates;
#[cfg(test)]
mod tests;
mod writes;

use smith_bus::Bus;
use smith_core::{AgentDef, Micros, Node, NodeRole, NodeStatus, TaskId};
use smith_store::{ClaimRequest, KeyCaps, RunningCaps, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use artifacts::ArtifactOptions;
pub use rates::{shape as rate_shape, specs as rate_specs, IN_HAND, MAX_SHARE, SHARE_LEASE};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub node_id: String,
    pub address: Option<String>,
    /// Agents this worker runs (built-ins included by the caller).
    pub agents: Vec<AgentDef>,
    /// Agents running at once in this worker, over all definitions: the pool's ceiling.
    pub max_agents: usize,
    /// Agent slots the pool keeps even when idle (may be 0).
    pub min_agents: usize,
    /// How long a claim holds a task without renewal.
    pub lease: Duration,
    /// Heartbeat and lease renewal period; well under `lease`.
    pub heartbeat: Duration,
    /// Claim poll period when no wake-up arrives (a lost wake-up must not strand a task).
    pub poll: Duration,
    /// Most tasks claimed per agent in one claim.
    pub claim_batch: u32,
    /// How long an attempt's events may wait to be batched with later ones.
    pub linger: Duration,
    /// The platform's MCP endpoint (a gateway's `/mcp`), given to collaborating LLM agents.
    pub mcp_url: Option<String>,
    /// Signs the capability each collaborating attempt presents to the MCP endpoint (bound to
    /// its task, attempt and tenant); the gateway holds the same key. `None`: agents present
    /// none (the gateway is anonymous).
    pub capability_key: Option<smith_core::CapabilityKey>,
    /// Where Claude Code agents without a `cwd` work: `sessions/<id>` per session (kept, so a
    /// later turn resumes in the same place), `tasks/<id>` per task (removed when it ends).
    pub work_dir: Option<std::path::PathBuf>,
    /// The most tasks of each tenant running at once over every worker (`[quotas]
    /// max_running`): the claim leaves a tenant's tasks queued while it has that many running.
    pub running_caps: Arc<RunningCaps>,
    /// What one attempt may write (`[limits] task_output_bytes`, `task_events`).
    pub output: OutputLimits,
    /// Where agents' artifacts are stored, and their caps (`[artifacts]`). `None`: agents get
    /// no `$SMITH_ARTIFACTS`.
    pub artifacts: Option<ArtifactOptions>,
    /// Provider rate limits by account (`[providers.NAME] rate_limit`, an agent's own
    /// `rate_limit`): shared with every worker through the store (docs/rate-limits.md).
    pub rate_limits: std::collections::BTreeMap<String, smith_core::RateLimit>,
}

/// Caps on what one attempt writes to the store: its events (the serialized `data` of each
/// event the executor emits, plus the result) and their count. An attempt over either is
/// stopped and fails `output_limit_exceeded`, keeping the events that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes of event data plus the result.
    pub bytes: u64,
    /// Events emitted by the executor.
    pub events: u64,
}

impl OutputLimits {
    /// 64 MiB: four `max_result_bytes`-sized results, or 4,000 events of 16 KiB.
    pub const DEFAULT_BYTES: u64 = 64 << 20;
    /// 100,000 events: a long Claude Code session emits a few thousand.
    pub const DEFAULT_EVENTS: u64 = 100_000;
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits { bytes: Self::DEFAULT_BYTES, events: Self::DEFAULT_EVENTS }
    }
}

impl WorkerOptions {
    pub fn new(node_id: impl Into<String>, agents: Vec<AgentDef>) -> Self {
        WorkerOptions {
            node_id: node_id.into(),
            address: None,
            agents,
            max_agents: 100_000,
            min_agents: 0,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            poll: Duration::from_millis(250),
            claim_batch: 512,
            linger: Duration::from_millis(2),
            mcp_url: None,
            capability_key: None,
            work_dir: None,
            running_caps: Arc::default(),
            output: OutputLimits::default(),
            artifacts: None,
            rate_limits: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Cancelled,
    TimedOut,
    /// Handed back during a drain.
    Released,
    /// The lease is gone: another attempt may own the task now. Write nothing.
    Lost,
    /// The attempt spent more tokens or money than its budget allows.
    BudgetExceeded,
    /// The attempt wrote more bytes or events than [`OutputLimits`] allow.
    OutputLimit,
    /// The attempt asked a person and its task waits (`waiting_input`): it resumes in a new
    /// attempt with the answer. Write nothing.
    Parked,
}

/// A running attempt's handle, shared by the attempt and whoever may stop it (the lease keeper,
/// a drain, the attempt's own checks).
#[derive(Clone)]
pub(crate) struct Running {
    pub attempt: u32,
    pub agent: String,
    pub cancel: CancellationToken,
    pub reason: Arc<Mutex<Option<StopReason>>>,
    /// Set once the executor has finished: the attempt only writes its outcome now, and a
    /// renewal that no longer holds its task (the outcome just committed) lost nothing.
    pub settled: Arc<AtomicBool>,
}

impl Running {
    /// Why the attempt was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().expect("reason lock")
    }

    /// The one way to stop an attempt: records why (the first reason wins) and cancels its
    /// executor.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().expect("reason lock");
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.cancel.cancel();
    }
}

pub(crate) struct Shared {
    pub opts: WorkerOptions,
    /// Where attempts' directories go: the work dir, or the temp dir's `smith-work`.
    pub work_root: std::path::PathBuf,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub defs: HashMap<String, Arc<AgentDef>>,
    pub executors: HashMap<String, Arc<dyn smith_agents::Executor>>,
    pub breakers: Mutex<HashMap<String, breaker::Breaker>>,
    /// Provider accounts at their usage limit: their agents' tasks are not claimed.
    pub(crate) holds: holds::Holds,
    /// The rate limits of the accounts this worker's agents name.
    pub limits: rates::Limits,
    pub running: Mutex<HashMap<TaskId, Running>>,
    /// Signalled when an attempt ends (capacity freed, drain progress).
    pub freed: Notify,
    /// Tasks the store says we hold but we do not run, seen at the last renewal.
    pub suspects: Mutex<std::collections::HashSet<(TaskId, u32)>>,
    pub wake: Notify,
    pub draining: AtomicBool,
    /// Set once drained: heartbeats stop overwriting the `stopped` status.
    pub stopped: AtomicBool,
    /// Quarantined by the supervisor (missed heartbeats): claims nothing until readmitted.
    pub quarantined: AtomicBool,
    pub pool: pool::Pool,
    /// Attempts finished and their summed run time (µs), reported in heartbeats: the
    /// autoscaler's completion rate and mean task duration.
    pub finished: AtomicU64,
    pub busy_micros: AtomicU64,
    /// Claims made, to rotate which agent is served first.
    pub claims: std::sync::atomic::AtomicUsize,
    /// Attempts the lease keeper stopped because the store no longer held their task.
    pub leases_lost: AtomicU64,
    /// The agents whose running tasks are capped per concurrency key (`max_per_key`).
    pub key_caps: Arc<KeyCaps>,
    pub started_at: Micros,
    /// When the lease keeper last renewed this worker's leases (every lease ends at most
    /// `lease` after it): how long a write of an attempt's outcome is worth retrying.
    pub renewed_at: Mutex<tokio::time::Instant>,
}

impl Shared {
    pub(crate) fn record_finished(&self, took: Duration) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.busy_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A worker; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

/// Live figures for `GET /v1/nodes` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Attempts running (or handed to a slot that is about to run them).
    pub running: usize,
    /// The most attempts this worker runs at once (`max_agents`).
    pub capacity: usize,
    /// Agent slots in the pool now, idle ones included.
    pub slots: usize,
    /// Slots the pool means to hold.
    pub target: usize,
}

impl Worker {
    pub fn new(opts: WorkerOptions, store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        let mut defs = HashMap::new();
        let mut executors = HashMap::new();
        let mut breakers = HashMap::new();
        // without a configured work dir, workspaces go to the temp dir
        let work_root = opts.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("smith-work"));
        for d in &opts.agents {
            let executor = smith_agents::workspace::wrap(smith_agents::executor_for(d), d, &work_root);
            executors.insert(d.name.clone(), executor);
            defs.insert(d.name.clone(), Arc::new(d.clone()));
            breakers.insert(d.name.clone(), breaker::Breaker::new(d.breaker_failures, d.breaker_cooldown));
        }
        let pool = pool::Pool::new(opts.min_agents.min(opts.max_agents), opts.max_agents);
        let key_caps = Arc::new(KeyCaps::of(&opts.agents));
        let limits = rates::Limits::new(&store, &opts.rate_limits);
        Worker {
            shared: Arc::new(Shared {
                opts,
                work_root,
                store,
                bus,
                defs,
                executors,
                breakers: Mutex::new(breakers),
                holds: holds::Holds::default(),
                limits,
                running: Mutex::new(HashMap::new()),
                freed: Notify::new(),
                suspects: Mutex::new(Default::default()),
                wake: Notify::new(),
                draining: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                quarantined: AtomicBool::new(false),
                pool,
                finished: AtomicU64::new(0),
                busy_micros: AtomicU64::new(0),
                claims: Default::default(),
                leases_lost: AtomicU64::new(0),
                key_caps,
                started_at: Micros::now(),
                renewed_at: Mutex::new(tokio::time::Instant::now()),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.shared.opts.node_id
    }

    pub fn load(&self) -> Load {
        let s = &self.shared;
        let running = s.running.lock().expect("running lock").len();
        Load { running, capacity: s.opts.max_agents, slots: s.pool.slots(), target: s.pool.held(running) }
    }

    /// Follow the autoscaler: the pool holds `desired` agent slots (clamped to the worker's
    /// min and max) and claims no more than that at once. Scale-in retires idle slots only.
    pub fn set_target(&self, desired: usize) {
        self.shared.pool.set_target(desired);
        self.shared.wake.notify_one();
    }

    fn node(&self, status: NodeStatus) -> Node {
        let load = self.load();
        let s = &self.shared;
        Node {
            id: s.opts.node_id.clone(),
            role: NodeRole::Worker,
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: s.opts.address.clone(),
            status,
            started_at: s.started_at,
            heartbeat_at: Micros::now(),
            load: serde_json::json!({
                "running": load.running,
                "capacity": load.capacity,
                "slots": load.slots,
                "target": load.target,
                "finished": s.finished.load(Ordering::Relaxed),
                "busy_seconds": s.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
                "breakers": self.breakers(),
            }),
        }
    }

    /// Agents whose breaker is not closed, with its state.
    pub fn breakers(&self) -> serde_json::Map<String, serde_json::Value> {
        let b = self.shared.breakers.lock().expect("breakers lock");
        b.iter()
            .filter(|(_, b)| b.state() != smith_core::BreakerState::Closed)
            .map(|(name, b)| (name.clone(), serde_json::Value::from(b.state().as_str())))
            .collect()
    }

    /// Registers the node; call before the components start, so its claims are never orphans.
    pub async fn register(&self) -> smith_store::Result<()> {
        self.shared.store.heartbeat(&self.node(NodeStatus::Alive)).await?;
        // the buckets of this worker's limits, with the shapes its configuration gives them
        let specs = self.shared.limits.specs();
        if !specs.is_empty() {
            self.shared.store.declare_rate_buckets(&specs).await?;
        }
        Ok(())
    }

    /// The claim loop: claims while there is capacity, waking on bus wake-ups and a poll timer.
    pub async fn claim_loop(self, stop: CancellationToken) -> Result<(), smith_bus::Error> {
        let s = &self.shared;
        let mut wakes = s.bus.subscribe(smith_bus::subjects::ALL_WAKES).await?;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            pool::resize(&self.shared, self.load().running);
            if !s.draining.load(Ordering::Acquire) && !s.quarantined.load(Ordering::Acquire) {
                let (wanted, got) = self.claim_once().await?;
                if wanted > 0 && got == wanted {
                    // a full batch: more may be waiting; claim again without sleeping
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = wakes.recv() => {
                    if m.is_none() {
                        return Err(smith_bus::Error::Closed);
                    }
                    while wakes.try_recv().is_some() {}
                }
                _ = s.wake.notified() => {}
                _ = tokio::time::sleep(s.opts.poll) => {}
            }
        }
    }

    /// One claim for every agent with free slots; returns (slots asked, tasks got).
    async fn claim_once(&self) -> Result<(u32, u32), smith_bus::Error> {
        let s = &self.shared;
        if s.holds.stale() {
            let now = Micros::now();
            match s.store.account_holds(now).await {
                Ok(held) => s.holds.refresh(held, now),
                // claimed anyway: a task of a held account parks again when it meets the limit
                Err(e) => tracing::warn!(error = %e, "cannot read the provider accounts' holds"),
            }
        }
        let wall = Micros::now();
        let (wants, free): (Vec<(String, u32)>, u32) = {
            let running = s.running.lock().expect("running lock");
            let mut per_agent: HashMap<&str, u32> = HashMap::new();
            for r in running.values() {
                *per_agent.entry(r.agent.as_str()).or_default() += 1;
            }
            // Every agent is offered every free slot, since only the store knows which agents
            // have work (handing slots out by turns would starve the one that does); the
            // request's limit keeps the total within the pool's target and `max_agents`.
            let free = (s.pool.capacity().min(s.opts.max_agents)).saturating_sub(running.len()) as u32;
            let mut wants = Vec::new();
            let mut breakers = s.breakers.lock().expect("breakers lock");
            let now = tokio::time::Instant::now();
            for d in s.defs.values() {
                if s.holds.held(d.account(), wall) {
                    continue;
                }
                let used = per_agent.get(d.name.as_str()).copied().unwrap_or(0);
                let want = d.concurrency.saturating_sub(used).min(free).min(s.opts.claim_batch);
                let want = match breakers.get_mut(&d.name) {
                    Some(b) => b.admit(want, now),
                    None => want,
                };
                // an account whose bucket this worker last saw empty: its tasks wait queued
                let want = match s.limits.get(d.account()) {
                    Some(account) => account.admit(want),
                    None => want,
                };
                if want > 0 {
                    wants.push((d.name.clone(), want));
                }
            }
            // agents earlier in the request are served first when the limit binds: take turns
            if !wants.is_empty() {
                let turn = s.claims.fetch_add(1, Ordering::Relaxed) % wants.len();
                wants.rotate_left(turn);
            }
            (wants, free)
        };
        let wanted: u32 = wants.iter().map(|w| w.1).sum::<u32>().min(free);
        if wanted == 0 {
            return Ok((0, 0));
        }
        let req = ClaimRequest {
            worker: s.opts.node_id.clone(),
            lease: s.opts.lease,
            wants,
            limit: Some(free),
            caps: s.opts.running_caps.clone(),
            keys: s.key_caps.clone(),
        };
        let claim_started = smith_core::trace::enabled().then(Micros::now);
        let claimed = match s.store.claim(&req).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claim failed");
                // a store hiccup is not a crash: back off one poll and try again
                tokio::time::sleep(s.opts.poll).await;
                return Ok((wanted, 0));
            }
        };
        let got = claimed.len() as u32;
        for c in &claimed {
            attempt::register(s, c, claim_started);
        }
        // slots first, so every task handed over has one to run it
        pool::resize(&self.shared, self.load().running);
        for c in claimed {
            s.pool.dispatch(c);
        }
        Ok((wanted, got))
    }

    /// Heartbeat and lease renewal in one period; stops attempts whose lease is gone and
    /// those whose cancel was requested (a lost cancel message must not keep a task running).
    pub async fn lease_keeper(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let s = &self.shared;
        let mut tick = tokio::time::interval(s.opts.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            self.keep_leases().await;
        }
    }

    async fn keep_leases(&self) {
        let s = &self.shared;
        if s.stopped.load(Ordering::Acquire) {
            return;
        }
        let status = if s.draining.load(Ordering::Acquire) { NodeStatus::Draining } else { NodeStatus::Alive };
        match s.store.heartbeat(&self.node(status)).await {
            Ok(stored) => self.note_status(stored),
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        // Judge only attempts that were running before the renewal: one claimed while it ran
        // is missing from its answer without having lost anything.
        let before: Vec<(TaskId, u32)> =
            s.running.lock().expect("running lock").iter().map(|(id, r)| (*id, r.attempt)).collect();
        let asked = tokio::time::Instant::now();
        let held = match s.store.renew(&s.opts.node_id, s.opts.lease).await {
            Ok(h) => {
                *s.renewed_at.lock().expect("renewed lock") = asked;
                h
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                return;
            }
        };
        let held: HashMap<TaskId, (u32, bool)> =
            held.into_iter().map(|h| (h.id, (h.attempt, h.cancel_requested))).collect();
        let orphans: Vec<(TaskId, u32)> = {
            let running = s.running.lock().expect("running lock");
            for (id, attempt) in &before {
                let Some(r) = running.get(id).filter(|r| r.attempt == *attempt) else { continue };
                if r.settled.load(Ordering::Acquire) {
                    // its outcome is being written (a lost lease fences that write)
                    continue;
                }
                match held.get(id) {
                    Some((attempt, _)) if *attempt != r.attempt => r.stop(StopReason::Lost),
                    Some((_, true)) => r.stop(StopReason::Cancelled),
                    Some(_) => {}
                    None => {
                        tracing::warn!(task_id = %id, attempt = r.attempt, "lease lost; stopping the attempt");
                        metrics::lease_lost();
                        s.leases_lost.fetch_add(1, Ordering::Relaxed);
                        r.stop(StopReason::Lost)
                    }
                }
            }
            // Held in the store but run by nobody here (an attempt whose outcome could not be
            // written): renewing it forever would strand the task.
            held.iter().filter(|(id, _)| !running.contains_key(id)).map(|(id, (attempt, _))| (*id, *attempt)).collect()
        };
        self.release_orphans(orphans).await;
    }

    /// Learns from the stored status whether the supervisor quarantined this worker (it
    /// missed heartbeats and its tasks were requeued) or readmitted it.
    fn note_status(&self, stored: NodeStatus) {
        let s = &self.shared;
        let quarantined = stored == NodeStatus::Quarantined;
        if s.quarantined.swap(quarantined, Ordering::AcqRel) == quarantined {
            return;
        }
        if quarantined {
            // Our tasks went back to the queue when we were quarantined; whatever still runs
            // here would only be fenced. Stop it and claim nothing until readmitted.
            let running = s.running.lock().expect("running lock");
            tracing::warn!(
                running = running.len(),
                "quarantined by the supervisor: stopping attempts, claiming nothing"
            );
            for r in running.values() {
                r.stop(StopReason::Lost);
            }
        } else {
            tracing::info!("readmitted by the supervisor: claiming again");
            s.wake.notify_one();
        }
    }

    /// Hands back tasks seen held-but-not-running on two renewals in a row (one sighting may be
    /// a claim whose attempt is being started right now).
    async fn release_orphans(&self, orphans: Vec<(TaskId, u32)>) {
        let s = &self.shared;
        let confirmed: Vec<(TaskId, u32)> = {
            let mut suspects = s.suspects.lock().expect("suspects lock");
            let confirmed = orphans.iter().filter(|o| suspects.contains(o)).copied().collect();
            *suspects = orphans.into_iter().collect();
            confirmed
        };
        if confirmed.is_empty() {
            return;
        }
        tracing::warn!(count = confirmed.len(), "handing back tasks held in the store but not running here");
        match s.store.release(&s.opts.node_id, &confirmed, "not running on its worker").await {
            Ok(changes) => {
                for c in changes {
                    smith_bus::publish_events(s.bus.as_ref(), &c.events).await;
                }
                s.wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand back orphaned tasks"),
        }
    }

    /// Stops running attempts whose cancel is published on the bus, and those whose task was
    /// parked for a person's answer.
    pub async fn cancel_listener(self, stop: CancellationToken) -> Result<(), smith_bus::Error> {
        let s = &self.shared;
        let mut cancels = s.bus.subscribe(smith_bus::subjects::CANCEL).await?;
        let mut parks = s.bus.subscribe(smith_bus::subjects::PARK).await?;
        loop {
            let (msg, why) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = cancels.recv() => (m.ok_or(smith_bus::Error::Closed)?, StopReason::Cancelled),
                m = parks.recv() => (m.ok_or(smith_bus::Error::Closed)?, StopReason::Parked),
            };
            let Ok(id) = std::str::from_utf8(&msg.payload).unwrap_or("").parse::<TaskId>() else { continue };
            if let Some(r) = s.running.lock().expect("running lock").get(&id) {
                tracing::info!(task_id = %id, why = ?why, "attempt stopped from outside");
                r.stop(why);
            }
        }
    }

    /// Stops claiming, lets running attempts finish until `timeout`, then hands the rest back
    /// to the queue for immediate requeue. Returns how many were handed back.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let s = &self.shared;
        s.draining.store(true, Ordering::Release);
        let _ = s.store.heartbeat(&self.node(NodeStatus::Draining)).await;
        let deadline = tokio::time::Instant::now() + timeout;
        tracing::info!(running = self.load().running, timeout_s = timeout.as_secs_f64(), "draining");
        loop {
            let freed = s.freed.notified();
            if self.load().running == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break;
            }
        }
        let handed_back = {
            let running = s.running.lock().expect("running lock");
            for r in running.values() {
                r.stop(StopReason::Released);
            }
            running.len()
        };
        if handed_back > 0 {
            tracing::info!(count = handed_back, "drain deadline reached; handing tasks back");
        }
        // released attempts stop promptly; give them a bounded time to write their release
        let release_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let freed = s.freed.notified();
            if self.load().running == 0 {
                break;
            }
            if tokio::time::timeout_at(release_deadline, freed).await.is_err() {
                tracing::warn!(left = self.load().running, "attempts did not stop in time; their leases will expire");
                break;
            }
        }
        s.stopped.store(true, Ordering::Release);
        let _ = s.store.set_node_status(&s.opts.node_id, NodeStatus::Stopped).await;
        handed_back
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }
}

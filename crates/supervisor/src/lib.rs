//! The supervisor: the supervision tree that keeps a node's components alive ([`tree`]), and
//! the fleet duties — detecting dead workers, reaping expired leases, and recording every
//! restart, escalation and requeue as a `system` event.

pub mod retention;
pub mod scaling;
pub mod schedules;
mod timers;
pub mod tree;

pub use timers::TIMER_EVERY;

/// Scheduled and parked tasks the timer pass queued, by what they waited for.
const TASKS_DUE: &str = "smith_tasks_due_total";
/// Tasks that expired before they started.
const TASKS_EXPIRED: &str = "smith_tasks_expired_total";

use scaling::{Autoscaler, Scaling, ScalingOptions};
use serde_json::{json, Value};
use smith_bus::Bus;
use smith_core::{Micros, Node, NodeRole, NodeStatus};
use smith_store::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tree::SupervisionEvent;

/// Why a supervisor loop stopped; its supervision tree restarts it.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("the system event channel closed")]
    SystemEventsClosed,
    #[error(transparent)]
    Bus(#[from] smith_bus::Error),
}

#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub node_id: String,
    pub address: Option<String>,
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this is dead; its tasks are requeued at once.
    pub dead_after: Duration,
    /// How often leases and nodes are checked.
    pub reap_every: Duration,
    /// How long the leader's lease lasts without renewal; a standby takes over after it.
    pub leader_ttl: Duration,
    /// A quarantined worker heard again is readmitted after heart-beating this long.
    pub quarantine: Duration,
    pub scaling: ScalingOptions,
}

/// The name of the lease that makes a supervisor the leader: only the leader reaps.
pub const LEADER_LEASE: &str = "supervisor-leader";

/// How often the leader runs store housekeeping.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);

impl SupervisorOptions {
    pub fn new(node_id: impl Into<String>) -> Self {
        SupervisorOptions {
            node_id: node_id.into(),
            address: None,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            reap_every: Duration::from_millis(500),
            leader_ttl: Duration::from_secs(6),
            quarantine: Duration::from_secs(10),
            scaling: ScalingOptions::default(),
        }
    }
}

/// Fleet duties of a supervisor node; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    opts: Arc<SupervisorOptions>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    system_tx: mpsc::Sender<Value>,
    system_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Value>>>,
    started_at: Micros,
    maintaining: Arc<std::sync::atomic::AtomicBool>,
    leader: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
    /// The autoscaler's latest decision, carried in this node's heartbeat.
    scaling: Arc<Mutex<Option<Scaling>>>,
    /// Told every new desired slot count (`smith up`: the worker's pool).
    follower: Arc<Mutex<Option<Follower>>>,
    /// Quarantined nodes heard from again, and since when.
    heard: Arc<Mutex<HashMap<String, tokio::time::Instant>>>,
    /// Admits (or refuses, saying why) a task the leader submits for a tenant: a schedule's fire.
    admission: Arc<Mutex<Option<Admission>>>,
}

/// Receives the autoscaler's desired slot count.
pub type Follower = Arc<dyn Fn(usize) + Send + Sync>;

/// The tenant's quotas, as its gateways apply them to submissions, for the tasks the leader
/// submits on a tenant's behalf: `Err` says why the tenant may not have another now.
pub type Admission = Arc<dyn Fn(String) -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// System events waiting to be written at most; beyond that they are logged only.
const SYSTEM_BACKLOG: usize = 1024;

impl Supervisor {
    pub fn new(opts: SupervisorOptions, store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        let (tx, rx) = mpsc::channel(SYSTEM_BACKLOG);
        Supervisor {
            opts: Arc::new(opts),
            store,
            bus,
            system_tx: tx,
            system_rx: Arc::new(tokio::sync::Mutex::new(rx)),
            started_at: Micros::now(),
            maintaining: Default::default(),
            leader: Default::default(),
            restarts: Default::default(),
            scaling: Default::default(),
            follower: Default::default(),
            heard: Default::default(),
            admission: Default::default(),
        }
    }

    /// Has schedule fires admitted by `a` (the tenant quotas): a refused fire is passed over and
    /// counted as missed. Without one, fires are admitted as they come.
    pub fn admit_fires(&self, a: Admission) {
        *self.admission.lock().expect("admission lock") = Some(a);
    }

    /// The retention loop (docs/retention.md), deleting only while this supervisor leads.
    pub fn retention(&self, opts: retention::RetentionOptions) -> retention::Retention {
        retention::Retention::new(opts, self.store.clone(), self.leader.clone())
    }

    /// Has `f` told every desired slot count the autoscaler computes.
    pub fn follow(&self, f: Follower) {
        *self.follower.lock().expect("follower lock") = Some(f);
    }

    /// The autoscaler's latest decision.
    pub fn scaling(&self) -> Option<Scaling> {
        self.scaling.lock().expect("scaling lock").clone()
    }

    /// Records a fleet event (durable, on `GET /v1/events?kind=system`), without waiting.
    pub fn record(&self, data: Value) {
        if self.system_tx.try_send(data.clone()).is_err() {
            tracing::warn!(event = %data, "system event backlog full; event logged only");
        }
    }

    /// The tree's observer: every restart and escalation becomes a log line and a system event.
    pub fn observer(&self) -> tree::Observer {
        let me = self.clone();
        Arc::new(move |ev: SupervisionEvent| {
            let data = match &ev {
                SupervisionEvent::ChildFailed { supervisor, child, reason } => {
                    tracing::warn!(supervisor, child, reason, "component failed");
                    json!({"type": "component.failed", "node": me.opts.node_id, "supervisor": supervisor, "child": child, "reason": reason})
                }
                SupervisionEvent::Restarted { supervisor, strategy, child, restarts_in_window, delay } => {
                    tracing::warn!(
                        supervisor,
                        child,
                        strategy = strategy.as_str(),
                        restarts_in_window,
                        delay_ms = delay.as_millis() as u64,
                        "component restarted"
                    );
                    metrics::counter!("smith_supervisor_restarts_total", "strategy" => strategy.as_str()).increment(1);
                    me.restarts.fetch_add(1, Ordering::Relaxed);
                    json!({"type": "component.restarted", "node": me.opts.node_id, "supervisor": supervisor, "child": child,
                           "strategy": strategy.as_str(), "restarts_in_window": restarts_in_window, "delay_ms": delay.as_millis() as u64})
                }
                SupervisionEvent::Escalated { supervisor, strategy, reason } => {
                    tracing::error!(supervisor, reason, "supervisor escalated");
                    metrics::counter!("smith_supervisor_escalations_total", "strategy" => strategy.as_str())
                        .increment(1);
                    json!({"type": "supervisor.escalated", "node": me.opts.node_id, "supervisor": supervisor,
                           "strategy": strategy.as_str(), "reason": reason})
                }
            };
            me.record(data);
        })
    }

    /// Writes recorded system events to the store and publishes them.
    pub async fn system_event_loop(self, stop: CancellationToken) -> Result<(), LoopError> {
        let mut rx = self.system_rx.lock().await;
        loop {
            let data = tokio::select! {
                _ = stop.cancelled() => {
                    // flush what is already recorded, so a shutdown's last events are kept
                    while let Ok(d) = rx.try_recv() { self.write_system(d).await; }
                    return Ok(());
                }
                d = rx.recv() => d.ok_or(LoopError::SystemEventsClosed)?,
            };
            self.write_system(data).await;
        }
    }

    async fn write_system(&self, data: Value) {
        match self.store.append_system(data).await {
            Ok(ev) => smith_bus::publish_events(self.bus.as_ref(), std::slice::from_ref(&ev)).await,
            Err(e) => tracing::warn!(error = %e, "cannot record system event"),
        }
    }

    /// While this supervisor holds the leader lease (renewed every `reap_every`): marks nodes
    /// that stopped heart-beating dead and requeues what they held, and requeues or fails tasks
    /// whose lease expired. Standbys keep trying for the lease. Workers need no leader to run.
    pub async fn reaper_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut tick = tokio::time::interval(self.opts.reap_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader = false;
        let mut last_maintained = tokio::time::Instant::now();
        let mut store_trouble: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    if leader {
                        // hand leadership over at once instead of making a standby wait out the lease
                        let _ = self.store.release_lease(LEADER_LEASE, &self.opts.node_id).await;
                    }
                    return Ok(());
                }
                _ = tick.tick() => {}
            }
            let now_leader =
                match self.store.acquire_lease(LEADER_LEASE, &self.opts.node_id, self.opts.leader_ttl).await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the leader lease");
                        store_trouble = Some(tokio::time::Instant::now());
                        false
                    }
                };
            if now_leader != leader {
                leader = now_leader;
                self.leader.store(leader, Ordering::Release);
                metrics::gauge!("smith_supervisor_leader").set(if leader { 1.0 } else { 0.0 });
                let what = if leader { "leader.elected" } else { "leader.lost" };
                tracing::info!(node = %self.opts.node_id, leader, "leadership changed");
                self.record(json!({"type": what, "node": self.opts.node_id}));
            }
            // After a store outage nobody could heartbeat or renew: give every node one
            // `dead_after` to be heard again before judging it dead or its leases expired.
            let recovering = store_trouble.is_some_and(|t| t.elapsed() < self.opts.dead_after);
            if leader && !recovering {
                self.reap_once().await;
                self.expire_requests().await;
                self.heal_once().await;
                if last_maintained.elapsed() >= MAINTAIN_EVERY {
                    last_maintained = tokio::time::Instant::now();
                    self.maintain().await;
                }
            }
        }
    }

    /// Store housekeeping, off the request path: a slow vacuum must not delay reaping.
    async fn maintain(&self) {
        if self.maintaining.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (store, busy) = (self.store.clone(), self.maintaining.clone());
        tokio::spawn(async move {
            let outcome = store.maintain().await;
            busy.store(false, std::sync::atomic::Ordering::Release);
            match outcome {
                Ok(Some(what)) => tracing::info!(what, "store maintenance"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "store maintenance failed"),
            }
        });
    }

    /// Answers requests for a person left unanswered past their timeout as their agent says
    /// (`on_approval_timeout`, deny by default), by `timeout`: their tasks resume with it.
    /// Returns how many it answered.
    pub async fn expire_requests(&self) -> usize {
        let now = Micros::now();
        let expired = match self.store.expired_approvals(now, 256).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read expired requests");
                return 0;
            }
        };
        let mut answered = 0;
        for a in expired {
            let answer = smith_core::approval::Answer {
                decision: a.on_timeout,
                message: Some("nobody answered before the request's timeout".into()),
                input: None,
                answer: None,
                by: "timeout".into(),
                at: now,
            };
            match self.store.answer_request(a.task_id, &a.id, answer).await {
                Ok(done) => {
                    answered += 1;
                    let decision = a.on_timeout.as_str();
                    metrics::counter!("smith_approvals_answered_total", "decision" => decision, "by" => "timeout")
                        .increment(1);
                    smith_bus::publish_events(self.bus.as_ref(), &done.change.events).await;
                    let agent = smith_bus::subjects::wake(&done.change.task.agent);
                    let _ = self.bus.publish(&agent, bytes::Bytes::new()).await;
                }
                // answered meanwhile, or its task ended: nothing left to do
                Err(e) if e.code() == smith_core::Code::Conflict => {}
                Err(e) => tracing::warn!(approval = %a.id, error = %e, "cannot answer an expired request"),
            }
        }
        answered
    }

    /// One pass of the reaper; returns how many tasks it moved.
    pub async fn reap_once(&self) -> usize {
        let now = Micros::now();
        let stale_before = Micros(now.0 - self.opts.dead_after.as_micros() as i64);
        match self.store.mark_dead_nodes(stale_before).await {
            Ok(dead) => {
                for n in dead {
                    let what = if n.status == NodeStatus::Quarantined {
                        tracing::warn!(node = %n.id, role = n.role.as_str(), "worker missed its heartbeats; quarantined, its tasks requeued");
                        metrics::counter!("smith_nodes_quarantined_total", "role" => n.role.as_str()).increment(1);
                        "node.quarantined"
                    } else {
                        tracing::warn!(node = %n.id, role = n.role.as_str(), "node missed its heartbeats; marked dead");
                        metrics::counter!("smith_nodes_dead_total", "role" => n.role.as_str()).increment(1);
                        "node.dead"
                    };
                    self.record(json!({"type": what, "node": n.id, "role": n.role.as_str(),
                                       "last_heartbeat": n.heartbeat_at, "by": self.opts.node_id}));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check node heartbeats"),
        }
        let changes = match self.store.reap(now).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reap failed");
                return 0;
            }
        };
        if changes.is_empty() {
            return 0;
        }
        let mut agents = BTreeSet::new();
        let mut requeued = 0;
        for c in &changes {
            smith_bus::publish_events(self.bus.as_ref(), &c.events).await;
            if c.task.status == smith_core::TaskStatus::Queued {
                requeued += 1;
                agents.insert(c.task.agent.clone());
            } else if c.task.status.is_terminal() && c.task.attempt >= c.task.max_attempts {
                metrics::counter!("smith_tasks_dead_lettered_total", "agent" => c.task.agent.clone()).increment(1);
            }
        }
        metrics::counter!("smith_lease_expiries_total").increment(changes.len() as u64);
        for a in &agents {
            let _ = self.bus.publish(&smith_bus::subjects::wake(a), bytes::Bytes::new()).await;
        }
        tracing::warn!(reaped = changes.len(), requeued, "reaped tasks of lost leases and dead workers");
        self.record(
            json!({"type": "tasks.reaped", "count": changes.len(), "requeued": requeued, "by": self.opts.node_id}),
        );
        changes.len()
    }

    /// Registers the supervisor as a node and heartbeats.
    pub async fn heartbeat_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut tick = tokio::time::interval(self.opts.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = self.store.set_node_status(&self.opts.node_id, NodeStatus::Stopped).await;
                    return Ok(());
                }
                _ = tick.tick() => {}
            }
            let node = Node {
                id: self.opts.node_id.clone(),
                role: NodeRole::Supervisor,
                version: env!("CARGO_PKG_VERSION").to_string(),
                address: self.opts.address.clone(),
                status: NodeStatus::Alive,
                started_at: self.started_at,
                heartbeat_at: Micros::now(),
                load: json!({
                    "leader": self.leader.load(Ordering::Acquire),
                    "restarts": self.restarts.load(Ordering::Relaxed),
                    "scaling": self.scaling(),
                }),
            };
            if let Err(e) = self.store.heartbeat(&node).await {
                tracing::warn!(error = %e, "supervisor heartbeat failed");
            }
        }
    }
}

const ROLES: [NodeRole; 3] = [NodeRole::Supervisor, NodeRole::Worker, NodeRole::Gateway];
const STATUSES: [NodeStatus; 5] =
    [NodeStatus::Alive, NodeStatus::Draining, NodeStatus::Quarantined, NodeStatus::Stopped, NodeStatus::Dead];

impl Supervisor {
    /// The leader's healing pass: nodes by state as metrics, and quarantined workers that have
    /// heart-beaten steadily for `quarantine` readmitted.
    pub async fn heal_once(&self) {
        let nodes = match self.store.nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read nodes");
                return;
            }
        };
        let mut counts: HashMap<(NodeRole, NodeStatus), usize> = HashMap::new();
        for n in &nodes {
            *counts.entry((n.role, n.status)).or_default() += 1;
        }
        for role in ROLES {
            for status in STATUSES {
                let v = counts.get(&(role, status)).copied().unwrap_or(0);
                metrics::gauge!("smith_nodes", "role" => role.as_str(), "status" => status.as_str()).set(v as f64);
            }
        }
        let now = tokio::time::Instant::now();
        let fresh_after = Micros(Micros::now().0 - self.opts.dead_after.as_micros() as i64);
        let mut ready = Vec::new();
        {
            let mut heard = self.heard.lock().expect("heard lock");
            heard.retain(|id, _| nodes.iter().any(|n| &n.id == id && n.status == NodeStatus::Quarantined));
            for n in nodes.iter().filter(|n| n.status == NodeStatus::Quarantined) {
                if n.heartbeat_at < fresh_after {
                    // silent again (or still): the clock starts over when it is heard
                    heard.remove(&n.id);
                    continue;
                }
                let since = *heard.entry(n.id.clone()).or_insert(now);
                if now.duration_since(since) >= self.opts.quarantine {
                    ready.push(n.clone());
                }
            }
        }
        for n in ready {
            match self.store.readmit_node(&n.id).await {
                Ok(true) => {
                    self.heard.lock().expect("heard lock").remove(&n.id);
                    tracing::info!(node = %n.id, "quarantined worker heart-beating steadily again; readmitted");
                    metrics::counter!("smith_nodes_readmitted_total", "role" => n.role.as_str()).increment(1);
                    self.record(json!({"type": "node.readmitted", "node": n.id, "role": n.role.as_str(),
                                       "quarantined_for_s": self.opts.quarantine.as_secs_f64(), "by": self.opts.node_id}));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(node = %n.id, error = %e, "cannot readmit node"),
            }
        }
    }

    /// The autoscaler: recomputes the desired agent slots on a timer and on every wake-up
    /// (new or requeued work), publishes them as metrics, in this node's heartbeat (hence
    /// `GET /v1/scaling`) and to the follower, and keeps the queue gauges current.
    pub async fn scaling_loop(self, stop: CancellationToken) -> Result<(), LoopError> {
        let mut wakes = self.bus.subscribe(smith_bus::subjects::ALL_WAKES).await?;
        let mut auto = Autoscaler::new(self.opts.scaling.clone());
        let mut tick = tokio::time::interval(self.opts.scaling.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_nodes: Option<tokio::time::Instant> = None;
        let mut last_agents: Option<tokio::time::Instant> = None;
        let mut pending_agents: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                m = wakes.recv() => {
                    if m.is_none() {
                        return Err(smith_bus::Error::Closed.into());
                    }
                    // a burst of submissions is one recomputation
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    while wakes.try_recv().is_some() {}
                }
            }
            let now = tokio::time::Instant::now();
            if last_nodes.is_none_or(|t| now.duration_since(t) >= self.opts.heartbeat) {
                last_nodes = Some(now);
                match self.store.nodes().await {
                    Ok(nodes) => auto.observe_workers(&nodes),
                    Err(e) => tracing::warn!(error = %e, "autoscaler cannot read nodes"),
                }
            }
            if last_agents.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(2)) {
                last_agents = Some(now);
                pending_agents = self.agent_gauges(&pending_agents).await;
            }
            let stats = match self.store.queue_stats().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "autoscaler cannot read the queue");
                    continue;
                }
            };
            let mut decision = auto.compute(now, stats.queued, stats.running, stats.oldest_queued_age);
            decision.supervisor = self.opts.node_id.clone();
            metrics::gauge!("smith_queue_depth").set(stats.queued as f64);
            metrics::gauge!("smith_tasks_waiting_input").set(stats.waiting as f64);
            metrics::gauge!("smith_tasks_scheduled").set(stats.scheduled as f64);
            metrics::gauge!("smith_tasks_parked").set(stats.parked as f64);
            metrics::gauge!("smith_queue_oldest_age_seconds").set(decision.oldest_queued_seconds);
            metrics::gauge!("smith_scaling_desired_slots").set(decision.desired_slots as f64);
            metrics::gauge!("smith_scaling_current_slots").set(decision.current_slots as f64);
            metrics::gauge!("smith_scaling_load").set(decision.load);
            metrics::gauge!("smith_scaling_utilization").set(decision.utilization);
            metrics::gauge!("smith_scaling_arrival_rate").set(decision.arrival_rate);
            metrics::gauge!("smith_scaling_task_seconds").set(decision.task_seconds.unwrap_or(0.0));
            let desired = decision.desired_slots;
            *self.scaling.lock().expect("scaling lock") = Some(decision);
            let follower = self.follower.lock().expect("follower lock").clone();
            if let Some(f) = follower {
                f(desired);
            }
        }
    }

    /// Pending and running tasks by agent; agents seen before and gone now drop to 0.
    async fn agent_gauges(&self, before: &[String]) -> Vec<String> {
        let agents = match self.store.agents().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read agents");
                return before.to_vec();
            }
        };
        let names: Vec<String> = agents.iter().map(|a| a.def.name.clone()).collect();
        for gone in before.iter().filter(|b| !names.contains(b)) {
            metrics::gauge!("smith_tasks_pending", "agent" => gone.clone()).set(0.0);
            metrics::gauge!("smith_tasks_running", "agent" => gone.clone()).set(0.0);
        }
        for a in &agents {
            metrics::gauge!("smith_tasks_pending", "agent" => a.def.name.clone()).set(a.queued as f64);
            metrics::gauge!("smith_tasks_running", "agent" => a.def.name.clone()).set(a.running as f64);
        }
        names
    }
}

/// Describes the supervisor's metrics.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    retention::describe_metrics();
    describe_counter!("smith_supervisor_restarts_total", "Component restarts by the supervision tree, by strategy");
    describe_counter!("smith_supervisor_escalations_total", "Supervisors that gave up and escalated, by strategy");
    describe_gauge!("smith_supervisor_leader", "1 while this supervisor is the leader");
    describe_counter!("smith_nodes_dead_total", "Nodes marked dead for missed heartbeats, by role");
    describe_counter!("smith_nodes_quarantined_total", "Workers quarantined for missed heartbeats (tasks requeued)");
    describe_counter!("smith_nodes_readmitted_total", "Quarantined workers readmitted after steady heartbeats");
    describe_gauge!("smith_nodes", "Nodes by role and status (alive, draining, quarantined, stopped, dead)");
    describe_counter!("smith_lease_expiries_total", "Tasks reaped: lease expired or worker lost");
    describe_gauge!("smith_tasks_pending", "Queued tasks, by agent");
    describe_gauge!("smith_tasks_running", "Running tasks, by agent");
    describe_gauge!("smith_queue_depth", "Queued tasks, all agents");
    describe_gauge!("smith_tasks_waiting_input", "Tasks parked for a person's answer (no slot held, not load)");
    describe_gauge!("smith_tasks_scheduled", "Tasks submitted to start later, not yet due (not load)");
    describe_gauge!("smith_tasks_parked", "Tasks waiting out their provider account's usage limit");
    describe_counter!(TASKS_DUE, "Scheduled and parked tasks queued when their time came, by what they waited for");
    describe_counter!(TASKS_EXPIRED, "Tasks whose time to live ran out before they started");
    describe_gauge!("smith_queue_oldest_age_seconds", "Age of the oldest runnable queued task (0 when none)");
    describe_gauge!("smith_scaling_desired_slots", "The autoscaler's desired agent slots");
    describe_gauge!("smith_scaling_current_slots", "Agent slots the alive workers hold");
    describe_gauge!("smith_scaling_load", "Demand in slots: in-flight work plus the backlog to drain");
    describe_gauge!("smith_scaling_utilization", "Load / current slots (target-tracking metric)");
    describe_gauge!("smith_scaling_arrival_rate", "Tasks arriving per second (10 s window)");
    describe_gauge!("smith_scaling_task_seconds", "Observed mean attempt duration (smoothed; 0 until known)");
    describe_counter!("smith_tasks_dead_lettered_total", "Tasks failed for good after their last attempt, by agent");
    // Rare events start at 0, so that rate() and increase() see their first occurrence.
    for s in [tree::Strategy::OneForOne, tree::Strategy::OneForAll, tree::Strategy::RestForOne] {
        metrics::counter!("smith_supervisor_restarts_total", "strategy" => s.as_str()).absolute(0);
        metrics::counter!("smith_supervisor_escalations_total", "strategy" => s.as_str()).absolute(0);
    }
    for role in ROLES {
        metrics::counter!("smith_nodes_dead_total", "role" => role.as_str()).absolute(0);
    }
    metrics::counter!("smith_nodes_quarantined_total", "role" => "worker").absolute(0);
    metrics::counter!("smith_nodes_readmitted_total", "role" => "worker").absolute(0);
    metrics::counter!("smith_lease_expiries_total").absolute(0);
    metrics::counter!(TASKS_EXPIRED).absolute(0);
    for from in ["scheduled", "parked"] {
        metrics::counter!(TASKS_DUE, "from" => from).absolute(0);
    }
}

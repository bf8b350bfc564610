//! The supervisor: the supervision tree that keeps a node's components alive ([`tree`]), and
//! the fleet duties — detecting dead workers, reaping expired leases, and recording every
//! restart, escalation and requeue as a `system` event.

pub mod tree;

use serde_json::{json, Value};
use smith_bus::Bus;
use smith_core::{Micros, Node, NodeRole, NodeStatus};
use smith_store::Store;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tree::SupervisionEvent;

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
}

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
        }
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
                    json!({"type": "component.restarted", "node": me.opts.node_id, "supervisor": supervisor, "child": child,
                           "strategy": strategy.as_str(), "restarts_in_window": restarts_in_window, "delay_ms": delay.as_millis() as u64})
                }
                SupervisionEvent::Escalated { supervisor, reason } => {
                    tracing::error!(supervisor, reason, "supervisor escalated");
                    metrics::counter!("smith_supervisor_escalations_total").increment(1);
                    json!({"type": "supervisor.escalated", "node": me.opts.node_id, "supervisor": supervisor, "reason": reason})
                }
            };
            me.record(data);
        })
    }

    /// Writes recorded system events to the store and publishes them.
    pub async fn system_event_loop(self, stop: CancellationToken) -> Result<(), String> {
        let mut rx = self.system_rx.lock().await;
        loop {
            let data = tokio::select! {
                _ = stop.cancelled() => {
                    // flush what is already recorded, so a shutdown's last events are kept
                    while let Ok(d) = rx.try_recv() { self.write_system(d).await; }
                    return Ok(());
                }
                d = rx.recv() => d.ok_or("system event channel closed")?,
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
    pub async fn reaper_loop(self, stop: CancellationToken) -> Result<(), String> {
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

    /// One pass of the reaper; returns how many tasks it moved.
    pub async fn reap_once(&self) -> usize {
        let now = Micros::now();
        let stale_before = Micros(now.0 - self.opts.dead_after.as_micros() as i64);
        match self.store.mark_dead_nodes(stale_before).await {
            Ok(dead) => {
                for n in dead {
                    tracing::warn!(node = %n.id, role = n.role.as_str(), "node missed its heartbeats; marked dead");
                    metrics::counter!("smith_nodes_dead_total", "role" => n.role.as_str()).increment(1);
                    self.record(json!({"type": "node.dead", "node": n.id, "role": n.role.as_str(),
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
    pub async fn heartbeat_loop(self, stop: CancellationToken) -> Result<(), String> {
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
                load: json!({}),
            };
            if let Err(e) = self.store.heartbeat(&node).await {
                tracing::warn!(error = %e, "supervisor heartbeat failed");
            }
        }
    }
}

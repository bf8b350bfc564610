//! The autoscaler's arithmetic: desired agent slots from backlog, arrival rate, in-flight
//! work and observed task duration, held at the peak for a while before scaling in.
//!
//! ```text
//! steady  = arrival_rate × task_seconds               (Little's law: slots busy at this rate)
//! backlog = queued                                     while no duration has been seen,
//!           min(queued, queued × task_seconds / drain) after (slots to clear it in `drain`)
//! load    = max(running, steady) + backlog
//! desired = clamp(ceil(load / target_utilization), min, max)   (0 when load is 0 and min is 0)
//! ```
//! A lower `desired` takes effect only after it has been lower for `scale_in_delay`; a
//! higher one at once.

use serde::{Deserialize, Serialize};
use smith_core::{Micros, Node, NodeRole, NodeStatus};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct ScalingOptions {
    pub min_agents: usize,
    pub max_agents: usize,
    /// Busy slots / slots the autoscaler aims for.
    pub target_utilization: f64,
    /// A backlog should be cleared within this long.
    pub drain: Duration,
    /// How long a lower desired count must hold before the pool shrinks.
    pub scale_in_delay: Duration,
    /// How often the figures are recomputed (also on every wake-up, at most every 10 ms).
    pub every: Duration,
}

impl Default for ScalingOptions {
    fn default() -> Self {
        ScalingOptions {
            min_agents: 0,
            max_agents: 1000,
            target_utilization: 0.7,
            drain: Duration::from_secs(10),
            scale_in_delay: Duration::from_secs(10),
            every: Duration::from_millis(250),
        }
    }
}

/// What the autoscaler decided and from what: `GET /v1/scaling`, the `smith_scaling_*`
/// metrics, the embedded pool's target. KEDA's metrics-api scaler reads `desired_slots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub desired_slots: usize,
    pub current_slots: usize,
    /// Demand in slots: in-flight work plus the backlog to drain.
    pub load: f64,
    /// load / current_slots: the target-tracking metric (aim: `target_utilization`).
    pub utilization: f64,
    /// Tasks arriving per second over the last window.
    pub arrival_rate: f64,
    /// Observed mean attempt duration, once attempts have finished.
    pub task_seconds: Option<f64>,
    pub running: u64,
    pub queued: u64,
    pub oldest_queued_seconds: f64,
    pub workers: usize,
    pub min_agents: usize,
    pub max_agents: usize,
    pub target_utilization: f64,
    pub computed_at: Micros,
    /// The supervisor that computed it.
    pub supervisor: String,
}

/// Window over which the arrival rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Weight of the newest duration sample.
const DURATION_ALPHA: f64 = 0.3;

/// The autoscaler's memory between computations.
pub struct Autoscaler {
    opts: ScalingOptions,
    /// (when, queued + running, attempts finished so far)
    samples: VecDeque<(Instant, u64, u64)>,
    /// Per worker: (finished, busy seconds) at the last look.
    workers: HashMap<String, (u64, f64)>,
    finished: u64,
    task_seconds: Option<f64>,
    current_slots: usize,
    alive_workers: usize,
    /// The peak held through `scale_in_delay`, and when it was set.
    held: (usize, Instant),
}

impl Autoscaler {
    pub fn new(opts: ScalingOptions) -> Self {
        Autoscaler {
            opts,
            samples: VecDeque::new(),
            workers: HashMap::new(),
            finished: 0,
            task_seconds: None,
            current_slots: 0,
            alive_workers: 0,
            held: (0, Instant::now()),
        }
    }

    /// Reads the workers' heartbeat figures: slots held, attempts finished and their run time.
    pub fn observe_workers(&mut self, nodes: &[Node]) {
        let mut slots = 0;
        let mut alive = 0;
        let (mut done, mut busy) = (0u64, 0f64);
        let mut seen = HashMap::new();
        for n in nodes.iter().filter(|n| n.role == NodeRole::Worker) {
            let finished = n.load.get("finished").and_then(|v| v.as_u64()).unwrap_or(0);
            let busy_s = n.load.get("busy_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0);
            if matches!(n.status, NodeStatus::Alive | NodeStatus::Draining) {
                alive += 1;
                slots += n.load.get("slots").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            }
            // a restarted worker starts counting from zero again
            let (f0, b0) = self.workers.get(&n.id).copied().unwrap_or((0, 0.0));
            let (df, db) = if finished >= f0 { (finished - f0, (busy_s - b0).max(0.0)) } else { (finished, busy_s) };
            done += df;
            busy += db;
            seen.insert(n.id.clone(), (finished, busy_s));
        }
        let first_look = self.workers.is_empty() && self.samples.is_empty();
        self.workers = seen;
        self.current_slots = slots;
        self.alive_workers = alive;
        if first_look {
            // totals from before this supervisor started are history, not this window's work
            return;
        }
        self.finished += done;
        if done > 0 {
            let mean = busy / done as f64;
            self.task_seconds = Some(match self.task_seconds {
                Some(d) => d + DURATION_ALPHA * (mean - d),
                None => mean,
            });
        }
    }

    /// The decision for the queue as it is now.
    pub fn compute(&mut self, now: Instant, queued: u64, running: u64, oldest: Option<Duration>) -> Scaling {
        let in_system = queued + running;
        self.samples.push_back((now, in_system, self.finished));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        let (t0, s0, f0) = self.samples[0];
        let span = now.duration_since(t0).as_secs_f64();
        let arrival_rate = if span >= 1.0 {
            let arrived = in_system as f64 - s0 as f64 + (self.finished - f0) as f64;
            (arrived / span).max(0.0)
        } else {
            0.0
        };
        let steady = self.task_seconds.map_or(0.0, |d| arrival_rate * d);
        let backlog = match self.task_seconds {
            None => queued as f64,
            Some(d) => (queued as f64 * d / self.opts.drain.as_secs_f64().max(0.001)).min(queued as f64),
        };
        let load = (running as f64).max(steady) + backlog.ceil();
        // (less a hair, so that 7 / 0.7 is 10 slots, not 11)
        let raw = if load <= 0.0 { 0 } else { (load / self.opts.target_utilization - 1e-9).ceil() as usize };
        let raw = raw.clamp(self.opts.min_agents, self.opts.max_agents.max(self.opts.min_agents));
        if raw >= self.held.0 || now.duration_since(self.held.1) >= self.opts.scale_in_delay {
            self.held = (raw, now);
        }
        let utilization = if self.current_slots > 0 {
            load / self.current_slots as f64
        } else if load > 0.0 {
            // demand and no slot at all: as far over target as it can be
            load
        } else {
            0.0
        };
        Scaling {
            desired_slots: self.held.0,
            current_slots: self.current_slots,
            load,
            utilization,
            arrival_rate,
            task_seconds: self.task_seconds,
            running,
            queued,
            oldest_queued_seconds: oldest.map_or(0.0, |d| d.as_secs_f64()),
            workers: self.alive_workers,
            min_agents: self.opts.min_agents,
            max_agents: self.opts.max_agents,
            target_utilization: self.opts.target_utilization,
            computed_at: Micros::now(),
            supervisor: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worker(id: &str, slots: u64, finished: u64, busy: f64) -> Node {
        Node {
            id: id.into(),
            role: NodeRole::Worker,
            version: "t".into(),
            address: None,
            status: NodeStatus::Alive,
            started_at: Micros(0),
            heartbeat_at: Micros(0),
            load: json!({"slots": slots, "finished": finished, "busy_seconds": busy}),
        }
    }

    fn opts(min: usize, max: usize) -> ScalingOptions {
        ScalingOptions { min_agents: min, max_agents: max, ..Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_scales_out_at_once_and_in_after_the_delay() {
        let mut a = Autoscaler::new(opts(0, 1000));
        let t = Instant::now();
        assert_eq!(a.compute(t, 0, 0, None).desired_slots, 0, "nothing to do: zero slots");
        // 700 queued, no duration seen yet: one slot each, at 70 % utilization
        let s = a.compute(t + Duration::from_millis(10), 700, 0, Some(Duration::from_millis(5)));
        assert_eq!(s.load, 700.0);
        assert_eq!(s.desired_slots, 1000);
        assert_eq!(s.oldest_queued_seconds, 0.005);
        // clamped at max
        assert_eq!(a.compute(t + Duration::from_millis(20), 5000, 0, None).desired_slots, 1000);
        // all done: held for the scale-in delay, then down to min
        let later = t + Duration::from_secs(1);
        assert_eq!(a.compute(later, 0, 0, None).desired_slots, 1000);
        assert_eq!(a.compute(later + Duration::from_secs(11), 0, 0, None).desired_slots, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn min_is_kept_and_utilization_is_load_over_slots() {
        let mut a = Autoscaler::new(opts(5, 100));
        a.observe_workers(&[worker("w1", 10, 0, 0.0)]);
        let s = a.compute(Instant::now(), 0, 7, None);
        assert_eq!(s.desired_slots, 10, "ceil(7 / 0.7)");
        assert_eq!(s.current_slots, 10);
        assert!((s.utilization - 0.7).abs() < 1e-9);
        let mut idle = Autoscaler::new(opts(5, 100));
        assert_eq!(idle.compute(Instant::now(), 0, 0, None).desired_slots, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn arrival_rate_and_duration_size_the_steady_state() {
        let mut a = Autoscaler::new(opts(0, 10_000));
        let t = Instant::now();
        a.observe_workers(&[worker("w1", 0, 0, 0.0)]);
        a.compute(t, 0, 0, None);
        // over 2 s: 400 attempts of 0.5 s each finished, 20 still running, none queued
        a.observe_workers(&[worker("w1", 100, 400, 200.0)]);
        let s = a.compute(t + Duration::from_secs(2), 0, 20, None);
        assert_eq!(s.task_seconds, Some(0.5));
        assert!((s.arrival_rate - 210.0).abs() < 1e-9, "{}", s.arrival_rate);
        // steady = 210/s × 0.5 s = 105 slots busy; / 0.7
        assert_eq!(s.desired_slots, 150);
        // a backlog of short tasks is drained by few extra slots: 1000 × 0.5 / 10 = 50
        let s = a.compute(t + Duration::from_secs(3), 1000, 20, None);
        assert!((s.load - (s.arrival_rate * 0.5 + 50.0)).abs() < 1e-9, "{}", s.load);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_worker_does_not_count_negative_work() {
        let mut a = Autoscaler::new(opts(0, 100));
        a.observe_workers(&[worker("w1", 1, 0, 0.0)]);
        a.compute(Instant::now(), 0, 0, None);
        a.observe_workers(&[worker("w1", 1, 100, 10.0)]);
        a.observe_workers(&[worker("w1", 1, 4, 2.0)]);
        assert_eq!(a.finished, 104);
        assert!(a.task_seconds.unwrap() > 0.0);
    }
}

//! The leader's timer pass: tasks whose time came. A `scheduled` task whose `run_at` passed and
//! a `parked` one whose provider limit reset join the queue (and wake their agent's workers); a
//! task that never started and is past its time to live ends `expired`. Only the leader moves
//! them, one bounded batch after another, so a failover neither skips nor repeats a move (each
//! is a lifecycle transition the store judges again under lock).

use crate::Supervisor;
use smith_core::{EventKind, Micros, TaskStatus};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the leader looks for due and expired tasks: a delayed task starts at most about
/// this late (plus a claim).
pub const TIMER_EVERY: Duration = Duration::from_millis(100);
/// Tasks of each kind moved per store write.
const BATCH: usize = 1000;
/// Batches one pass runs at most before it yields to the next tick.
const MAX_BATCHES: usize = 50;

impl Supervisor {
    /// Runs the timer pass every [`TIMER_EVERY`] while this supervisor leads.
    pub async fn timer_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut tick = tokio::time::interval(TIMER_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if self.leader.load(Ordering::Acquire) {
                self.timers_once(Micros::now()).await;
            }
        }
    }

    /// One timer pass at `now`; returns how many tasks it moved.
    pub async fn timers_once(&self, now: Micros) -> usize {
        let mut moved = 0;
        for _ in 0..MAX_BATCHES {
            let changes = match self.store.advance_timers(now, BATCH).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "timer pass failed");
                    return moved;
                }
            };
            let n = changes.len();
            moved += n;
            let mut woken = BTreeSet::new();
            for c in &changes {
                smith_bus::publish_events(self.bus.as_ref(), &c.events).await;
                match c.task.status {
                    TaskStatus::Queued => {
                        let from = c.events.iter().find(|e| e.kind == EventKind::Queued);
                        let from = from.and_then(|e| e.data["after"].as_str()).unwrap_or("scheduled");
                        let from = if from == "parked" { "parked" } else { "scheduled" };
                        metrics::counter!(crate::TASKS_DUE, "from" => from).increment(1);
                        woken.insert(c.task.agent.clone());
                    }
                    TaskStatus::Expired => metrics::counter!(crate::TASKS_EXPIRED).increment(1),
                    _ => {}
                }
            }
            for agent in woken {
                // a fast path only: workers also poll
                let _ = self.bus.publish(&smith_bus::subjects::wake(&agent), bytes::Bytes::new()).await;
            }
            if n < BATCH {
                break;
            }
        }
        moved
    }
}

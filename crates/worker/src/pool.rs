//! The agent pool: long-lived slot tasks that each run one attempt at a time.
//!
//! A slot is an agent in waiting: a tokio task parked on the pool's job channel. The claim
//! loop hands every claimed task to the channel, first making sure there are enough slots to
//! take it; a slot runs the attempt to its end and returns to the channel. The pool holds
//! between `min` and `max` slots: the autoscaler's target when one is followed (`smith up`),
//! else what recent demand needed. Scale-in never touches a running attempt: it sends
//! `Retire` through the same channel, which only an idle slot can receive.

use crate::{attempt, metrics, Shared};
use futures_util::FutureExt;
use smith_store::Claimed;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Without a target to follow, how long the pool keeps slots that recent demand needed.
const KEEP_PEAK: Duration = Duration::from_secs(30);

pub(crate) enum Job {
    Run(Box<Claimed>),
    Retire,
}

pub(crate) struct Pool {
    pub min: usize,
    pub max: usize,
    /// The autoscaler's desired slots, once one is followed.
    target: AtomicUsize,
    follows: AtomicBool,
    /// Slot tasks alive, retiring ones included until they exit.
    alive: AtomicUsize,
    /// `Retire` jobs sent and not yet taken.
    retiring: AtomicUsize,
    /// Without a target: the most slots busy lately, and since when.
    peak: Mutex<(usize, Instant)>,
    tx: mpsc::UnboundedSender<Job>,
    /// Idle slots queue for the receiver (a fair lock: O(1) to wait, to wake, to give up); the
    /// one holding it waits for the next job and lets go as soon as it has one.
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
}

impl Pool {
    pub fn new(min: usize, max: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Pool {
            min,
            max,
            target: AtomicUsize::new(min),
            follows: AtomicBool::new(false),
            alive: AtomicUsize::new(0),
            retiring: AtomicUsize::new(0),
            peak: Mutex::new((0, Instant::now())),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// Follow the autoscaler: hold `desired` slots, clamped to `min..=max`.
    pub fn set_target(&self, desired: usize) {
        self.target.store(desired.clamp(self.min, self.max), Ordering::Release);
        self.follows.store(true, Ordering::Release);
    }

    /// Slots that will still be there once pending retirements are taken.
    pub fn slots(&self) -> usize {
        self.alive.load(Ordering::Acquire).saturating_sub(self.retiring.load(Ordering::Acquire))
    }

    /// How many attempts may run at once right now (claims stop there).
    pub fn capacity(&self) -> usize {
        if self.follows.load(Ordering::Acquire) {
            self.target.load(Ordering::Acquire)
        } else {
            self.max
        }
    }

    /// The slots the pool means to hold while `busy` attempts run or wait for a slot.
    pub fn held(&self, busy: usize) -> usize {
        let base = if self.follows.load(Ordering::Acquire) {
            self.target.load(Ordering::Acquire)
        } else {
            let mut peak = self.peak.lock().expect("peak lock");
            let now = Instant::now();
            if busy >= peak.0 || now.duration_since(peak.1) > KEEP_PEAK {
                *peak = (busy, now);
            }
            peak.0.max(self.min)
        };
        base.max(busy).min(self.max.max(busy))
    }

    /// Hands a claimed task to an idle slot (the caller made sure one will exist).
    pub fn dispatch(&self, c: Claimed) {
        // the receiver lives in the pool itself, so the channel never closes
        let _ = self.tx.send(Job::Run(Box::new(c)));
    }
}

/// Grows or shrinks the pool towards what it should hold with `busy` attempts registered.
pub(crate) fn resize(s: &Arc<Shared>, busy: usize) {
    let pool = &s.pool;
    let want = pool.held(busy);
    let have = pool.slots();
    if have < want {
        for _ in have..want {
            pool.alive.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(slot(s.clone()));
        }
    } else if have > want {
        // only idle slots can take a Retire; `busy` ones are running or about to
        let idle = have.saturating_sub(busy);
        let n = (have - want).min(idle);
        pool.retiring.fetch_add(n, Ordering::AcqRel);
        for _ in 0..n {
            let _ = pool.tx.send(Job::Retire);
        }
    }
    metrics::pool(busy, pool.slots(), pool.held(busy), pool.max);
}

/// Decrements the alive count however the slot ends.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.pool.alive.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn slot(s: Arc<Shared>) {
    let _alive = Alive(s.clone());
    loop {
        let Some(job) = s.pool.rx.lock().await.recv().await else { return };
        match job {
            Job::Run(c) => {
                let (id, attempt) = (c.task.id, c.task.attempt);
                // a panicking executor path must not take the slot (or the task's record) with it
                // boxed: an idle slot then holds only its wait on the channel, not the room a
                // whole attempt needs (several KB), which it takes only while it runs one
                let run = Box::pin(attempt::run_claimed(&s, *c));
                if let Err(panic) = std::panic::AssertUnwindSafe(run).catch_unwind().await {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|m| m.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(task_id = %id, panic = %what, "attempt panicked; its lease will expire and the task be retried");
                    attempt::forget(&s, id, attempt);
                }
            }
            Job::Retire => {
                s.pool.retiring.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }
}

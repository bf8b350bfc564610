//! Circuit breakers, one per agent definition in each worker: after `breaker_failures`
//! provider outages in a row the breaker opens and the worker stops claiming that agent's
//! tasks (they wait queued instead of burning attempts); after `breaker_cooldown` one trial
//! attempt runs (half-open), and its outcome closes or re-opens the breaker.

use smith_core::BreakerState;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    state: BreakerState,
    opened_at: Option<Instant>,
    /// A half-open trial is running.
    trial: bool,
}

/// What a recorded outcome did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened,
    Closed,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { threshold, cooldown, failures: 0, state: BreakerState::Closed, opened_at: None, trial: false }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// How many tasks of this agent the worker may claim now, of `free` slots.
    pub fn admit(&mut self, free: u32, now: Instant) -> u32 {
        match self.state {
            BreakerState::Closed => free,
            BreakerState::Open => {
                if self.opened_at.is_some_and(|t| now.duration_since(t) >= self.cooldown) {
                    self.state = BreakerState::HalfOpen;
                    self.admit(free, now)
                } else {
                    0
                }
            }
            BreakerState::HalfOpen if self.trial || free == 0 => 0,
            BreakerState::HalfOpen => {
                self.trial = true;
                1
            }
        }
    }

    /// Records an attempt's end: `outage` when its provider kept failing.
    pub fn record(&mut self, outage: bool, now: Instant) -> Transition {
        if self.threshold == 0 {
            return Transition::None;
        }
        if !outage {
            self.failures = 0;
            self.trial = false;
            if self.state != BreakerState::Closed {
                self.state = BreakerState::Closed;
                self.opened_at = None;
                return Transition::Closed;
            }
            return Transition::None;
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            BreakerState::HalfOpen => {
                self.trial = false;
                self.state = BreakerState::Open;
                self.opened_at = Some(now);
                Transition::Opened
            }
            BreakerState::Closed if self.failures >= self.threshold => {
                self.state = BreakerState::Open;
                self.opened_at = Some(now);
                Transition::Opened
            }
            BreakerState::Open => {
                // an attempt that started before the breaker opened: keep it open from now
                self.opened_at = Some(now);
                Transition::None
            }
            BreakerState::Closed => Transition::None,
        }
    }

    /// A trial handed back unfinished (released, lost) lets another one start.
    pub fn abandon_trial(&mut self) {
        self.trial = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_waits_cooldown_then_trials_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        assert_eq!(b.admit(5, t0), 5);
        assert_eq!(b.record(true, t0), Transition::None);
        assert_eq!(b.record(true, t0), Transition::None);
        assert_eq!(b.record(true, t0), Transition::Opened);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(5, t0 + Duration::from_secs(9)), 0, "open: nothing claimed");
        assert_eq!(b.admit(5, t0 + Duration::from_secs(10)), 1, "half-open: one trial");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(5, t0 + Duration::from_secs(11)), 0, "one trial at a time");
        let t1 = t0 + Duration::from_secs(12);
        assert_eq!(b.record(true, t1), Transition::Opened, "a failed trial re-opens");
        assert_eq!(b.admit(5, t1 + Duration::from_secs(5)), 0);
        assert_eq!(b.admit(5, t1 + Duration::from_secs(10)), 1);
        assert_eq!(b.record(false, t1 + Duration::from_secs(11)), Transition::Closed, "a good trial closes");
        assert_eq!(b.admit(5, t1 + Duration::from_secs(11)), 5);
    }

    #[test]
    fn a_success_resets_the_count_and_zero_never_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record(true, t0);
        b.record(false, t0);
        assert_eq!(b.record(true, t0), Transition::None, "the count restarted");
        let mut never = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            assert_eq!(never.record(true, t0), Transition::None);
        }
        assert_eq!(never.admit(3, t0), 3);
    }
}

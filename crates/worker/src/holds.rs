//! Provider accounts at their usage limit, as this worker knows them: it claims no task of an
//! agent whose account is held until the hold ends. The store holds an account for the whole
//! fleet when an attempt parks (`Store::park`); each worker reads the holds at most every
//! [`REFRESH`], and holds an account at once when one of its own attempts parks.

use smith_core::Micros;
use smith_store::AccountHold;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How stale this worker's view of the fleet's holds may be.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);
/// The most a parked task's resume is put off past its reset, so the account's parked tasks
/// come back spread over this window rather than in one instant.
const SPREAD: Duration = Duration::from_millis(1000);

#[derive(Default)]
pub(crate) struct Holds {
    until: Mutex<HashMap<String, Micros>>,
    read_at: Mutex<Option<Instant>>,
}

impl Holds {
    /// Holds `account` until `until` here, whatever the store said last.
    pub fn hold(&self, account: &str, until: Micros) {
        let mut held = self.until.lock().expect("holds lock");
        let e = held.entry(account.to_string()).or_insert(until);
        *e = (*e).max(until);
    }

    /// Whether `account` is held at `now`.
    pub fn held(&self, account: &str, now: Micros) -> bool {
        let held = self.until.lock().expect("holds lock");
        held.get(account).is_some_and(|until| *until > now)
    }

    /// Whether the store's holds are due to be read again.
    pub fn stale(&self) -> bool {
        self.read_at.lock().expect("holds lock").is_none_or(|t| t.elapsed() >= REFRESH)
    }

    /// The fleet's holds as the store has them now: ended ones are forgotten, newer ones kept.
    pub fn refresh(&self, holds: Vec<AccountHold>, now: Micros) {
        *self.read_at.lock().expect("holds lock") = Some(Instant::now());
        let mut held = self.until.lock().expect("holds lock");
        held.retain(|_, until| *until > now);
        for h in holds {
            let e = held.entry(h.account).or_insert(h.until);
            *e = (*e).max(h.until);
        }
    }
}

/// How much later than its reset a parked task resumes: a random share of [`SPREAD`].
pub(crate) fn spread() -> Duration {
    Duration::from_millis(fastrand::u64(0..=SPREAD.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_lasts_until_its_end_and_only_grows() {
        let h = Holds::default();
        let t = Micros(10_000_000);
        assert!(!h.held("a", t));
        h.hold("a", Micros(t.0 + 5));
        h.hold("a", Micros(t.0 + 2));
        assert!(h.held("a", Micros(t.0 + 4)) && !h.held("a", Micros(t.0 + 5)) && !h.held("b", t));
        assert!(h.stale());
        let fleet = vec![AccountHold { account: "b".into(), until: Micros(t.0 + 9), reason: "limit".into() }];
        h.refresh(fleet, t);
        assert!(!h.stale());
        assert!(h.held("a", t) && h.held("b", Micros(t.0 + 8)), "a refresh keeps this worker's own hold");
        h.refresh(Vec::new(), Micros(t.0 + 6));
        assert!(!h.held("a", Micros(t.0 + 6)) && h.held("b", Micros(t.0 + 6)), "only ended holds are forgotten");
    }
}

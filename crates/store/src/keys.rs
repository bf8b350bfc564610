//! Keyed concurrency in claims: an agent's `max_per_key` caps its running tasks per concurrency
//! key (within a tenant) over every worker, and the claim serves the keys in turn, so one key's
//! backlog never starves another's.
//!
//! Each backend finds the keys with queued tasks of the agent in (tenant, key) order, starting
//! after the agent's cursor (the last key a claim served, kept in `key_cursors`) and wrapping
//! around, each key offering its best runnable tasks up to its free room ([`Turns::offer`]). The
//! offers are taken a round at a time — every key's best task, then every key's second best —
//! so `n` free slots go to `n` different keys whenever that many have work; the cursor then moves
//! to the last key served. Running counts are read in the same serialized step as the claim
//! (SQLite's single writer; PostgreSQL under the feed lock), so the cap is exact.
//!
//! Tasks of a capped agent without a key (queued before the agent had `max_per_key`) run
//! uncapped: they take one turn per round after the keys ([`Turns::offer_keyless`]).

use crate::caps::Room;
use std::collections::HashMap;

/// The agents whose running tasks are capped per concurrency key, with their `max_per_key`.
/// Empty: no agent is, and every claim takes its usual path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCaps {
    pub agents: HashMap<String, u32>,
}

impl KeyCaps {
    /// From agent definitions: those with `max_per_key`.
    pub fn of(defs: &[smith_core::AgentDef]) -> Self {
        KeyCaps { agents: defs.iter().filter_map(|d| Some((d.name.clone(), d.max_per_key?))).collect() }
    }

    /// The cap of `agent`'s keys, or `None`: its tasks are not capped per key.
    pub fn cap(&self, agent: &str) -> Option<u32> {
        self.agents.get(agent).copied()
    }
}

/// A key of an agent: its tenant and the key itself.
pub(crate) type KeyOf = (String, String);

/// A runnable task offered by its key, in the backend's own terms (`id`: a rowid or a UUID).
#[derive(Debug, Clone)]
pub(crate) struct Offer<I> {
    pub id: I,
    pub tenant: String,
}

/// One claim's offers for one agent, by key in the order the keys were visited.
pub(crate) struct Turns<I> {
    cap: u32,
    /// Running tasks by key, as the claim began.
    running: HashMap<KeyOf, u64>,
    members: Vec<(Option<KeyOf>, Vec<Offer<I>>)>,
}

impl<I> Turns<I> {
    pub fn new(cap: u32, running: HashMap<KeyOf, u64>) -> Self {
        Turns { cap, running, members: Vec::new() }
    }

    /// How many tasks `key` may start now (at most `n`).
    pub fn free(&self, key: &KeyOf, n: u32) -> u32 {
        let running = self.running.get(key).copied().unwrap_or(0);
        u64::from(self.cap).saturating_sub(running).min(u64::from(n)) as u32
    }

    /// Keys full now: each costs a walk one probe, so a walk looks this many keys further.
    pub fn full_keys(&self) -> usize {
        self.running.values().filter(|&&r| r >= u64::from(self.cap)).count()
    }

    /// The running counts of the keys a claim passes as parameters (those with tasks running),
    /// as parallel lists.
    pub fn running_lists(&self) -> (Vec<String>, Vec<String>, Vec<i64>) {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for ((tenant, key), n) in &self.running {
            out.0.push(tenant.clone());
            out.1.push(key.clone());
            out.2.push((*n).min(i64::MAX as u64) as i64);
        }
        out
    }

    /// `key`'s runnable tasks, best first (no more than [`Turns::free`] allows).
    pub fn offer(&mut self, key: KeyOf, tasks: Vec<Offer<I>>) {
        if !tasks.is_empty() {
            self.members.push((Some(key), tasks));
        }
    }

    /// The agent's runnable tasks without a key, best first: one member with no cap.
    pub fn offer_keyless(&mut self, tasks: Vec<Offer<I>>) {
        if !tasks.is_empty() {
            self.members.push((None, tasks));
        }
    }

    /// Keys (and the keyless member) with something to offer.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Up to `n` offers, a round at a time in the order the members were visited, leaving out
    /// tasks of tenants at their running cap (counted into `room` as taken); and where the
    /// agent's cursor goes: the last key served (`None`: the keyless member was, or nothing).
    pub fn take(self, n: u32, mut room: Option<&mut Room>) -> (Vec<I>, Option<Option<KeyOf>>) {
        let mut queues: Vec<(Option<KeyOf>, std::vec::IntoIter<Offer<I>>)> =
            self.members.into_iter().map(|(k, t)| (k, t.into_iter())).collect();
        let mut out = Vec::new();
        let mut last: Option<usize> = None;
        'rounds: while (out.len() as u32) < n {
            let mut any = false;
            for (i, (_, tasks)) in queues.iter_mut().enumerate() {
                if out.len() as u32 == n {
                    break 'rounds;
                }
                for offer in tasks.by_ref() {
                    if let Some(room) = room.as_deref_mut() {
                        if room.left(&offer.tenant) == Some(0) {
                            continue;
                        }
                        room.take(&offer.tenant);
                    }
                    out.push(offer.id);
                    last = Some(i);
                    any = true;
                    break;
                }
            }
            if !any {
                break;
            }
        }
        let cursor = last.map(|i| queues.swap_remove(i).0);
        (out, cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> KeyOf {
        ("t".to_string(), k.to_string())
    }

    fn offers(ids: &[u32]) -> Vec<Offer<u32>> {
        ids.iter().map(|&id| Offer { id, tenant: "t".into() }).collect()
    }

    #[test]
    fn rounds_serve_every_key_before_any_key_twice() {
        let mut turns = Turns::new(5, HashMap::from([(key("a"), 4)]));
        assert_eq!((turns.free(&key("a"), 10), turns.free(&key("b"), 3)), (1, 3));
        turns.offer(key("a"), offers(&[1]));
        turns.offer(key("b"), offers(&[10, 11, 12]));
        turns.offer(key("c"), offers(&[20, 21]));
        turns.offer_keyless(offers(&[30, 31]));
        let (ids, cursor) = turns.take(6, None);
        assert_eq!(ids, [1, 10, 20, 30, 11, 21]);
        assert_eq!(cursor, Some(Some(key("c"))));
    }

    #[test]
    fn a_short_claim_stops_at_the_nth_key_and_a_full_tenant_is_passed_over() {
        let mut turns = Turns::new(1, HashMap::new());
        for (k, id) in [("a", 1), ("b", 2), ("c", 3)] {
            turns.offer(key(k), offers(&[id]));
        }
        assert_eq!(turns.members(), 3);
        let (ids, cursor) = turns.take(2, None);
        assert_eq!((ids, cursor), (vec![1, 2], Some(Some(key("b")))));

        let caps = crate::RunningCaps { default: None, tenants: HashMap::from([("full".to_string(), 0)]) };
        let mut room = Room::new(&caps, HashMap::new());
        let mut turns = Turns::new(1, HashMap::new());
        turns.offer(("full".into(), "a".into()), vec![Offer { id: 1, tenant: "full".into() }]);
        turns.offer(key("b"), offers(&[2]));
        let (ids, cursor) = turns.take(5, Some(&mut room));
        assert_eq!((ids, cursor), (vec![2], Some(Some(key("b")))));
        let (ids, cursor) = Turns::<u32>::new(1, HashMap::new()).take(5, None);
        assert_eq!((ids.len(), cursor), (0, None));
    }
}

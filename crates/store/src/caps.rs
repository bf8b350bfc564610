//! Per-tenant caps on running tasks (the `max_running` quota), enforced by the claim: a task
//! submitted over its tenant's cap waits in the queue, and only that tenant's tasks wait.

use std::collections::HashMap;

/// The most tasks of each tenant running at once, over every worker: `tenants[t]` for a tenant
/// with an entry, else `default`, else no cap. With no default and no entries nothing is
/// capped, and claims take their fast path (no per-tenant counting at all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningCaps {
    pub default: Option<u64>,
    pub tenants: HashMap<String, u64>,
}

impl RunningCaps {
    pub fn is_unlimited(&self) -> bool {
        self.default.is_none() && self.tenants.is_empty()
    }

    /// The cap of `tenant`, or `None` for no cap.
    pub fn cap(&self, tenant: &str) -> Option<u64> {
        self.tenants.get(tenant).copied().or(self.default)
    }
}

/// The free running slots of each tenant while one claim (or one batch of claims) runs: the
/// caps less what was running when it began, less what it has claimed since.
pub(crate) struct Room<'a> {
    caps: &'a RunningCaps,
    running: HashMap<String, u64>,
}

impl<'a> Room<'a> {
    /// `running`: every tenant's running tasks as the claim begins (tenants absent run none).
    pub fn new(caps: &'a RunningCaps, running: HashMap<String, u64>) -> Self {
        Room { caps, running }
    }

    /// Free slots of `tenant`, or `None` for no cap.
    pub fn left(&self, tenant: &str) -> Option<u64> {
        let cap = self.caps.cap(tenant)?;
        Some(cap.saturating_sub(self.running.get(tenant).copied().unwrap_or(0)))
    }

    /// Counts a task of `tenant` claimed.
    pub fn take(&mut self, tenant: &str) {
        let running = self.running.entry(tenant.to_string()).or_default();
        *running += 1;
        if let Some(cap) = self.caps.cap(tenant) {
            if *running >= cap {
                tracing::debug!(tenant, cap, "tenant at its running cap; its queued tasks wait");
            }
        }
    }

    /// Every tenant's running tasks, those this claim took included.
    pub fn into_running(self) -> HashMap<String, u64> {
        self.running
    }

    /// The free slots of every tenant whose figure differs from the default's (a cap of its
    /// own, or tasks running), as parallel lists; every other tenant has `self.fresh()`.
    pub fn listed(&self) -> (Vec<String>, Vec<i64>) {
        let mut tenants = Vec::new();
        let mut left = Vec::new();
        let names = self.caps.tenants.keys().chain(self.running.keys().filter(|t| !self.caps.tenants.contains_key(*t)));
        for t in names {
            if let Some(n) = self.left(t) {
                tenants.push(t.clone());
                left.push(n.min(i64::MAX as u64) as i64);
            }
        }
        (tenants, left)
    }

    /// Free slots of a tenant with no entry of its own and nothing running: the default cap.
    pub fn fresh(&self) -> Option<i64> {
        self.caps.default.map(|d| d.min(i64::MAX as u64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(default: Option<u64>, tenants: &[(&str, u64)]) -> RunningCaps {
        RunningCaps { default, tenants: tenants.iter().map(|(t, n)| (t.to_string(), *n)).collect() }
    }

    #[test]
    fn a_tenant_entry_overrides_the_default_and_no_cap_is_unlimited() {
        assert!(RunningCaps::default().is_unlimited());
        let c = caps(Some(2), &[("big", 5)]);
        assert!(!c.is_unlimited());
        assert_eq!((c.cap("big"), c.cap("any")), (Some(5), Some(2)));
        let c = caps(None, &[("small", 1)]);
        assert_eq!((c.cap("small"), c.cap("any")), (Some(1), None));
    }

    #[test]
    fn room_counts_down_as_tasks_are_taken() {
        let c = caps(Some(2), &[("big", 5), ("idle", 3)]);
        let mut room = Room::new(&c, HashMap::from([("big".to_string(), 4), ("a".to_string(), 1)]));
        assert_eq!((room.left("big"), room.left("a"), room.left("b")), (Some(1), Some(1), Some(2)));
        room.take("a");
        room.take("a");
        assert_eq!(room.left("a"), Some(0), "never below zero");
        let (tenants, left) = room.listed();
        let mut listed: Vec<(String, i64)> = tenants.into_iter().zip(left).collect();
        listed.sort();
        assert_eq!(listed, [("a".to_string(), 0), ("big".to_string(), 1), ("idle".to_string(), 3)]);
        assert_eq!(room.fresh(), Some(2));

        let c = caps(None, &[("small", 1)]);
        let room = Room::new(&c, HashMap::from([("free".to_string(), 7)]));
        assert_eq!(room.left("free"), None);
        assert_eq!(room.listed(), (vec!["small".to_string()], vec![1]), "uncapped tenants are not listed");
        assert_eq!(room.fresh(), None);
    }
}

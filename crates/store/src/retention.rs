//! What every backend shares about retention (docs/retention.md): which rows are past their
//! age, what a purge deleted, and the statuses a purge may delete.
//!
//! A purge of finished tasks is one write per batch: their usage is added to the per
//! tenant/agent/day rollups, the feed's horizon is raised past their events, and the tasks, their
//! events, artifact records, approvals and webhook deliveries are deleted — all in one
//! transaction, so a usage read (rollups plus live rows, in one statement) never sees a total
//! move, and a feed reader never sees events vanish below a horizon it was not told of.

use smith_core::{Micros, TaskId, TaskStatus};

/// Which rows are past their age: those of `tenant` (`None`: of every tenant not named in
/// `except`, which have limits of their own) dated before `before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoff {
    pub tenant: Option<String>,
    pub except: Vec<String>,
    pub before: Micros,
}

impl Cutoff {
    /// Whether a row of `tenant` is in this cutoff's scope.
    pub fn covers(&self, tenant: &str) -> bool {
        match &self.tenant {
            Some(t) => t == tenant,
            None => !self.except.iter().any(|e| e == tenant),
        }
    }
}

/// A finished task past its age, with the names of its artifacts (whose objects the caller
/// deletes from the artifact storage before the records go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: TaskId,
    pub tenant: String,
    pub artifacts: Vec<String>,
}

/// What a purge of tasks deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub tasks: u64,
    pub events: u64,
    pub artifacts: u64,
    pub approvals: u64,
    pub deliveries: u64,
    /// Tasks of the batch left for a later pass: the one holding the feed's newest event (so a
    /// position is never handed out twice), or one no longer finished.
    pub kept: u64,
    /// The highest feed position deleted so far, of any tenant (0: none).
    pub horizon: u64,
}

/// The statuses a purge may delete: the terminal ones ([`TaskStatus::is_terminal`]), as an SQL
/// list of literals (they come from the closed enum, so quoting them inline is safe).
pub(crate) fn terminal_sql() -> String {
    let names: Vec<String> =
        TaskStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| format!("'{}'", s.as_str())).collect();
    names.join(", ")
}

/// Most rows one purge call takes, whatever the caller asks.
pub const PURGE_LIMIT: usize = 5000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminal_statuses_are_deletable() {
        let sql = terminal_sql();
        assert!(sql.contains("'succeeded'") && sql.contains("'cancelled'"), "{sql}");
        for live in ["queued", "running", "waiting_input"] {
            assert!(!sql.contains(&format!("'{live}'")), "{sql}");
        }
    }

    #[test]
    fn a_default_cutoff_leaves_out_tenants_with_their_own() {
        let c = Cutoff { tenant: None, except: vec!["acme".into()], before: Micros(0) };
        assert!(c.covers("globex") && !c.covers("acme"));
        let own = Cutoff { tenant: Some("acme".into()), except: vec![], before: Micros(0) };
        assert!(own.covers("acme") && !own.covers("globex"));
    }
}

//! What both backends share about schedules: the firing step's input, the checks before a
//! write, and the columns they read (with the last fired task's status, joined).

use crate::{Error, Result};
use smith_core::schedule::{Overlap, Schedule};
use smith_core::{Micros, NewTask};

/// One firing step of a schedule ([`crate::Store::fire_schedule`]): the cursor moves from
/// `from` to `to` in the same write that submits `task` (when the fire runs), so a fire is
/// submitted exactly once however many leaders try it.
#[derive(Debug, Clone)]
pub struct Fire {
    pub schedule: String,
    /// The cursor (`next_fire_at`) the leader read: the step applies only while it is there.
    pub from: Micros,
    /// The cursor after the step; `None`: the schedule never fires again.
    pub to: Option<Micros>,
    /// The fire acted on.
    pub fire_at: Micros,
    /// The fire's task (its idempotency key names the schedule and `fire_at`); `None` when the
    /// fire is passed over.
    pub task: Option<NewTask>,
    /// The fire was passed over because the previous run was unfinished (`overlap = skip`).
    pub skipped: bool,
    /// Earlier fires passed over as older than the catch-up window.
    pub missed: u64,
}

/// The columns both backends read, in this order: the schedule's, then its last task's status.
pub(crate) const COLS: &str = "s.id, s.tenant, s.name, s.agent, s.input, s.metadata, s.priority, s.timeout_ms, \
     s.max_attempts, s.cron, s.timezone, s.overlap, s.catchup_ms, s.paused, s.next_fire_at, s.last_fire_at, \
     s.last_task_id, s.skipped, s.last_skipped_at, s.missed, s.created_at, s.updated_at, t.status";

/// Refuses a schedule no backend may hold.
pub(crate) fn check(s: &Schedule) -> Result<()> {
    if s.id.is_empty() || s.tenant.is_empty() {
        return Err(smith_core::Error::invalid("a schedule needs an id and a tenant").into());
    }
    smith_core::schedule::check(s)?;
    Ok(())
}

pub(crate) fn overlap_of(text: &str) -> Result<Overlap> {
    text.parse().map_err(|e: smith_core::Error| Error::Backend(format!("stored overlap: {}", e.message)))
}

pub(crate) fn json_of(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Backend(format!("stored schedule {what}: {e}")))
}

pub(crate) fn conflict(id: &str) -> Error {
    smith_core::Error::new(smith_core::Code::Conflict, format!("schedule {id} was fired, paused or deleted meanwhile"))
        .into()
}

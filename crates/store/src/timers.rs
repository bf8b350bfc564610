//! Time in the queue: tasks that start later (`scheduled`), tasks past their time to live
//! (`expired`), and tasks parked at their provider account's usage limit (`parked`) with the
//! account held until the limit resets. The transitions are `lifecycle`'s; the leader's timer
//! pass (`Store::advance_timers`) applies them when their time comes.

use smith_core::Micros;

/// A provider account at its usage limit: no task of its agents is claimed before `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHold {
    pub account: String,
    pub until: Micros,
    /// What the provider said (shown in the parked tasks' events and in logs).
    pub reason: String,
}

/// The most a reason is stored with (a provider's message can be long).
pub const MAX_REASON: usize = 512;

/// `reason`, cut to [`MAX_REASON`] bytes on a character boundary.
pub fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

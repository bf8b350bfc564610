//! Domain types of MisterSmith: tasks, events, agents, nodes and error codes — no I/O, no runtime.

/// `Display` and `FromStr` for an enum of names (`$ty::ALL`, `$ty::as_str`): shown as its name,
/// parsed from one, and an unknown name is an `InvalidArgument` error that says what was
/// expected.
macro_rules! named_enum {
    ($ty:ty, $what:literal) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                <$ty>::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = <$ty>::ALL.iter().map(|v| v.as_str()).collect();
                    let shown = $crate::task::truncate(s, 64);
                    $crate::Error::invalid(format!("unknown {} {shown:?}: expected one of {}", $what, names.join(", ")))
                })
            }
        }
    };
}
pub(crate) use named_enum;

pub mod access;
pub mod agent;
pub mod approval;
pub mod artifact;
pub mod capability;
pub mod concurrency;
pub mod cron;
pub mod error;
pub mod event;
pub mod node;
pub mod output;
pub mod redact;
pub mod schedule;
pub mod sse;
pub mod task;
pub mod time;
pub mod trace;
pub mod webhook;
pub mod workspace;

pub use access::{ApiKey, AuditQuery, AuditRecord, NewApiKey, NewAuditRecord, Scope, ALL_TENANTS};
pub use agent::{
    AgentDef, AgentSummary, BreakerState, Budget, ExecutorKind, InputMode, Pricing, RateLimit, Secret, Usage,
};
pub use approval::{Approval, ApprovalStatus, Decision, RequestKind};
pub use artifact::Artifact;
pub use capability::{Capability, CapabilityKey};
pub use error::{Code, Error, Result};
pub use event::{visible_to, Event, EventDraft, EventHeader, EventKind};
pub use node::{Node, NodeRole, NodeStatus};
pub use task::{NewTask, Outcome, Task, TaskError, TaskId, TaskOptions, TaskStatus, TaskWorkspace, DEFAULT_TENANT};
pub use time::Micros;
pub use webhook::{AttemptOutcome, Delivery, DeliveryState, NewDelivery, TaskWebhook, Webhook};

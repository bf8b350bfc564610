//! Domain types of MisterSmith: tasks, events, agents, nodes and error codes — no I/O, no runtime.

pub mod access;
pub mod agent;
pub mod capability;
pub mod error;
pub mod event;
pub mod node;
pub mod sse;
pub mod task;
pub mod time;
pub mod workspace;

pub use access::{ApiKey, AuditQuery, AuditRecord, NewApiKey, NewAuditRecord, Scope, ALL_TENANTS};
pub use agent::{AgentDef, AgentSummary, BreakerState, Budget, ExecutorKind, InputMode, Pricing, Secret, Usage};
pub use capability::{Capability, CapabilityKey};
pub use error::{Code, Error, Result};
pub use event::{visible_to, Event, EventDraft, EventHeader, EventKind};
pub use node::{Node, NodeRole, NodeStatus};
pub use task::{NewTask, Outcome, Task, TaskError, TaskId, TaskStatus, DEFAULT_TENANT};
pub use time::Micros;

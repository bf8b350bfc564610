//! Events: the append-only record of what happened to a task (`seq` 1..n per task) and to the fleet.

use crate::error::{Error, Result};
use crate::task::TaskId;
use crate::time::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "task.queued")]
    Queued,
    #[serde(rename = "task.started")]
    Started,
    #[serde(rename = "output")]
    Output,
    #[serde(rename = "tool_use")]
    ToolUse,
    #[serde(rename = "tool_result")]
    ToolResult,
    #[serde(rename = "usage")]
    Usage,
    #[serde(rename = "task.retrying")]
    Retrying,
    #[serde(rename = "task.succeeded")]
    Succeeded,
    #[serde(rename = "task.failed")]
    Failed,
    #[serde(rename = "task.cancelled")]
    Cancelled,
    #[serde(rename = "task.timed_out")]
    TimedOut,
    #[serde(rename = "discovery")]
    Discovery,
    #[serde(rename = "message")]
    Message,
    /// Fleet events not tied to a task: restarts, escalations, dead nodes, requeues.
    #[serde(rename = "system")]
    System,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::Queued,
        EventKind::Started,
        EventKind::Output,
        EventKind::ToolUse,
        EventKind::ToolResult,
        EventKind::Usage,
        EventKind::Retrying,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Cancelled,
        EventKind::TimedOut,
        EventKind::Discovery,
        EventKind::Message,
        EventKind::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "task.queued",
            EventKind::Started => "task.started",
            EventKind::Output => "output",
            EventKind::ToolUse => "tool_use",
            EventKind::ToolResult => "tool_result",
            EventKind::Usage => "usage",
            EventKind::Retrying => "task.retrying",
            EventKind::Succeeded => "task.succeeded",
            EventKind::Failed => "task.failed",
            EventKind::Cancelled => "task.cancelled",
            EventKind::TimedOut => "task.timed_out",
            EventKind::Discovery => "discovery",
            EventKind::Message => "message",
            EventKind::System => "system",
        }
    }

    /// The event that ends a task's stream.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled | EventKind::TimedOut)
    }

    /// Kinds an executor may emit while running; lifecycle kinds are the store's alone.
    pub fn is_executor_kind(self) -> bool {
        matches!(
            self,
            EventKind::Output
                | EventKind::ToolUse
                | EventKind::ToolResult
                | EventKind::Usage
                | EventKind::Discovery
                | EventKind::Message
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            Error::invalid(format!("unknown event kind {s:?}: expected one of {}", names.join(", ")))
        })
    }
}

/// A stored event. `seq` numbers a task's events 1..n; `pos` is the event's place in the
/// commit-ordered log of all events (the `/v1/events` cursor). System events have no task and seq 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub task_id: Option<TaskId>,
    pub seq: u64,
    pub kind: EventKind,
    pub at: Micros,
    pub data: Value,
    pub agent: Option<String>,
    pub attempt: u32,
    pub pos: u64,
}

/// An event an executor wants appended to its task's log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub kind: EventKind,
    pub data: Value,
}

impl EventDraft {
    pub fn new(kind: EventKind, data: Value) -> Self {
        EventDraft { kind, data }
    }
    pub fn output(data: impl Into<Value>) -> Self {
        EventDraft { kind: EventKind::Output, data: data.into() }
    }
}

/// The parts of an event that routing needs, read from its JSON without building its `data`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventHeader {
    pub task_id: Option<TaskId>,
    pub seq: u64,
    pub kind: EventKind,
    pub agent: Option<String>,
    pub pos: u64,
    #[serde(default)]
    pub attempt: u32,
    /// When it was written (absent from old publishers).
    #[serde(default)]
    pub at: Option<crate::Micros>,
}

//! Events: the append-only record of what happened to a task (`seq` 1..n per task) and to the fleet.

use crate::task::TaskId;
use crate::time::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// An attempt's git checkout is ready: its branch, base and commit.
    #[serde(rename = "workspace.ready")]
    WorkspaceReady,
    /// What an attempt changed in its checkout: the commit range, the diff stat and the patch.
    #[serde(rename = "workspace.diff")]
    WorkspaceDiff,
    /// The files an attempt left in `$SMITH_ARTIFACTS`, once stored: their count, bytes, and
    /// each one's name, size and SHA-256. Written by the worker, with the attempt's outcome.
    #[serde(rename = "artifacts.stored")]
    ArtifactsStored,
    /// An attempt asks a person to approve a tool call: the request (its id, the call, why,
    /// when it times out). The task is `waiting_input` until it is answered.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// An attempt asks a person a question.
    #[serde(rename = "input.requested")]
    InputRequested,
    /// A request was answered (by a person, or by its timeout): the decision and who made it.
    /// The task is queued again to resume with it.
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    /// A task submitted to start later (`run_at`, `delay`): when it becomes due.
    #[serde(rename = "task.scheduled")]
    Scheduled,
    /// A task whose time to live ran out before it started: it never runs.
    #[serde(rename = "task.expired")]
    Expired,
    /// An attempt stopped at its provider's usage limit: the task waits until the limit resets
    /// (the attempt not spent), with every task of that provider account.
    #[serde(rename = "task.parked")]
    Parked,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
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
        EventKind::WorkspaceReady,
        EventKind::WorkspaceDiff,
        EventKind::ArtifactsStored,
        EventKind::ApprovalRequested,
        EventKind::InputRequested,
        EventKind::ApprovalDecided,
        EventKind::Scheduled,
        EventKind::Expired,
        EventKind::Parked,
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
            EventKind::WorkspaceReady => "workspace.ready",
            EventKind::WorkspaceDiff => "workspace.diff",
            EventKind::ArtifactsStored => "artifacts.stored",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::InputRequested => "input.requested",
            EventKind::ApprovalDecided => "approval.decided",
            EventKind::Scheduled => "task.scheduled",
            EventKind::Expired => "task.expired",
            EventKind::Parked => "task.parked",
        }
    }

    /// The event that ends a task's stream.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled | EventKind::TimedOut | EventKind::Expired
        )
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
                | EventKind::WorkspaceReady
                | EventKind::WorkspaceDiff
        )
    }
}

crate::named_enum!(EventKind, "event kind");

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
    /// The tenant whose event it is: its task's, or the one a discovery or message was made in.
    /// `None` for fleet (`system`) events only. Absent from old publishers.
    #[serde(default)]
    pub tenant: Option<String>,
    pub attempt: u32,
    pub pos: u64,
}

impl Event {
    /// The event a store records for `task` (a fleet event when `None`: no task, agent or
    /// tenant) at feed position `pos`.
    pub fn of_task(
        task: Option<&crate::Task>,
        seq: u64,
        kind: EventKind,
        attempt: u32,
        at: Micros,
        data: Value,
        pos: u64,
    ) -> Event {
        Event {
            task_id: task.map(|t| t.id),
            seq,
            kind,
            at,
            data,
            agent: task.map(|t| t.agent.clone()),
            tenant: task.map(|t| t.tenant.clone()),
            attempt,
            pos,
        }
    }

    /// Whether a reader of tenant `reader` sees this event (see [`visible_to`]).
    pub fn visible_to(&self, reader: Option<&str>) -> bool {
        visible_to(reader, self.kind, self.tenant.as_deref())
    }
}

/// Who sees an event — the one rule every path (store replay, live hub, MCP listings) applies.
/// `reader` is the reader's tenant, `None` for the platform, which sees everything. A tenant sees
/// its own tenant's events and tenant-less fleet (`system`) events, nothing else: an event whose
/// tenant is missing is hidden from every tenant unless it is a fleet event. The store's SQL
/// predicate for the same rule is `visible_sql` in `smith-store`, checked against this function by
/// the store conformance suite.
pub fn visible_to(reader: Option<&str>, kind: EventKind, tenant: Option<&str>) -> bool {
    match (reader, tenant) {
        (None, _) => true,
        (Some(reader), Some(tenant)) => reader == tenant,
        (Some(_), None) => kind == EventKind::System,
    }
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
    /// The event's tenant; `None` for fleet events, and from old publishers that did not say
    /// (a live reader of a tenant then reads the store, which knows).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    /// When it was written (absent from old publishers).
    #[serde(default)]
    pub at: Option<crate::Micros>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_its_own_events_and_fleet_events_only() {
        use EventKind::*;
        // (reader, kind, event tenant, visible)
        let cases: &[(Option<&str>, EventKind, Option<&str>, bool)] = &[
            // the platform sees everything, whoever's it is
            (None, Output, Some("acme"), true),
            (None, Discovery, Some("globex"), true),
            (None, System, None, true),
            (None, Output, None, true),
            // a tenant: its own events of every kind
            (Some("acme"), Queued, Some("acme"), true),
            (Some("acme"), Output, Some("acme"), true),
            (Some("acme"), Discovery, Some("acme"), true),
            (Some("acme"), Message, Some("acme"), true),
            // another tenant's: never, of any kind
            (Some("globex"), Queued, Some("acme"), false),
            (Some("globex"), Output, Some("acme"), false),
            (Some("globex"), Succeeded, Some("acme"), false),
            (Some("globex"), Discovery, Some("acme"), false),
            (Some("globex"), Message, Some("acme"), false),
            (Some("globex"), System, Some("acme"), false),
            // tenant-less: fleet events yes, anything else is of an unknown tenant
            (Some("acme"), System, None, true),
            (Some("acme"), Output, None, false),
            (Some("acme"), Succeeded, None, false),
            (Some("acme"), Discovery, None, false),
            (Some("acme"), Message, None, false),
            // names are compared exactly
            (Some("acme"), Output, Some("ACME"), false),
            (Some("acme"), Output, Some("acme "), false),
            (Some(""), Output, Some("acme"), false),
        ];
        for &(reader, kind, tenant, want) in cases {
            assert_eq!(visible_to(reader, kind, tenant), want, "reader {reader:?}, {kind} of {tenant:?}");
        }
        for kind in EventKind::ALL {
            assert!(!visible_to(Some("globex"), kind, Some("acme")), "{kind}");
            assert_eq!(visible_to(Some("globex"), kind, None), kind == System, "{kind}");
        }
    }

    #[test]
    fn the_tenant_travels_in_the_json_and_old_publishers_still_decode() {
        let ev = Event {
            task_id: Some(TaskId::new()),
            seq: 2,
            kind: EventKind::Output,
            at: Micros(1),
            data: Value::from("x"),
            agent: Some("echo".into()),
            tenant: Some("acme".into()),
            attempt: 1,
            pos: 5,
        };
        let json = serde_json::to_vec(&ev).unwrap();
        let header: EventHeader = serde_json::from_slice(&json).unwrap();
        assert_eq!(header.tenant.as_deref(), Some("acme"));
        assert!(ev.visible_to(Some("acme")) && !ev.visible_to(Some("globex")) && ev.visible_to(None));
        // a publisher from before tenants: no tenant, so no tenant reader is shown it live
        let old = br#"{"task_id":null,"seq":0,"kind":"output","agent":null,"pos":3}"#;
        let header: EventHeader = serde_json::from_slice(old).unwrap();
        assert_eq!(header.tenant, None);
        assert!(!visible_to(Some("acme"), header.kind, header.tenant.as_deref()));
        let mut v = serde_json::to_value(&ev).unwrap();
        v.as_object_mut().unwrap().remove("tenant");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back.tenant, None);
    }
}

//! Tasks: one unit of work for one agent, its lifecycle states and its outcome.

use crate::agent::Budget;
pub use crate::agent::{Usage, MAX_ATTEMPTS_LIMIT};
use crate::error::{Error, Result};
use crate::time::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// A task id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub uuid::Uuid);

impl TaskId {
    pub fn new() -> Self {
        TaskId(uuid::Uuid::now_v7())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        uuid::Uuid::try_parse(s)
            .map(TaskId)
            .map_err(|_| Error::invalid(format!("malformed task id {:?}: expected a UUID", truncate(s, 64))))
    }
}

pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Submitted to start later (`run_at`): claimable once the leader finds it due.
    Scheduled,
    Queued,
    Running,
    /// Parked until a person answers a request of its attempt (no lease, no slot).
    WaitingInput,
    /// Stopped at its provider's usage limit, the attempt not spent: queued again when the
    /// limit resets (`run_at`).
    Parked,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// Its time to live ran out before it started: it never ran.
    Expired,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 10] = [
        TaskStatus::Scheduled,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::WaitingInput,
        TaskStatus::Parked,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::TimedOut,
        TaskStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::WaitingInput => "waiting_input",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Parked => "parked",
            TaskStatus::Expired => "expired",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskStatus::Scheduled
                | TaskStatus::Queued
                | TaskStatus::Running
                | TaskStatus::WaitingInput
                | TaskStatus::Parked
        )
    }
}

crate::named_enum!(TaskStatus, "status");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: String,
    pub message: String,
}

impl TaskError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError { code: code.into(), message: message.into() }
    }
}

/// A task as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub agent: String,
    pub input: Value,
    pub status: TaskStatus,
    pub priority: u8,
    pub timeout_ms: Option<u64>,
    pub max_attempts: u32,
    pub attempt: u32,
    pub idempotency_key: Option<String>,
    pub session_id: Option<String>,
    /// The task that spawned this one (an orchestrating agent's `spawn_task`).
    #[serde(default)]
    pub parent_id: Option<TaskId>,
    /// Spending limits of this task (its agent's apply too).
    #[serde(default)]
    pub budget: Budget,
    pub tenant: String,
    pub metadata: Value,
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    pub usage: Usage,
    pub cancel_requested: bool,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    pub worker: Option<String>,
    /// The workspace this task starts from, over its agent's (`workspace.base`).
    #[serde(default)]
    pub workspace: Option<TaskWorkspace>,
    /// The JSON Schema this task's output must match, over its agent's `output_schema`.
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// Where this task's own terminal and request events are sent (its secret never served).
    #[serde(default)]
    pub webhook: Option<crate::webhook::TaskWebhook>,
    /// When a `scheduled` task becomes due, or a `parked` one resumes (its provider's limit
    /// resets); `None` in every other status.
    #[serde(default)]
    pub run_at: Option<Micros>,
    /// The time to live's end: a task that has not started by then ends `expired`.
    #[serde(default)]
    pub expires_at: Option<Micros>,
    /// The key its agent's `max_per_key` caps it under, resolved at submission.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// The W3C trace context its spans hang under (the submitting request's span, or the
    /// client's own `traceparent`), and its agent's `TRACEPARENT` ([`crate::trace`]).
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// What a task sets of its agent's workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskWorkspace {
    /// The branch, tag or commit the task's checkout starts from.
    pub base: String,
}

/// The `options` a task row stores: what the task sets over its agent's definition
/// ([`Task::options_json`] writes them, [`Task::set_options`] reads them back).
/// (A missing field is `None`.)
#[derive(Debug, Serialize, Deserialize)]
pub struct TaskOptions<W = TaskWorkspace, S = Value> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<W>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::webhook::StoredTaskWebhook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

pub const MAX_PRIORITY: u8 = 9;
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
pub const MAX_KEY_LEN: usize = 256;
pub const DEFAULT_TENANT: &str = "default";

/// The longest session id: it names the session's work directory, one path component.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// A session id is 1..=128 of `A-Z a-z 0-9 . _ -`, and not `.` or `..`: it names a directory.
pub fn validate_session_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::unprocessable(format!(
            "session_id must be 1..={MAX_SESSION_ID_LEN} letters, digits, '.', '_' or '-' (not \".\" or \"..\")"
        )))
    }
}

/// A validated submission.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: TaskId,
    pub agent: String,
    pub input: Value,
    pub priority: u8,
    /// `None`: the agent definition's timeout.
    pub timeout_ms: Option<u64>,
    /// `None`: the agent definition's `max_attempts`.
    pub max_attempts: Option<u32>,
    pub idempotency_key: Option<String>,
    pub session_id: Option<String>,
    pub parent_id: Option<TaskId>,
    pub budget: Budget,
    pub tenant: String,
    pub metadata: Value,
    /// Overrides the agent's `workspace.base`; the agent must have a workspace.
    pub workspace: Option<TaskWorkspace>,
    /// Overrides the agent's `output_schema`.
    pub output_schema: Option<Value>,
    /// Where the task's own terminal and request events are sent.
    pub webhook: Option<crate::webhook::TaskWebhook>,
    /// Start no earlier than this (`scheduled` until then); a past time starts at once.
    pub run_at: Option<Micros>,
    /// A task not started this long after it may start ends `expired`.
    pub ttl: Option<std::time::Duration>,
    /// The key this task's agent caps running tasks by (`max_per_key`); `None`: the agent's
    /// `concurrency_key` expression gives it ([`crate::concurrency::resolve`]).
    pub concurrency_key: Option<String>,
    /// The trace the task's spans join: a valid W3C `traceparent` ([`crate::trace`]).
    pub traceparent: Option<String>,
}

/// The furthest ahead a task may be scheduled.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
/// The longest time to live.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

impl NewTask {
    pub fn new(agent: impl Into<String>, input: Value) -> Self {
        NewTask {
            id: TaskId::new(),
            agent: agent.into(),
            input,
            priority: 0,
            timeout_ms: None,
            max_attempts: None,
            idempotency_key: None,
            session_id: None,
            parent_id: None,
            budget: Budget::default(),
            tenant: DEFAULT_TENANT.into(),
            metadata: Value::Object(Default::default()),
            workspace: None,
            output_schema: None,
            webhook: None,
            run_at: None,
            ttl: None,
            concurrency_key: None,
            traceparent: None,
        }
    }

    /// Checks every field's range; the message names the field.
    pub fn validate(&self) -> Result<()> {
        if self.priority > MAX_PRIORITY {
            return Err(Error::unprocessable(format!("priority must be 0..=9, got {}", self.priority)));
        }
        if let Some(m) = self.max_attempts {
            if m == 0 || m > MAX_ATTEMPTS_LIMIT {
                return Err(Error::unprocessable(format!("max_attempts must be 1..={MAX_ATTEMPTS_LIMIT}, got {m}")));
            }
        }
        if let Some(t) = self.timeout_ms {
            if t == 0 || t > MAX_TIMEOUT_MS {
                return Err(Error::unprocessable(format!("timeout_ms must be 1..={MAX_TIMEOUT_MS}, got {t}")));
            }
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) {
                return Err(Error::unprocessable(format!(
                    "idempotency_key must be 1..={MAX_KEY_LEN} bytes without control characters"
                )));
            }
        }
        if let Some(s) = &self.session_id {
            validate_session_id(s)?;
        }
        if self.tenant.is_empty() || self.tenant.len() > MAX_KEY_LEN || self.tenant.chars().any(char::is_control) {
            return Err(Error::unprocessable(format!(
                "tenant must be 1..={MAX_KEY_LEN} bytes without control characters"
            )));
        }
        self.budget.validate("budget")?;
        if !(self.metadata.is_object() || self.metadata.is_null()) {
            return Err(Error::unprocessable("metadata must be a JSON object"));
        }
        if let Some(w) = &self.workspace {
            crate::workspace::check_ref(&w.base).map_err(|e| Error::unprocessable(format!("workspace.base: {e}")))?;
        }
        if let Some(schema) = &self.output_schema {
            crate::output::Schema::compile(schema, "output_schema")?;
        }
        if let Some(w) = &self.webhook {
            w.validate()?;
        }
        if let Some(at) = self.run_at {
            if at > Micros::now().plus(MAX_DELAY) {
                return Err(Error::unprocessable(format!(
                    "run_at must be at most {} days ahead, got {}",
                    MAX_DELAY.as_secs() / 86_400,
                    at.rfc3339()
                )));
            }
        }
        if let Some(ttl) = self.ttl {
            if ttl.is_zero() || ttl > MAX_TTL {
                return Err(Error::unprocessable(format!(
                    "ttl must be more than 0 and at most {} days",
                    MAX_TTL.as_secs() / 86_400
                )));
            }
        }
        if let Some(k) = &self.concurrency_key {
            crate::concurrency::check_key(k)?;
        }
        crate::agent::validate_name(&self.agent)
    }

    /// Checks what the task sets against its agent's definition.
    pub fn validate_for(&self, def: &crate::AgentDef) -> Result<()> {
        if self.workspace.is_some() && def.workspace.is_none() {
            return Err(Error::unprocessable(format!(
                "agent {:?} has no workspace: a task of it cannot set workspace.base",
                def.name
            )));
        }
        crate::concurrency::resolve(self, def).map(drop)
    }
}

impl Task {
    /// The queued task a submission creates, with the limits its agent resolved.
    pub fn queued(t: &NewTask, timeout_ms: Option<u64>, max_attempts: u32, now: Micros) -> Task {
        Task {
            id: t.id,
            agent: t.agent.clone(),
            input: t.input.clone(),
            status: TaskStatus::Queued,
            priority: t.priority,
            timeout_ms,
            max_attempts,
            attempt: 0,
            idempotency_key: t.idempotency_key.clone(),
            session_id: t.session_id.clone(),
            parent_id: t.parent_id,
            budget: t.budget,
            tenant: t.tenant.clone(),
            metadata: if t.metadata.is_null() { Value::Object(Default::default()) } else { t.metadata.clone() },
            result: None,
            error: None,
            usage: Usage::default(),
            cancel_requested: false,
            created_at: now,
            started_at: None,
            finished_at: None,
            worker: None,
            workspace: t.workspace.clone(),
            output_schema: t.output_schema.clone(),
            webhook: t.webhook.clone(),
            run_at: None,
            expires_at: None,
            concurrency_key: t.concurrency_key.clone(),
            traceparent: t.traceparent.clone(),
        }
    }

    /// The output schema in effect: the task's own, else its agent's.
    pub fn output_schema<'a>(&'a self, def: &'a crate::AgentDef) -> Option<&'a Value> {
        self.output_schema.as_ref().or(def.output_schema.as_ref())
    }

    /// The task's `options` as the stores keep them (JSON text); `None` when it sets nothing.
    pub fn options_json(&self) -> Option<String> {
        if self.workspace.is_none()
            && self.output_schema.is_none()
            && self.webhook.is_none()
            && self.concurrency_key.is_none()
            && self.traceparent.is_none()
        {
            return None;
        }
        let o = TaskOptions {
            workspace: self.workspace.as_ref(),
            output_schema: self.output_schema.as_ref(),
            webhook: self.webhook.as_ref().map(crate::webhook::StoredTaskWebhook::from),
            concurrency_key: self.concurrency_key.clone(),
            traceparent: self.traceparent.clone(),
        };
        Some(serde_json::to_string(&o).expect("task options serialize"))
    }

    /// Sets what a stored `options` column held (see [`Task::options_json`]).
    pub fn set_options(&mut self, stored: TaskOptions) {
        self.workspace = stored.workspace;
        self.output_schema = stored.output_schema;
        self.webhook = stored.webhook.map(Into::into);
        self.concurrency_key = stored.concurrency_key;
        self.traceparent = stored.traceparent;
    }

    /// The first attempt of a new task, running, as a worker hands it to an executor: for
    /// driving an executor directly (its tests, benchmarks).
    pub fn first_attempt(agent: &str, input: Value) -> Task {
        let mut t = Task::queued(&NewTask::new(agent, input), None, 1, Micros::now());
        t.status = TaskStatus::Running;
        t.attempt = 1;
        t
    }
}

/// How an attempt ended, as reported by the worker that ran it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        result: Value,
        usage: Usage,
    },
    /// `retryable` failures go back to the queue while attempts are left.
    Failed {
        error: TaskError,
        retryable: bool,
        usage: Usage,
    },
    Cancelled {
        usage: Usage,
    },
    TimedOut {
        usage: Usage,
    },
}

impl Outcome {
    pub fn usage(&self) -> Usage {
        match self {
            Outcome::Succeeded { usage, .. }
            | Outcome::Failed { usage, .. }
            | Outcome::Cancelled { usage }
            | Outcome::TimedOut { usage } => *usage,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled { .. } => "cancelled",
            Outcome::TimedOut { .. } => "timed_out",
        }
    }
}

/// Exponential retry backoff: `base * 2^(attempt-1)`, capped, with up to 10% jitter added by the caller.
pub fn retry_backoff_ms(base_ms: u64, attempt: u32, cap_ms: u64) -> u64 {
    let shift = attempt.saturating_sub(1).min(30);
    base_ms.saturating_mul(1u64 << shift).min(cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewTask {
        NewTask::new("echo", Value::from("hi"))
    }

    #[test]
    fn validation_names_the_field() {
        type Case = (fn(&mut NewTask), &'static str);
        let cases: Vec<Case> = vec![
            (|t| t.priority = 10, "priority"),
            (|t| t.max_attempts = Some(0), "max_attempts"),
            (|t| t.timeout_ms = Some(0), "timeout_ms"),
            (|t| t.idempotency_key = Some(String::new()), "idempotency_key"),
            (|t| t.idempotency_key = Some("a\0b".into()), "idempotency_key"),
            (|t| t.session_id = Some("x\ny".into()), "session_id"),
            (|t| t.metadata = Value::from(3), "metadata"),
            (|t| t.agent = "bad name".into(), "agent"),
        ];
        for (mutate, field) in cases {
            let mut t = sample();
            mutate(&mut t);
            let err = t.validate().unwrap_err();
            assert!(err.message.contains(field), "{field}: {}", err.message);
        }
        sample().validate().unwrap();
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(retry_backoff_ms(100, 1, 1000), 100);
        assert_eq!(retry_backoff_ms(100, 2, 1000), 200);
        assert_eq!(retry_backoff_ms(100, 3, 1000), 400);
        assert_eq!(retry_backoff_ms(100, 9, 1000), 1000);
        assert_eq!(retry_backoff_ms(100, 200, 1000), 1000);
    }

    #[test]
    fn ids_parse_and_reject_garbage() {
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
        assert!("not-a-uuid".parse::<TaskId>().is_err());
    }
}

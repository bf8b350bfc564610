//! Executors: what runs an agent's task — the built-in agents and any command (`process`).
//!
//! An executor streams events through its [`Emitter`] and returns the attempt's result. It
//! must stop promptly when its cancel token fires (the worker decides whether that was a
//! cancel or a timeout) and must leave nothing running behind it.

mod builtin;
pub mod claude;
pub mod limit;
pub mod llm;
pub mod process;
pub mod rss;
pub mod structured;
pub mod workspace;

use async_trait::async_trait;
use serde_json::Value;
use smith_core::{AgentDef, EventDraft, EventKind, ExecutorKind, Task, TaskError, Usage};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What an attempt produced when it ran to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub result: Value,
    pub usage: Usage,
}

/// Why an attempt failed. `retryable` failures are retried while attempts are left.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: TaskError,
    pub retryable: bool,
    pub usage: Usage,
    /// The provider account hit its usage limit, which resets then: the task parks until then
    /// without spending the attempt, and resumes where it stopped.
    pub limited_until: Option<smith_core::Micros>,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Failure { error: TaskError::new(code, message), retryable, usage: Usage::default(), limited_until: None }
    }

    /// The provider's usage limit, resetting at `until` (error code [`USAGE_LIMIT`]).
    pub fn usage_limit(until: smith_core::Micros, message: impl Into<String>) -> Self {
        Failure { limited_until: Some(until), ..Failure::new(USAGE_LIMIT, message, true) }
    }

    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Adds what an earlier run of the same attempt spent.
    pub fn with_usage_added(mut self, earlier: Usage) -> Self {
        self.usage.add(&earlier);
        self
    }

    /// The provider (LLM API) was unreachable or kept failing: counts toward the agent's circuit breaker.
    pub fn is_provider_outage(&self) -> bool {
        self.error.code == PROVIDER_UNAVAILABLE
    }
}

/// Error code of an attempt stopped at its provider account's usage limit (its task parks).
pub const USAGE_LIMIT: &str = "usage_limit";

/// Error code of an attempt that failed because its LLM provider kept failing (429, 5xx,
/// connection errors, stalls) after the executor's own retries. Retryable; feeds the breaker.
pub const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";
/// Error code of a request the provider refused for good (4xx other than 429): not retried.
pub const PROVIDER_ERROR: &str = "provider_error";
/// Error code of an agent process or stream that went silent for longer than its stall timeout.
pub const STALLED: &str = "stalled";

pub type RunResult = Result<Success, Failure>;

/// Sends an attempt's events to the worker, which writes them to the store in batches.
/// Bounded: a fast executor waits for the store instead of growing memory.
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::Sender<EventDraft>,
    /// What earlier runs of this attempt spent: added to every usage event.
    spent: Usage,
}

impl Emitter {
    pub fn new(tx: mpsc::Sender<EventDraft>) -> Self {
        Emitter { tx, spent: Usage::default() }
    }

    /// This emitter for a further run of the same attempt, after runs that spent `spent`: its
    /// usage events (cumulative per run) report the attempt's total, so budgets still hold.
    pub fn after(&self, spent: Usage) -> Emitter {
        let mut total = self.spent;
        total.add(&spent);
        Emitter { tx: self.tx.clone(), spent: total }
    }

    /// Returns false when nobody listens any more (the attempt lost its lease): stop working.
    pub async fn emit(&self, kind: EventKind, data: Value) -> bool {
        let data = if kind == EventKind::Usage && !self.spent.is_zero() {
            match serde_json::from_value::<Usage>(data.clone()) {
                Ok(mut usage) => {
                    usage.add(&self.spent);
                    serde_json::to_value(usage).expect("usage serializes")
                }
                Err(_) => data,
            }
        } else {
            data
        };
        self.tx.send(EventDraft::new(kind, data)).await.is_ok()
    }

    pub async fn output(&self, data: impl Into<Value>) -> bool {
        self.emit(EventKind::Output, data.into()).await
    }

    /// Reports the attempt's usage so far (cumulative, not a delta): the worker stops the
    /// attempt when it crosses the task's budget.
    pub async fn usage(&self, usage: &Usage) -> bool {
        self.emit(EventKind::Usage, serde_json::to_value(usage).expect("usage serializes")).await
    }
}

/// A finished earlier turn of the task's session, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub input: Value,
    pub result: Value,
}

/// The session a task is a turn of, with its finished turns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionContext {
    pub id: String,
    pub turns: Vec<Turn>,
}

impl SessionContext {
    /// The Claude Code session to resume: the `session_id` of the latest turn that has one.
    pub fn claude_session(&self) -> Option<&str> {
        self.turns.iter().rev().find_map(|t| t.result.get("session_id").and_then(Value::as_str))
    }
}

/// What a task that waited resumes with: the answers given to its previous attempt's requests
/// (when it waited for a person), whether it waited out its provider's usage limit, and
/// (Claude Code) the CLI session that attempt ran, to `--resume`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resume {
    pub answers: Vec<smith_core::Approval>,
    pub claude_session: Option<String>,
    /// The previous attempt stopped at the provider account's usage limit, now reset.
    pub limited: bool,
}

impl Resume {
    /// Why the run continues (and what people decided), told to the agent as it continues.
    pub fn note(&self) -> String {
        use smith_core::approval::Decision;
        if self.answers.is_empty() {
            return "[MisterSmith] Your run stopped at the provider's usage limit, which has now reset. \
                    Continue the task from where you stopped."
                .to_string();
        }
        let mut out =
            String::from("[MisterSmith] Your run paused for a person and now continues. What they decided:\n");
        for a in &self.answers {
            let Some(answer) = &a.answer else { continue };
            let what = match (&a.tool, &a.text) {
                (Some(t), _) => format!("your call of {} with {}", t.name, t.input),
                (None, Some(text)) => format!("your request {text:?}"),
                (None, None) => "your request".to_string(),
            };
            let by = &answer.by;
            let line = match (a.kind, answer.decision) {
                (smith_core::RequestKind::Input, Decision::Allow) => {
                    format!("- {by} answered {what}: {}", answer.answer.as_deref().unwrap_or(""))
                }
                (smith_core::RequestKind::Input, Decision::Deny) => format!("- {by} declined to answer {what}"),
                (_, Decision::Allow) => {
                    let edited =
                        answer.input.as_ref().map(|i| format!(" (with these arguments: {i})")).unwrap_or_default();
                    format!("- {by} ALLOWED {what}{edited}: make that call again now and it will be permitted")
                }
                (_, Decision::Deny) => format!("- {by} DENIED {what}: do not make it; carry on without it"),
            };
            out.push_str(&line);
            if let Some(m) = &answer.message {
                out.push_str(&format!(" (their note: {m})"));
            }
            out.push('\n');
        }
        out.push_str("Continue the task from where you stopped.");
        out
    }
}

/// The platform's MCP endpoint as this task reaches it: its URL and the headers that
/// identify the calling task (and authenticate it when the gateway requires a token).
#[derive(Debug, Clone, PartialEq)]
pub struct McpAccess {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// The header that names the calling task on the platform's MCP endpoint.
pub const TASK_HEADER: &str = "x-smith-task";

/// Everything an executor gets for one attempt.
#[derive(Clone)]
pub struct RunContext {
    pub task: Task,
    pub def: Arc<AgentDef>,
    pub events: Emitter,
    pub cancel: CancellationToken,
    /// Set when the task is a turn of a session.
    pub session: Option<SessionContext>,
    /// Set when the agent collaborates and a gateway is known.
    pub mcp: Option<McpAccess>,
    /// Where the agent works when its definition names no `cwd` (per session or per task).
    pub workdir: Option<std::path::PathBuf>,
    /// The attempt's own empty directory for files to keep (`$SMITH_ARTIFACTS`): stored by the
    /// worker when the attempt ends. Set for executors that run a process.
    pub artifacts: Option<std::path::PathBuf>,
    /// Set when the previous attempt parked for a person and was answered.
    pub resume: Option<Resume>,
    /// The fleet's rate limit of the agent's provider account, when it has one: the
    /// `anthropic` and `openai` executors wait on it before every request.
    pub limiter: Option<Arc<dyn limit::RateLimiter>>,
    /// The W3C trace context the agent's own spans join (`TRACEPARENT` in its environment):
    /// its executor's span, or the task's context when the worker traces nothing.
    pub traceparent: Option<String>,
}

impl RunContext {
    /// A context with no session, no platform tools, no work dir and no artifact dir.
    pub fn new(task: Task, def: Arc<AgentDef>, events: Emitter, cancel: CancellationToken) -> Self {
        RunContext {
            task,
            def,
            events,
            cancel,
            session: None,
            mcp: None,
            workdir: None,
            artifacts: None,
            resume: None,
            limiter: None,
            traceparent: None,
        }
    }

    /// The JSON Schema the attempt's output must match: the task's, else its agent's.
    pub fn output_schema(&self) -> Option<&Value> {
        self.task.output_schema(&self.def)
    }

    /// The schema to ask the provider to follow: only an object schema, which is what
    /// providers' structured output takes (any other is still validated by the platform).
    pub fn native_output_schema(&self) -> Option<&Value> {
        self.output_schema().filter(|s| s.get("type").and_then(Value::as_str) == Some("object"))
    }
}

#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(&self, ctx: RunContext) -> RunResult;
}

/// The executor for an agent definition, its output checked against the output schema in
/// effect ([`structured`]).
pub fn executor_for(def: &AgentDef) -> Arc<dyn Executor> {
    structured::wrap(bare_executor(def), def)
}

fn bare_executor(def: &AgentDef) -> Arc<dyn Executor> {
    match def.executor {
        ExecutorKind::Echo => Arc::new(builtin::Echo),
        ExecutorKind::Sleep => Arc::new(builtin::Sleep),
        ExecutorKind::Fail => Arc::new(builtin::Fail),
        ExecutorKind::Stream => Arc::new(builtin::Stream),
        ExecutorKind::Process => Arc::new(process::Process),
        ExecutorKind::ClaudeCode => Arc::new(claude::ClaudeCode),
        ExecutorKind::Anthropic => Arc::new(llm::Anthropic::new()),
        ExecutorKind::Openai => Arc::new(llm::OpenAi::new()),
    }
}

/// The input as text: a JSON string as-is, anything else as JSON.
pub fn input_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

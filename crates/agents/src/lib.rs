//! Executors: what runs an agent's task — the built-in agents and any command (`process`).
//!
//! An executor streams events through its [`Emitter`] and returns the attempt's result. It
//! must stop promptly when its cancel token fires (the worker decides whether that was a
//! cancel or a timeout) and must leave nothing running behind it.

mod builtin;
pub mod process;

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
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Failure { error: TaskError::new(code, message), retryable, usage: Usage::default() }
    }
}

pub type RunResult = Result<Success, Failure>;

/// Sends an attempt's events to the worker, which writes them to the store in batches.
/// Bounded: a fast executor waits for the store instead of growing memory.
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::Sender<EventDraft>,
}

impl Emitter {
    pub fn new(tx: mpsc::Sender<EventDraft>) -> Self {
        Emitter { tx }
    }

    /// Returns false when nobody listens any more (the attempt lost its lease): stop working.
    pub async fn emit(&self, kind: EventKind, data: Value) -> bool {
        self.tx.send(EventDraft::new(kind, data)).await.is_ok()
    }

    pub async fn output(&self, data: impl Into<Value>) -> bool {
        self.emit(EventKind::Output, data.into()).await
    }
}

/// Everything an executor gets for one attempt.
pub struct RunContext {
    pub task: Task,
    pub def: Arc<AgentDef>,
    pub events: Emitter,
    pub cancel: CancellationToken,
}

#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(&self, ctx: RunContext) -> RunResult;
}

/// The executor for an agent definition.
pub fn executor_for(def: &AgentDef) -> Arc<dyn Executor> {
    match def.executor {
        ExecutorKind::Echo => Arc::new(builtin::Echo),
        ExecutorKind::Sleep => Arc::new(builtin::Sleep),
        ExecutorKind::Fail => Arc::new(builtin::Fail),
        ExecutorKind::Stream => Arc::new(builtin::Stream),
        ExecutorKind::Process => Arc::new(process::Process),
    }
}

/// The input as text: a JSON string as-is, anything else as JSON.
pub fn input_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

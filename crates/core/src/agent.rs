//! Agent definitions: a named kind of agent with its executor, limits and retry policy.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which executor runs an agent's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Result = input.
    Echo,
    /// Input = milliseconds to sleep.
    Sleep,
    /// Fails with the input as the message.
    Fail,
    /// Input `{"events":N,"bytes":M,"interval_ms":K}` emits N output events of M bytes.
    Stream,
    /// Any command; stdout lines become output events; the exit code decides the outcome.
    Process,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Echo => "echo",
            ExecutorKind::Sleep => "sleep",
            ExecutorKind::Fail => "fail",
            ExecutorKind::Stream => "stream",
            ExecutorKind::Process => "process",
        }
    }

    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "echo" => Some(ExecutorKind::Echo),
            "sleep" => Some(ExecutorKind::Sleep),
            "fail" => Some(ExecutorKind::Fail),
            "stream" => Some(ExecutorKind::Stream),
            _ => None,
        }
    }
}

/// How a process agent receives its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    /// Written to stdin, which is then closed.
    #[default]
    Stdin,
    /// Appended as the last argument.
    Arg,
    /// Not passed at all (use `{input}` in `args` instead).
    None,
}

/// A fully resolved agent definition, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDef {
    pub name: String,
    pub executor: ExecutorKind,
    /// Agents of this kind running at once, per worker.
    pub concurrency: u32,
    #[serde(with = "crate::time::duration::option", default)]
    pub timeout: Option<Duration>,
    pub max_attempts: u32,
    #[serde(with = "crate::time::duration")]
    pub retry_backoff: Duration,
    #[serde(with = "crate::time::duration")]
    pub retry_backoff_max: Duration,
    /// Time between SIGTERM and SIGKILL of a process agent's group.
    #[serde(with = "crate::time::duration")]
    pub kill_grace: Duration,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub input: InputMode,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Largest result kept from a process agent's stdout; the rest is still streamed as events.
    pub max_result_bytes: usize,
}

pub const DEFAULT_CONCURRENCY: u32 = 16;

impl AgentDef {
    /// The built-in agents, always present.
    pub fn builtins() -> Vec<AgentDef> {
        ["echo", "sleep", "fail", "stream"]
            .into_iter()
            .map(|name| AgentDef::new(name, ExecutorKind::builtin(name).expect("builtin")))
            .collect()
    }

    pub fn new(name: impl Into<String>, executor: ExecutorKind) -> Self {
        let concurrency = match executor {
            ExecutorKind::Process => DEFAULT_CONCURRENCY,
            ExecutorKind::Sleep => 10_000,
            _ => 1_000,
        };
        AgentDef {
            name: name.into(),
            executor,
            concurrency,
            timeout: None,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(250),
            retry_backoff_max: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            command: None,
            args: Vec::new(),
            input: InputMode::Stdin,
            cwd: None,
            env: BTreeMap::new(),
            max_result_bytes: 1 << 20,
        }
    }

    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let what = |m: String| Err(Error::unprocessable(format!("agent {:?}: {m}", self.name)));
        if self.concurrency == 0 {
            return what("concurrency must be at least 1".into());
        }
        if self.max_attempts == 0 || self.max_attempts > crate::task::MAX_ATTEMPTS_LIMIT {
            return what(format!("max_attempts must be 1..={}", crate::task::MAX_ATTEMPTS_LIMIT));
        }
        if self.timeout == Some(Duration::ZERO) {
            return what("timeout must be positive".into());
        }
        match (self.executor, &self.command) {
            (ExecutorKind::Process, None) => return what("executor \"process\" needs `command`".into()),
            (ExecutorKind::Process, Some(c)) if c.trim().is_empty() => {
                return what("`command` must not be empty".into())
            }
            (ExecutorKind::Process, _) => {}
            (_, Some(_)) => return what("`command` is only for executor \"process\"".into()),
            (_, None) => {}
        }
        Ok(())
    }
}

/// Agent names: 1–64 of `[A-Za-z0-9_.-]`, starting with a letter or digit (they appear in bus subjects).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::unprocessable(format!(
            "agent name {name:?} is invalid: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )))
    }
}

/// An agent definition with its live counts, as `GET /v1/agents` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    #[serde(flatten)]
    pub def: AgentDef,
    pub queued: u64,
    pub running: u64,
}

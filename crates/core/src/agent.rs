//! Agent definitions: a named kind of agent with its executor, limits and retry policy.

use crate::error::{Error, Result};
pub use crate::redact::{redact_url, REDACTED};
use crate::workspace::WorkspaceDef;
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
    /// The Claude Code CLI (`claude -p --output-format stream-json`), its stream parsed into typed events.
    #[serde(rename = "claude-code")]
    ClaudeCode,
    /// The Anthropic Messages API, streamed over HTTP.
    Anthropic,
    /// An OpenAI-compatible Chat Completions API, streamed over HTTP.
    Openai,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Echo => "echo",
            ExecutorKind::Sleep => "sleep",
            ExecutorKind::Fail => "fail",
            ExecutorKind::Stream => "stream",
            ExecutorKind::Process => "process",
            ExecutorKind::ClaudeCode => "claude-code",
            ExecutorKind::Anthropic => "anthropic",
            ExecutorKind::Openai => "openai",
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

    /// Executors that talk to an LLM provider: they report usage and honour budgets.
    pub fn is_llm(self) -> bool {
        matches!(self, ExecutorKind::ClaudeCode | ExecutorKind::Anthropic | ExecutorKind::Openai)
    }

    /// Executors that run a command (`command` applies).
    pub fn runs_command(self) -> bool {
        matches!(self, ExecutorKind::Process | ExecutorKind::ClaudeCode)
    }
}

/// Tokens and money an attempt (or a task, an agent, a tenant) has spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl Usage {
    pub fn is_zero(&self) -> bool {
        self.input_tokens == 0 && self.output_tokens == 0 && self.cost_usd == 0.0
    }

    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_usd += other.cost_usd;
    }
}

/// The most attempts a task or an agent definition may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Limits on what one task may spend; the tighter of the task's and its agent's applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Input plus output tokens.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.max_tokens.is_none() && self.max_cost_usd.is_none()
    }

    /// The tighter of two budgets, limit by limit.
    pub fn tighter(self, other: Budget) -> Budget {
        fn min<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (a, b) => a.or(b),
            }
        }
        Budget {
            max_tokens: min(self.max_tokens, other.max_tokens),
            max_cost_usd: min(self.max_cost_usd, other.max_cost_usd),
        }
    }

    /// Which limit `usage` crosses, as a message; `None` while within budget.
    pub fn exceeded_by(&self, usage: &Usage) -> Option<String> {
        // saturating: a provider may report absurd counts; they must not wrap or panic
        let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
        if let Some(max) = self.max_tokens {
            if tokens > max {
                return Some(format!("used {tokens} tokens, over the budget of {max}"));
            }
        }
        if let Some(max) = self.max_cost_usd {
            if usage.cost_usd > max {
                return Some(format!("spent ${:.6}, over the budget of ${max}", usage.cost_usd));
            }
        }
        None
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        if self.max_tokens == Some(0) {
            return Err(Error::unprocessable(format!("{what}.max_tokens must be at least 1")));
        }
        if let Some(c) = self.max_cost_usd {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::unprocessable(format!("{what}.max_cost_usd must be a positive number")));
            }
        }
        Ok(())
    }
}

/// Prices in USD per million tokens, for executors whose provider does not report cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Pricing {
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok) / 1e6
    }
}

/// A secret from the config; never serialized (the API shows `"<redacted>"`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The definition as it may be shown to anyone: `env` values, the values of MCP servers'
/// `headers` and `env`, and a password in `base_url` or an MCP server's `url` replaced by
/// [`REDACTED`] (names kept); `api_key` already serializes redacted. Workers run the real one.
pub fn redacted(def: &AgentDef) -> AgentDef {
    let mut d = def.clone();
    for v in d.env.values_mut() {
        *v = REDACTED.to_string();
    }
    d.api_key = d.api_key.map(|_| Secret(REDACTED.to_string()));
    d.base_url = d.base_url.as_deref().map(redact_url);
    d.mcp_config = d.mcp_config.as_deref().map(redact_mcp_config);
    if let Some(ws) = &mut d.workspace {
        ws.repo = redact_url(&ws.repo);
    }
    d
}

/// An inline `mcp_config` (JSON) with every `headers` and `env` value and every URL password
/// redacted, at any depth; a path (not JSON) is kept. Unparseable inline text is withheld whole.
fn redact_mcp_config(text: &str) -> String {
    if !text.trim_start().starts_with('{') {
        return text.to_string();
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else { return REDACTED.to_string() };
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, child) in o.iter_mut() {
                    match (k.as_str(), child) {
                        ("headers" | "env", serde_json::Value::Object(m)) => {
                            for val in m.values_mut() {
                                *val = serde_json::Value::String(REDACTED.to_string());
                            }
                        }
                        ("url", serde_json::Value::String(u)) => *u = redact_url(u),
                        (_, other) => walk(other),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v.to_string()
}

/// Claude Code's permission modes (`--permission-mode`).
pub const PERMISSION_MODES: [&str; 5] = ["default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"];

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
    /// LLM agents: the model name passed to the CLI or API.
    #[serde(default)]
    pub model: Option<String>,
    /// LLM agents: a system prompt (appended to Claude Code's own with `--append-system-prompt`).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Claude Code: `--allowedTools` / `--disallowedTools`.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
    /// Claude Code: `--permission-mode`.
    #[serde(default)]
    pub permission_mode: Option<String>,
    /// Claude Code: `--max-turns`.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Claude Code: extra MCP servers, a JSON object `{"mcpServers": {...}}` or a path to one.
    #[serde(default)]
    pub mcp_config: Option<String>,
    /// LLM agents get the platform's MCP tools (discoveries, messages, sub-tasks) when a gateway is known.
    #[serde(default = "yes")]
    pub collaborate: bool,
    /// A process that writes nothing for this long is hung: its group is killed (Claude Code).
    #[serde(with = "crate::time::duration::option", default)]
    pub stall_timeout: Option<Duration>,
    /// HTTP LLM agents: the API's base URL (default: the provider's, or `ANTHROPIC_BASE_URL` / `OPENAI_BASE_URL`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// HTTP LLM agents: the API key (default: `ANTHROPIC_API_KEY` / `OPENAI_API_KEY`, or the variable `api_key_env` names).
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// HTTP LLM agents: the most tokens one response may have (`max_tokens` of the API).
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Spending limits per task.
    #[serde(default)]
    pub budget: Budget,
    /// Prices for cost accounting when the provider does not report cost.
    #[serde(default)]
    pub pricing: Option<Pricing>,
    /// Provider failures in a row that open the agent's circuit breaker (0: never).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker keeps tasks queued before one trial attempt.
    #[serde(with = "crate::time::duration", default = "default_breaker_cooldown")]
    pub breaker_cooldown: Duration,
    /// A git checkout of its own for each task (`process` and `claude-code`).
    #[serde(default)]
    pub workspace: Option<WorkspaceDef>,
    /// The JSON Schema every task's output must match (a task may give its own instead).
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
    /// Tool calls that wait for a person (`Bash(git push:*)`): Claude Code's permission
    /// prompts and the LLM executors' tool calls that match one are approval requests.
    #[serde(default)]
    pub approve: Vec<String>,
    /// How long a request of this agent waits for a person before `on_approval_timeout`.
    #[serde(with = "crate::time::duration", default = "default_approval_timeout")]
    pub approval_timeout: Duration,
    /// What an unanswered request becomes when it times out.
    #[serde(default)]
    pub on_approval_timeout: crate::approval::Decision,
    /// The provider account this agent's calls count against (`[providers.NAME]`): its rate
    /// limits and usage-limit parking are shared by every agent that names it.
    #[serde(default)]
    pub account: Option<String>,
    /// Where a task's concurrency key comes from when it gives none: `tenant`, `session_id`,
    /// `metadata.<field>` or `input.<field>` (`core::concurrency`). Needs `max_per_key`.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// The most tasks of one concurrency key running at once over every worker; every task of
    /// the agent then has a key.
    #[serde(default)]
    pub max_per_key: Option<u32>,
    /// The rate limit of the agent's own account (an agent with no `account`): every worker's
    /// calls for it together stay within it (docs/rate-limits.md).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// A provider's rate limit, shared by the whole fleet: requests and tokens per minute, each
/// optional (docs/rate-limits.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

impl RateLimit {
    /// Refuses a limit of 0 (nothing could ever run) and an empty limit, naming the key under `what`.
    pub fn validate(&self, what: &str) -> Result<()> {
        for (key, v) in
            [("requests_per_minute", self.requests_per_minute), ("tokens_per_minute", self.tokens_per_minute)]
        {
            if v == Some(0) {
                return Err(Error::unprocessable(format!("{what}.{key} must be at least 1")));
            }
            if v.is_some_and(|v| v > MAX_PER_MINUTE) {
                return Err(Error::unprocessable(format!("{what}.{key} must be at most {MAX_PER_MINUTE}")));
            }
        }
        if self.requests_per_minute.is_none() && self.tokens_per_minute.is_none() {
            return Err(Error::unprocessable(format!("{what} needs requests_per_minute or tokens_per_minute")));
        }
        Ok(())
    }
}

/// The largest per-minute figure a rate limit takes (a billion: far above any provider's).
pub const MAX_PER_MINUTE: u64 = 1_000_000_000;

fn yes() -> bool {
    true
}
fn default_max_output_tokens() -> u32 {
    4096
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}
/// A day: an unanswered request is denied after it unless the agent says otherwise.
pub fn default_approval_timeout() -> Duration {
    Duration::from_secs(24 * 3600)
}

pub const DEFAULT_CONCURRENCY: u32 = 16;

impl AgentDef {
    /// The provider account: `account`, or the agent's own name.
    pub fn account(&self) -> &str {
        self.account.as_deref().unwrap_or(&self.name)
    }

    /// The built-in agents, always present.
    pub fn builtins() -> Vec<AgentDef> {
        ["echo", "sleep", "fail", "stream"]
            .into_iter()
            .map(|name| AgentDef::new(name, ExecutorKind::builtin(name).expect("builtin")))
            .collect()
    }

    pub fn new(name: impl Into<String>, executor: ExecutorKind) -> Self {
        let concurrency = match executor {
            ExecutorKind::Process | ExecutorKind::ClaudeCode => DEFAULT_CONCURRENCY,
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
            model: None,
            system_prompt: None,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            permission_mode: None,
            max_turns: None,
            mcp_config: None,
            collaborate: true,
            stall_timeout: if executor.is_llm() { Some(Duration::from_secs(120)) } else { None },
            base_url: None,
            api_key: None,
            api_key_env: None,
            max_output_tokens: default_max_output_tokens(),
            budget: Budget::default(),
            pricing: None,
            breaker_failures: default_breaker_failures(),
            breaker_cooldown: default_breaker_cooldown(),
            workspace: None,
            output_schema: None,
            approve: Vec::new(),
            approval_timeout: default_approval_timeout(),
            on_approval_timeout: crate::approval::Decision::Deny,
            account: None,
            concurrency_key: None,
            max_per_key: None,
            rate_limit: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let what = |m: String| Err(Error::unprocessable(format!("agent {:?}: {m}", self.name)));
        if self.concurrency == 0 {
            return what("concurrency must be at least 1".into());
        }
        crate::concurrency::validate_def(self)?;
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return what(format!("max_attempts must be 1..={}", MAX_ATTEMPTS_LIMIT));
        }
        if self.timeout == Some(Duration::ZERO) {
            return what("timeout must be positive".into());
        }
        match (self.executor, &self.command) {
            (ExecutorKind::Process, None) => return what("executor \"process\" needs `command`".into()),
            (k, Some(c)) if k.runs_command() && c.trim().is_empty() => {
                return what("`command` must not be empty".into())
            }
            (k, _) if k.runs_command() => {}
            (_, Some(_)) => return what("`command` is only for executors \"process\" and \"claude-code\"".into()),
            (_, None) => {}
        }
        if let Some(m) = &self.permission_mode {
            if !PERMISSION_MODES.contains(&m.as_str()) {
                return what(format!("permission_mode {m:?} is not one of {}", PERMISSION_MODES.join(", ")));
            }
        }
        if self.max_turns == Some(0) {
            return what("max_turns must be at least 1".into());
        }
        if self.stall_timeout == Some(Duration::ZERO) {
            return what("stall_timeout must be positive".into());
        }
        if self.max_output_tokens == 0 {
            return what("max_output_tokens must be at least 1".into());
        }
        if let Some(url) = &self.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return what(format!("base_url {url:?} must start with http:// or https://"));
            }
        }
        if let Some(p) = &self.pricing {
            if !(p.input_per_mtok.is_finite()
                && p.input_per_mtok >= 0.0
                && p.output_per_mtok.is_finite()
                && p.output_per_mtok >= 0.0)
            {
                return what("pricing must be non-negative numbers".into());
            }
        }
        self.budget
            .validate("budget")
            .map_err(|e| Error::unprocessable(format!("agent {:?}: {}", self.name, e.message)))?;
        let llm_only = [
            ("model", self.model.is_some()),
            ("system_prompt", self.system_prompt.is_some()),
            ("base_url", self.base_url.is_some()),
            ("api_key", self.api_key.is_some() || self.api_key_env.is_some()),
            ("rate_limit", self.rate_limit.is_some()),
        ];
        if !self.executor.is_llm() {
            if let Some((field, _)) = llm_only.iter().find(|(_, set)| *set) {
                return what(format!("`{field}` is only for LLM executors (claude-code, anthropic, openai)"));
            }
        }
        if let Some(ws) = &self.workspace {
            if !self.executor.runs_command() {
                return what("`workspace` is only for executors \"process\" and \"claude-code\"".into());
            }
            if self.cwd.is_some() {
                return what("`workspace` and `cwd` exclude each other: the workspace is the agent's cwd".into());
            }
            ws.validate().map_err(|e| Error::unprocessable(format!("agent {:?}: {}", self.name, e.message)))?;
        }
        if let Some(schema) = &self.output_schema {
            crate::output::Schema::compile(schema, "output_schema")
                .map_err(|e| Error::unprocessable(format!("agent {:?}: {}", self.name, e.message)))?;
        }
        if !self.approve.is_empty() && !self.executor.is_llm() {
            return what("`approve` is only for LLM executors (claude-code, anthropic, openai)".into());
        }
        crate::approval::parse_patterns(&self.approve)
            .map_err(|e| Error::unprocessable(format!("agent {:?}: {}", self.name, e.message)))?;
        if self.approval_timeout.is_zero() {
            return what("approval_timeout must be positive".into());
        }
        if let Some(account) = &self.account {
            validate_name(account).map_err(|_| {
                Error::unprocessable(format!("agent {:?}: account {account:?} is not a valid name", self.name))
            })?;
        }
        if let Some(limit) = &self.rate_limit {
            if self.account.is_some() {
                return what(
                    "`rate_limit` and `account` exclude each other: set the limit in [providers.ACCOUNT]".into(),
                );
            }
            limit
                .validate("rate_limit")
                .map_err(|e| Error::unprocessable(format!("agent {:?}: {}", self.name, e.message)))?;
        }
        let claude_only = [
            ("allowed_tools", !self.allowed_tools.is_empty()),
            ("disallowed_tools", !self.disallowed_tools.is_empty()),
            ("permission_mode", self.permission_mode.is_some()),
            ("max_turns", self.max_turns.is_some()),
            ("mcp_config", self.mcp_config.is_some()),
        ];
        if self.executor != ExecutorKind::ClaudeCode {
            if let Some((field, _)) = claude_only.iter().find(|(_, set)| *set) {
                return what(format!("`{field}` is only for executor \"claude-code\""));
            }
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
    /// Tokens and cost of this agent's finished attempts.
    #[serde(default)]
    pub usage: Usage,
    /// Open while any worker's breaker for this agent is open (tasks wait queued).
    #[serde(default = "closed")]
    pub breaker: BreakerState,
}

fn closed() -> BreakerState {
    BreakerState::Closed
}

/// A circuit breaker's state, as workers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_keeps_names_and_hides_values() {
        let mut d = AgentDef::new("a", ExecutorKind::ClaudeCode);
        d.env.insert("ANTHROPIC_API_KEY".into(), "sk-ant-secret".into());
        d.api_key = Some(Secret("sk-other".into()));
        d.base_url = Some("https://user:hunter2@api.example/v1".into());
        d.mcp_config = Some(
            r#"{"mcpServers":{"x":{"type":"http","url":"https://u:pw@mcp.example/","headers":{"Authorization":"Bearer tok"},"env":{"K":"v"}}}}"#
                .into(),
        );
        let r = redacted(&d);
        let text = serde_json::to_string(&r).unwrap();
        for secret in ["sk-ant-secret", "sk-other", "hunter2", "Bearer tok", "pw@", "\"v\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(r.env["ANTHROPIC_API_KEY"], REDACTED);
        assert!(text.contains("Authorization") && text.contains("https://user:<redacted>@api.example/v1"), "{text}");
        assert_eq!(d.env["ANTHROPIC_API_KEY"], "sk-ant-secret", "the original is untouched");
        let path = AgentDef { mcp_config: Some("/etc/mcp.json".into()), ..d.clone() };
        assert_eq!(redacted(&path).mcp_config.as_deref(), Some("/etc/mcp.json"));
        let broken = AgentDef { mcp_config: Some("{not json".into()), ..d };
        assert_eq!(redacted(&broken).mcp_config.as_deref(), Some(REDACTED));
    }
}

//! The `claude-code` executor: the Claude Code CLI (`claude -p --output-format stream-json
//! --verbose`) as a supervised agent.
//!
//! The CLI runs in its own process group through [`run_group`], so a cancel, a timeout or a
//! stall (no stdout for the agent's `stall_timeout`: `claude -p` can hang without exiting)
//! kills it and everything it started. Each stream-json line becomes a typed event; the
//! `result` line decides the outcome. The platform's MCP server (with the attempt's capability)
//! is added to its MCP config, passed in a private file, when the worker knows a gateway; a
//! session's later turns resume with `--resume`.

use crate::process::{agent_env, run_group, LineSink, Stopped};
use crate::{input_text, Executor, Failure, RunContext, RunResult, Success, PROVIDER_ERROR, PROVIDER_UNAVAILABLE};
use async_trait::async_trait;
use serde_json::{json, Map, Value};
use smith_core::{EventKind, Micros, Pricing, Usage};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::process::Command;

/// The MCP server name the platform's tools appear under (`mcp__smith__share_discovery`).
pub const MCP_SERVER: &str = "smith";
/// Longest excerpt of a bad line quoted in an error.
const EXCERPT: usize = 200;

pub struct ClaudeCode;

/// Error code of a `--resume` whose CLI session this machine does not have (the earlier turn
/// ran on another worker, or its files are gone).
const SESSION_NOT_FOUND: &str = "session_not_found";

/// The command line for one attempt: flags from the agent definition, then the defaults.
/// `resume`: continue the session's CLI session (`--resume`) when it has one. The MCP config
/// (which holds the attempt's capability) goes in a private file, never on the command line:
/// keep the returned [`McpFile`] until the run ends, dropping it removes the file.
pub fn command(ctx: &RunContext, resume: bool) -> Result<(Command, Option<McpFile>), Failure> {
    let def = &ctx.def;
    let program = def.command.clone().unwrap_or_else(|| "claude".to_string());
    let mut cmd = Command::new(&program);
    cmd.args(["-p", "--output-format", "stream-json", "--verbose"]);
    if let Some(m) = &def.model {
        cmd.args(["--model", m]);
    }
    if let Some(p) = &def.system_prompt {
        cmd.args(["--append-system-prompt", p]);
    }
    let mut allowed = def.allowed_tools.clone();
    let mcp = mcp_config(ctx)?;
    if ctx.mcp.is_some() && !allowed.iter().any(|t| t == MCP_SERVER || t.starts_with("mcp__smith")) {
        // the platform's own tools need no permission prompt (there is nobody to answer one)
        allowed.push(format!("mcp__{MCP_SERVER}"));
    }
    if !allowed.is_empty() {
        cmd.arg("--allowedTools").arg(allowed.join(","));
    }
    if !def.disallowed_tools.is_empty() {
        cmd.arg("--disallowedTools").arg(def.disallowed_tools.join(","));
    }
    if let Some(m) = &def.permission_mode {
        cmd.args(["--permission-mode", m]);
    }
    if let Some(n) = def.max_turns {
        cmd.arg("--max-turns").arg(n.to_string());
    }
    if !def.approve.is_empty() && ctx.mcp.is_some() {
        // calls the `approve` patterns name always ask (whatever the mode or allowed tools say),
        // and the platform answers every prompt: a person for those, the mode's denial otherwise
        cmd.arg("--permission-prompt-tool").arg(format!("mcp__{MCP_SERVER}__permission_prompt"));
        cmd.arg("--settings").arg(json!({"permissions": {"ask": def.approve}}).to_string());
    }
    if let Some(schema) = ctx.native_output_schema() {
        // the CLI makes the model answer through a tool of this schema (`structured_output`)
        cmd.arg("--json-schema").arg(schema.to_string());
    }
    let file = match mcp {
        Some(cfg) => {
            let file = McpFile::write(ctx, &cfg)
                .map_err(|e| Failure::new("spawn_failed", format!("cannot write the MCP config file: {e}"), true))?;
            cmd.arg("--mcp-config").arg(&file.path);
            Some(file)
        }
        None => None,
    };
    let parked = ctx.resume.as_ref().and_then(|r| r.claude_session.as_deref());
    if let Some(id) = parked.or_else(|| ctx.session.as_ref().and_then(|s| s.claude_session())).filter(|_| resume) {
        cmd.args(["--resume", id]);
    }
    cmd.args(&def.args);
    agent_env(&mut cmd, ctx);
    Ok((cmd, file))
}

/// An attempt's MCP config in a file only its user can read (`0600`, in a `0700` directory of
/// its own under the server's temporary directory); removed with its directory when dropped.
#[derive(Debug)]
pub struct McpFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl McpFile {
    fn write(ctx: &RunContext, cfg: &Value) -> std::io::Result<McpFile> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "smith-mcp-{}-{}-{}-{}",
            ctx.task.id,
            ctx.task.attempt,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        // fails if it exists: nobody else can have prepared it for us
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = McpFile { path: dir.join("mcp.json"), dir };
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file.path)?;
        f.write_all(cfg.to_string().as_bytes())?;
        Ok(file)
    }
}

impl Drop for McpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent's own MCP servers (inline JSON or a file) plus the platform's, as one config.
fn mcp_config(ctx: &RunContext) -> Result<Option<Value>, Failure> {
    let mut servers = Map::new();
    if let Some(own) = &ctx.def.mcp_config {
        let text = if own.trim_start().starts_with('{') {
            own.clone()
        } else {
            std::fs::read_to_string(own)
                .map_err(|e| Failure::new("misconfigured", format!("cannot read mcp_config {own:?}: {e}"), false))?
        };
        let parsed: Value = serde_json::from_str(&text)
            .map_err(|e| Failure::new("misconfigured", format!("mcp_config is not JSON: {e}"), false))?;
        match parsed.get("mcpServers") {
            Some(Value::Object(m)) => servers.extend(m.clone()),
            _ => return Err(Failure::new("misconfigured", "mcp_config needs an object \"mcpServers\"", false)),
        }
    }
    if let Some(access) = &ctx.mcp {
        let headers: Map<String, Value> =
            access.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        servers.insert(MCP_SERVER.into(), json!({"type": "http", "url": access.url, "headers": headers}));
    }
    Ok((!servers.is_empty()).then(|| json!({ "mcpServers": servers })))
}

/// Prices by model family (USD per million tokens), for budgets checked while a run goes on:
/// the CLI reports its exact cost only in its final `result` line.
pub fn pricing_for(model: &str) -> Option<Pricing> {
    let m = model.to_ascii_lowercase();
    let (input, output) = if m.contains("opus") {
        (15.0, 75.0)
    } else if m.contains("sonnet") {
        (3.0, 15.0)
    } else if m.contains("haiku") {
        (1.0, 5.0)
    } else {
        return None;
    };
    Some(Pricing { input_per_mtok: input, output_per_mtok: output })
}

/// What the stream said, line by line.
pub struct StreamJson<'a> {
    ctx: &'a RunContext,
    line_no: usize,
    /// The first malformed line: the stream cannot be trusted after it.
    malformed: Option<(usize, String)>,
    last_line: String,
    session_id: Option<String>,
    model: Option<String>,
    /// Usage per assistant message id (a message's lines repeat its usage; the latest counts).
    messages: HashMap<String, Usage>,
    usage: Usage,
    texts: Vec<String>,
    result: Option<Value>,
    pricing: Option<Pricing>,
    /// Nobody listens any more (lease lost): stop reading.
    gone: bool,
    /// A `rate_limit_event` refused the run: when its limit resets.
    limited_until: Option<Micros>,
}

impl<'a> StreamJson<'a> {
    pub fn new(ctx: &'a RunContext) -> Self {
        let pricing = ctx.def.pricing.or_else(|| ctx.def.model.as_deref().and_then(pricing_for));
        StreamJson {
            ctx,
            line_no: 0,
            malformed: None,
            last_line: String::new(),
            session_id: None,
            model: None,
            messages: HashMap::new(),
            usage: Usage::default(),
            texts: Vec::new(),
            result: None,
            pricing,
            gone: false,
            limited_until: None,
        }
    }

    async fn emit(&mut self, kind: EventKind, data: Value) {
        if !self.ctx.events.emit(kind, data).await {
            self.gone = true;
        }
    }

    /// Handles one line of the stream.
    pub async fn handle(&mut self, raw: &[u8]) {
        self.line_no += 1;
        let text = String::from_utf8_lossy(raw);
        if text.trim().is_empty() {
            return;
        }
        self.last_line = excerpt(&text);
        let line: Value = match serde_json::from_str(&text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) => {
                if self.malformed.is_none() {
                    self.malformed = Some((self.line_no, excerpt(&text)));
                }
                self.emit(EventKind::Output, json!({"type": "raw", "line": text})).await;
                return;
            }
        };
        let kind = line.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => {
                if let Some(s) = line.get("session_id").and_then(Value::as_str) {
                    self.session_id = Some(s.to_string());
                }
                if let Some(m) = line.get("model").and_then(Value::as_str) {
                    self.model = Some(m.to_string());
                    if self.ctx.def.pricing.is_none() {
                        self.pricing = self.pricing.or_else(|| pricing_for(m));
                    }
                }
                let subtype = line.get("subtype").and_then(Value::as_str).unwrap_or("");
                let data = if subtype == "init" {
                    json!({
                        "type": "system", "subtype": "init", "session_id": line["session_id"],
                        "model": line["model"], "cwd": line["cwd"], "tools": line["tools"],
                        "mcp_servers": line["mcp_servers"], "permission_mode": line["permissionMode"],
                        "version": line["claude_code_version"],
                    })
                } else {
                    line.clone()
                };
                self.emit(EventKind::Output, data).await;
            }
            "assistant" => self.assistant(&line).await,
            "user" => {
                let content = line["message"]["content"].as_array().cloned().unwrap_or_default();
                for block in content {
                    if block["type"] == "tool_result" {
                        let data = json!({
                            "tool_use_id": block["tool_use_id"], "content": block["content"],
                            "is_error": block.get("is_error").cloned().unwrap_or(Value::Bool(false)),
                        });
                        self.emit(EventKind::ToolResult, data).await;
                    }
                }
            }
            "result" => self.result(line).await,
            "rate_limit_event" => {
                if let Some(until) = rejected_until(&line) {
                    self.limited_until = Some(until);
                }
                self.emit(EventKind::Output, json!({"type": "raw", "line": line})).await
            }
            // anything else (newer CLI line types) is kept as it came, never a crash
            _ => self.emit(EventKind::Output, json!({"type": "raw", "line": line})).await,
        }
    }

    async fn assistant(&mut self, line: &Value) {
        let message = &line["message"];
        for block in message["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("text") => {
                    let t = block["text"].as_str().unwrap_or("").to_string();
                    self.texts.push(t.clone());
                    self.emit(EventKind::Output, Value::String(t)).await;
                }
                Some("tool_use") => {
                    let data = json!({"id": block["id"], "name": block["name"], "input": block["input"]});
                    self.emit(EventKind::ToolUse, data).await;
                }
                Some("thinking") => {
                    self.emit(EventKind::Output, json!({"type": "thinking", "text": block["thinking"]})).await;
                }
                _ => self.emit(EventKind::Output, json!({"type": "raw", "block": block})).await,
            }
        }
        if let (Some(id), Some(u)) = (message["id"].as_str(), message.get("usage")) {
            let (input_tokens, output_tokens) = tokens(u);
            let seen = Usage { input_tokens, output_tokens, cost_usd: 0.0 };
            let prev = self.messages.insert(id.to_string(), seen);
            if prev != Some(seen) {
                self.update_usage().await;
            }
        }
    }

    async fn update_usage(&mut self) {
        let mut total = Usage::default();
        for u in self.messages.values() {
            // saturating, like `tokens`: the counts are the CLI's, however absurd
            total.input_tokens = total.input_tokens.saturating_add(u.input_tokens);
            total.output_tokens = total.output_tokens.saturating_add(u.output_tokens);
        }
        if let Some(p) = self.pricing {
            total.cost_usd = p.cost(total.input_tokens, total.output_tokens);
        }
        if total != self.usage {
            self.usage = total;
            if !self.ctx.events.usage(&total).await {
                self.gone = true;
            }
        }
    }

    async fn result(&mut self, line: Value) {
        let (input_tokens, output_tokens) = tokens(&line["usage"]);
        let mut total = Usage { input_tokens, output_tokens, cost_usd: line["total_cost_usd"].as_f64().unwrap_or(0.0) };
        // the result's own totals are authoritative, but never smaller than what streamed
        total.input_tokens = total.input_tokens.max(self.usage.input_tokens);
        total.output_tokens = total.output_tokens.max(self.usage.output_tokens);
        if total != self.usage {
            self.usage = total;
            if !self.ctx.events.usage(&total).await {
                self.gone = true;
            }
        }
        if let Some(s) = line.get("session_id").and_then(Value::as_str) {
            self.session_id = Some(s.to_string());
        }
        self.result = Some(line);
    }

    /// The attempt's outcome once the process is gone.
    pub fn outcome(self, how: &str, exited_ok: bool, stderr_tail: &str) -> RunResult {
        let usage = self.usage;
        let stderr = stderr_tail.trim();
        let with_stderr =
            |m: String| if stderr.is_empty() { m } else { format!("{m}; stderr: {}", excerpt_tail(stderr, 2000)) };
        if let Some((n, text)) = &self.malformed {
            return Err(Failure::new(
                "bad_stream",
                with_stderr(format!("claude wrote a malformed stream-json line (line {n}): {text}")),
                true,
            )
            .with_usage(usage));
        }
        let Some(result) = self.result else {
            let message = if self.line_no == 0 {
                format!("claude {how} without writing anything")
            } else {
                format!("claude {how} before its result line (stream cut short); last line: {}", self.last_line)
            };
            let code = if exited_ok || self.line_no > 0 { "truncated_stream" } else { "exit_status" };
            return Err(Failure::new(code, with_stderr(message), true).with_usage(usage));
        };
        let errors: Vec<&str> = result["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let text = result["result"]
            .as_str()
            .map(str::to_string)
            .or_else(|| (!errors.is_empty()).then(|| errors.join("; ")))
            .unwrap_or_else(|| self.texts.join(""));
        let is_error = result["is_error"].as_bool().unwrap_or(false) || !exited_ok;
        if !is_error {
            let mut out = json!({
                "text": text,
                "session_id": self.session_id,
                "model": self.model,
                "num_turns": result["num_turns"],
                "stop_reason": result["stop_reason"],
                "duration_ms": result["duration_ms"],
                "total_cost_usd": result["total_cost_usd"],
            });
            if let Some(structured) = result.get("structured_output").filter(|v| !v.is_null()) {
                out["structured_output"] = structured.clone();
            }
            return Ok(Success { result: out, usage });
        }
        if let Some(until) = usage_limit(&text, self.limited_until, Micros::now()) {
            return Err(Failure::usage_limit(until, text).with_usage(usage));
        }
        let subtype = result["subtype"].as_str().unwrap_or("");
        let status = result["api_error_status"].as_u64();
        let (code, retryable) = match (status, subtype) {
            (Some(429 | 408 | 500..=599), _) => (PROVIDER_UNAVAILABLE, true),
            (Some(_), _) => (PROVIDER_ERROR, false),
            (None, "error_max_turns") => ("max_turns", false),
            (None, "error_during_execution") if text.contains("No conversation found") => (SESSION_NOT_FOUND, true),
            (None, _) => ("agent_error", true),
        };
        let message = if text.is_empty() { format!("claude failed ({subtype}, {how})") } else { text };
        Err(Failure::new(code, with_stderr(message), retryable).with_usage(usage))
    }
}

#[async_trait]
impl LineSink for StreamJson<'_> {
    async fn line(&mut self, line: &[u8]) -> bool {
        self.handle(line).await;
        !self.gone
    }
}

/// How long a run stopped at a usage limit that said no reset time waits before it tries again.
const UNKNOWN_RESET_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// When the limit of a `rate_limit_event` that refused the run resets (`resetsAt`, seconds).
fn rejected_until(line: &Value) -> Option<Micros> {
    let info = &line["rate_limit_info"];
    if info["status"].as_str() != Some("rejected") {
        return None;
    }
    let at = info["resetsAt"].as_f64().or_else(|| info["resets_at"].as_f64())?;
    Some(Micros((at * 1e6) as i64))
}

/// Whether a failed run's result says it stopped at the account's usage limit, and when that
/// resets: the result's own `…limit reached|<epoch seconds>`, else the reset of the run's
/// refusing `rate_limit_event`, else [`UNKNOWN_RESET_WAIT`] from `now`.
fn usage_limit(text: &str, rejected: Option<Micros>, now: Micros) -> Option<Micros> {
    let lower = text.to_ascii_lowercase();
    let said = lower.contains("usage limit") || lower.contains("hit your limit") || lower.contains("limit reached");
    if !said && rejected.is_none() {
        return None;
    }
    let epoch = text.rsplit_once('|').and_then(|(_, t)| t.trim().parse::<f64>().ok());
    // seconds since the epoch, or milliseconds from a newer CLI
    let stamped = epoch.map(|t| if t > 1e11 { Micros((t * 1e3) as i64) } else { Micros((t * 1e6) as i64) });
    Some(stamped.or(rejected).unwrap_or_else(|| now.plus(UNKNOWN_RESET_WAIT)))
}

/// The input (cache reads and writes included) and output tokens of a `usage` object. The
/// counts come from the CLI: absurd ones saturate at `u64::MAX` rather than overflow.
fn tokens(u: &Value) -> (u64, u64) {
    let count = |k: &str| u[k].as_u64().unwrap_or(0);
    let input = count("input_tokens")
        .saturating_add(count("cache_creation_input_tokens"))
        .saturating_add(count("cache_read_input_tokens"));
    (input, count("output_tokens"))
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn excerpt_tail(s: &str, max: usize) -> &str {
    let start = s.len().saturating_sub(max);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

#[async_trait]
impl Executor for ClaudeCode {
    async fn run(&self, ctx: RunContext) -> RunResult {
        if let Some(r) = ctx.resume.clone().filter(|r| !r.answers.is_empty() || r.limited) {
            return after_answers(&ctx, &r).await;
        }
        let resumes = ctx.session.as_ref().and_then(|s| s.claude_session()).is_some();
        if !resumes && ctx.session.as_ref().is_some_and(|s| s.turns.iter().any(|t| !t.result.is_null())) {
            // earlier turns without a CLI session to resume (their results are structured
            // output, which keeps no session id): they are told as a transcript
            let prompt = transcript(ctx.session.as_ref().map(|s| s.turns.as_slice()).unwrap_or_default(), &ctx);
            return run_once(&ctx, false, prompt).await;
        }
        let outcome = run_once(&ctx, true, input_text(&ctx.task.input)).await;
        match outcome {
            Err(f) if resumes && f.error.code == SESSION_NOT_FOUND => {
                // The CLI session lives on another machine: start a new one that is told the
                // conversation so far, so the turn still answers in context.
                tracing::info!(task_id = %ctx.task.id, "claude session not found here; replaying the transcript");
                let note = json!({"type": "resume_fallback", "reason": f.error.message});
                ctx.events.emit(EventKind::Output, note).await;
                let prompt = transcript(ctx.session.as_ref().map(|s| s.turns.as_slice()).unwrap_or_default(), &ctx);
                match run_once(&ctx, false, prompt).await {
                    Ok(mut ok) => {
                        ok.usage.add(&f.usage);
                        Ok(ok)
                    }
                    Err(e) => Err(e.with_usage_added(f.usage)),
                }
            }
            other => other,
        }
    }
}

/// A run after a person answered the previous attempt's request, or after the usage limit that
/// stopped it reset: the CLI session that stopped is resumed and told why it continues; where
/// that session is not on this machine, a new one is given the task again with the note (a call
/// asked again is answered from the stored decision).
async fn after_answers(ctx: &RunContext, r: &crate::Resume) -> RunResult {
    let note = r.note();
    if r.claude_session.is_some() {
        match run_once(ctx, true, note.clone()).await {
            Err(f) if f.error.code == SESSION_NOT_FOUND => {
                let data = json!({"type": "resume_fallback", "reason": f.error.message});
                ctx.events.emit(EventKind::Output, data).await;
                let prompt = format!("{}\n\n{note}", input_text(&ctx.task.input));
                return run_once(ctx, false, prompt).await.map_err(|e| e.with_usage_added(f.usage));
            }
            other => return other,
        }
    }
    run_once(ctx, false, format!("{}\n\n{note}", input_text(&ctx.task.input))).await
}

/// The session's earlier turns and this turn's input, as one prompt for a new CLI session.
fn transcript(turns: &[crate::Turn], ctx: &RunContext) -> String {
    let mut out = String::from("This conversation continues an earlier one. Its turns so far:\n\n");
    for t in turns {
        out.push_str(&format!("User: {}\n\n", input_text(&t.input)));
        let answer =
            t.result.get("text").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| t.result.to_string());
        out.push_str(&format!("Assistant: {answer}\n\n"));
    }
    out.push_str(&format!("Now the user says:\n\n{}", input_text(&ctx.task.input)));
    out
}

/// One run of the CLI with `prompt` on stdin.
async fn run_once(ctx: &RunContext, resume: bool, prompt: String) -> RunResult {
    // `_mcp` lives until the run has ended: the CLI reads its file at start-up
    let (cmd, _mcp) = command(ctx, resume)?;
    let program = ctx.def.command.clone().unwrap_or_else(|| "claude".into());
    // the prompt goes on stdin: no argument-length limit, no option parsing of its text
    let prompt = prompt.into_bytes();
    let def = ctx.def.clone();
    let mut stream = StreamJson::new(ctx);
    let (grace, stall) = (def.kill_grace, def.stall_timeout);
    let run = run_group(&ctx.task.agent, cmd, Some(prompt), &ctx.cancel, grace, stall, &mut stream);
    let exit = match run.await {
        Ok(exit) => exit,
        Err(e) => return Err(Failure::new("spawn_failed", format!("cannot start {program:?}: {e}"), false)),
    };
    let usage = stream.usage;
    match exit.stopped {
        Some(Stopped::Cancelled) => return Err(Failure::new("cancelled", "stopped", false).with_usage(usage)),
        Some(Stopped::Stalled) => {
            let quiet = def.stall_timeout.unwrap_or_default();
            let message =
                format!("claude wrote nothing for {quiet:?} and was presumed hung; its process group was killed");
            return Err(Failure::new(crate::STALLED, message, true).with_usage(usage));
        }
        None => {}
    }
    stream.outcome(&format!("exited with {}", exit.how()), exit.success(), &exit.stderr_tail)
}

//! The platform's MCP server (streamable HTTP, JSON responses): the tools through which agents
//! collaborate while they work — discoveries, messages, and sub-tasks.
//!
//! `POST /mcp` takes one JSON-RPC 2.0 message (or a batch) and answers with JSON; notifications
//! get `202`. The calling task is named by the `x-smith-task` header, which workers set when
//! they configure an agent with this server: it attributes discoveries and messages, addresses
//! `read_messages`, and becomes the parent of spawned tasks. Without it, a caller acts as an
//! operator (no agent, no parent). An agent's capability fixes the calling task: it is refused
//! once that attempt no longer runs, and for any other task in the header. Tool failures (bad arguments, unknown tasks) are tool results
//! with `isError: true`, so the model sees them; protocol failures are JSON-RPC errors.

use crate::approvals;
use crate::auth::Principal;
use crate::error::{ApiError, LimitedBody};
use crate::submit::submit_task;
use crate::AppState;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use smith_core::{Budget, Capability, Code, EventKind, NewTask, Task, TaskId, TaskStatus};
use smith_store::{GlobalEvent, GlobalEventQuery};
use std::sync::Arc;
use std::time::Duration;

/// Protocol versions this server speaks, newest first.
const VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];
/// The header naming the calling task (see `smith_agents::TASK_HEADER`).
const TASK_HEADER: &str = "x-smith-task";
const DISCOVERY_TYPES: [&str; 6] = ["pattern", "anomaly", "connection", "solution", "question", "insight"];
const MAX_CONTENT: usize = 16 * 1024;
/// Events scanned at most by one filtered listing.
const MAX_SCAN: usize = 20_000;
const AWAIT_DEFAULT: Duration = Duration::from_secs(30);
const AWAIT_MAX: Duration = Duration::from_secs(120);

/// A tool's failure, returned to the model as an error result.
struct ToolError(String);

impl From<smith_store::Error> for ToolError {
    fn from(e: smith_store::Error) -> Self {
        ToolError(e.to_string())
    }
}

impl From<ApiError> for ToolError {
    fn from(e: ApiError) -> Self {
        ToolError(e.message)
    }
}

type ToolResult = Result<Value, ToolError>;

/// Who is calling: the task named by `x-smith-task`, when there is one (it must be the
/// credential's tenant's), else the credential's tenant.
struct Caller {
    task: Option<Task>,
    tenant: String,
}

impl Caller {
    fn tenant(&self) -> String {
        self.task.as_ref().map(|t| t.tenant.clone()).unwrap_or_else(|| self.tenant.clone())
    }
    fn agent(&self) -> Option<String> {
        self.task.as_ref().map(|t| t.agent.clone())
    }
    fn task_id(&self) -> Option<TaskId> {
        self.task.as_ref().map(|t| t.id)
    }
}

pub(crate) async fn post(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    cap: Option<Extension<Capability>>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let found = match cap {
        Some(Extension(cap)) => agent_caller(&s, &cap, &headers).await,
        None => caller(&s, &p, &headers).await,
    };
    let caller = match found {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Json(rpc_error(Value::Null, -32700, &format!("parse error: {e}"))).into_response(),
    };
    match message {
        Value::Array(batch) => {
            if batch.is_empty() {
                return Json(rpc_error(Value::Null, -32600, "empty batch")).into_response();
            }
            let mut out = Vec::new();
            for m in batch {
                if let Some(answer) = handle(&s, &caller, m).await {
                    out.push(answer);
                }
            }
            if out.is_empty() {
                StatusCode::ACCEPTED.into_response()
            } else {
                Json(Value::Array(out)).into_response()
            }
        }
        m => match handle(&s, &caller, m).await {
            Some(answer) => Json(answer).into_response(),
            None => StatusCode::ACCEPTED.into_response(),
        },
    }
}

/// This server offers no server-initiated stream.
pub(crate) async fn get() -> Response {
    let body = json!({"error": {"code": "method_not_allowed", "message": "this MCP server answers POST only"}});
    (StatusCode::METHOD_NOT_ALLOWED, [(axum::http::header::ALLOW, "POST")], Json(body)).into_response()
}

async fn caller(s: &AppState, p: &Principal, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let tenant = p.write_tenant();
    let Some(raw) = headers.get(TASK_HEADER) else { return Ok(Caller { task: None, tenant }) };
    let id = raw
        .to_str()
        .map_err(|_| ApiError::invalid(format!("{TASK_HEADER} is not text")))?
        .parse::<TaskId>()
        .map_err(|e| ApiError::invalid(format!("{TASK_HEADER}: {}", e.message)))?;
    match s.store.get_task(id).await? {
        Some(task) if p.sees(&task.tenant) => Ok(Caller { task: Some(task), tenant }),
        _ => Err(ApiError::not_found(format!("{TASK_HEADER}: task {id} not found"))),
    }
}

/// The caller an attempt's capability names: its task, while that task is still running at
/// that attempt (one read). Any other task named by `x-smith-task` is refused.
async fn agent_caller(s: &AppState, cap: &Capability, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if let Some(raw) = headers.get(TASK_HEADER) {
        if raw.to_str().ok().and_then(|v| v.parse::<TaskId>().ok()) != Some(cap.task) {
            return Err(ApiError::new(
                Code::PermissionDenied,
                format!("{TASK_HEADER}: this capability acts as task {} only", cap.task),
            ));
        }
    }
    match s.store.get_task(cap.task).await? {
        Some(task)
            if task.tenant == cap.tenant && task.status == TaskStatus::Running && task.attempt == cap.attempt =>
        {
            Ok(Caller { task: Some(task), tenant: cap.tenant.clone() })
        }
        _ => Err(ApiError::new(Code::Unauthenticated, "this capability's attempt has ended")),
    }
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Answers one message; `None` for a notification.
async fn handle(s: &AppState, caller: &Caller, m: Value) -> Option<Value> {
    let Value::Object(m) = m else {
        return Some(rpc_error(Value::Null, -32600, "a JSON-RPC message must be an object"));
    };
    let id = m.get("id").cloned();
    let Some(method) = m.get("method").and_then(Value::as_str) else {
        // a response to a request we never sent: nothing to answer
        return id.map(|id| rpc_error(id, -32600, "missing method"));
    };
    let id = id?;
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(rpc_error(id, -32600, "jsonrpc must be \"2.0\""));
    }
    let params = m.get("params").cloned().unwrap_or(Value::Object(Map::new()));
    Some(match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(VERSIONS[0]);
            let version = VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(VERSIONS[0]);
            rpc_result(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "mistersmith", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "MisterSmith platform tools: share what you find with other agents, \
                        read what they found, message them, and fan work out to other agents.",
                }),
            )
        }
        "ping" => rpc_result(id, json!({})),
        "tools/list" => rpc_result(id, json!({"tools": tools()})),
        "tools/call" => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                return Some(rpc_error(id, -32602, "tools/call needs a tool name"));
            };
            let args = params.get("arguments").cloned().unwrap_or(Value::Object(Map::new()));
            let Value::Object(args) = args else {
                return Some(rpc_error(id, -32602, "arguments must be an object"));
            };
            let out = match name {
                "share_discovery" => share_discovery(s, caller, &args).await,
                "list_discoveries" => list_discoveries(s, caller, &args).await,
                "send_message" => send_message(s, caller, &args).await,
                "read_messages" => read_messages(s, caller, &args).await,
                "spawn_task" => spawn_task(s, caller, &args).await,
                "await_task" => await_task(s, caller, &args).await,
                "permission_prompt" => permission_prompt(s, caller, &args).await,
                "request_approval" => request_approval(s, caller, &args).await,
                "ask_human" => ask_human(s, caller, &args).await,
                other => return Some(rpc_error(id, -32602, &format!("unknown tool {other:?}"))),
            };
            crate::metrics::tool_call(name, out.is_ok());
            match (name, out) {
                // Claude Code takes a permission answer as exactly one text block
                ("permission_prompt", Ok(v)) => {
                    rpc_result(id, json!({"content": [{"type": "text", "text": v.to_string()}], "isError": false}))
                }
                (_, out) => rpc_result(id, tool_answer(out)),
            }
        }
        other => rpc_error(id, -32601, &format!("method {other:?} not found")),
    })
}

fn tool_answer(out: ToolResult) -> Value {
    match out {
        Ok(v) => json!({
            "content": [{"type": "text", "text": v.to_string()}],
            "structuredContent": v,
            "isError": false,
        }),
        Err(ToolError(message)) => json!({"content": [{"type": "text", "text": message}], "isError": true}),
    }
}

fn tools() -> Value {
    json!([
        {
            "name": "share_discovery",
            "description": "Share something you found with every other agent: a pattern, an anomaly, a connection, \
                a solution, an open question or an insight. It is stored durably and streamed to everyone watching.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": DISCOVERY_TYPES},
                    "content": {"type": "string", "description": "What you found, self-contained."},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "related_to": {"type": "array", "items": {"type": "string"},
                        "description": "Ids of discoveries or tasks this one builds on."}
                },
                "required": ["type", "content", "confidence"],
                "additionalProperties": false
            }
        },
        {
            "name": "list_discoveries",
            "description": "List discoveries shared by agents, oldest first. Pass `since` (the `cursor` of your last \
                call) to see only new ones.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": DISCOVERY_TYPES},
                    "agent": {"type": "string", "description": "Only those shared by this agent."},
                    "task_id": {"type": "string", "description": "Only those shared by this task."},
                    "contains": {"type": "string", "description": "Only those whose content contains this text."},
                    "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "since": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 500}
                },
                "additionalProperties": false
            }
        },
        {
            "name": "send_message",
            "description": "Send a message to another agent (every task of that agent may read it) or to one task.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "to_agent": {"type": "string"},
                    "to_task": {"type": "string"},
                    "body": {"type": "string"}
                },
                "required": ["body"],
                "additionalProperties": false
            }
        },
        {
            "name": "read_messages",
            "description": "Read messages sent to you (your task or your agent), oldest first. Pass `since` (the \
                `cursor` of your last call) to see only new ones.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "since": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 500}
                },
                "additionalProperties": false
            }
        },
        {
            "name": "spawn_task",
            "description": "Start a task for another agent; it becomes your child. Returns its id at once; collect \
                its result with await_task.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "agent": {"type": "string"},
                    "input": {"description": "The task's input: text or any JSON."},
                    "timeout_ms": {"type": "integer", "minimum": 1},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "max_cost_usd": {"type": "number", "exclusiveMinimum": 0},
                    "output_schema": {"type": "object", "description": "A JSON Schema the child's result must \
                        match; await_task then returns the parsed object."}
                },
                "required": ["agent", "input"],
                "additionalProperties": false
            }
        },
        {
            "name": "await_task",
            "description": "Wait for a task to finish and return its status, result or error. Waits at most \
                `timeout_s` seconds (default 30, at most 120); if it is still running, call again.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "timeout_s": {"type": "number", "minimum": 0, "maximum": 120}
                },
                "required": ["id"],
                "additionalProperties": false
            }
        },
        {
            "name": "request_approval",
            "description": "Ask a person to approve something before you do it. Your run pauses until they \
                answer (it holds nothing while it waits) and resumes with the decision; ask again with the same \
                arguments after resuming to read it. Returns {decision, message, input} once answered.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "What you want to do and why, for the person."},
                    "tool": {"type": "string", "description": "The tool or action that needs approval."},
                    "input": {"type": "object", "description": "Its arguments, which the person may edit."}
                },
                "required": ["reason"],
                "additionalProperties": false
            }
        },
        {
            "name": "ask_human",
            "description": "Ask a person a question. Your run pauses until they answer (it holds nothing while \
                it waits) and resumes; ask the same question again after resuming to read the answer.",
            "inputSchema": {
                "type": "object",
                "properties": {"question": {"type": "string"}},
                "required": ["question"],
                "additionalProperties": false
            }
        },
        {
            "name": "permission_prompt",
            "description": "The platform's answer to Claude Code's permission prompts \
                (--permission-prompt-tool): calls the agent's `approve` patterns name wait for a person.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "tool_name": {"type": "string"},
                    "input": {"type": "object"},
                    "tool_use_id": {"type": "string"}
                },
                "required": ["tool_name", "input"]
            }
        }
    ])
}

/// Rejects arguments the tool does not take, naming them (the model learns from it).
fn only(args: &Map<String, Value>, allowed: &[&str]) -> Result<(), ToolError> {
    match args.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ToolError(format!("unknown argument {k:?}; this tool takes {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn text_arg(args: &Map<String, Value>, name: &str) -> Result<Option<String>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ToolError(format!("{name} must be a string"))),
    }
}

fn u64_arg(args: &Map<String, Value>, name: &str) -> Result<Option<u64>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ToolError(format!("{name} must be a non-negative integer"))),
    }
}

fn f64_arg(args: &Map<String, Value>, name: &str) -> Result<Option<f64>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| ToolError(format!("{name} must be a number"))),
    }
}

fn limit_arg(args: &Map<String, Value>) -> Result<usize, ToolError> {
    let limit = u64_arg(args, "limit")?.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ToolError(format!("limit must be 1..=500, got {limit}")));
    }
    Ok(limit as usize)
}

fn task_arg(args: &Map<String, Value>, name: &str) -> Result<Option<TaskId>, ToolError> {
    text_arg(args, name)?
        .map(|s| s.parse::<TaskId>().map_err(|e| ToolError(format!("{name}: {}", e.message))))
        .transpose()
}

/// Stores `data` as the caller's event of `kind` in the global feed and publishes it; its
/// position in the feed.
async fn post_global(s: &AppState, caller: &Caller, kind: EventKind, data: Value) -> Result<u64, ToolError> {
    let event = GlobalEvent { kind, agent: caller.agent(), tenant: Some(caller.tenant()), data };
    let event = s.store.append_global(event).await?;
    smith_bus::publish_events(s.bus.as_ref(), std::slice::from_ref(&event)).await;
    Ok(event.pos)
}

async fn share_discovery(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    only(args, &["type", "content", "confidence", "related_to"])?;
    let kind = text_arg(args, "type")?.ok_or_else(|| ToolError("type is required".into()))?;
    if !DISCOVERY_TYPES.contains(&kind.as_str()) {
        return Err(ToolError(format!("type {kind:?} is not one of {}", DISCOVERY_TYPES.join(", "))));
    }
    let content = text_arg(args, "content")?.ok_or_else(|| ToolError("content is required".into()))?;
    if content.trim().is_empty() || content.len() > MAX_CONTENT {
        return Err(ToolError(format!("content must be 1..={MAX_CONTENT} bytes")));
    }
    let confidence = f64_arg(args, "confidence")?.ok_or_else(|| ToolError("confidence is required".into()))?;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(ToolError(format!("confidence must be between 0 and 1, got {confidence}")));
    }
    let related: Vec<String> = match args.get("related_to") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ToolError("related_to must hold strings".into())))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ToolError("related_to must be a list of ids".into())),
    };
    if related.len() > 64 {
        return Err(ToolError("related_to holds at most 64 ids".into()));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let data = json!({
        "id": id,
        "type": kind,
        "content": content,
        "confidence": confidence,
        "related_to": related,
        "task_id": caller.task_id(),
        "agent": caller.agent(),
    });
    let cursor = post_global(s, caller, EventKind::Discovery, data).await?;
    crate::metrics::discovery(caller.agent().as_deref().unwrap_or(""));
    Ok(json!({"id": id, "cursor": cursor, "shared": true}))
}

/// Scans collaboration events of one kind after `since`, keeping those `keep` accepts.
async fn scan(
    s: &AppState,
    caller: &Caller,
    kind: EventKind,
    since: u64,
    limit: usize,
    keep: impl Fn(&Value) -> bool,
) -> Result<(Vec<Value>, u64), ToolError> {
    let tenant = caller.tenant();
    let mut query = GlobalEventQuery { kinds: vec![kind], tenant: Some(tenant.clone()), after: since, limit: 500 };
    let mut cursor = since;
    let mut out = Vec::new();
    let mut scanned = 0;
    while out.len() < limit && scanned < MAX_SCAN {
        query.after = cursor;
        let page = s.store.global_events(&query).await?;
        let Some(last) = page.last().map(|e| e.pos) else { break };
        scanned += page.len();
        for e in page {
            cursor = e.pos;
            // the store read the caller's tenant's; the one rule again, as on every other path
            if e.visible_to(Some(&tenant)) && keep(&e.data) {
                let mut item = e.data;
                item["at"] = json!(e.at);
                item["cursor"] = json!(e.pos);
                out.push(item);
                if out.len() == limit {
                    break;
                }
            }
        }
        if out.len() < limit {
            cursor = last;
        }
    }
    Ok((out, cursor))
}

async fn list_discoveries(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    only(args, &["type", "agent", "task_id", "contains", "min_confidence", "since", "limit"])?;
    let kind = text_arg(args, "type")?;
    if let Some(k) = &kind {
        if !DISCOVERY_TYPES.contains(&k.as_str()) {
            return Err(ToolError(format!("type {k:?} is not one of {}", DISCOVERY_TYPES.join(", "))));
        }
    }
    let agent = text_arg(args, "agent")?;
    let task = task_arg(args, "task_id")?.map(|t| t.to_string());
    let contains = text_arg(args, "contains")?.map(|c| c.to_lowercase());
    let min_conf = f64_arg(args, "min_confidence")?.unwrap_or(0.0);
    let since = u64_arg(args, "since")?.unwrap_or(0);
    let limit = limit_arg(args)?;
    let (items, cursor) = scan(s, caller, EventKind::Discovery, since, limit, |d| {
        kind.as_deref().is_none_or(|k| d["type"] == k)
            && agent.as_deref().is_none_or(|a| d["agent"] == a)
            && task.as_deref().is_none_or(|t| d["task_id"] == t)
            && d["confidence"].as_f64().unwrap_or(0.0) >= min_conf
            && contains.as_deref().is_none_or(|c| d["content"].as_str().unwrap_or("").to_lowercase().contains(c))
    })
    .await?;
    Ok(json!({"discoveries": items, "cursor": cursor}))
}

async fn send_message(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    only(args, &["to_agent", "to_task", "body"])?;
    let body = text_arg(args, "body")?.ok_or_else(|| ToolError("body is required".into()))?;
    if body.is_empty() || body.len() > MAX_CONTENT {
        return Err(ToolError(format!("body must be 1..={MAX_CONTENT} bytes")));
    }
    let to_agent = text_arg(args, "to_agent")?;
    let to_task = task_arg(args, "to_task")?;
    match (&to_agent, &to_task) {
        (None, None) | (Some(_), Some(_)) => return Err(ToolError("give exactly one of to_agent and to_task".into())),
        (Some(a), None) => {
            if !s.store.agents().await?.iter().any(|d| &d.def.name == a) {
                return Err(ToolError(format!("no agent named {a:?}")));
            }
        }
        (None, Some(t)) => match s.store.get_task(*t).await? {
            Some(task) if task.tenant == caller.tenant() => {}
            _ => return Err(ToolError(format!("no task {t}"))),
        },
    }
    let id = uuid::Uuid::now_v7().to_string();
    let data = json!({
        "id": id,
        "from_task": caller.task_id(),
        "from_agent": caller.agent(),
        "to_agent": to_agent,
        "to_task": to_task,
        "body": body,
    });
    let cursor = post_global(s, caller, EventKind::Message, data).await?;
    Ok(json!({"id": id, "cursor": cursor, "sent": true}))
}

async fn read_messages(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    only(args, &["since", "limit"])?;
    let Some(task) = &caller.task else {
        return Err(ToolError(format!("read_messages reads the calling task's messages: send {TASK_HEADER}")));
    };
    let since = u64_arg(args, "since")?.unwrap_or(0);
    let limit = limit_arg(args)?;
    let (me, agent) = (task.id.to_string(), task.agent.clone());
    let (items, cursor) = scan(s, caller, EventKind::Message, since, limit, |d| {
        d["to_task"] == me.as_str() || d["to_agent"] == agent.as_str()
    })
    .await?;
    Ok(json!({"messages": items, "cursor": cursor}))
}

async fn spawn_task(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    only(args, &["agent", "input", "timeout_ms", "max_tokens", "max_cost_usd", "output_schema"])?;
    let agent = text_arg(args, "agent")?.ok_or_else(|| ToolError("agent is required".into()))?;
    let input = args.get("input").cloned().ok_or_else(|| ToolError("input is required".into()))?;
    let mut task = NewTask::new(agent, input);
    task.timeout_ms = u64_arg(args, "timeout_ms")?;
    task.budget = Budget { max_tokens: u64_arg(args, "max_tokens")?, max_cost_usd: f64_arg(args, "max_cost_usd")? };
    task.output_schema = args.get("output_schema").filter(|v| !v.is_null()).cloned();
    task.parent_id = caller.task_id();
    task.tenant = caller.tenant();
    // a runaway orchestrator must not fan out without end
    let mut depth = 0;
    let mut up = caller.task.as_ref().and_then(|t| t.parent_id);
    while let Some(p) = up {
        depth += 1;
        if depth >= crate::submit::MAX_DEPTH {
            return Err(ToolError(format!(
                "sub-tasks nest at most {} deep; this task is already {depth} levels down",
                crate::submit::MAX_DEPTH
            )));
        }
        up = s.store.get_task(p).await?.and_then(|t| t.parent_id);
    }
    if let Some(parent) = &caller.task {
        task.priority = parent.priority;
        // the child joins its parent's trace
        task.traceparent = parent.traceparent.clone();
    }
    let submitted = submit_task(s, task, None).await?;
    Ok(json!({"id": submitted.task.id, "agent": submitted.task.agent, "status": submitted.task.status}))
}

async fn await_task(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    only(args, &["id", "timeout_s"])?;
    let id = task_arg(args, "id")?.ok_or_else(|| ToolError("id is required".into()))?;
    let wait = match f64_arg(args, "timeout_s")? {
        None => AWAIT_DEFAULT,
        Some(t) if (0.0..=AWAIT_MAX.as_secs_f64()).contains(&t) => Duration::from_secs_f64(t),
        Some(t) => return Err(ToolError(format!("timeout_s must be 0..=120, got {t}"))),
    };
    // Hook first, then read: a terminal event between the two is not missed.
    let mut tap = s.hub.tap_task(id);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let task = match s.store.get_task(id).await? {
            Some(t) if t.tenant == caller.tenant() => t,
            _ => return Err(ToolError(format!("no task {id}"))),
        };
        if task.status.is_terminal() {
            return Ok(json!({
                "id": task.id, "agent": task.agent, "status": task.status, "result": task.result,
                "error": task.error, "usage": task.usage,
            }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(json!({
                "id": task.id, "agent": task.agent, "status": task.status,
                "message": "still running: call await_task again to keep waiting",
            }));
        }
        // A terminal event wakes us; a slow poll covers a lost or lagged one.
        let poll = tokio::time::Instant::now() + Duration::from_secs(2);
        tokio::select! {
            ev = tap.rx.recv() => {
                if ev.is_none() || tap.lagged() {
                    tap = s.hub.tap_task(id);
                }
            }
            _ = tokio::time::sleep_until(poll.min(deadline)) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A person in the loop (see `approvals`).

/// The calling task, when it is a running attempt: only an attempt can wait for a person.
fn asking_task(caller: &Caller) -> Result<&Task, ToolError> {
    match &caller.task {
        Some(t) if t.status == TaskStatus::Running => Ok(t),
        Some(t) => Err(ToolError(format!("task {} is {}: only a running attempt may ask a person", t.id, t.status))),
        None => Err(ToolError("only an agent's task may ask a person (no calling task)".into())),
    }
}

fn asked_text(args: &Map<String, Value>, name: &str, required: bool) -> Result<Option<String>, ToolError> {
    match args.get(name) {
        Some(Value::String(t)) if !t.trim().is_empty() && t.len() <= smith_core::approval::MAX_TEXT => {
            Ok(Some(t.clone()))
        }
        Some(Value::Null) | None if !required => Ok(None),
        _ => Err(ToolError(format!(
            "`{name}` must be non-empty text of at most {} bytes",
            smith_core::approval::MAX_TEXT
        ))),
    }
}

/// The asking executor's state to resume from (the platform's LLM executors send their
/// conversation); an object or nothing.
fn state_arg(args: &Map<String, Value>) -> Result<Option<Value>, ToolError> {
    match args.get("state") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(ToolError("`state` must be an object".into())),
    }
}

/// Claude Code's permission prompt: an answer given already, else a person when an `approve`
/// pattern names the call, else the denial the agent's permission mode would give.
async fn permission_prompt(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    use smith_core::approval::{Decision, RequestKind, ToolCall};
    let task = asking_task(caller)?;
    let name = asked_text(args, "tool_name", true)?.unwrap_or_default();
    let input = args.get("input").cloned().unwrap_or_else(|| json!({}));
    let call = ToolCall { name: name.clone(), input: input.clone() };
    let known = approvals::known_answer(s, task, RequestKind::Approval, Some(&call), None).await?;
    if let Some(answer) = known.and_then(|a| a.answer) {
        return Ok(match answer.decision {
            Decision::Allow => json!({"behavior": "allow", "updatedInput": answer.input.unwrap_or(input)}),
            Decision::Deny => json!({"behavior": "deny", "message": answer.denial()}),
        });
    }
    let def = approvals::definition(s, task).await?;
    if approvals::needs_person(&def, &name, &input).is_none() {
        let m = format!(
            "{name} is not permitted for agent {:?}: its permission settings do not allow this call, and no \
             `approve` pattern asks a person for it",
            def.name
        );
        return Ok(json!({"behavior": "deny", "message": m}));
    }
    let a = approvals::ask(s, task, &def, RequestKind::Approval, Some(call), None, state_arg(args)?).await?;
    let m = format!(
        "This call waits for a person's approval (request {}); the run pauses and resumes with the decision.",
        a.id
    );
    Ok(json!({"behavior": "deny", "message": m, "interrupt": true}))
}

/// Any agent asks a person to approve something it names.
async fn request_approval(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    use smith_core::approval::{RequestKind, ToolCall};
    let task = asking_task(caller)?;
    let reason = asked_text(args, "reason", true)?;
    let tool = match (asked_text(args, "tool", false)?, args.get("input")) {
        (Some(name), input) => Some(ToolCall { name, input: input.cloned().unwrap_or_else(|| json!({})) }),
        (None, Some(_)) => return Err(ToolError("`input` goes with `tool`".into())),
        (None, None) => None,
    };
    if args.get("input").is_some_and(|v| !v.is_object()) {
        return Err(ToolError("`input` must be an object".into()));
    }
    if args.keys().any(|k| !["reason", "tool", "input", "state"].contains(&k.as_str())) {
        return Err(ToolError("request_approval takes reason, tool and input".into()));
    }
    let known = approvals::known_answer(s, task, RequestKind::Approval, tool.as_ref(), reason.as_deref()).await?;
    if let Some(answer) = known.and_then(|a| a.answer) {
        return Ok(
            json!({"decision": answer.decision, "message": answer.message, "input": answer.input, "by": answer.by}),
        );
    }
    let def = approvals::definition(s, task).await?;
    let a = approvals::ask(s, task, &def, RequestKind::Approval, tool, reason, state_arg(args)?).await?;
    Ok(waiting(&a))
}

/// Any agent asks a person a question.
async fn ask_human(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> ToolResult {
    use smith_core::approval::{Decision, RequestKind};
    let task = asking_task(caller)?;
    let question = asked_text(args, "question", true)?;
    let known = approvals::known_answer(s, task, RequestKind::Input, None, question.as_deref()).await?;
    if let Some(answer) = known.and_then(|a| a.answer) {
        return Ok(match answer.decision {
            Decision::Allow => json!({"answer": answer.answer, "by": answer.by}),
            Decision::Deny => json!({"answer": null, "declined": true, "message": answer.message, "by": answer.by}),
        });
    }
    let def = approvals::definition(s, task).await?;
    let a = approvals::ask(s, task, &def, RequestKind::Input, None, question, state_arg(args)?).await?;
    Ok(waiting(&a))
}

fn waiting(a: &smith_core::Approval) -> Value {
    json!({
        "status": "waiting_input",
        "approval_id": a.id,
        "message": "A person has been asked. This run stops now and resumes once they answer: ask again with the \
            same arguments then to read the answer.",
    })
}

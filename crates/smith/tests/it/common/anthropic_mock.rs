//! A mock Anthropic Messages API for the tests: the real Claude Code CLI and the `anthropic`
//! executor both talk to it. What it answers is scripted by a marker in the conversation's
//! first user message:
//!
//! - `SHARE <words>`: calls `share_discovery` with the words, then answers with the tool result.
//! - `LIST`: calls `list_discoveries`, then answers with the tool result.
//! - `SPAWN`: calls `spawn_task` (agent `echo`), then `await_task` on the child, then answers.
//!   `SPAWNSHAPE`: the same with a child of agent `shaped` and an `output_schema`.
//! - `STALL`: sends `message_start`, then nothing, holding the connection.
//! - `SLOW`: streams a text delta every 100 ms for a minute.
//! - `OVERSPEND`: reports 5,000 input tokens at once, then streams slowly.
//! - `BASH`: a paced two-turn task: streams text deltas 100 ms apart for 5 s, then calls the
//!   CLI's own `Bash` tool (`echo from the mock`); after its result, 5 s of text again, ending
//!   the turn (the baseline scenario's Claude Code agent: working, not idle, for ~10 s).
//! - `EDIT <word>`: the CLI's own tools on its working directory (a git checkout): `Write`
//!   `shared.txt` with the word (the path from the CLI's environment context, `Primary working
//!   directory:`),
//!   then `Bash` `git commit -qam …`, then answers "edited <word>".
//! - `RECALL`: answers "you said X" when an earlier message of the conversation said `REMEMBER X`.
//! - `SHAPE good|bad|fix`: structured output. `good` answers `{"title":"ok","count":3}`: through
//!   the Claude Code CLI's `StructuredOutput` tool when the request offers it, else as text.
//!   `bad` answers text that is not the shape (`{"title":5}`). `fix` answers like `bad` until
//!   the platform's corrective message ("does not match the JSON Schema") is the latest user
//!   text, then like `good`.
//! - `PUSH`: calls the CLI's `Bash` tool with `git push origin x`; once the conversation holds
//!   the platform's note that a person decided (`[MisterSmith]`), calls it again, then answers
//!   "after the decision: <the tool result>".
//! - `SAFE`: calls `Bash` with `echo safe-ran`, then answers "tool said: <result>".
//! - `ASK`: calls `ask_human` ("What colour?"), then answers "heard: <the tool result>".
//! - `GATE`: calls `send_message` (to agent `nobody`), then answers "tool said: <the result>".
//! - `LIMIT`: the first request of each such conversation gets a 429 whose `retry-after` is 3 s
//!   (the account's usage limit); the first after that answers "past the limit".
//! - anything else: "Hello from the mock."
//!
//! While `failing` is set, every request gets a 500.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct MockState {
    pub requests: Mutex<Vec<Value>>,
    /// A slow stream has begun sending.
    pub streaming: AtomicBool,
    /// Clients that went away in the middle of a stream.
    pub disconnected: AtomicUsize,
    /// Answer every request with a 500.
    pub failing: AtomicBool,
    pub failures: AtomicUsize,
    /// `LIMIT` conversations (their first user message) already refused once, and when.
    pub limited: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

pub struct Mock {
    pub url: String,
    pub state: Arc<MockState>,
}

impl Mock {
    pub async fn start() -> Mock {
        let state = Arc::new(MockState::default());
        let app = Router::new().route("/v1/messages", post(messages)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { url, state }
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }
}

enum Step {
    Text(String),
    Tool(&'static str, Value),
    /// message_start, then nothing, forever.
    Stall,
    /// Text deltas every 100 ms for a minute; `input_tokens` reported at the start.
    Slow(u64),
    /// Text deltas every 100 ms for this many ticks, then the step's own block.
    Paced(u32, Box<Step>),
}

/// Ticks of 100 ms each turn of a `BASH` task streams for.
const PACED_TICKS: u32 = 50;

/// The text of the conversation's first user message.
fn first_user(body: &Value) -> String {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    msgs.iter().find(|m| m["role"] == "user").map(|m| m["content"].to_string()).unwrap_or_default()
}

/// The contents of every tool result so far, in order, as text.
fn tool_results(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        for b in m["content"].as_array().into_iter().flatten() {
            if b["type"] == "tool_result" {
                out.push(b["content"].to_string());
            }
        }
    }
    out
}

/// The first UUID in `s` (JSON text may escape its quotes).
fn uuid_in(s: &str) -> Option<String> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(35)).find_map(|i| {
        let cand = &s[i..i + 36];
        let ok = cand
            .char_indices()
            .all(|(j, c)| if [8, 13, 18, 23].contains(&j) { c == '-' } else { c.is_ascii_hexdigit() });
        ok.then(|| cand.to_string())
    })
}

/// The CLI's working directory, as its environment context states it (`Primary working
/// directory: /…`).
fn working_dir(body: &Value) -> Option<String> {
    let text = body.to_string();
    let rest = text.split("working directory: ").nth(1)?;
    let dir: String = rest.chars().take_while(|c| !matches!(c, '\\' | '"' | '\n')).collect();
    dir.starts_with('/').then_some(dir)
}

fn script(body: &Value) -> Step {
    let first = first_user(body);
    let results = tool_results(body);
    if first.contains("LIMIT") {
        return Step::Text("past the limit".into());
    }
    if let Some(rest) = first.split("SHARE ").nth(1) {
        if let Some(r) = results.last() {
            return Step::Text(format!("tool said: {r}"));
        }
        let content: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == ' ').collect();
        return Step::Tool(
            "mcp__smith__share_discovery",
            json!({"type": "insight", "content": content.trim(), "confidence": 0.9}),
        );
    }
    if first.contains("LIST") {
        return match results.last() {
            Some(r) => Step::Text(format!("tool said: {r}")),
            None => Step::Tool("mcp__smith__list_discoveries", json!({"type": "insight"})),
        };
    }
    if first.contains("SPAWN") {
        let spawn = if first.contains("SPAWNSHAPE") {
            // a child of agent `shaped` whose output must match the spawner's schema
            json!({"agent": "shaped", "input": "from the parent", "output_schema": {"type": "object",
                "properties": {"title": {"type": "string"}}, "required": ["title"]}})
        } else {
            json!({"agent": "echo", "input": "from the parent"})
        };
        return match results.len() {
            0 => Step::Tool("spawn_task", spawn),
            1 => match uuid_in(&results[0]) {
                Some(id) => Step::Tool("await_task", json!({"id": id, "timeout_s": 30})),
                None => Step::Text(format!("no child id in {}", results[0])),
            },
            _ => Step::Text(format!("child said: {}", results[1])),
        };
    }
    if first.contains("BASH") {
        let then = match results.last() {
            Some(r) => Step::Text(format!("tool said: {r}")),
            None => Step::Tool("Bash", json!({"command": "echo from the mock", "description": "Print a line"})),
        };
        return Step::Paced(PACED_TICKS, Box::new(then));
    }
    if let Some(rest) = first.split("EDIT ").nth(1) {
        let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '-').collect();
        return match results.len() {
            0 => match working_dir(body) {
                Some(dir) => Step::Tool(
                    "Write",
                    json!({"file_path": format!("{dir}/shared.txt"), "content": format!("{word}\n")}),
                ),
                None => Step::Text("no working directory in the request".into()),
            },
            1 => Step::Tool(
                "Bash",
                json!({"command": format!("git commit -qam 'edit {word}'"), "description": "Commit"}),
            ),
            _ => Step::Text(format!("edited {word}: {}", results.join(" | "))),
        };
    }
    if let Some(rest) = first.split("SHAPE ").nth(1) {
        return shape(body, rest, &results);
    }
    if first.contains("PUSH") {
        return push(body);
    }
    if first.contains("SAFE") {
        return match results.last() {
            Some(r) => Step::Text(format!("tool said: {r}")),
            None => Step::Tool("Bash", json!({"command": "echo safe-ran", "description": "Print a line"})),
        };
    }
    if first.contains("GATE") {
        return match results.last() {
            Some(r) => Step::Text(format!("tool said: {r}")),
            None => Step::Tool("mcp__smith__send_message", json!({"to_agent": "nobody", "body": "hello"})),
        };
    }
    if first.contains("ASK") {
        return match results.last() {
            Some(r) => Step::Text(format!("heard: {r}")),
            None => Step::Tool("mcp__smith__ask_human", json!({"question": "What colour?"})),
        };
    }
    if first.contains("STALL") {
        return Step::Stall;
    }
    if first.contains("OVERSPEND") {
        return Step::Slow(5000);
    }
    if first.contains("SLOW") {
        return Step::Slow(25);
    }
    if body["messages"].to_string().contains("RECALL") {
        let history = body["messages"].to_string();
        let word: Option<String> =
            history.split("REMEMBER ").nth(1).map(|w| w.chars().take_while(|c| c.is_alphanumeric()).collect());
        return Step::Text(match word {
            Some(w) => format!("you said {w}"),
            None => "no memory".to_string(),
        });
    }
    Step::Text("Hello from the mock.".into())
}

/// The `PUSH` script: the push before a person decided (which the platform holds), and once
/// more after the platform's note of the decision, then the result.
fn push(body: &Value) -> Step {
    let call = || Step::Tool("Bash", json!({"command": "git push origin x", "description": "Push"}));
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let Some(noted) = msgs.iter().position(|m| m["content"].to_string().contains("[MisterSmith]")) else {
        return call();
    };
    let after: Vec<String> = msgs[noted..]
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["content"].to_string())
        .collect();
    match after.last() {
        // a result in the note's own message is the interrupted call's
        Some(r) if !msgs[noted]["content"].to_string().contains(r.as_str()) || after.len() > 1 => {
            Step::Text(format!("after the decision: {r}"))
        }
        _ => call(),
    }
}

/// The structured output the `SHAPE` marker asks for.
pub const SHAPE_GOOD: &str = r#"{"title":"ok","count":3}"#;

fn shape(body: &Value, mode: &str, results: &[String]) -> Step {
    let offered = body["tools"].as_array().into_iter().flatten().any(|t| t["name"] == "StructuredOutput");
    let corrected = last_user_text(body).contains("does not match the JSON Schema");
    let good = mode.starts_with("good") || (mode.starts_with("fix") && corrected);
    let last_is_result = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["content"].as_array().into_iter().flatten().any(|b| b["type"] == "tool_result"));
    match (good, offered) {
        (true, true) if !last_is_result || results.is_empty() => {
            Step::Tool("StructuredOutput", serde_json::from_str(SHAPE_GOOD).unwrap())
        }
        (true, true) => Step::Text("done".into()),
        (true, false) => Step::Text(SHAPE_GOOD.into()),
        (false, _) => Step::Text(r#"{"title":5}"#.into()),
    }
}

/// The text of the conversation's latest user message that has text (not tool results only).
fn last_user_text(body: &Value) -> String {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    for m in msgs.iter().rev().filter(|m| m["role"] == "user") {
        let text = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        if !text.trim().is_empty() {
            return text;
        }
    }
    String::new()
}

/// Tool names as the caller offered them: Claude Code prefixes MCP tools with `mcp__smith__`,
/// the HTTP executors offer the platform's tools by their own names.
fn offered_name(body: &Value, name: &str) -> String {
    let bare = name.trim_start_matches("mcp__smith__");
    let tools: Vec<String> =
        body["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(String::from)).collect();
    if tools.iter().any(|t| t == bare) {
        bare.to_string()
    } else {
        format!("mcp__smith__{bare}")
    }
}

fn frame(event: &str, data: Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

async fn messages(State(state): State<Arc<MockState>>, Json(body): Json<Value>) -> Response {
    state.requests.lock().unwrap().push(body.clone());
    if state.failing.load(Ordering::SeqCst) {
        state.failures.fetch_add(1, Ordering::SeqCst);
        let err = json!({"type": "error", "error": {"type": "api_error", "message": "mock outage"}});
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(err)).into_response();
    }
    let first = first_user(&body);
    if first.contains("LIMIT") {
        let mut limited = state.limited.lock().unwrap();
        if let std::collections::hash_map::Entry::Vacant(e) = limited.entry(first) {
            e.insert(std::time::Instant::now());
            let err = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "usage limit reached"}});
            return (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")], Json(err)).into_response();
        }
    }
    let model = body["model"].as_str().unwrap_or("claude-mock").to_string();
    let step = script(&body);
    if body["stream"] != true {
        let text = match &step {
            Step::Text(t) => t.clone(),
            _ => "ok".into(),
        };
        return Json(json!({
            "id": "msg_plain", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }))
        .into_response();
    }
    let input_tokens = match step {
        Step::Slow(n) => n,
        _ => 25,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    tokio::spawn(async move {
        let start = json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}});
        if tx.send(Ok(frame("message_start", start))).await.is_err() {
            return;
        }
        // a paced step streams its text block first: the step's own block comes next
        let (index, step) = match step {
            Step::Paced(ticks, then) => {
                let start =
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
                let _ = tx.send(Ok(frame("content_block_start", start))).await;
                for i in 0..ticks {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let d = json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": format!("tick {i} ")}});
                    if tx.send(Ok(frame("content_block_delta", d))).await.is_err() {
                        state.disconnected.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                let _ =
                    tx.send(Ok(frame("content_block_stop", json!({"type": "content_block_stop", "index": 0})))).await;
                (1, *then)
            }
            step => (0, step),
        };
        let (block, deltas, stop): (Value, Vec<Value>, &str) = match step {
            Step::Stall => {
                // hold the connection open, sending nothing, until the client goes away
                tx.closed().await;
                return;
            }
            Step::Slow(_) => {
                let block = json!({"type": "text", "text": ""});
                let start = json!({"type": "content_block_start", "index": 0, "content_block": block});
                let _ = tx.send(Ok(frame("content_block_start", start))).await;
                for i in 0..600 {
                    let d = json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": format!("tick {i} ")}});
                    if tx.send(Ok(frame("content_block_delta", d))).await.is_err() {
                        state.disconnected.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    state.streaming.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (block, vec![], "end_turn")
            }
            Step::Text(t) => {
                let words: Vec<Value> =
                    t.split_inclusive(' ').map(|w| json!({"type": "text_delta", "text": w})).collect();
                (json!({"type": "text", "text": ""}), words, "end_turn")
            }
            Step::Paced(..) => unreachable!("a paced step's own step is never paced"),
            Step::Tool(name, input) => (
                json!({"type": "tool_use", "id": format!("toolu_{}", uuid::Uuid::now_v7().simple()),
                    "name": offered_name(&body, name), "input": {}}),
                vec![json!({"type": "input_json_delta", "partial_json": input.to_string()})],
                "tool_use",
            ),
        };
        let mut frames = vec![];
        if !deltas.is_empty() || block["type"] == "tool_use" {
            frames.push(frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": block}),
            ));
            for d in deltas {
                frames.push(frame(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": d}),
                ));
            }
        }
        frames.push(frame("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        frames.push(frame(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": 12}}),
        ));
        frames.push(frame("message_stop", json!({"type": "message_stop"})));
        for f in frames {
            if tx.send(Ok(f)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("request-id", "req_mock")
        .body(Body::from_stream(stream))
        .unwrap()
}

//! A small MCP client for the platform's endpoint: JSON-RPC 2.0 over streamable HTTP.
//!
//! Each request is one POST; the answer is either a JSON body or an event stream whose first
//! message with the request's id is the answer. The session id the server hands out at
//! `initialize` goes back on every later request, as does the negotiated protocol version.

use super::{excerpt, ToolOutcome, ToolSpec, MAX_EVENT};
use crate::McpAccess;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::{json, Value};
use smith_core::sse::SseParser;
use std::time::Duration;

const PROTOCOL_VERSION: &str = "2025-06-18";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// Largest answer read from the endpoint.
const MAX_BODY: usize = MAX_EVENT;
/// Pages of `tools/list` followed at most.
const MAX_PAGES: usize = 20;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stateless endpoint's tool list is reused without asking again.
const TOOLS_TTL: Duration = Duration::from_secs(60);

/// Tool lists of endpoints that keep no session (the platform's own), by URL, with the
/// protocol version they negotiated: thousands of agents starting at once share one list
/// instead of each holding its own copy and each paying a handshake.
type Listed = (std::time::Instant, std::sync::Arc<Vec<ToolSpec>>, HeaderValue);
static STATELESS: std::sync::Mutex<Option<std::collections::HashMap<String, Listed>>> = std::sync::Mutex::new(None);

fn cached(url: &str) -> Option<(std::sync::Arc<Vec<ToolSpec>>, HeaderValue)> {
    let cache = STATELESS.lock().expect("tool cache lock");
    let (at, tools, version) = cache.as_ref()?.get(url)?;
    (at.elapsed() < TOOLS_TTL).then(|| (tools.clone(), version.clone()))
}

pub(super) struct McpSession {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    next_id: u64,
}

impl McpSession {
    /// Initializes a session and lists its tools (an endpoint that keeps no sessions is asked
    /// once a minute, however many agents open it).
    pub(super) async fn open(
        client: &reqwest::Client,
        access: &McpAccess,
    ) -> Result<(Self, std::sync::Arc<Vec<ToolSpec>>), String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &access.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
            let value = HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
            headers.append(name, value);
        }
        let mut session = McpSession { client: client.clone(), url: access.url.clone(), headers, next_id: 1 };
        if let Some((tools, version)) = cached(&access.url) {
            session.headers.insert(VERSION_HEADER, version);
            return Ok((session, tools));
        }
        let init = session
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "mistersmith", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        let version = init.get("protocolVersion").and_then(Value::as_str).unwrap_or(PROTOCOL_VERSION);
        if let Ok(v) = HeaderValue::from_str(version) {
            session.headers.insert(VERSION_HEADER, v);
        }
        session.notify("notifications/initialized").await?;

        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({"cursor": c}));
            let page = session.request("tools/list", params).await?;
            for tool in page.get("tools").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = tool.get("name").and_then(Value::as_str) else { continue };
                let schema = tool.get("inputSchema").filter(|s| s.is_object());
                tools.push(ToolSpec {
                    name: name.to_string(),
                    description: tool.get("description").and_then(Value::as_str).map(String::from),
                    input_schema: schema.cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
            }
            cursor = page.get("nextCursor").and_then(Value::as_str).map(String::from);
            if cursor.is_none() {
                break;
            }
        }
        let tools = std::sync::Arc::new(tools);
        if let (false, Some(version)) =
            (session.headers.contains_key(SESSION_HEADER), session.headers.get(VERSION_HEADER))
        {
            let entry = (std::time::Instant::now(), tools.clone(), version.clone());
            STATELESS
                .lock()
                .expect("tool cache lock")
                .get_or_insert_with(Default::default)
                .insert(access.url.clone(), entry);
        }
        Ok((session, tools))
    }

    /// Calls a tool. A failed call is an error result for the model, not a failed attempt.
    pub(super) async fn call(&mut self, name: &str, input: &Value) -> ToolOutcome {
        let result = match self.request("tools/call", json!({"name": name, "arguments": input})).await {
            Ok(result) => result,
            Err(e) => return ToolOutcome::error(format!("the tool call failed: {e}")),
        };
        let mut parts = Vec::new();
        for item in result.get("content").and_then(Value::as_array).into_iter().flatten() {
            match item.get("text").and_then(Value::as_str) {
                Some(text) if item.get("type").and_then(Value::as_str) == Some("text") => parts.push(text.to_string()),
                _ => parts.push(item.to_string()),
            }
        }
        if parts.is_empty() {
            if let Some(structured) = result.get("structuredContent") {
                parts.push(structured.to_string());
            }
        }
        ToolOutcome {
            content: parts.join("\n"),
            is_error: result.get("isError").and_then(Value::as_bool) == Some(true),
        }
    }

    /// Ends the session on the server, if it keeps one; best effort.
    pub(super) async fn close(self) {
        if !self.headers.contains_key(SESSION_HEADER) {
            return;
        }
        let delete = self.client.delete(&self.url).headers(self.headers).send();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, delete).await;
    }

    async fn post(&self, message: &Value) -> Result<reqwest::Response, String> {
        self.client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(message.to_string())
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {}", super::redact(&self.url), e.without_url()))
    }

    async fn notify(&self, method: &str) -> Result<(), String> {
        let response = self.post(&json!({"jsonrpc": "2.0", "method": method})).await?;
        if !response.status().is_success() {
            return Err(format!("{method}: HTTP {}", response.status().as_u16()));
        }
        Ok(())
    }

    /// Sends a request and returns its `result`.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut response = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        if let Some(session) = response.headers().get(SESSION_HEADER) {
            self.headers.insert(SESSION_HEADER, session.clone());
        }
        let status = response.status();
        let is_stream = super::http::content_type_is(response.headers(), "text/event-stream");
        let message = if status.is_success() && is_stream {
            answer_in_stream(&mut response, id).await.map_err(|e| format!("{method}: {e}"))?
        } else {
            let body = read_body(&mut response).await.map_err(|e| format!("{method}: {e}"))?;
            if !status.is_success() {
                let body = String::from_utf8_lossy(&body);
                return Err(format!("{method}: HTTP {}: {}", status.as_u16(), excerpt(body.trim(), 200)));
            }
            serde_json::from_slice::<Value>(&body).map_err(|e| format!("{method}: the answer is not JSON: {e}"))?
        };
        if let Some(error) = message.get("error") {
            let text = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), String::from);
            return Err(format!("{method}: {}", excerpt(&text, 500)));
        }
        message.get("result").cloned().ok_or_else(|| format!("{method}: the answer has no result"))
    }
}

async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(bytes) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + bytes.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&bytes);
    }
    Ok(body)
}

/// The JSON-RPC answer with `id` from an event stream; other messages are skipped.
async fn answer_in_stream(response: &mut reqwest::Response, id: u64) -> Result<Value, String> {
    let mut parser = SseParser::new(MAX_BODY);
    loop {
        while let Some(event) = parser.next_event().map_err(|e| e.to_string())? {
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else { continue };
            let answers = message.get("id").and_then(Value::as_u64) == Some(id);
            if answers && (message.get("result").is_some() || message.get("error").is_some()) {
                return Ok(message);
            }
        }
        match response.chunk().await.map_err(|e| e.to_string())? {
            Some(bytes) => parser.push(&bytes),
            None => return Err("the event stream ended without an answer".into()),
        }
    }
}

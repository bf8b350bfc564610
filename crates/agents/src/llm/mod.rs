//! The HTTP LLM executors: `anthropic` (the Messages API) and `openai` (Chat Completions, or
//! any server that speaks it), both streamed.
//!
//! One attempt is a conversation of up to [`MAX_ROUNDS`] requests: each streams text deltas
//! out as `output` events and reports cumulative usage as it arrives; when the model asks for
//! tools, they are called on the platform's MCP endpoint (`tool_use` / `tool_result` events)
//! and the answers go back in the next request. Every request is retried inside the attempt
//! on 429, 5xx, connection errors and stalls as long as it has produced no output; a request
//! the provider refuses for good is not retried at all.
//!
//! An executor holds one HTTP client, so its requests share a connection pool; a running
//! request holds only its parser's buffer, its text so far and the conversation.

/// Defines an executor on one provider's API: it holds one pooled HTTP client (which its
/// [`Api::client`] returns) and runs every attempt through [`drive`].
macro_rules! http_executor {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            client: reqwest::Client,
        }

        impl $name {
            pub fn new() -> Self {
                $name { client: super::http_client() }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        #[async_trait::async_trait]
        impl $crate::Executor for $name {
            async fn run(&self, ctx: $crate::RunContext) -> $crate::RunResult {
                super::drive(self, ctx).await
            }
        }
    };
}

mod anthropic;
mod http;
mod mcp;
mod openai;
mod person;
mod pricing;
use smith_core::sse;

pub use anthropic::Anthropic;
pub use openai::OpenAi;
pub use pricing::builtin_pricing;

use crate::{input_text, Failure, RunContext, RunResult, SessionContext, Success};
use bytes::Bytes;
use serde_json::{json, Value};
use smith_core::{AgentDef, EventKind, Pricing, Usage};
use std::time::Duration;

/// Error code of an agent definition these executors cannot run (no model, no API key).
pub const MISCONFIGURED: &str = "misconfigured";
/// Error code of a provider stream that could not be parsed.
pub const BAD_STREAM: &str = "bad_stream";
/// Error code of a conversation that used up its rounds of tool use without a final answer.
pub const MAX_TURNS: &str = "max_turns";
/// Requests in one attempt: the first plus one per round of tool use.
pub const MAX_ROUNDS: usize = 25;

/// Largest single server-sent event accepted from a provider or the MCP endpoint.
const MAX_EVENT: usize = 4 << 20;
/// Largest total event data accepted in one response (text, tool input, everything).
const MAX_RESPONSE: usize = 16 << 20;
/// Longest tool result passed back to the model (the rest is cut, with a note).
const MAX_TOOL_RESULT: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening the MCP session and listing its tools may take before the attempt runs
/// without tools.
const MCP_SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One provider's wire format. Implemented by the executors themselves.
trait Api: Send + Sync + 'static {
    type Round: Round;
    /// The provider, as error messages name it.
    const NAME: &'static str;
    const KEY_ENV: &'static str;
    const BASE_ENV: &'static str;
    const DEFAULT_BASE: &'static str;
    /// The endpoint under `{base}/v1/`.
    const PATH: &'static str;

    fn client(&self) -> &reqwest::Client;
    fn body(cfg: &Config, messages: &[Value], tools: &[ToolSpec]) -> Vec<u8>;
    fn authorize(req: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder;
    /// The messages that carry tool results back to the model.
    fn tool_results(results: &[(ToolCall, ToolOutcome)]) -> Vec<Value>;
}

/// The state of one streamed response.
trait Round: Default + Send {
    fn on_event(&mut self, event: &sse::SseEvent) -> Result<Step, StreamError>;
    /// The provider's end marker arrived.
    fn is_done(&self) -> bool;
    /// The response's usage so far.
    fn tokens(&self) -> Tokens;
    fn into_reply(self) -> Reply;
}

/// What one event added.
#[derive(Debug, Default, PartialEq)]
struct Step {
    text: Option<String>,
    usage: bool,
}

#[derive(Debug, PartialEq)]
enum StreamError {
    /// The provider reported an error in the stream.
    Provider(String),
    /// The event is not what the provider's format says.
    Malformed(String),
}

/// A finished response.
#[derive(Debug, Default)]
struct Reply {
    /// The assistant message for the conversation (None when it said nothing).
    assistant: Option<Value>,
    /// Tools to call before the next request; empty for a final answer.
    tool_calls: Vec<ToolCall>,
    stop_reason: Option<String>,
    model: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct ToolCall {
    id: String,
    name: String,
    /// The input, or why it is not a JSON value (the model's raw text is kept for the event).
    input: Result<Value, (String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct ToolOutcome {
    content: String,
    is_error: bool,
}

impl ToolOutcome {
    fn error(content: impl Into<String>) -> Self {
        ToolOutcome { content: content.into(), is_error: true }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
struct ToolSpec {
    name: String,
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tokens {
    input: u64,
    output: u64,
}

/// Usage of the attempt: finished requests plus the one streaming now.
struct Meter {
    pricing: Option<Pricing>,
    done: Tokens,
    current: Tokens,
}

impl Meter {
    fn usage(&self) -> Usage {
        let input_tokens = self.done.input + self.current.input;
        let output_tokens = self.done.output + self.current.output;
        let cost_usd = self.pricing.map_or(0.0, |p| p.cost(input_tokens, output_tokens));
        Usage { input_tokens, output_tokens, cost_usd }
    }

    /// The current request is over (answered or failed): its tokens count from now on.
    fn commit(&mut self) {
        self.done.input += self.current.input;
        self.done.output += self.current.output;
        self.current = Tokens::default();
    }
}

/// What a request needs from the agent definition.
struct Config {
    model: String,
    system: Option<String>,
    url: String,
    /// `url` as errors show it (credentials hidden).
    shown_url: String,
    key: String,
    max_tokens: u32,
    pricing: Option<Pricing>,
    stall: Option<Duration>,
    /// The JSON Schema the provider is asked to answer in (its structured output).
    output_schema: Option<Value>,
}

impl Config {
    fn resolve<A: Api>(def: &AgentDef) -> Result<Config, Failure> {
        let misconfigured = |m: String| Failure::new(MISCONFIGURED, format!("agent {:?}: {m}", def.name), false);
        let model = match def.model.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => return Err(misconfigured(format!("executor {:?} needs `model`", def.executor.as_str()))),
        };
        let key = match (&def.api_key, &def.api_key_env) {
            (Some(secret), _) if !secret.0.trim().is_empty() => secret.0.trim().to_string(),
            (_, Some(var)) => {
                env_value(var).ok_or_else(|| misconfigured(format!("the API key variable {var} is not set")))?
            }
            _ => env_value(A::KEY_ENV)
                .ok_or_else(|| misconfigured(format!("no API key: set `api_key`, `api_key_env` or {}", A::KEY_ENV)))?,
        };
        let base = def.base_url.clone().or_else(|| env_value(A::BASE_ENV)).unwrap_or_else(|| A::DEFAULT_BASE.into());
        let base = base.trim().trim_end_matches('/');
        // OpenAI's SDKs take a base URL that already ends in /v1; accept both spellings.
        let url = if base.ends_with("/v1") { format!("{base}/{}", A::PATH) } else { format!("{base}/v1/{}", A::PATH) };
        if reqwest::header::HeaderValue::from_str(&key).is_err() {
            return Err(misconfigured("the API key has characters an HTTP header cannot carry".into()));
        }
        let pricing = def.pricing.or_else(|| builtin_pricing(&model));
        Ok(Config {
            model,
            system: def.system_prompt.clone().filter(|s| !s.is_empty()),
            shown_url: redact(&url),
            url,
            key,
            max_tokens: def.max_output_tokens,
            pricing,
            stall: def.stall_timeout,
            output_schema: None,
        })
    }
}

fn env_value(var: &str) -> Option<String> {
    std::env::var(var).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The shared client of one executor: pooled connections, rustls, a connect timeout (the
/// agent's stall timeout bounds everything after that).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .user_agent(concat!("mistersmith/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds")
}

/// `url` with anything between `://` and the last `@` of its authority hidden.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Emits an event; fails when the attempt is cancelled meanwhile or nobody listens any more.
async fn send(ctx: &RunContext, kind: EventKind, data: Value) -> Result<(), Failure> {
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(cancelled()),
        sent = ctx.events.emit(kind, data) => if sent { Ok(()) } else { Err(unheard()) },
    }
}

fn cancelled() -> Failure {
    Failure::new("cancelled", "stopped", false)
}

/// The worker stopped listening (the attempt lost its lease): stop like a cancel.
fn unheard() -> Failure {
    Failure::new("cancelled", "stopped: nobody receives the attempt's events any more", false)
}

/// The first `max` bytes of `s` (on a char boundary), marked when cut.
fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The conversation an attempt starts from: the session's earlier turns, then this input.
///
/// A turn whose result carries `messages` (a turn of these executors) replaces everything
/// before it; any other turn adds its input and its `text` (or, for a turn with structured
/// output, its result's JSON) as a user/assistant pair. The
/// input is a user message: a JSON string as its text, `{"messages": [...]}` as messages in
/// the provider's own format, anything else as its JSON text.
fn conversation(session: Option<&SessionContext>, input: &Value) -> Vec<Value> {
    let mut messages = Vec::new();
    for turn in session.map(|s| s.turns.as_slice()).unwrap_or_default() {
        if let Some(history) = turn.result.get("messages").and_then(message_list) {
            messages = history;
            continue;
        }
        // a turn with structured output has the parsed object as its result: its JSON is the reply
        let reply = match turn.result.get("text").and_then(Value::as_str) {
            Some(text) => text.to_string(),
            None if turn.result.is_object() || turn.result.is_array() => turn.result.to_string(),
            None => continue,
        };
        messages.extend(user_messages(&turn.input));
        if !reply.is_empty() {
            messages.push(json!({"role": "assistant", "content": reply}));
        }
    }
    messages.extend(user_messages(input));
    messages
}

fn user_messages(input: &Value) -> Vec<Value> {
    if let Some(list) = input.get("messages").and_then(message_list) {
        return list;
    }
    vec![json!({"role": "user", "content": input_text(input)})]
}

/// A list of messages, each an object with a role; anything else is not one.
fn message_list(v: &Value) -> Option<Vec<Value>> {
    let list = v.as_array()?;
    let ok = !list.is_empty() && list.iter().all(|m| m.get("role").is_some_and(Value::is_string));
    ok.then(|| list.clone())
}

/// Runs one attempt of an HTTP LLM agent.
#[tracing::instrument(skip_all, fields(task_id = %ctx.task.id, agent = %ctx.def.name, provider = A::NAME))]
async fn drive<A: Api>(api: &A, ctx: RunContext) -> RunResult {
    let mut cfg = Config::resolve::<A>(&ctx.def)?;
    cfg.output_schema = ctx.native_output_schema().cloned();
    let mut meter = Meter { pricing: cfg.pricing, done: Tokens::default(), current: Tokens::default() };
    let mut tools: std::sync::Arc<Vec<ToolSpec>> = Default::default();
    let mut session = None;
    if let Some(access) = &ctx.mcp {
        let open = tokio::time::timeout(MCP_SETUP_TIMEOUT, mcp::McpSession::open(api.client(), access));
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(cancelled()),
            opened = open => match opened {
                Ok(Ok((s, listed))) => {
                    session = Some(s);
                    tools = listed;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "running without platform tools: the MCP endpoint failed"),
                Err(_) => tracing::warn!("running without platform tools: the MCP endpoint did not answer in time"),
            },
        }
    }
    let result = converse(api, &cfg, &ctx, &tools, session.as_mut(), &mut meter).await;
    if let Some(s) = session {
        if !ctx.cancel.is_cancelled() {
            s.close().await;
        }
    }
    result.map_err(|f| if f.usage.is_zero() { f.with_usage(meter.usage()) } else { f })
}

/// The request/tool loop of one attempt.
async fn converse<A: Api>(
    api: &A,
    cfg: &Config,
    ctx: &RunContext,
    tools: &[ToolSpec],
    mut session: Option<&mut mcp::McpSession>,
    meter: &mut Meter,
) -> RunResult {
    // a task that waited for a person carries on exactly where it asked
    let mut resumed = person::resumed(ctx);
    let (mut messages, mut text) = match &resumed {
        Some((parked, _)) => (parked.messages.clone(), parked.text.clone()),
        None => (conversation(ctx.session.as_ref(), &ctx.task.input), String::new()),
    };
    let mut model = None;
    for _ in 0..MAX_ROUNDS {
        let (calls, mut results, mut answer) = match resumed.take() {
            Some((parked, answer)) => {
                let (calls, done) = parked.round();
                (calls, done, Some(answer))
            }
            None => {
                let body = Bytes::from(A::body(cfg, &messages, tools));
                let reply = http::exchange(api, cfg, body, ctx, meter, &mut text).await?;
                model = reply.model.or(model);
                messages.extend(reply.assistant);
                if reply.tool_calls.is_empty() {
                    let usage = meter.usage();
                    let result = json!({
                        "text": text,
                        "model": model.unwrap_or_else(|| cfg.model.clone()),
                        "stop_reason": reply.stop_reason,
                        "usage": usage,
                        "messages": messages,
                    });
                    return Ok(Success { result, usage });
                }
                (reply.tool_calls, Vec::with_capacity(4), None)
            }
        };
        for call in calls.iter().skip(results.len()) {
            let then = match answer.take() {
                // the call the previous attempt asked about: its event was sent then
                Some(a) => person::asks(ctx, call).map(|kind| person::answered(kind, call, &a)),
                None => {
                    let shown = match &call.input {
                        Ok(v) => v.clone(),
                        Err((raw, _)) => Value::String(raw.clone()),
                    };
                    send(ctx, EventKind::ToolUse, json!({"id": call.id, "name": call.name, "input": shown})).await?;
                    match (person::asks(ctx, call), session.as_deref_mut()) {
                        (Some(kind), Some(s)) => {
                            let parked = person::Parked::new(&messages, &text, &calls, &results);
                            let (tool, args) = person::request(kind, call, &parked);
                            let out = tokio::select! {
                                biased;
                                _ = ctx.cancel.cancelled() => return Err(cancelled()),
                                out = s.call(&tool, &args) => out,
                            };
                            Some(person::reply(kind, call, out))
                        }
                        _ => None,
                    }
                }
            };
            let outcome = match (then, &call.input, session.as_deref_mut()) {
                (Some(person::Then::Wait), _, _) => return Err(person::wait_for_stop(ctx).await),
                (Some(person::Then::Outcome(o)), _, _) => o,
                (_, Err((_, why)), _) => ToolOutcome::error(format!("the tool input is not valid JSON: {why}")),
                (_, Ok(_), None) => ToolOutcome::error("no tools are available in this run"),
                (then, Ok(input), Some(s)) => {
                    let input = match then {
                        Some(person::Then::Run(edited)) => edited,
                        _ => input.clone(),
                    };
                    tokio::select! {
                        biased;
                        _ = ctx.cancel.cancelled() => return Err(cancelled()),
                        outcome = s.call(&call.name, &input) => outcome,
                    }
                }
            };
            let outcome = ToolOutcome { content: cut_tool_result(outcome.content), is_error: outcome.is_error };
            let event = json!({"tool_use_id": call.id, "content": outcome.content, "is_error": outcome.is_error});
            send(ctx, EventKind::ToolResult, event).await?;
            results.push((call.clone(), outcome));
        }
        messages.extend(A::tool_results(&results));
    }
    Err(Failure::new(MAX_TURNS, format!("no final answer after {MAX_ROUNDS} requests of tool use"), false))
}

fn cut_tool_result(content: String) -> String {
    if content.len() <= MAX_TOOL_RESULT {
        return content;
    }
    format!("{} [cut: the tool result was {} bytes]", excerpt(&content, MAX_TOOL_RESULT), content.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Turn;

    #[test]
    fn the_conversation_replays_the_session_then_adds_the_input() {
        let turn = |input: Value, result: Value| Turn { input, result };
        let session = SessionContext {
            id: "s".into(),
            turns: vec![
                turn(json!("first"), json!({"text": "one"})),
                turn(json!({"q": 2}), json!({"text": "two"})),
                turn(json!("failed turn"), Value::Null),
                turn(json!("shaped"), json!({"title": "x"})),
            ],
        };
        assert_eq!(
            conversation(Some(&session), &json!("third")),
            vec![
                json!({"role": "user", "content": "first"}),
                json!({"role": "assistant", "content": "one"}),
                json!({"role": "user", "content": "{\"q\":2}"}),
                json!({"role": "assistant", "content": "two"}),
                json!({"role": "user", "content": "shaped"}),
                json!({"role": "assistant", "content": "{\"title\":\"x\"}"}),
                json!({"role": "user", "content": "third"}),
            ]
        );

        let history = json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]);
        let session = SessionContext {
            id: "s".into(),
            turns: vec![
                turn(json!("old"), json!({"text": "ignored"})),
                turn(json!("a"), json!({"text": "b", "messages": history})),
            ],
        };
        let own = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "c"}]}]});
        let got = conversation(Some(&session), &own);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], own["messages"][0]);

        assert_eq!(conversation(None, &json!(7)), vec![json!({"role": "user", "content": "7"})]);
        assert_eq!(
            conversation(None, &json!({"messages": "nope"})),
            vec![json!({"role": "user", "content": "{\"messages\":\"nope\"}"})]
        );
    }

    #[test]
    fn urls_in_errors_hide_credentials() {
        assert_eq!(redact("https://u:p@llm.example/v1/messages"), "https://***@llm.example/v1/messages");
        assert_eq!(redact("http://h:1/v1?k=a@b"), "http://h:1/v1?k=a@b");
        assert_eq!(redact("no scheme"), "no scheme");
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("ééé", 3), "é…");
    }

    #[test]
    fn usage_accumulates_over_requests_and_prices_the_total() {
        let mut m = Meter {
            pricing: Some(Pricing { input_per_mtok: 3.0, output_per_mtok: 15.0 }),
            done: Tokens::default(),
            current: Tokens { input: 1_000_000, output: 0 },
        };
        m.commit();
        m.current = Tokens { input: 0, output: 1_000_000 };
        assert_eq!(m.usage(), Usage { input_tokens: 1_000_000, output_tokens: 1_000_000, cost_usd: 18.0 });
    }
}

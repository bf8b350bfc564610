//! The `anthropic` and `openai` executors against mock provider APIs and a mock MCP endpoint
//! served in-process: streaming, usage, sessions, tool use, retries, failures and cancel.
//!
//! Every case runs for both providers (`both!`); the mocks answer with the event shapes the
//! real APIs stream.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use smith_agents::llm::{Anthropic, OpenAi, BAD_STREAM, MAX_ROUNDS, MAX_TURNS, MISCONFIGURED};
use smith_agents::{
    Emitter, Executor, Failure, McpAccess, RunContext, RunResult, SessionContext, Turn, PROVIDER_ERROR,
    PROVIDER_UNAVAILABLE, TASK_HEADER,
};
use smith_core::{AgentDef, EventDraft, EventKind, ExecutorKind, Secret, Task, Usage};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq)]
enum P {
    Anthropic,
    OpenAi,
}

// ---------------------------------------------------------------------------------------------
// Mock provider and MCP endpoint
// ---------------------------------------------------------------------------------------------

/// What the body does after its chunks.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// The body ends.
    Close,
    /// The body stays open and silent.
    Silent,
    /// The body stays open with an SSE comment every 50 ms until the client goes away.
    Ping,
}

#[derive(Clone)]
enum Reply {
    /// `200 text/event-stream`, these chunks each written on its own.
    Sse(Vec<String>, End),
    Status(u16, Vec<(&'static str, String)>, String),
}

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Value,
    at: Instant,
}

struct MockState {
    /// Request n gets reply n; the last one repeats.
    replies: Vec<Reply>,
    requests: Mutex<Vec<Seen>>,
    mcp: Mutex<Vec<Seen>>,
    /// Fires when a `Ping` body notices its client has gone.
    closed: Notify,
}

struct Mock {
    base: String,
    state: Arc<MockState>,
}

impl Mock {
    async fn start(replies: Vec<Reply>) -> Mock {
        let state = Arc::new(MockState {
            replies,
            requests: Mutex::new(Vec::new()),
            mcp: Mutex::new(Vec::new()),
            closed: Notify::new(),
        });
        let app = Router::new()
            .route("/v1/messages", post(api))
            .route("/v1/chat/completions", post(api))
            .route("/mcp", post(mcp).delete(mcp_delete))
            .route("/mcp-broken", post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "mcp is down") }))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { base, state }
    }

    fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().unwrap().clone()
    }

    fn mcp_calls(&self) -> Vec<Seen> {
        self.state.mcp.lock().unwrap().clone()
    }

    fn access(&self, path: &str) -> McpAccess {
        McpAccess { url: format!("{}{path}", self.base), headers: vec![(TASK_HEADER.into(), "task-7".into())] }
    }
}

fn seen(headers: HeaderMap, body: &Bytes) -> Seen {
    Seen { headers, body: serde_json::from_slice(body).unwrap_or(Value::Null), at: Instant::now() }
}

async fn api(State(s): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut requests = s.requests.lock().unwrap();
        requests.push(seen(headers, &body));
        requests.len() - 1
    };
    let reply = s.replies[n.min(s.replies.len() - 1)].clone();
    match reply {
        Reply::Status(code, headers, body) => {
            let mut r = Response::builder().status(code).header("content-type", "application/json");
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.body(Body::from(body)).unwrap()
        }
        Reply::Sse(chunks, end) => {
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            let state = s.clone();
            tokio::spawn(async move {
                for c in chunks {
                    if tx.send(Bytes::from(c)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                match end {
                    End::Close => {}
                    End::Silent => tx.closed().await,
                    End::Ping => loop {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                            state.closed.notify_one();
                            return;
                        }
                    },
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

const SESSION: &str = "sess-42";

/// A streamable-HTTP MCP server with one tool, `weather`. `tools/list` answers as an event
/// stream, everything else as JSON; calls need the session id handed out at `initialize`.
async fn mcp(State(s): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = seen(headers.clone(), &body);
    s.mcp.lock().unwrap().push(request.clone());
    let id = request.body["id"].clone();
    let json =
        |v: Value| Response::builder().header("content-type", "application/json").body(Body::from(v.to_string()));
    let session_ok = headers.get("mcp-session-id").is_some_and(|v| v == SESSION);
    let response = match request.body["method"].as_str().unwrap_or_default() {
        "initialize" => Response::builder()
            .header("content-type", "application/json")
            .header("mcp-session-id", SESSION)
            .body(Body::from(
                json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {}}, "serverInfo": {"name": "mock", "version": "1"}}})
                .to_string(),
            )),
        _ if !session_ok => Response::builder().status(400).body(Body::from("no session")),
        "notifications/initialized" => Response::builder().status(202).body(Body::empty()),
        "tools/list" => {
            let tools = json!([{"name": "weather", "description": "The weather in a city",
                "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}});
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from(format!("event: message\ndata: {answer}\n\n")))
        }
        "tools/call" => {
            let city = request.body["params"]["arguments"]["city"].as_str().unwrap_or("nowhere").to_string();
            json(json!({"jsonrpc": "2.0", "id": id,
                "result": {"content": [{"type": "text", "text": format!("Sunny in {city}")}], "isError": false}}))
        }
        other => json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("no {other}")}})),
    };
    response.unwrap()
}

async fn mcp_delete(State(s): State<Arc<MockState>>, headers: HeaderMap) -> StatusCode {
    s.mcp.lock().unwrap().push(Seen { headers, body: json!({"method": "DELETE"}), at: Instant::now() });
    StatusCode::OK
}

// ---------------------------------------------------------------------------------------------
// Realistic streams
// ---------------------------------------------------------------------------------------------

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn data(data: Value) -> String {
    format!("data: {data}\n\n")
}

const CLAUDE: &str = "claude-sonnet-4-5-20250929";
const GPT: &str = "gpt-4o-mini-2024-07-18";

/// The start of a reply: everything before the first text delta.
fn head(p: P, input_tokens: u64) -> Vec<String> {
    match p {
        P::Anthropic => vec![
            sse(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
                    "model": CLAUDE, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            ),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            sse("ping", json!({"type": "ping"})),
        ],
        P::OpenAi => vec![data(chunk(json!({"role": "assistant", "content": "", "refusal": null}), None))],
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": GPT,
        "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null})
}

fn text_delta(p: P, text: &str) -> String {
    match p {
        P::Anthropic => sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        P::OpenAi => data(chunk(json!({"content": text}), None)),
    }
}

/// The end of a reply: stop reason, usage and the end marker.
fn tail(p: P, stop: &str, input_tokens: u64, output_tokens: u64) -> Vec<String> {
    match p {
        P::Anthropic => vec![
            sse("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            sse(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}}),
            ),
            sse("message_stop", json!({"type": "message_stop"})),
        ],
        P::OpenAi => vec![
            data(chunk(json!({}), Some(stop))),
            data(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": GPT,
                "choices": [], "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens}})),
            "data: [DONE]\n\n".to_string(),
        ],
    }
}

/// A complete text reply in these pieces.
fn text_reply(p: P, pieces: &[&str], input_tokens: u64, output_tokens: u64) -> Vec<String> {
    let mut out = head(p, input_tokens);
    out.extend(pieces.iter().map(|t| text_delta(p, t)));
    let stop = if p == P::Anthropic { "end_turn" } else { "stop" };
    out.extend(tail(p, stop, input_tokens, output_tokens));
    out
}

/// A reply that says `text`, then calls `weather` with its input in these JSON pieces.
fn tool_reply(p: P, text: &str, json_pieces: &[&str], input_tokens: u64, output_tokens: u64) -> Vec<String> {
    let mut out = head(p, input_tokens);
    out.push(text_delta(p, text));
    match p {
        P::Anthropic => {
            out.push(sse("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
            out.push(sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {}}}),
            ));
            for piece in json_pieces {
                out.push(sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            out.push(sse("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
            out.push(sse(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}}),
            ));
            out.push(sse("message_stop", json!({"type": "message_stop"})));
        }
        P::OpenAi => {
            out.push(data(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_01", "type": "function",
                    "function": {"name": "weather", "arguments": ""}}]}),
                None,
            )));
            for piece in json_pieces {
                out.push(data(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None)));
            }
            out.extend(tail(p, "tool_calls", input_tokens, output_tokens));
        }
    }
    out
}

/// The same bytes cut into pieces of `n`, with CRLF line ends: parsing must not care.
fn rechunk_crlf(chunks: &[String], n: usize) -> Vec<String> {
    let all = chunks.concat().replace('\n', "\r\n");
    all.as_bytes().chunks(n).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// Running an attempt
// ---------------------------------------------------------------------------------------------

fn def(p: P, base: &str) -> AgentDef {
    let (executor, model) = match p {
        P::Anthropic => (ExecutorKind::Anthropic, "claude-sonnet-4-5"),
        P::OpenAi => (ExecutorKind::Openai, "gpt-4o-mini"),
    };
    let mut d = AgentDef::new("llm", executor);
    d.model = Some(model.into());
    d.system_prompt = Some("Be brief.".into());
    d.base_url = Some(base.into());
    d.api_key = Some(Secret("test-key".into()));
    d.max_output_tokens = 333;
    d.stall_timeout = Some(Duration::from_secs(5));
    d
}

fn task(input: Value) -> Task {
    Task::first_attempt("llm", input)
}

fn executor(p: P) -> Arc<dyn Executor> {
    match p {
        P::Anthropic => Arc::new(Anthropic::new()),
        P::OpenAi => Arc::new(OpenAi::new()),
    }
}

fn context(d: AgentDef, input: Value, tx: mpsc::Sender<EventDraft>, cancel: CancellationToken) -> RunContext {
    RunContext::new(task(input), Arc::new(d), Emitter::new(tx), cancel)
}

struct Ran {
    result: RunResult,
    events: Vec<EventDraft>,
    took: Duration,
}

impl Ran {
    fn ok(&self) -> &Value {
        match &self.result {
            Ok(s) => &s.result,
            Err(f) => panic!("the attempt failed: {f:?}"),
        }
    }

    fn err(&self) -> &Failure {
        self.result.as_ref().expect_err("the attempt should fail")
    }

    fn text(&self) -> String {
        self.of(EventKind::Output).iter().map(|d| d.as_str().unwrap()).collect()
    }

    fn of(&self, kind: EventKind) -> Vec<Value> {
        self.events.iter().filter(|e| e.kind == kind).map(|e| e.data.clone()).collect()
    }

    fn last_usage(&self) -> Usage {
        serde_json::from_value(self.of(EventKind::Usage).pop().expect("a usage event")).unwrap()
    }
}

/// Runs one attempt to its end, collecting every event.
async fn run_with(p: P, d: AgentDef, input: Value, tweak: impl FnOnce(&mut RunContext)) -> Ran {
    let (tx, collector) = common::collect_events(16);
    let mut ctx = context(d, input, tx, CancellationToken::new());
    tweak(&mut ctx);
    let t0 = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), executor(p).run(ctx)).await.expect("attempt finished");
    let took = t0.elapsed();
    Ran { result, events: collector.await.unwrap(), took }
}

async fn run(p: P, d: AgentDef, input: Value) -> Ran {
    run_with(p, d, input, |_| {}).await
}

/// The conversation a request carried, without OpenAI's system message.
fn conversation(p: P, body: &Value) -> Vec<Value> {
    let all = body["messages"].as_array().unwrap().clone();
    match p {
        P::Anthropic => all,
        P::OpenAi => all.into_iter().filter(|m| m["role"] != "system").collect(),
    }
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// A streamed reply as the executor keeps it in the conversation (each API's own shape).
fn said(p: P, text: &str) -> Value {
    match p {
        P::Anthropic => json!({"role": "assistant", "content": [{"type": "text", "text": text}]}),
        P::OpenAi => assistant(text),
    }
}

/// Each case as one test per provider.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn anthropic() {
                super::$name(super::P::Anthropic).await
            }
            #[tokio::test]
            async fn openai() {
                super::$name(super::P::OpenAi).await
            }
        }
    )*};
}

both!(
    a_turn_streams_its_text_and_usage,
    a_session_turn_carries_the_earlier_exchange,
    tools_run_on_the_mcp_endpoint_and_their_results_go_back,
    a_broken_mcp_endpoint_means_no_tools_not_a_failure,
    endless_tool_use_stops_at_max_rounds,
    a_rate_limit_waits_for_retry_after,
    a_server_error_storm_is_provider_unavailable,
    a_refused_request_is_a_final_provider_error,
    a_stall_before_output_is_retried_then_fails,
    a_stall_after_output_fails_within_the_timeout,
    cancel_mid_stream_returns_at_once_and_closes_the_connection,
    a_malformed_data_line_is_bad_stream,
    a_stream_cut_before_its_end_is_retryable,
    an_error_event_mid_stream_is_provider_unavailable,
    missing_model_or_key_is_misconfigured,
);

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn a_turn_streams_its_text_and_usage(p: P) {
    let replies = rechunk_crlf(&text_reply(p, &["Hel", "lo, ", "wörld", "!"], 25, 10), 13);
    let mock = Mock::start(vec![Reply::Sse(replies, End::Close)]).await;
    let ran = run(p, def(p, &mock.base), json!("Say hello")).await;

    let result = ran.ok();
    assert_eq!(ran.text(), "Hello, wörld!");
    assert_eq!(result["text"], "Hello, wörld!");
    assert_eq!(result["model"], if p == P::Anthropic { CLAUDE } else { GPT });
    assert_eq!(result["stop_reason"], if p == P::Anthropic { "end_turn" } else { "stop" });
    let (input_price, output_price) = if p == P::Anthropic { (3.0, 15.0) } else { (0.15, 0.6) };
    let usage =
        Usage { input_tokens: 25, output_tokens: 10, cost_usd: (25.0 * input_price + 10.0 * output_price) / 1e6 };
    assert_eq!(ran.last_usage(), usage);
    assert_eq!(ran.result.as_ref().unwrap().usage, usage);
    assert_eq!(serde_json::from_value::<Usage>(result["usage"].clone()).unwrap(), usage);
    assert_eq!(result["messages"], json!([user("Say hello"), said(p, "Hello, wörld!")]));
    // Text deltas are events one by one, and usage comes as soon as it is known.
    assert_eq!(ran.of(EventKind::Output).len(), 4);
    if p == P::Anthropic {
        assert_eq!(ran.events[0].kind, EventKind::Usage, "input tokens are reported at message_start");
    }

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let (body, headers) = (&requests[0].body, &requests[0].headers);
    assert_eq!(body["model"], if p == P::Anthropic { "claude-sonnet-4-5" } else { "gpt-4o-mini" });
    assert_eq!(body["max_tokens"], 333);
    assert_eq!(body["stream"], true);
    assert!(body.get("tools").is_none(), "no tools without an MCP endpoint");
    assert_eq!(conversation(p, body), [user("Say hello")]);
    match p {
        P::Anthropic => {
            assert_eq!(body["system"], "Be brief.");
            assert_eq!(headers["x-api-key"], "test-key");
            assert_eq!(headers["anthropic-version"], "2023-06-01");
        }
        P::OpenAi => {
            assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be brief."}));
            assert_eq!(body["stream_options"], json!({"include_usage": true}));
            assert_eq!(headers["authorization"], "Bearer test-key");
        }
    }
}

async fn a_session_turn_carries_the_earlier_exchange(p: P) {
    let mock = Mock::start(vec![
        Reply::Sse(text_reply(p, &["Hello ", "there"], 10, 2), End::Close),
        Reply::Sse(text_reply(p, &["Again!"], 20, 1), End::Close),
    ])
    .await;
    let first = run(p, def(p, &mock.base), json!("Hi")).await;
    let session =
        SessionContext { id: "s1".into(), turns: vec![Turn { input: json!("Hi"), result: first.ok().clone() }] };
    let second = run_with(p, def(p, &mock.base), json!("And again?"), |ctx| ctx.session = Some(session)).await;

    let want = [user("Hi"), said(p, "Hello there"), user("And again?")];
    assert_eq!(conversation(p, &mock.requests()[1].body), want);
    let mut history = want.to_vec();
    history.push(said(p, "Again!"));
    assert_eq!(second.ok()["messages"], json!(history));
    assert_eq!(second.ok()["text"], "Again!");

    // A session whose turns carry only text (another executor's) is rebuilt from them.
    let session = SessionContext {
        id: "s2".into(),
        turns: vec![Turn { input: json!("Hi"), result: json!({"text": "Hello there", "session_id": "x"}) }],
    };
    run_with(p, def(p, &mock.base), json!("And again?"), |ctx| ctx.session = Some(session)).await.ok();
    assert_eq!(conversation(p, &mock.requests()[2].body), [user("Hi"), assistant("Hello there"), user("And again?")]);
}

async fn tools_run_on_the_mcp_endpoint_and_their_results_go_back(p: P) {
    let mock = Mock::start(vec![
        Reply::Sse(tool_reply(p, "Let me look.", &["{\"city\":", " \"Par", "is\"}"], 100, 20), End::Close),
        Reply::Sse(text_reply(p, &["It is ", "sunny."], 150, 5), End::Close),
    ])
    .await;
    let access = mock.access("/mcp");
    let ran = run_with(p, def(p, &mock.base), json!("Weather in Paris?"), |ctx| ctx.mcp = Some(access)).await;

    let result = ran.ok();
    assert_eq!(result["text"], "Let me look.It is sunny.");
    assert_eq!(ran.text(), "Let me look.It is sunny.");
    let id = if p == P::Anthropic { "toolu_01" } else { "call_01" };
    assert_eq!(ran.of(EventKind::ToolUse), [json!({"id": id, "name": "weather", "input": {"city": "Paris"}})]);
    assert_eq!(
        ran.of(EventKind::ToolResult),
        [json!({"tool_use_id": id, "content": "Sunny in Paris", "is_error": false})]
    );
    let kinds: Vec<EventKind> = ran.events.iter().map(|e| e.kind).filter(|k| *k != EventKind::Usage).collect();
    assert_eq!(
        kinds,
        [EventKind::Output, EventKind::ToolUse, EventKind::ToolResult, EventKind::Output, EventKind::Output]
    );
    let usage = ran.result.as_ref().unwrap().usage;
    assert_eq!((usage.input_tokens, usage.output_tokens), (250, 25), "usage adds up over the requests");
    assert_eq!(ran.last_usage(), usage);

    // The MCP endpoint: initialize, initialized, list, the call with the streamed input (in
    // the session, with the task's header), then the session is closed.
    let mcp = mock.mcp_calls();
    let methods: Vec<&str> = mcp.iter().map(|s| s.body["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["initialize", "notifications/initialized", "tools/list", "tools/call", "DELETE"]);
    assert_eq!(mcp[0].body["params"]["protocolVersion"], "2025-06-18");
    assert_eq!(mcp[0].headers["accept"], "application/json, text/event-stream");
    assert_eq!(mcp[3].body["params"], json!({"name": "weather", "arguments": {"city": "Paris"}}));
    for call in &mcp {
        assert_eq!(call.headers[TASK_HEADER], "task-7");
    }
    assert_eq!(mcp[3].headers["mcp-session-id"], SESSION);
    assert_eq!(mcp[3].headers["mcp-protocol-version"], "2025-06-18");

    // The model was offered the tool, and the second request carried its result.
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let tools = &requests[0].body["tools"];
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    match p {
        P::Anthropic => {
            assert_eq!(
                tools,
                &json!([{"name": "weather", "description": "The weather in a city", "input_schema": schema}])
            );
        }
        P::OpenAi => {
            let function = json!({"name": "weather", "description": "The weather in a city", "parameters": schema});
            assert_eq!(tools, &json!([{"type": "function", "function": function}]));
        }
    }
    let second = conversation(p, &requests[1].body);
    assert_eq!(second.len(), 3);
    assert_eq!(second[0], user("Weather in Paris?"));
    match p {
        P::Anthropic => {
            assert_eq!(
                second[1],
                json!({"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": id, "name": "weather", "input": {"city": "Paris"}},
                ]})
            );
            assert_eq!(
                second[2],
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": id, "content": "Sunny in Paris", "is_error": false},
                ]})
            );
        }
        P::OpenAi => {
            assert_eq!(second[1]["content"], "Let me look.");
            assert_eq!(second[1]["tool_calls"][0]["id"], id);
            assert_eq!(second[1]["tool_calls"][0]["function"]["arguments"], "{\"city\": \"Paris\"}");
            assert_eq!(second[2], json!({"role": "tool", "tool_call_id": id, "content": "Sunny in Paris"}));
        }
    }
    let mut history = second.clone();
    history.push(said(p, "It is sunny."));
    assert_eq!(result["messages"], json!(history), "the result keeps the whole exchange for the next turn");
}

async fn a_broken_mcp_endpoint_means_no_tools_not_a_failure(p: P) {
    let mock = Mock::start(vec![Reply::Sse(text_reply(p, &["fine"], 5, 1), End::Close)]).await;
    let access = mock.access("/mcp-broken");
    let ran = run_with(p, def(p, &mock.base), json!("hi"), |ctx| ctx.mcp = Some(access)).await;
    assert_eq!(ran.ok()["text"], "fine");
    assert!(mock.requests()[0].body.get("tools").is_none());
}

async fn endless_tool_use_stops_at_max_rounds(p: P) {
    let mock = Mock::start(vec![Reply::Sse(tool_reply(p, ".", &["{\"city\": \"Oslo\"}"], 1, 1), End::Close)]).await;
    let access = mock.access("/mcp");
    let ran = run_with(p, def(p, &mock.base), json!("loop"), |ctx| ctx.mcp = Some(access)).await;
    let f = ran.err();
    assert_eq!((f.error.code.as_str(), f.retryable), (MAX_TURNS, false));
    assert_eq!(mock.requests().len(), MAX_ROUNDS);
    assert_eq!(ran.of(EventKind::ToolResult).len(), MAX_ROUNDS);
    assert_eq!(f.usage.input_tokens, MAX_ROUNDS as u64, "the failure carries the usage so far");
}

async fn a_rate_limit_waits_for_retry_after(p: P) {
    let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let mock = Mock::start(vec![
        Reply::Status(429, vec![("retry-after", "1".into())], limited.into()),
        Reply::Sse(text_reply(p, &["ok"], 5, 1), End::Close),
    ])
    .await;
    let ran = run(p, def(p, &mock.base), json!("hi")).await;
    assert_eq!(ran.ok()["text"], "ok");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_millis(950), "waited {waited:?} for retry-after: 1");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

async fn a_server_error_storm_is_provider_unavailable(p: P) {
    let mock =
        Mock::start(vec![Reply::Status(500, vec![], r#"{"error":{"message":"boom","type":"api_error"}}"#.into())])
            .await;
    let ran = run(p, def(p, &mock.base), json!("hi")).await;
    let f = ran.err();
    assert_eq!((f.error.code.as_str(), f.retryable), (PROVIDER_UNAVAILABLE, true));
    assert!(f.is_provider_outage());
    assert!(f.error.message.contains("4 tries") && f.error.message.contains("HTTP 500"), "{}", f.error.message);
    assert!(f.error.message.contains("boom"), "{}", f.error.message);
    assert_eq!(mock.requests().len(), 4);
    assert!(ran.took < Duration::from_secs(4), "backoff is short and capped: {:?}", ran.took);
}

async fn a_refused_request_is_a_final_provider_error(p: P) {
    let body = match p {
        P::Anthropic => {
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 333 > 64000"}}"#
        }
        P::OpenAi => {
            r#"{"error":{"message":"max_tokens: 333 > 64000","type":"invalid_request_error","param":null,"code":null}}"#
        }
    };
    let mock = Mock::start(vec![Reply::Status(400, vec![], body.into())]).await;
    let ran = run(p, def(p, &mock.base), json!("hi")).await;
    let f = ran.err();
    assert_eq!((f.error.code.as_str(), f.retryable), (PROVIDER_ERROR, false));
    assert!(
        f.error.message.contains("HTTP 400") && f.error.message.contains("max_tokens: 333 > 64000"),
        "{}",
        f.error.message
    );
    assert_eq!(mock.requests().len(), 1, "not retried");
}

/// Runs an attempt on a provider that streams `chunks` and then falls silent, under a stall
/// timeout of `stall`, which must end it as a retryable stall. Returns the run and how many
/// requests it made.
async fn run_stalling(p: P, chunks: Vec<String>, stall: Duration) -> (Ran, usize) {
    let mock = Mock::start(vec![Reply::Sse(chunks, End::Silent)]).await;
    let mut d = def(p, &mock.base);
    d.stall_timeout = Some(stall);
    let ran = run(p, d, json!("hi")).await;
    let f = ran.err();
    assert_eq!((f.error.code.as_str(), f.retryable), (PROVIDER_UNAVAILABLE, true));
    assert!(f.error.message.contains("stalled"), "{}", f.error.message);
    let requests = mock.requests().len();
    (ran, requests)
}

async fn a_stall_before_output_is_retried_then_fails(p: P) {
    let (ran, requests) = run_stalling(p, vec![], Duration::from_millis(200)).await;
    assert_eq!(requests, 4);
    // 4 stalls of 0.2 s plus at most 0.2 + 0.4 + 0.8 s of backoff.
    assert!(ran.took < Duration::from_millis(2600), "{:?}", ran.took);
}

async fn a_stall_after_output_fails_within_the_timeout(p: P) {
    let mut chunks = head(p, 5);
    chunks.push(text_delta(p, "partial"));
    let (ran, requests) = run_stalling(p, chunks, Duration::from_millis(300)).await;
    assert_eq!(ran.text(), "partial");
    assert_eq!(requests, 1, "output began: not retried inside the attempt");
    assert!(ran.took < Duration::from_millis(900), "{:?}", ran.took);
}

async fn cancel_mid_stream_returns_at_once_and_closes_the_connection(p: P) {
    let mut chunks = head(p, 5);
    chunks.push(text_delta(p, "thinking"));
    let mock = Mock::start(vec![Reply::Sse(chunks, End::Ping)]).await;
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let ctx = context(def(p, &mock.base), json!("hi"), tx, cancel.clone());
    let exec = executor(p);
    let attempt = tokio::spawn(async move { exec.run(ctx).await });
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        if e.kind == EventKind::Output {
            break;
        }
    }
    let t0 = Instant::now();
    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(2), attempt).await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_millis(200), "{:?}", t0.elapsed());
    let f = r.unwrap_err();
    assert_eq!((f.error.code.as_str(), f.retryable), ("cancelled", false));
    tokio::time::timeout(Duration::from_secs(2), mock.state.closed.notified())
        .await
        .expect("the mock saw the connection close");
}

async fn a_malformed_data_line_is_bad_stream(p: P) {
    let mut chunks = head(p, 5);
    chunks.push(text_delta(p, "ok so far"));
    chunks.push(match p {
        P::Anthropic => {
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, oops\n\n".into()
        }
        P::OpenAi => "data: {\"choices\": [oops\n\n".into(),
    });
    chunks.extend(tail(p, "stop", 5, 1));
    let mock = Mock::start(vec![Reply::Sse(chunks, End::Close)]).await;
    let ran = run(p, def(p, &mock.base), json!("hi")).await;
    let f = ran.err();
    assert_eq!(f.error.code, BAD_STREAM);
    assert!(f.error.message.contains("oops"), "names the line: {}", f.error.message);
    assert!(f.error.message.len() < 400, "{}", f.error.message);
}

async fn a_stream_cut_before_its_end_is_retryable(p: P) {
    let mut chunks = head(p, 5);
    chunks.push(text_delta(p, "half an ans"));
    let mock = Mock::start(vec![Reply::Sse(chunks, End::Close)]).await;
    let ran = run(p, def(p, &mock.base), json!("hi")).await;
    let f = ran.err();
    assert_eq!((f.error.code.as_str(), f.retryable), (PROVIDER_UNAVAILABLE, true));
    assert!(f.error.message.contains("ended early"), "{}", f.error.message);
    assert_eq!(mock.requests().len(), 1);
    if p == P::Anthropic {
        // OpenAI reports usage only at the end of a stream.
        assert_eq!(f.usage.input_tokens, 5, "the failure carries the usage so far");
    }
}

async fn an_error_event_mid_stream_is_provider_unavailable(p: P) {
    let mut chunks = head(p, 5);
    chunks.push(text_delta(p, "Hel"));
    chunks.push(match p {
        P::Anthropic => {
            sse("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        }
        P::OpenAi => data(json!({"error": {"message": "Overloaded", "type": "server_error"}})),
    });
    let mock = Mock::start(vec![Reply::Sse(chunks, End::Close)]).await;
    let ran = run(p, def(p, &mock.base), json!("hi")).await;
    let f = ran.err();
    assert_eq!((f.error.code.as_str(), f.retryable), (PROVIDER_UNAVAILABLE, true));
    assert!(f.error.message.contains("Overloaded"), "{}", f.error.message);
}

async fn missing_model_or_key_is_misconfigured(p: P) {
    let mut no_model = def(p, "http://127.0.0.1:9");
    no_model.model = None;
    let mut no_key = def(p, "http://127.0.0.1:9");
    no_key.api_key = None;
    no_key.api_key_env = Some("SMITH_TEST_UNSET_API_KEY".into());
    for (d, names) in [(no_model, "model"), (no_key, "SMITH_TEST_UNSET_API_KEY")] {
        let ran = run(p, d, json!("hi")).await;
        let f = ran.err();
        assert_eq!((f.error.code.as_str(), f.retryable), (MISCONFIGURED, false));
        assert!(f.error.message.contains(names), "{}", f.error.message);
    }
}

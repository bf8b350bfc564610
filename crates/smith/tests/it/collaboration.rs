//! LLM agents over HTTP and the platform's collaboration tools, through the real binary: the
//! `anthropic` executor against a mock Messages API (budgets, the circuit breaker, sessions,
//! sub-tasks through MCP), and the MCP endpoint itself (protocol, tools, bad input).

use crate::common;
use crate::common::anthropic_mock;

use anthropic_mock::Mock;
use common::{Api, Opts, Smith};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn config(mock: &Mock) -> String {
    let agent = |name: &str, extra: &str| {
        format!(
            "[agents.{name}]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
             api_key = \"sk-test-secret\"\nstall_timeout = \"20s\"\n{extra}\n",
            mock.url
        )
    };
    [
        agent("writer", "system_prompt = \"You write.\""),
        agent("thrifty", "max_attempts = 3\nbudget = { max_tokens = 1000 }"),
        agent("flaky", "max_attempts = 2\nbreaker_failures = 2\nbreaker_cooldown = \"3s\"\nretry_backoff = \"50ms\""),
        agent("boss", ""),
    ]
    .join("\n")
}

/// `smith up` with the agents of [`config`] against a fresh mock; a client of it.
async fn rig() -> (Smith, Api, Mock) {
    let mock = Mock::start().await;
    let smith = Smith::start(Opts::new().config(&config(&mock))).await;
    let api = smith.api();
    (smith, api, mock)
}

async fn mcp(smith: &Smith, task: Option<&str>, body: Value) -> (reqwest::StatusCode, Value) {
    let api = smith.api();
    let mut r = api.request(reqwest::Method::POST, "/mcp").json(&body);
    if let Some(t) = task {
        r = r.header("x-smith-task", t);
    }
    api.send(r).await
}

fn call(name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": args}})
}

/// The structured result of a successful tool call.
fn ok_result(answer: &Value) -> Value {
    assert_eq!(answer["result"]["isError"], false, "{answer:#}");
    answer["result"]["structuredContent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_agent_streams_text_and_records_usage() {
    let (smith, api, mock) = rig().await;
    let (id, task) = api.run(json!({"agent": "writer", "input": "PLAIN write a line"}), WAIT).await;
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", smith.stderr());
    assert_eq!(task["result"]["text"], "Hello from the mock.");
    assert_eq!(task["usage"]["input_tokens"], 25);
    assert_eq!(task["usage"]["output_tokens"], 12);
    assert!(task["usage"]["cost_usd"].as_f64().unwrap() > 0.0, "priced from the model: {task:#}");
    let frames = api.events(&id, Duration::from_secs(5)).await;
    let text: String = frames
        .iter()
        .filter(|f| f.event == "output")
        .filter_map(|f| f.json()["data"].as_str().map(String::from))
        .collect();
    assert_eq!(text, "Hello from the mock.", "token deltas streamed as output events");
    let req = &mock.requests()[0];
    assert_eq!(req["model"], "claude-sonnet-4-5");
    assert_eq!(req["system"], "You write.");

    // Usage totals by agent, in the agents list and in metrics; the key never appears.
    let (_, usage) = api.get("/v1/usage?by=agent").await;
    let writer = usage["items"].as_array().unwrap().iter().find(|i| i["key"] == "writer").cloned().unwrap();
    assert_eq!(writer["input_tokens"], 25, "{usage:#}");
    let (_, by_tenant) = api.get("/v1/usage?by=tenant").await;
    assert_eq!(by_tenant["items"][0]["key"], "default", "{by_tenant:#}");
    let (status, _) = api.get("/v1/usage?by=planet").await;
    assert_eq!(status, 400);
    let (_, agents) = api.get("/v1/agents").await;
    let def = agents["items"].as_array().unwrap().iter().find(|a| a["name"] == "writer").cloned().unwrap();
    assert_eq!(def["usage"]["output_tokens"], 12);
    assert_eq!(def["api_key"], "<redacted>", "secrets never leave the process");
    assert!(!agents.to_string().contains("sk-test-secret"));
    let metrics = reqwest::get(api.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("smith_tokens_total{agent=\"writer\",direction=\"input\"} 25"), "{metrics}");
    assert!(metrics.contains("smith_tenant_tokens_total{tenant=\"default\"} 37"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_budget_is_stopped_and_fails_budget_exceeded() {
    let (_smith, api, mock) = rig().await;
    // the agent's budget (1,000 tokens) is crossed by the first usage report (5,000)
    let (_, task) = api.run(json!({"agent": "thrifty", "input": "OVERSPEND please"}), WAIT).await;
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(task["error"]["code"], "budget_exceeded", "{task:#}");
    assert!(task["error"]["message"].as_str().unwrap().contains("over the budget of 1000"), "{task:#}");
    assert_eq!(task["attempt"], 1, "a budget overrun is not retried");
    assert!(task["usage"]["input_tokens"].as_u64().unwrap() >= 5000, "what it spent is recorded: {task:#}");
    // stopped mid-stream: the provider saw the connection close
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.state.disconnected.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the stream was not closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A task's own budget applies too, the tighter one winning: cost this time.
    let id =
        api.submit_id(json!({"agent": "writer", "input": "OVERSPEND again", "budget": {"max_cost_usd": 0.001}})).await;
    let task = api.wait_terminal(&id, WAIT).await;
    assert_eq!(task["error"]["code"], "budget_exceeded", "{task:#}");
    assert_eq!(task["budget"]["max_cost_usd"], 0.001);

    // A malformed budget or parent changes nothing.
    for parent in [json!("not-a-task"), json!("01a21da9-ff86-7458-a3bb-fc6f6acc13f9")] {
        let (status, err) = api.post("/v1/tasks", &json!({"agent": "writer", "input": "x", "parent_id": parent})).await;
        assert_eq!(status, 422, "{err:#}");
        assert!(err["error"]["message"].as_str().unwrap().contains("parent_id"), "{err:#}");
    }
    let (status, err) =
        api.post("/v1/tasks", &json!({"agent": "writer", "input": "x", "budget": {"max_tokens": 0}})).await;
    assert_eq!(status, 422, "{err:#}");
    let (status, err) = api.post("/v1/tasks", &json!({"agent": "writer", "input": "x", "budget": {"tokens": 5}})).await;
    assert_eq!(status, 422, "{err:#}");
    assert!(err["error"]["message"].as_str().unwrap().contains("tokens"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_opens_the_breaker_and_tasks_wait_queued() {
    let (smith, api, mock) = rig().await;
    let mut system = api.sse("/v1/events?kind=system", None).await;
    mock.state.failing.store(true, Ordering::SeqCst);
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(api.submit_id(json!({"agent": "flaky", "input": format!("task {i}")})).await);
        }
        v
    };
    // Two provider failures in a row open the breaker.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, agents) = api.get("/v1/agents").await;
        let flaky = agents["items"].as_array().unwrap().iter().find(|a| a["name"] == "flaky").cloned().unwrap();
        if flaky["breaker"] == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never opened: {flaky:#}\n{}", smith.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = loop {
        let f = system.next(Duration::from_secs(10)).await.expect("a breaker event");
        if f.json()["data"]["type"] == "breaker.opened" {
            break f.json();
        }
    };
    assert_eq!(opened["data"]["agent"], "flaky");
    let metrics = reqwest::get(api.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("smith_breaker_open{agent=\"flaky\"} 1"), "{metrics}");

    // While it is open, tasks wait queued and keep their attempts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let t = api.get_task(id).await;
        assert_ne!(t["status"], "failed", "no task burns its attempts on a dead provider: {t:#}");
    }
    let before = mock.state.failures.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.state.failures.load(Ordering::SeqCst), before, "an open breaker sends nothing to the provider");

    // The provider recovers: after the cool-down one trial runs, the breaker closes, all finish.
    mock.state.failing.store(false, Ordering::SeqCst);
    for id in &ids {
        let t = api.wait_terminal(id, WAIT).await;
        assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    }
    // workers report their breakers with their heartbeats: closed within one
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, agents) = api.get("/v1/agents").await;
        let flaky = agents["items"].as_array().unwrap().iter().find(|a| a["name"] == "flaky").cloned().unwrap();
        if flaky["breaker"] == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker stayed {}", flaky["breaker"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = loop {
        let f = system.next(Duration::from_secs(10)).await.expect("a breaker event");
        if f.json()["data"]["type"] == "breaker.closed" {
            break f.json();
        }
    };
    assert_eq!(closed["data"]["agent"], "flaky");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_session_carries_its_history() {
    let (_smith, api, mock) = rig().await;
    let (status, session) = api.post("/v1/sessions", &json!({"agent": "writer", "input": "REMEMBER beta"})).await;
    assert_eq!(status, 201, "{session:#}");
    let sid = session["id"].as_str().unwrap();
    let (_, turn) = api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "RECALL it"})).await;
    let t2 = api.wait_terminal(turn["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(t2["status"], "succeeded", "{t2:#}");
    assert_eq!(t2["result"]["text"], "you said beta");
    let last = mock.requests().last().cloned().unwrap();
    let roles: Vec<&str> = last["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{last:#}");

    let (status, _) = api.post("/v1/sessions/nope/turns", &json!({"input": "x"})).await;
    assert_eq!(status, 404);
    let (status, err) = api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "x", "color": 1})).await;
    assert_eq!(status, 422, "{err:#}");
    let (status, _) = api.post("/v1/sessions", &json!({"agent": "ghost"})).await;
    assert_eq!(status, 422);
    let (_, shown) = api.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(shown["turns"].as_array().unwrap().len(), 2, "bad turns changed nothing: {shown:#}");
    assert!(shown["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The CLI drives sessions too.
    let (code, out, err) =
        common::cli(&["--server", &api.url(""), "session", "show", sid], Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("> RECALL it") && out.contains("< you said beta"), "{out}");
    let (code, out, err) =
        common::cli(&["--server", &api.url(""), "session", "say", sid, "RECALL again"], Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("you said beta"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_spawns_a_child_and_collects_its_result() {
    let (smith, api, _mock) = rig().await;
    let (id, task) = api.run(json!({"agent": "boss", "input": "SPAWN a helper"}), WAIT).await;
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", smith.stderr());
    assert!(
        task["result"]["text"].as_str().unwrap().contains("from the parent"),
        "the child's result came back: {task:#}"
    );
    let (_, children) = api.get(&format!("/v1/tasks?parent_id={id}")).await;
    let items = children["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{children:#}");
    assert_eq!(items[0]["agent"], "echo");
    assert_eq!(items[0]["parent_id"], id.as_str());
    assert_eq!(items[0]["status"], "succeeded");
    let frames = api.events(&id, Duration::from_secs(5)).await;
    let tools: Vec<Value> =
        frames.iter().filter(|f| f.event == "tool_use").map(|f| f.json()["data"]["name"].clone()).collect();
    assert_eq!(tools, [json!("spawn_task"), json!("await_task")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_endpoint_speaks_the_protocol_and_rejects_bad_input() {
    let (smith, api, _mock) = rig().await;
    let (status, init) = mcp(
        &smith,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "mistersmith");
    let (status, _) = mcp(&smith, None, json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(status, 202);
    let (_, list) = mcp(&smith, None, json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "share_discovery",
            "list_discoveries",
            "send_message",
            "read_messages",
            "spawn_task",
            "await_task",
            "request_approval",
            "ask_human",
            "permission_prompt"
        ]
    );

    // Protocol errors are JSON-RPC errors; tool errors are results the model can read.
    let (_, e) = mcp(&smith, None, json!({"jsonrpc": "2.0", "id": 3, "method": "nope"})).await;
    assert_eq!(e["error"]["code"], -32601);
    let (_, e) = mcp(&smith, None, call("teleport", json!({}))).await;
    assert_eq!(e["error"]["code"], -32602);
    let raw = api.request(reqwest::Method::POST, "/mcp").header("content-type", "application/json").body("{oops");
    let (status, e) = api.send(raw).await;
    assert_eq!((status.as_u16(), e["error"]["code"].as_i64()), (200, Some(-32700)));
    for (args, needle) in [
        (json!({"type": "rumor", "content": "x", "confidence": 0.5}), "type"),
        (json!({"type": "insight", "content": "x", "confidence": 7}), "confidence"),
        (json!({"type": "insight", "content": "", "confidence": 0.5}), "content"),
        (json!({"type": "insight", "content": "x", "confidence": 0.5, "extra": 1}), "extra"),
    ] {
        let (_, r) = mcp(&smith, None, call("share_discovery", args.clone())).await;
        assert_eq!(r["result"]["isError"], true, "{args}: {r:#}");
        assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains(needle), "{args}: {r:#}");
    }
    let (status, _) = mcp(&smith, Some("not-a-uuid"), call("read_messages", json!({}))).await;
    assert_eq!(status, 400);
    let (status, _) = mcp(&smith, Some("01a21da9-ff86-7458-a3bb-fc6f6acc13f9"), call("read_messages", json!({}))).await;
    assert_eq!(status, 404);
    let (_, list) = mcp(&smith, None, call("list_discoveries", json!({}))).await;
    assert_eq!(ok_result(&list)["discoveries"], json!([]), "the bad calls shared nothing");

    // Messages between tasks, and discoveries filtered.
    let a = api.submit_id(json!({"agent": "echo", "input": "a"})).await;
    let b = api.submit_id(json!({"agent": "echo", "input": "b"})).await;
    api.wait_terminal(&b, WAIT).await;
    let (_, sent) = mcp(&smith, Some(&a), call("send_message", json!({"to_task": b, "body": "hello b"}))).await;
    ok_result(&sent);
    let (_, sent) =
        mcp(&smith, Some(&a), call("send_message", json!({"to_agent": "echo", "body": "hello echoes"}))).await;
    ok_result(&sent);
    let (_, bad) = mcp(&smith, Some(&a), call("send_message", json!({"to_agent": "ghost", "body": "x"}))).await;
    assert_eq!(bad["result"]["isError"], true);
    let (_, inbox) = mcp(&smith, Some(&b), call("read_messages", json!({}))).await;
    let inbox = ok_result(&inbox);
    let bodies: Vec<&str> = inbox["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["hello b", "hello echoes"]);
    assert_eq!(inbox["messages"][0]["from_task"], a.as_str());
    let (_, again) = mcp(&smith, Some(&b), call("read_messages", json!({"since": inbox["cursor"]}))).await;
    assert_eq!(ok_result(&again)["messages"], json!([]), "since skips what was read");

    for (kind, content) in [("pattern", "retries cluster at noon"), ("anomaly", "disk fills at night")] {
        let (_, r) = mcp(
            &smith,
            Some(&a),
            call("share_discovery", json!({"type": kind, "content": content, "confidence": 0.7})),
        )
        .await;
        ok_result(&r);
    }
    let (_, found) = mcp(&smith, None, call("list_discoveries", json!({"type": "anomaly"}))).await;
    let found = ok_result(&found);
    assert_eq!(found["discoveries"].as_array().unwrap().len(), 1);
    assert_eq!(found["discoveries"][0]["content"], "disk fills at night");
    assert_eq!(found["discoveries"][0]["task_id"], a.as_str());
    let (_, found) = mcp(&smith, None, call("list_discoveries", json!({"contains": "NOON"}))).await;
    assert_eq!(ok_result(&found)["discoveries"][0]["type"], "pattern");

    // await_task on a task that is done answers at once; a GET is refused.
    let (_, done) = mcp(&smith, None, call("await_task", json!({"id": b}))).await;
    assert_eq!(ok_result(&done)["status"], "succeeded");
    let (status, _) = api.get("/mcp").await;
    assert_eq!(status, 405);
    let huge = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(5 << 20));
    let r = api.request(reqwest::Method::POST, "/mcp").header("content-type", "application/json").body(huge);
    let (status, e) = api.send(r).await;
    assert_eq!((status.as_u16(), e["error"]["code"].as_str()), (413, Some("too_large")), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_orchestrator_cancels_its_sub_tasks_and_nesting_is_bounded() {
    let (smith, api, _mock) = rig().await;
    let root = api.submit_id(json!({"agent": "sleep", "input": 60000})).await;
    let mut chain = vec![root.clone()];
    // each task spawns one child, as an orchestrating agent would, until the nesting limit
    let refused = loop {
        let parent = chain.last().unwrap().clone();
        let (_, r) = mcp(&smith, Some(&parent), call("spawn_task", json!({"agent": "sleep", "input": 60000}))).await;
        if r["result"]["isError"] == true {
            break r;
        }
        chain.push(ok_result(&r)["id"].as_str().unwrap().to_string());
        assert!(chain.len() <= 20, "nesting never stopped");
    };
    assert_eq!(chain.len(), 9, "the root and eight generations below it");
    assert!(refused["result"]["content"][0]["text"].as_str().unwrap().contains("nest at most"), "{refused:#}");
    for pair in chain.windows(2) {
        assert_eq!(api.get_task(&pair[1]).await["parent_id"], pair[0].as_str());
    }
    api.wait_status(chain.last().unwrap(), "running", Duration::from_secs(10)).await;

    let (status, _) = api.cancel(&root).await;
    assert_eq!(status, 202);
    for id in &chain {
        let t = api.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(t["status"], "cancelled", "every generation is cancelled: {t:#}");
    }
    // an unrelated task is untouched
    let other = api.submit_id(json!({"agent": "echo", "input": "still here"})).await;
    assert_eq!(api.wait_terminal(&other, WAIT).await["status"], "succeeded");
}

//! A person in the loop, through the real binary: Claude Code's permission prompts answered by
//! a person (the real CLI against the mock API), questions from an LLM agent through the
//! platform's `ask_human` tool, answers that survive a `kill -9` of `smith up`, requests that
//! time out, and waits that hold no agent slot.

use crate::common::anthropic_mock::Mock;
use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{self, Api, Opts, Smith};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// A Claude Code agent whose `git push` needs a person; every other Bash call is allowed.
fn pusher(claude: &str, mock: &Mock, home: &std::path::Path) -> String {
    format!(
        "[agents.pusher]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmax_attempts = 1\nkill_grace = \"2s\"\n\
         allowed_tools = [\"Bash\"]\napprove = [\"Bash(git push:*)\"]\napproval_timeout = \"1h\"\n\
         stall_timeout = \"60s\"\n\
         env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"test-key\", HOME = \"{}\", \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\" }}\n",
        mock.url,
        home.display()
    )
}

/// An `anthropic` agent (against the mock) that asks people through `ask_human`.
fn asker(mock: &Mock, timeout: &str) -> String {
    format!(
        "[agents.asker]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
         api_key = \"sk-test-secret\"\nstall_timeout = \"20s\"\nmax_attempts = 1\napproval_timeout = \"{timeout}\"\n",
        mock.url
    )
}

/// Waits for the task's pending request; returns it.
async fn pending_request(api: &Api, id: &str) -> Value {
    let task = api.wait_status(id, "waiting_input", WAIT).await;
    let (status, list) = api.get(&format!("/v1/tasks/{id}/approvals")).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let pending: Vec<&Value> = items.iter().filter(|a| a["status"] == "pending").collect();
    assert_eq!(pending.len(), 1, "one pending request: {list:#}\n{task:#}");
    pending[0].clone()
}

fn answer_path(id: &str, request: &Value) -> String {
    format!("/v1/tasks/{id}/approvals/{}", request["id"].as_str().unwrap())
}

/// A series' value in the server's metrics (0 when absent).
async fn sample(api: &Api, series: &str) -> f64 {
    let (status, body) = api.get("/metrics").await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until a series of the server's metrics has `value`.
async fn metric_reaches(api: &Api, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while sample(api, series).await != value {
        assert!(tokio::time::Instant::now() < deadline, "{series} never became {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Done-when case of issue 19: a `git push` the agent's `approve` names waits for a person
/// (`waiting_input`, an `approval.requested` event naming the command, no slot held); denied,
/// the CLI gets the denial and the command never runs; allowed (a second task), it runs; a call
/// no pattern names runs without asking. A second answer is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_codes_matching_calls_wait_for_a_person_and_others_run() {
    let Some(claude) = common::claude_cli() else { return };
    let mock = Mock::start().await;
    let home = tempfile::tempdir().unwrap();
    let smith = Smith::start(Opts::new().config(&pusher(&claude, &mock, home.path()))).await;
    let api = smith.api();

    // denied: the CLI hears the denial, and git never runs
    let denied = api.submit_id(json!({"agent": "pusher", "input": "PUSH"})).await;
    let request = pending_request(&api, &denied).await;
    assert_eq!(request["kind"], "approval");
    assert_eq!(request["tool"]["name"], "Bash");
    assert_eq!(request["tool"]["input"]["command"], "git push origin x", "{request:#}");
    // the request is an event of the task's stream, naming the command
    let mut stream = api.sse(&format!("/v1/tasks/{denied}/events"), None).await;
    let asked = loop {
        let frame = stream.next(Duration::from_secs(10)).await.expect("the stream ended before the request");
        if frame.event == "approval.requested" {
            break frame.json();
        }
    };
    assert_eq!(asked["data"]["tool"]["input"]["command"], "git push origin x", "{asked:#}");
    assert_eq!(asked["data"]["approval_id"], request["id"]);
    drop(stream);
    // the parked attempt's process is stopped and its slot freed (the gauges are sampled)
    metric_reaches(&api, r#"smith_agent_slots{state="busy"}"#, 0.0).await;
    metric_reaches(&api, "smith_tasks_waiting_input", 1.0).await;
    assert_eq!(sample(&api, "smith_queue_depth").await, 0.0, "a waiting task is not load");
    assert_eq!(api.get_task(&denied).await["status"], "waiting_input", "and it still waits");
    let (status, pending) = api.get("/v1/approvals?status=pending").await;
    assert_eq!(status, 200);
    assert_eq!(pending["items"].as_array().map(Vec::len), Some(1), "{pending:#}");

    let body = json!({"decision": "deny", "message": "not on a Friday"});
    let (status, answered) = api.post(&answer_path(&denied, &request), &body).await;
    assert_eq!(status, 200, "{answered:#}");
    assert_eq!((answered["status"].as_str(), answered["answer"]["decision"].as_str()), (Some("denied"), Some("deny")));
    let (status, again) = api.post(&answer_path(&denied, &request), &json!({"decision": "allow"})).await;
    assert_eq!(status, 409, "a second answer: {again:#}");
    let t = api.wait_terminal(&denied, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    let said = t["result"]["text"].as_str().unwrap_or_default().to_string();
    assert!(said.starts_with("after the decision:"), "{t:#}");
    assert!(said.contains("not on a Friday"), "the CLI received the denial: {said}");
    assert!(!said.contains("not a git repository"), "git ran though denied: {said}");

    // allowed: the command runs (in a work dir that is no repository, git says so)
    let allowed = api.submit_id(json!({"agent": "pusher", "input": "PUSH"})).await;
    let request = pending_request(&api, &allowed).await;
    let (status, _) = api.post(&answer_path(&allowed, &request), &json!({"decision": "allow"})).await;
    assert_eq!(status, 200);
    let t = api.wait_terminal(&allowed, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    let said = t["result"]["text"].as_str().unwrap_or_default();
    assert!(said.contains("not a git repository"), "the allowed command ran: {said}");
    assert_eq!(t["attempt"], 2, "the parked attempt was not spent: {t:#}");

    // a call no pattern names runs at once
    let safe = api.submit_id(json!({"agent": "pusher", "input": "SAFE"})).await;
    let t = api.wait_terminal(&safe, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert!(t["result"]["text"].as_str().unwrap_or_default().contains("safe-ran"), "{t:#}");
    let (_, list) = api.get(&format!("/v1/tasks/{safe}/approvals")).await;
    assert_eq!(list["items"], json!([]), "nothing asked");
}

/// A question asked through `ask_human` survives a `kill -9` of `smith up`: answered after the
/// restart, the task resumes and hears the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_a_crash_and_restart_is_delivered() {
    let mock = Mock::start().await;
    let mut smith = Smith::start(Opts::new().config(&asker(&mock, "1h"))).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "asker", "input": "ASK"})).await;
    let request = pending_request(&api, &id).await;
    assert_eq!((request["kind"].as_str(), request["text"].as_str()), (Some("input"), Some("What colour?")));

    smith.kill9().await;
    smith.restart().await;
    let api = smith.api();
    let again = pending_request(&api, &id).await;
    assert_eq!(again["id"], request["id"], "the request survived");
    let (status, bad) = api.post(&answer_path(&id, &request), &json!({"decision": "allow"})).await;
    assert_eq!(status, 422, "a question needs its answer: {bad:#}");
    // through the CLI: the pending list names it, and `answer` answers it
    let aid = request["id"].as_str().unwrap();
    let server = ["--server", api.base.as_str()];
    let (code, out, err) = common::cli(&[&server[..], &["approvals", "list"]].concat(), WAIT).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(aid) && out.contains("What colour?"), "{out}");
    let (code, out, err) = common::cli(&[&server[..], &["approvals", "answer", &id, aid, "blue"]].concat(), WAIT).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = common::cli(&[&server[..], &["approvals", "answer", &id, aid, "red"]].concat(), WAIT).await;
    assert_ne!(code, 0, "a second answer is refused");
    assert!(err.contains("conflict"), "{err}");
    let t = api.wait_terminal(&id, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    assert!(t["result"]["text"].as_str().unwrap_or_default().contains("blue"), "{t:#}");
}

/// A request nobody answers is denied when its agent's `approval_timeout` passes, by `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_is_denied_at_its_timeout() {
    let mock = Mock::start().await;
    let smith = Smith::start(Opts::new().config(&asker(&mock, "2s"))).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "asker", "input": "ASK"})).await;
    let request = pending_request(&api, &id).await;
    let t = api.wait_terminal(&id, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    assert!(t["result"]["text"].as_str().unwrap_or_default().contains("declined"), "{t:#}");
    let (_, list) = api.get(&format!("/v1/tasks/{id}/approvals")).await;
    let stored = &list["items"][0];
    assert_eq!(stored["id"], request["id"]);
    assert_eq!((stored["status"].as_str(), stored["answer"]["by"].as_str()), (Some("denied"), Some("timeout")));
}

/// Tenant B cannot see or answer tenant A's request: every route answers 404 (or an empty list)
/// and the request stays pending; A's own key answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_see_or_answer_a_request() {
    const ROOT: &str = "approvals-root-token";
    let mock = Mock::start().await;
    let smith = Smith::start(Opts::new().token(ROOT).config(&asker(&mock, "1h"))).await;
    let root = Api::new(&smith.api().base, Some(ROOT.to_string()));
    let key = |tenant: &'static str| {
        let root = &root;
        async move {
            let body = json!({"tenant": tenant, "scopes": ["tasks:read", "tasks:write"], "name": "approvals"});
            let (status, created) = root.post("/v1/keys", &body).await;
            assert_eq!(status, 201, "{created}");
            Api::new(&root.base, Some(created["secret"].as_str().unwrap().to_string()))
        }
    };
    let (a, b) = (key("acme").await, key("globex").await);
    let id = a.submit_id(json!({"agent": "asker", "input": "ASK"})).await;
    let request = pending_request(&a, &id).await;
    let aid = request["id"].as_str().unwrap();

    let (status, _) = b.get(&format!("/v1/tasks/{id}/approvals")).await;
    assert_eq!(status, 404);
    let (status, body) = b.post(&answer_path(&id, &request), &json!({"answer": "mine"})).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, listed) = b.get("/v1/approvals?status=pending").await;
    assert_eq!((status.as_u16(), listed["items"].clone()), (200, json!([])), "B lists A's request");
    assert!(!b.get(&format!("/v1/approvals?task_id={id}")).await.1.to_string().contains(aid));
    let (_, mine) = a.get("/v1/approvals?status=pending").await;
    assert_eq!(mine["items"][0]["id"], request["id"], "A lists its own");
    assert_eq!(a.get_task(&id).await["status"], "waiting_input", "B's answer changed nothing");

    let (status, _) = a.post(&answer_path(&id, &request), &json!({"answer": "teal"})).await;
    assert_eq!(status, 200);
    let t = a.wait_terminal(&id, WAIT).await;
    assert!(t["result"]["text"].as_str().unwrap_or_default().contains("teal"), "{t:#}");
}

/// An `anthropic` agent whose `approve` names one of its tools: the call waits for a person,
/// and the task resumes exactly where it asked — the model is not asked again, the allowed call
/// runs (with the person's edited arguments), a denied one returns the denial to the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agents_gated_tool_call_resumes_where_it_asked() {
    let mock = Mock::start().await;
    let config = format!("{}approve = [\"send_message\"]\n", asker(&mock, "1h"));
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let first_requests = |marker: &str| {
        mock.requests()
            .iter()
            .filter(|r| r["messages"][0]["content"].to_string().contains(marker))
            .filter(|r| !r["messages"].to_string().contains("tool_result"))
            .count()
    };

    let allowed = api.submit_id(json!({"agent": "asker", "input": "GATE allow-me"})).await;
    let request = pending_request(&api, &allowed).await;
    assert_eq!(request["tool"]["name"], "send_message", "{request:#}");
    assert_eq!(request["tool"]["input"]["to_agent"], "nobody");
    assert!(request.get("state").is_none(), "the parked conversation is never served: {request:#}");
    let edited = json!({"decision": "allow", "input": {"to_agent": "asker", "body": "edited"}});
    let (status, _) = api.post(&answer_path(&allowed, &request), &edited).await;
    assert_eq!(status, 200);
    let t = api.wait_terminal(&allowed, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    let said = t["result"]["text"].as_str().unwrap_or_default();
    assert!(said.starts_with("tool said:") && said.contains("sent"), "the allowed call ran: {said}");
    assert_eq!(first_requests("allow-me"), 1, "the resumed attempt asked the model again");
    // the person's edited arguments were the ones sent
    let mut feed = api.sse("/v1/events?kind=message&after=0", None).await;
    let sent = feed.next(Duration::from_secs(10)).await.expect("the message").json();
    assert_eq!(
        (sent["data"]["to_agent"].as_str(), sent["data"]["body"].as_str()),
        (Some("asker"), Some("edited")),
        "{sent:#}"
    );
    drop(feed);
    let tools = t["result"]["messages"].to_string();
    assert!(tools.contains("tool_result"), "the conversation carried on: {tools}");

    let denied = api.submit_id(json!({"agent": "asker", "input": "GATE deny-me"})).await;
    let request = pending_request(&api, &denied).await;
    let (status, _) =
        api.post(&answer_path(&denied, &request), &json!({"decision": "deny", "message": "not that one"})).await;
    assert_eq!(status, 200);
    let t = api.wait_terminal(&denied, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let said = t["result"]["text"].as_str().unwrap_or_default();
    assert!(said.contains("denied") && said.contains("not that one"), "{said}");
    assert_eq!(first_requests("deny-me"), 1);
}

/// Distributed, on PostgreSQL and NATS: the worker that ran the task is killed (`kill -9`) while
/// the task waits; the answer given meanwhile is delivered when a worker runs the task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_given_while_the_worker_is_down_is_delivered() {
    let Some(services) = Services::from_env() else { return };
    let mock = Mock::start().await;
    let cluster = Cluster::new(&services, "[store]\npool_size = 4\n").await;
    let gateway = cluster.start(Role::Gateway).await;
    let api = gateway.api();
    let config =
        format!("[store]\npool_size = 4\n\n[worker]\nmcp_url = \"{}/mcp\"\n\n{}", api.base, asker(&mock, "1h"));
    std::fs::write(cluster.config_path(), config).unwrap();
    let mut worker = cluster.start(Role::Worker).await;
    let id = api.submit_id(json!({"agent": "asker", "input": "ASK"})).await;
    let request = pending_request(&api, &id).await;

    worker.kill9().await;
    let (status, _) = api.post(&answer_path(&id, &request), &json!({"answer": "green"})).await;
    assert_eq!(status, 200);
    assert_eq!(api.get_task(&id).await["status"], "queued", "answered: queued for a worker");
    worker.restart().await;
    let t = api.wait_terminal(&id, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", worker.stderr());
    assert!(t["result"]["text"].as_str().unwrap_or_default().contains("green"), "{t:#}");
}

/// A `process` agent asks over plain HTTP (`POST $SMITH_MCP_URL` with its capability
/// `$SMITH_MCP_TOKEN`): its attempt stops while the task waits, and the run after the answer
/// gets the answer to the same question at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_agent_asks_over_plain_http_with_its_capability() {
    const ROOT: &str = "process-asks-root";
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ask.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask_human","arguments":{"question":"Ship it?"}}}'
out=$(curl -sS -X POST "$SMITH_MCP_URL" -H 'content-type: application/json' -H "x-smith-task: $SMITH_TASK_ID" \
  -H "authorization: Bearer $SMITH_MCP_TOKEN" -d "$body")
case "$out" in
  *waiting_input*) echo "asked"; sleep 60 ;;
  *) echo "got: $out" ;;
esac
"#,
    )
    .unwrap();
    let config = format!(
        "[agents.shell]\nexecutor = \"process\"\ncommand = \"sh\"\nargs = [\"{}\"]\ninput = \"none\"\nmax_attempts = 1\n\
         kill_grace = \"1s\"\nenv = {{ PATH = \"/usr/bin:/bin\" }}\n",
        script.display()
    );
    let smith = Smith::start(Opts::new().token(ROOT).config(&config)).await;
    let api = Api::new(&smith.api().base, Some(ROOT.to_string()));
    let id = api.submit_id(json!({"agent": "shell", "input": null})).await;
    let request = pending_request(&api, &id).await;
    assert_eq!(request["text"], "Ship it?");
    let (status, _) = api.post(&answer_path(&id, &request), &json!({"answer": "yes, ship it"})).await;
    assert_eq!(status, 200);
    let t = api.wait_terminal(&id, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    let out = t["result"].to_string();
    assert!(out.contains("got:") && out.contains("yes, ship it"), "{t:#}");
}

//! The HTTP API and CLI of a real `smith up`: task lifecycle over SSE, bad input, auth and
//! config errors, idempotency, nodes and health, the filtered feed, and the `smith` client.

use crate::common;

use common::{assert_complete_log, assert_error, cli, kinds, Api, Next, Opts, Smith};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const SECS_5: Duration = Duration::from_secs(5);
const SECS_10: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_task_streams_its_lifecycle_and_closes() {
    let s = Smith::start(Opts::new()).await;
    let input = json!({"msg": "hello", "n": [1, 2, 3], "nested": {"ok": true}});
    let task = s.submit(json!({"agent": "echo", "input": input})).await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(task["status"], "queued", "{task}");
    assert_eq!(task["agent"], "echo");
    assert_eq!(task["input"], input);

    let mut stream = s.sse(&format!("/v1/tasks/{id}/events"), None).await;
    let frames = stream.take(4, SECS_10).await;
    assert_eq!(kinds(&frames), ["task.queued", "task.started", "output", "task.succeeded"]);
    let seqs: Vec<u64> = frames.iter().map(|f| f.num()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_complete_log(id, &frames);
    assert_eq!(frames[2].json()["data"], input, "output event = input");
    assert_eq!(frames[3].json()["data"]["result"], input, "terminal event carries the result");
    for f in &frames {
        assert_eq!(f.json()["agent"], "echo", "{f:?}");
    }
    match stream.next_within(SECS_5).await {
        Next::Closed => {}
        other => panic!("stream did not close after the terminal event: {other:?}"),
    }

    let done = s.get_task(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], input);
    assert_eq!(done["attempt"], 1);
    assert!(done["error"].is_null(), "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
}

/// A reader resuming after a finished task's terminal event has nothing more to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resumed_after_the_terminal_event_closes() {
    let s = Smith::start(Opts::new()).await;
    let task = s.submit(json!({"agent": "echo", "input": "done"})).await;
    let id = task["id"].as_str().unwrap();
    s.wait_terminal(id, SECS_10).await;
    let path = format!("/v1/tasks/{id}/events");
    assert_eq!(s.events(id, SECS_10).await.len(), 4);
    // resuming in the middle replays the rest and closes
    let rest = s.sse(&path, Some("2")).await.rest(SECS_10).await;
    assert_eq!(kinds(&rest), ["output", "task.succeeded"]);
    for (how, mut stream) in [
        ("Last-Event-ID: 4", s.sse(&path, Some("4")).await),
        ("?after=4", s.sse(&format!("{path}?after=4"), None).await),
    ] {
        match stream.next_within(Duration::from_secs(3)).await {
            Next::Closed => {}
            other => panic!("{how}: the stream of a finished task stays open after its terminal event: {other:?}"),
        }
    }
}

/// One bad request: what to send and the error expected.
struct Bad {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    body: Option<(String, &'static str)>,
    status: u16,
    code: &'static str,
    needle: &'static str,
}

fn bad(
    what: &'static str,
    method: reqwest::Method,
    path: &str,
    status: u16,
    code: &'static str,
    needle: &'static str,
) -> Bad {
    Bad { what, method, path: path.to_string(), body: None, status, code, needle }
}

fn bad_submit(what: &'static str, body: &str, status: u16, code: &'static str, needle: &'static str) -> Bad {
    Bad {
        what,
        method: reqwest::Method::POST,
        path: "/v1/tasks".into(),
        body: Some((body.to_string(), "application/json")),
        status,
        code,
        needle,
    }
}

/// Sends every case; panics once, listing every case that did not get its error.
async fn check_bad(api: &Api, cases: &[Bad]) {
    let mut wrong = Vec::new();
    for case in cases {
        let mut r = api.request(case.method.clone(), &case.path);
        if let Some((body, ct)) = &case.body {
            r = r.header("content-type", *ct).body(body.clone());
        }
        let (status, body) = api.send(r).await;
        let msg = body["error"]["message"].as_str().unwrap_or("");
        let ok = status.as_u16() == case.status
            && body["error"]["code"] == case.code
            && !msg.is_empty()
            && msg.contains(case.needle);
        if !ok {
            wrong.push(format!(
                "{}: want {} {} mentioning {:?}, got {status} {body}",
                case.what, case.status, case.code, case.needle
            ));
        }
    }
    assert!(wrong.is_empty(), "{} bad requests got the wrong answer:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let s = Smith::start(Opts::new().config("[server]\nmax_body_bytes = 1024\n")).await;
    use reqwest::Method as M;
    let unknown = "0196c0a0-0000-7000-8000-000000000000";
    let big = format!(r#"{{"agent":"echo","input":"{}"}}"#, "x".repeat(4096));
    let cases = vec![
        bad_submit("malformed JSON", r#"{"agent":"echo","#, 400, "invalid_argument", "JSON"),
        bad_submit("not JSON at all", "hello", 400, "invalid_argument", ""),
        bad_submit("empty body", "", 400, "invalid_argument", ""),
        bad_submit("unknown field", r#"{"agent":"echo","input":1,"colour":1}"#, 422, "unprocessable", "colour"),
        bad_submit("missing input", r#"{"agent":"echo"}"#, 422, "unprocessable", "input"),
        bad_submit("array body", "[1,2]", 422, "unprocessable", ""),
        bad_submit("unknown agent", r#"{"agent":"nosuchagent","input":1}"#, 422, "unprocessable", "nosuchagent"),
        bad_submit("bad agent name", r#"{"agent":"no such agent","input":1}"#, 422, "unprocessable", "agent"),
        bad_submit("priority 10", r#"{"agent":"echo","input":1,"priority":10}"#, 422, "unprocessable", "priority"),
        bad_submit("priority -1", r#"{"agent":"echo","input":1,"priority":-1}"#, 422, "unprocessable", ""),
        bad_submit("priority string", r#"{"agent":"echo","input":1,"priority":"high"}"#, 422, "unprocessable", ""),
        bad_submit(
            "max_attempts 0",
            r#"{"agent":"echo","input":1,"max_attempts":0}"#,
            422,
            "unprocessable",
            "max_attempts",
        ),
        bad_submit("timeout_ms 0", r#"{"agent":"echo","input":1,"timeout_ms":0}"#, 422, "unprocessable", "timeout_ms"),
        bad_submit(
            "metadata not an object",
            r#"{"agent":"echo","input":1,"metadata":3}"#,
            422,
            "unprocessable",
            "metadata",
        ),
        bad_submit(
            "empty idempotency key",
            r#"{"agent":"echo","input":1,"idempotency_key":""}"#,
            422,
            "unprocessable",
            "idempotency_key",
        ),
        bad_submit("oversized body", &big, 413, "too_large", ""),
        Bad {
            what: "wrong content type",
            method: M::POST,
            path: "/v1/tasks".into(),
            body: Some((r#"{"agent":"echo","input":1}"#.into(), "text/plain")),
            status: 415,
            code: "unsupported_media_type",
            needle: "Content-Type: application/json",
        },
        bad("malformed id", M::GET, "/v1/tasks/not-a-uuid", 400, "invalid_argument", "not-a-uuid"),
        bad("malformed id cancel", M::POST, "/v1/tasks/not-a-uuid/cancel", 400, "invalid_argument", "not-a-uuid"),
        bad("malformed id events", M::GET, "/v1/tasks/not-a-uuid/events", 400, "invalid_argument", "not-a-uuid"),
        bad("unknown id", M::GET, &format!("/v1/tasks/{unknown}"), 404, "not_found", unknown),
        bad("unknown id cancel", M::POST, &format!("/v1/tasks/{unknown}/cancel"), 404, "not_found", ""),
        bad("unknown id events", M::GET, &format!("/v1/tasks/{unknown}/events"), 404, "not_found", ""),
        bad("limit 0", M::GET, "/v1/tasks?limit=0", 400, "invalid_argument", "limit"),
        bad("limit not a number", M::GET, "/v1/tasks?limit=lots", 400, "invalid_argument", ""),
        bad("bogus status", M::GET, "/v1/tasks?status=bogus", 400, "invalid_argument", "bogus"),
        bad("unknown query parameter", M::GET, "/v1/tasks?colour=red", 400, "invalid_argument", "colour"),
        bad("bad after", M::GET, "/v1/events?after=abc", 400, "invalid_argument", ""),
        bad("bad feed kind", M::GET, "/v1/events?kind=bogus", 400, "invalid_argument", "bogus"),
        bad("unknown route", M::GET, "/v1/nope", 404, "not_found", ""),
        bad("unknown root route", M::GET, "/nope", 404, "not_found", ""),
        bad("wrong method", M::DELETE, "/v1/tasks", 405, "method_not_allowed", ""),
    ];
    check_bad(&s, &cases).await;
    // a bad Last-Event-ID on an unknown-but-well-formed task is still a clear error
    let r = s.request(M::GET, &format!("/v1/tasks/{unknown}/events")).header("last-event-id", "x");
    let (status, body) = s.send(r).await;
    assert!(status == 400 || status == 404, "bad Last-Event-ID: {status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");

    // nothing changed, and the server is still up
    let (status, page) = s.get("/v1/tasks").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"], json!([]), "bad requests created tasks: {page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);

    // and a body just under the limit is fine
    let ok = format!(r#"{{"agent":"echo","input":"{}"}}"#, "y".repeat(900));
    let r = s.request(M::POST, "/v1/tasks").header("content-type", "application/json").body(ok);
    let (status, task) = s.send(r).await;
    assert_eq!(status, 201, "{task}");
    let (_, page) = s.get("/v1/tasks").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}

/// A well-formed body with a value of the wrong type is 422 and the message names the field,
/// like an unknown field or an out-of-range value does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_name_their_field() {
    let s = Smith::start(Opts::new()).await;
    let cases = [
        bad_submit("priority -1", r#"{"agent":"echo","input":1,"priority":-1}"#, 422, "unprocessable", "priority"),
        bad_submit(
            "priority string",
            r#"{"agent":"echo","input":1,"priority":"high"}"#,
            422,
            "unprocessable",
            "priority",
        ),
        bad_submit(
            "timeout_ms negative",
            r#"{"agent":"echo","input":1,"timeout_ms":-5}"#,
            422,
            "unprocessable",
            "timeout_ms",
        ),
        bad_submit(
            "max_attempts string",
            r#"{"agent":"echo","input":1,"max_attempts":"3"}"#,
            422,
            "unprocessable",
            "max_attempts",
        ),
        bad_submit("agent not a string", r#"{"agent":7,"input":1}"#, 422, "unprocessable", "agent"),
    ];
    check_bad(&s, &cases).await;
    assert_eq!(s.list_all("").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_config_errors() {
    // a non-loopback address needs a token
    let refused = Smith::start_refused(Opts::new().listen("0.0.0.0:0")).await;
    assert!(!refused.status.success(), "{:?}", refused.status);
    assert!(refused.stderr.contains("token"), "stderr does not mention the token: {}", refused.stderr);

    // an unknown config key is named
    let refused = Smith::start_refused(Opts::new().config("[worker]\nlease_time = \"1s\"\n")).await;
    assert!(!refused.status.success(), "{:?}", refused.status);
    assert!(refused.stderr.contains("lease_time"), "stderr does not name the key: {}", refused.stderr);

    // with a token
    let s = Smith::start(Opts::new().listen("0.0.0.0:0").token("s3cret")).await;
    let anon = Api::new(&s.base, None);
    let wrong = Api::new(&s.base, Some("nope".into()));
    let (status, body) = anon.get("/v1/tasks").await;
    assert_error("no token", status, &body, 401, "unauthenticated", "");
    let (status, body) = wrong.get("/v1/tasks").await;
    assert_error("wrong token", status, &body, 401, "unauthenticated", "");
    let (status, body) = anon.post("/v1/tasks", &json!({"agent": "echo", "input": 1})).await;
    assert_error("submit without token", status, &body, 401, "unauthenticated", "");
    let (status, body) = anon.get("/v1/events").await;
    assert_error("feed without token", status, &body, 401, "unauthenticated", "");
    let (status, body) = s.get("/v1/tasks").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]), "the unauthenticated submit created a task: {body}");
    let (status, _) = anon.get("/healthz").await;
    assert_eq!(status, 200, "/healthz must be open");

    // one smith per data dir
    let refused = Smith::start_refused(Opts::new().data_dir(&s.data_dir())).await;
    assert!(!refused.status.success(), "{:?}", refused.status);
    assert!(refused.stderr.contains("in use"), "no clear error for a locked data dir: {}", refused.stderr);
    // the first one is unharmed
    let (status, _) = s.get("/v1/tasks").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_original_task() {
    let s = Smith::start(Opts::new()).await;
    let body = json!({"agent": "echo", "input": "once", "idempotency_key": "order-42"});
    let (status, first) = s.post("/v1/tasks", &body).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = s.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["idempotency_key"], "order-42");
    // even with a different body, the key wins
    let (status, third) =
        s.post("/v1/tasks", &json!({"agent": "echo", "input": "twice", "idempotency_key": "order-42"})).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["id"], first["id"]);
    let items = s.list_all("").await;
    assert_eq!(items.len(), 1, "{items:?}");
    let id = first["id"].as_str().unwrap();
    let done = s.wait_terminal(id, SECS_10).await;
    assert_eq!(done["result"], "once");
    // after completion the key still maps to the same task
    let (status, again) = s.post("/v1/tasks", &body).await;
    assert_eq!((status.as_u16(), &again["id"]), (200, &first["id"]), "{again}");
}

async fn nodes_by_status(api: &Api) -> Vec<(String, String, String)> {
    let (status, body) = api.get("/v1/nodes").await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or("").to_string();
            (s("id"), s("role"), s("status"))
        })
        .collect()
}

async fn wait_alive_roles(api: &Api) -> Vec<(String, String, String)> {
    let deadline = std::time::Instant::now() + SECS_10;
    loop {
        let nodes = nodes_by_status(api).await;
        let alive: BTreeSet<&str> = nodes.iter().filter(|n| n.2 == "alive").map(|n| n.1.as_str()).collect();
        if alive == BTreeSet::from(["gateway", "supervisor", "worker"]) {
            return nodes;
        }
        assert!(std::time::Instant::now() < deadline, "not all roles alive: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_health_metrics_and_openapi() {
    let mut s = Smith::start(Opts::new()).await;
    let first = wait_alive_roles(&s).await;
    let old_alive: Vec<String> = first.iter().filter(|n| n.2 == "alive").map(|n| n.0.clone()).collect();
    assert_eq!(old_alive.len(), 3, "{first:?}");

    let (status, body) = s.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, doc) = s.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc.is_object() && doc["openapi"].is_string(), "not an OpenAPI document: {doc}");
    let t = s.submit(json!({"agent": "echo", "input": 1})).await;
    s.wait_terminal(t["id"].as_str().unwrap(), SECS_10).await;
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("smith_tasks_submitted_total"), "metrics:\n{text}");

    s.kill9().await;
    s.restart().await;
    let after = wait_alive_roles(&s).await;
    for id in &old_alive {
        let n = after.iter().find(|n| &n.0 == id).unwrap_or_else(|| panic!("node {id} vanished: {after:?}"));
        assert_eq!(n.2, "dead", "killed node {id} not dead: {after:?}");
    }
    let new_alive: Vec<&String> = after.iter().filter(|n| n.2 == "alive").map(|n| &n.0).collect();
    assert_eq!(new_alive.len(), 3, "{after:?}");
    assert!(new_alive.iter().all(|id| !old_alive.contains(id)), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_filters_by_agent_and_kind() {
    // short keep-alives, to see the comments a quiet stream sends
    let s = Smith::start(Opts::new().config("[server]\nkeepalive = \"200ms\"\n")).await;
    let mut feed = s.sse("/v1/events?kind=task.succeeded&agent=echo", None).await;
    let mut echo_ids = BTreeSet::new();
    let mut all_ids = Vec::new();
    for i in 0..25 {
        let body = if i % 5 == 4 {
            json!({"agent": "fail", "input": format!("no {i}"), "max_attempts": 1})
        } else {
            json!({"agent": "echo", "input": i})
        };
        let t = s.submit(body).await;
        let id = t["id"].as_str().unwrap().to_string();
        if t["agent"] == "echo" {
            echo_ids.insert(id.clone());
        }
        all_ids.push(id);
    }
    assert_eq!(echo_ids.len(), 20);
    let mut seen = BTreeSet::new();
    let mut last_pos = 0;
    while seen.len() < 20 {
        let f = feed.next(SECS_10).await.expect("feed closed");
        let v = f.json();
        assert_eq!(f.event, "task.succeeded", "{v}");
        assert_eq!(v["agent"], "echo", "{v}");
        assert!(f.num() > last_pos, "positions not increasing: {} after {last_pos}", f.num());
        last_pos = f.num();
        assert_eq!(v["pos"], json!(f.num()), "{v}");
        let id = v["task_id"].as_str().unwrap().to_string();
        assert!(echo_ids.contains(&id), "foreign task in the feed: {v}");
        assert!(seen.insert(id), "duplicate: {v}");
    }
    for id in &all_ids {
        s.wait_terminal(id, SECS_10).await;
    }
    match feed.next_within(Duration::from_millis(700)).await {
        Next::Timeout => {}
        other => panic!("unexpected frame after the 20 echo successes: {other:?}"),
    }
    assert!(feed.comments() >= 1, "no keep-alive comment on a quiet stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submits_follows_cancels_and_lists() {
    let s = Smith::start(Opts::new()).await;
    let server = s.base.clone();
    let t = Duration::from_secs(30);

    let (code, out, err) = cli(&["task", "submit", "echo", "--input", "hi", "--follow", "--server", &server], t).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.lines().any(|l| l.contains("output") && l.trim_end().ends_with("hi")), "no output line:\n{out}");
    assert!(out.contains("task.succeeded"), "{out}");

    let (code, out, err) =
        cli(&["task", "submit", "fail", "--input", "boom", "--max-attempts", "1", "--follow", "--server", &server], t)
            .await;
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("task.failed") && out.contains("boom"), "{out}");

    let (code, out, err) = cli(&["task", "submit", "sleep", "--input", "5000", "--server", &server], t).await;
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert!(id.parse::<uuid::Uuid>().is_ok(), "submit printed {out:?}");
    s.wait_status(&id, "running", SECS_10).await;
    let (code, out, err) = cli(&["task", "cancel", &id, "--server", &server], t).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let (code, out, err) = cli(&["task", "watch", &id, "--server", &server], t).await;
    assert_eq!(code, 3, "watch of a cancelled task; stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("task.cancelled"), "{out}");

    let (code, out, err) = cli(&["task", "get", &id, "--json", "--server", &server], t).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["status"], "cancelled");

    let (code, out, err) = cli(&["agents", "--server", &server], t).await;
    assert_eq!(code, 0, "{err}");
    for name in ["echo", "sleep", "fail", "stream"] {
        assert!(out.lines().any(|l| l.split_whitespace().next() == Some(name)), "agents does not list {name}:\n{out}");
    }

    let (code, _, err) = cli(&["task", "get", "0196c0a0-0000-7000-8000-000000000000", "--server", &server], t).await;
    assert_ne!(code, 0, "get of an unknown task must fail");
    assert!(err.contains("404"), "{err}");
}

/// SPEC §5: `--json` is a global flag for machine output (`smith --json task get ID`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_json_flag_before_the_command() {
    let s = Smith::start(Opts::new()).await;
    let t = s.submit(json!({"agent": "echo", "input": "j"})).await;
    let id = t["id"].as_str().unwrap();
    let server = s.base.clone();
    let (code, out, err) = cli(&["--json", "task", "get", id, "--server", &server], Duration::from_secs(30)).await;
    assert_eq!(code, 0, "`smith --json task get ID` failed; stdout:\n{out}\nstderr:\n{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["id"], json!(id));
}

#[test]
fn harness_sse_parser_handles_split_chunks_comments_and_multiline_data() {
    let mut p = common::SseParser::default();
    assert!(p.push(b": keep-alive\n\nid: 3\nevent: out").is_empty());
    assert!(p.push(b"put\ndata: {\"a\":").is_empty());
    let frames = p.push(b"\ndata: 1}\n\nid:4\r\ndata:x\r\n\r\n");
    assert_eq!(frames.len(), 2);
    assert_eq!((frames[0].id.as_str(), frames[0].event.as_str()), ("3", "output"));
    assert_eq!(frames[0].data, "{\"a\":\n1}");
    assert_eq!(frames[0].json(), json!({"a": 1}));
    assert_eq!((frames[1].num(), frames[1].data.as_str()), (4, "x"));
    assert_eq!(p.comments(), 1);
}

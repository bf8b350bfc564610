//! The tenant wall on the live paths, through the real `smith up` binary: feed streams opened
//! before the work happens (no `after`, so every frame comes from the live hub, not the replay)
//! carry a tenant's own events and fleet events only — for every filter, and for discoveries
//! and messages — while the platform's stream sees every tenant. The MCP tools act within the
//! caller's tenant.

use crate::common;

use common::{Api, Frame, Next, Opts, SseStream};
use serde_json::{json, Value};
use std::time::Duration;

const ROOT: &str = "root-token-for-live-tenancy-0123456";
const WAIT: Duration = Duration::from_secs(20);
/// How long a stream is still read after the last event it waits for: a leak would arrive here.
const LINGER: Duration = Duration::from_millis(1500);

/// A key of `tenant` that may submit and read.
async fn key(root: &Api, tenant: &str) -> Api {
    let (status, body) =
        root.post("/v1/keys", &json!({"tenant": tenant, "scopes": ["tasks:write", "tasks:read"]})).await;
    assert_eq!(status, 201, "create key: {body}");
    Api::new(&root.base, Some(body["secret"].as_str().expect("the secret").to_string()))
}

/// Reads `stream` until a frame satisfies `done` (panics after [`WAIT`]), then for [`LINGER`]
/// more; every frame read.
async fn read_past(stream: &mut SseStream, what: &str, done: impl Fn(&Frame) -> bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match stream.next_within(left).await {
            Next::Frame(f) => {
                let last = done(&f);
                frames.push(f);
                if last {
                    break;
                }
            }
            Next::Closed => panic!("{what}: the stream closed ({:?}) after {frames:#?}", stream.error),
            Next::Timeout => panic!("{what}: the awaited frame did not come within {WAIT:?}; read {frames:#?}"),
        }
    }
    loop {
        match stream.next_within(LINGER).await {
            Next::Frame(f) => frames.push(f),
            Next::Closed | Next::Timeout => return frames,
        }
    }
}

fn ended(task: &str) -> impl Fn(&Frame) -> bool + '_ {
    move |f| common::is_terminal_kind(&f.event) && f.json()["task_id"] == task
}

/// No frame holds any of `secrets`, in its id, kind or data.
fn none_holds(frames: &[Frame], secrets: &[&str], who: &str) {
    for f in frames {
        for s in secrets {
            assert!(
                !f.data.contains(s) && !f.id.contains(s) && !f.event.contains(s),
                "{who} was shown {s:?}: {f:?}\nall frames: {frames:#?}"
            );
        }
    }
}

/// Every frame is the reader's tenant's or a fleet event.
fn all_own_or_fleet(frames: &[Frame], tenant: &str) {
    for f in frames {
        let v = f.json();
        let fleet = f.event == "system" && v["task_id"].is_null() && v["tenant"].is_null();
        assert!(fleet || v["tenant"] == tenant, "{tenant}'s stream carried {v}");
    }
}

fn holds(frames: &[Frame], text: &str) -> bool {
    frames.iter().any(|f| f.data.contains(text))
}

/// `smith up` with the platform token, and a key of each of two tenants, `acme` and `globex`.
async fn two_tenants() -> (common::Smith, Api, Api, Api) {
    let s = common::Smith::start(Opts::new().token(ROOT)).await;
    let root = s.api();
    let acme = key(&root, "acme").await;
    let globex = key(&root, "globex").await;
    (s, root, acme, globex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_feed_carries_no_byte_of_another_tenants_task() {
    let (_s, root, acme, globex) = two_tenants().await;

    // every stream opened first, from now: what follows reaches them live
    let mut globex_all = globex.sse("/v1/events", None).await;
    let mut globex_echo = globex.sse("/v1/events?agent=echo", None).await;
    let mut globex_done = globex.sse("/v1/events?kind=output,task.succeeded", None).await;
    let mut acme_all = acme.sse("/v1/events", None).await;
    let mut root_all = root.sse("/v1/events", None).await;
    // each stream hooks into the hub from its own task, just after its response is made
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ta, done) = acme.run(json!({"agent": "echo", "input": "acme-secret-42"}), WAIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // globex's own task comes after acme's finished: its end is globex's signal to stop reading
    let tb = globex.submit_id(json!({"agent": "echo", "input": "globex-own-7"})).await;
    globex.wait_terminal(&tb, WAIT).await;

    let secrets = [ta.as_str(), "acme-secret-42", "acme"];
    for (stream, what) in [
        (&mut globex_all, "globex /v1/events"),
        (&mut globex_echo, "globex ?agent=echo"),
        (&mut globex_done, "globex ?kind"),
    ] {
        let frames = read_past(stream, what, ended(&tb)).await;
        none_holds(&frames, &secrets, what);
        all_own_or_fleet(&frames, "globex");
        assert!(holds(&frames, "globex-own-7"), "{what}: globex's own output is live: {frames:#?}");
    }

    // acme's own stream shows its task live, from queued to the result, and nothing of globex's
    let frames = read_past(&mut acme_all, "acme /v1/events", ended(&ta)).await;
    let kinds: Vec<&str> =
        frames.iter().filter(|f| f.json()["task_id"] == ta.as_str()).map(|f| f.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"task.queued"), "{frames:#?}");
    assert!(kinds.contains(&"task.started") && kinds.contains(&"output"), "{kinds:?}");
    assert!(holds(&frames, "acme-secret-42"), "acme sees its own output: {frames:#?}");
    assert!(frames.iter().all(|f| f.json()["task_id"] != tb.as_str()), "{frames:#?}");
    all_own_or_fleet(&frames, "acme");
    none_holds(&frames, &[tb.as_str(), "globex-own-7"], "acme");

    // the platform sees both tenants live
    let frames = read_past(&mut root_all, "root /v1/events", ended(&tb)).await;
    assert!(holds(&frames, "acme-secret-42") && holds(&frames, "globex-own-7"), "{frames:#?}");
    let tenants: std::collections::BTreeSet<String> =
        frames.iter().filter_map(|f| f.json()["tenant"].as_str().map(str::to_string)).collect();
    assert_eq!(tenants, ["acme".to_string(), "globex".to_string()].into(), "{frames:#?}");

    // and each task's own stream, read by its tenant, says whose it is
    let own = globex.events(&tb, WAIT).await;
    assert!(!own.is_empty() && own.iter().all(|f| f.json()["tenant"] == "globex"), "{own:#?}");
    let (status, _) = globex.send(globex.request(reqwest::Method::GET, &format!("/v1/tasks/{ta}/events"))).await;
    assert_eq!(status, 404, "acme's task stream does not exist for globex");
}

async fn mcp(api: &Api, task: Option<&str>, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    let mut r = api.request(reqwest::Method::POST, "/mcp").json(&body);
    if let Some(t) = task {
        r = r.header("x-smith-task", t);
    }
    let (status, answer) = api.send(r).await;
    assert_eq!(status, 200, "{tool}: {answer}");
    answer["result"].clone()
}

/// As `task` of `api`'s tenant: shares the discovery `finding`, then sends every `sleep` task
/// the message `note`.
async fn share_and_send(api: &Api, task: &str, finding: &str, confidence: f64, note: &str) {
    let shared = mcp(
        api,
        Some(task),
        "share_discovery",
        json!({"type": "insight", "content": finding, "confidence": confidence}),
    )
    .await;
    structured(&shared);
    let sent = mcp(api, Some(task), "send_message", json!({"to_agent": "sleep", "body": note})).await;
    structured(&sent);
}

fn structured(result: &Value) -> Value {
    assert_eq!(result["isError"], false, "{result:#}");
    result["structuredContent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discoveries_and_messages_stay_in_their_tenant_live_and_through_mcp() {
    let (_s, root, acme, globex) = two_tenants().await;
    // a task of each tenant to act as (a long sleep: it stays running while the tools are called)
    let ta = acme.submit_id(json!({"agent": "sleep", "input": 60_000})).await;
    let tb = globex.submit_id(json!({"agent": "sleep", "input": 60_000})).await;
    acme.wait_status(&ta, "running", WAIT).await;
    globex.wait_status(&tb, "running", WAIT).await;

    let path = "/v1/events?kind=discovery,message";
    let mut globex_feed = globex.sse(path, None).await;
    let mut acme_feed = acme.sse(path, None).await;
    let mut root_feed = root.sse(path, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // acme's discovery and its message to every `sleep` task — globex's included, by name
    share_and_send(&acme, &ta, "acme-finding-99", 0.9, "acme-note-77").await;
    // then globex's own, which ends what globex's stream waits for
    share_and_send(&globex, &tb, "globex-finding-5", 0.5, "globex-note-3").await;

    let acme_secrets = ["acme-finding-99", "acme-note-77", ta.as_str(), "acme"];
    let frames = read_past(&mut globex_feed, "globex's collaboration feed", |f| f.data.contains("globex-note-3")).await;
    none_holds(&frames, &acme_secrets, "globex");
    all_own_or_fleet(&frames, "globex");
    assert!(holds(&frames, "globex-finding-5"), "{frames:#?}");

    let frames = read_past(&mut acme_feed, "acme's collaboration feed", |f| f.data.contains("acme-note-77")).await;
    assert!(holds(&frames, "acme-finding-99"), "{frames:#?}");
    none_holds(&frames, &["globex-finding-5", "globex-note-3", tb.as_str()], "acme");
    all_own_or_fleet(&frames, "acme");

    let frames =
        read_past(&mut root_feed, "the platform's collaboration feed", |f| f.data.contains("globex-note-3")).await;
    for text in ["acme-finding-99", "acme-note-77", "globex-finding-5", "globex-note-3"] {
        assert!(holds(&frames, text), "the platform sees {text}: {frames:#?}");
    }

    // the MCP tools act within the caller's tenant
    let listed = structured(&mcp(&globex, Some(&tb), "list_discoveries", json!({})).await);
    assert!(!listed.to_string().contains("acme"), "{listed}");
    assert!(listed.to_string().contains("globex-finding-5"), "{listed}");
    let inbox = structured(&mcp(&globex, Some(&tb), "read_messages", json!({})).await);
    assert!(
        !inbox.to_string().contains("acme"),
        "a message to an agent reaches that agent's tasks in its tenant only: {inbox}"
    );
    assert!(inbox.to_string().contains("globex-note-3"), "{inbox}");
    let inbox = structured(&mcp(&acme, Some(&ta), "read_messages", json!({})).await);
    assert!(inbox.to_string().contains("acme-note-77") && !inbox.to_string().contains("globex"), "{inbox}");
    let awaited = mcp(&globex, Some(&tb), "await_task", json!({"id": ta, "timeout_s": 0})).await;
    assert_eq!(awaited["isError"], true, "{awaited}");
    assert_eq!(awaited["content"][0]["text"], format!("no task {ta}"), "acme's task does not exist for globex");
    let spawned = structured(&mcp(&globex, Some(&tb), "spawn_task", json!({"agent": "echo", "input": "child"})).await);
    let child = spawned["id"].as_str().expect("a child id").to_string();
    assert_eq!(globex.get_task(&child).await["tenant"], "globex");
    let (status, _) = acme.get(&format!("/v1/tasks/{child}")).await;
    assert_eq!(status, 404, "globex's child is globex's");

    acme.cancel(&ta).await;
    globex.cancel(&tb).await;
}

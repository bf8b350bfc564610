//! Time in the queue, through the real binary: a delayed task starts no earlier than asked and
//! can be cancelled while it waits; a task whose time to live runs out behind a full pool ends
//! `expired` without running; an attempt stopped at its provider's usage limit parks without
//! spending the attempt, holds its whole account until the limit resets, and resumes where it
//! stopped (Claude Code with `--resume`). On `smith up` and on PostgreSQL + NATS.

use crate::common::anthropic_mock::Mock;
use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{self, Api, Opts, Smith};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// One slot: a second task waits behind the first.
const SOLO: &str = "[agents.solo]\nexecutor = \"builtin\"\nbuiltin = \"sleep\"\nconcurrency = 1\n";

/// The kinds of a finished task's events, in order.
async fn kinds(api: &Api, id: &str) -> Vec<String> {
    common::kinds(&api.events(id, WAIT).await)
}

/// The Done-when cases on one deployment: a task delayed 2 s starts at least 2 s after its
/// submission; one cancelled while scheduled never starts; one with a 1 s time to live behind a
/// full pool ends `expired` and never runs; malformed times change nothing.
async fn delays_cancels_and_expiries(api: &Api) {
    let cancelled = api.submit(json!({"agent": "echo", "input": "never", "delay": "3s"})).await;
    assert_eq!(cancelled["status"], "scheduled", "{cancelled}");
    let cancelled = cancelled["id"].as_str().unwrap().to_string();
    let (status, body) = api.cancel(&cancelled).await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(api.get_task(&cancelled).await["status"], "cancelled");

    let delayed = api.submit(json!({"agent": "echo", "input": "later", "delay": "2s"})).await;
    assert_eq!(delayed["status"], "scheduled", "{delayed}");
    let created = common::micros(&delayed["created_at"]);
    let run_at = common::micros(&delayed["run_at"]);
    assert!((run_at - created - 2_000_000).abs() < 500_000, "run_at is 2 s after submission: {delayed}");
    let id = delayed["id"].as_str().unwrap();
    let (listed, _) = api.get("/v1/tasks?status=scheduled").await;
    assert_eq!(listed, 200);
    let done = api.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let started = common::micros(&done["started_at"]);
    assert!(started - created >= 2_000_000, "started {} µs after submission", started - created);
    assert_eq!(done["run_at"], Value::Null, "a task that is no longer scheduled shows no run_at");
    assert_eq!(kinds(api, id).await[..3], ["task.scheduled", "task.queued", "task.started"]);

    // the cancelled one never started, though its time came meanwhile
    let task = api.get_task(&cancelled).await;
    assert_eq!((task["status"].as_str(), task["attempt"].as_u64()), (Some("cancelled"), Some(0)), "{task}");
    assert_eq!(kinds(api, &cancelled).await, ["task.scheduled", "task.cancelled"]);

    // a full pool: the second task's 1 s time to live runs out before a slot frees
    let blocker = api.submit_id(json!({"agent": "solo", "input": 4000})).await;
    api.wait_status(&blocker, "running", WAIT).await;
    let short = api.submit(json!({"agent": "solo", "input": 10, "ttl": "1s"})).await;
    let expires = common::micros(&short["expires_at"]);
    assert!((expires - common::micros(&short["created_at"]) - 1_000_000).abs() < 200_000, "{short}");
    let short = short["id"].as_str().unwrap().to_string();
    let task = api.wait_terminal(&short, WAIT).await;
    assert_eq!(task["status"], "expired", "{task}");
    assert_eq!((task["attempt"].as_u64(), &task["started_at"]), (Some(0), &Value::Null), "{task}");
    assert_eq!(task["error"]["code"], "expired");
    assert_eq!(kinds(api, &short).await, ["task.queued", "task.expired"]);
    assert_eq!(api.wait_terminal(&blocker, WAIT).await["status"], "succeeded");

    for (body, why) in [
        (json!({"agent": "echo", "input": 1, "delay": "2s", "run_at": "2030-01-01T00:00:00Z"}), "both"),
        (json!({"agent": "echo", "input": 1, "delay": "soon"}), "a malformed delay"),
        (json!({"agent": "echo", "input": 1, "run_at": "tomorrow"}), "a malformed run_at"),
        (json!({"agent": "echo", "input": 1, "run_at": "2999-01-01T00:00:00Z"}), "a run_at centuries ahead"),
        (json!({"agent": "echo", "input": 1, "ttl": 0}), "a zero ttl"),
        (json!({"agent": "echo", "input": 1, "delay": "400d"}), "a delay over a year"),
    ] {
        let before = api.list_all("").await.len();
        let (status, err) = api.post("/v1/tasks", &body).await;
        assert!(status.is_client_error(), "{why}: {status} {err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}: {err}");
        assert_eq!(api.list_all("").await.len(), before, "{why} created a task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_cancelled_and_expired_tasks_on_smith_up() {
    let smith = Smith::start(Opts::new().config(SOLO)).await;
    delays_cancels_and_expiries(&smith.api()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_cancelled_and_expired_tasks_on_postgres() {
    let Some(services) = Services::from_env() else { return };
    let cluster = Cluster::new(&services, SOLO).await;
    let _supervisor = cluster.start(Role::Supervisor).await;
    let _worker = cluster.start(Role::Worker).await;
    let gateway = cluster.start(Role::Gateway).await;
    delays_cancels_and_expiries(&gateway.api()).await;
}

/// A stand-in for the Claude Code CLI: its first run (no `--resume`) stops at the usage limit,
/// resetting 3 s ahead; a `--resume`d run succeeds. Every run's arguments go to `args.log`.
fn fake_claude(dir: &std::path::Path) -> String {
    let path = dir.join("claude");
    let log = dir.join("args.log");
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> '{log}'
cat > /dev/null
case " $* " in
  *" --resume "*)
    echo '{{"type":"system","subtype":"init","session_id":"sess-limited","model":"claude-mock"}}'
    echo '{{"type":"result","subtype":"success","is_error":false,"result":"resumed and done","session_id":"sess-limited","num_turns":1}}'
    ;;
  *)
    reset=$(( $(date +%s) + 3 ))
    echo '{{"type":"system","subtype":"init","session_id":"sess-limited","model":"claude-mock"}}'
    echo '{{"type":"assistant","message":{{"id":"m1","content":[{{"type":"text","text":"working"}}],"usage":{{"input_tokens":3,"output_tokens":2}}}}}}'
    echo "{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"Claude AI usage limit reached|$reset\",\"session_id\":\"sess-limited\"}}"
    ;;
esac
"#,
        log = log.display()
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// The parked task's `task.parked` event.
async fn parked_event(api: &Api, id: &str) -> Value {
    let mut stream = api.sse(&format!("/v1/tasks/{id}/events"), None).await;
    loop {
        let frame = stream.next(WAIT).await.expect("the stream ended before a task.parked event");
        if frame.event == "task.parked" {
            return frame.json();
        }
    }
}

/// The Done-when case: a Claude Code run that reports the usage limit (reset 3 s ahead) parks
/// without spending its only attempt, is resumed with `--resume` of its CLI session after the
/// reset, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_run_at_its_usage_limit_parks_and_resumes_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let claude = fake_claude(dir.path());
    let config = format!(
        "[providers.team-max]\n\n[agents.coder]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmax_attempts = 1\n\
         account = \"team-max\"\n"
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "coder", "input": "build it"})).await;
    let parked = api.wait_status(&id, "parked", WAIT).await;
    let run_at = common::micros(&parked["run_at"]);
    assert!(run_at > common::micros(&parked["created_at"]), "a parked task shows when it resumes: {parked}");
    let event = parked_event(&api, &id).await;
    assert_eq!(event["data"]["account"], "team-max", "{event}");
    assert!(event["data"]["reason"].as_str().unwrap_or_default().contains("usage limit"), "{event}");
    let metrics = api.get("/metrics").await.1;
    assert!(metrics.as_str().unwrap_or_default().contains("smith_tasks_parked"), "the parked gauge is served");

    let done = api.wait_terminal(&id, WAIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["text"], "resumed and done");
    assert_eq!(done["attempt"], 2, "the parked attempt was not spent: {done}");
    assert!(common::micros(&done["started_at"]) >= run_at, "resumed before the reset: {done}");
    let args = std::fs::read_to_string(dir.path().join("args.log")).unwrap();
    let runs: Vec<&str> = args.lines().collect();
    assert_eq!(runs.len(), 2, "{args}");
    assert!(!runs[0].contains("--resume") && runs[1].contains("--resume sess-limited"), "{args}");
    let kinds = kinds(&api, &id).await;
    let at = kinds.iter().position(|k| k == "task.parked").expect("parked");
    assert_eq!(kinds[at + 1..at + 3], ["task.queued", "task.started"], "{kinds:?}");
}

/// The mock provider answers a 429 with a reset 3 s ahead: the task parks (its attempt not
/// spent) and carries on after the reset; another task of the same account submitted meanwhile
/// waits for the reset too instead of meeting the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_limit_parks_every_task_of_its_account_until_the_reset() {
    let mock = Mock::start().await;
    let agent = |name: &str| {
        format!(
            "[agents.{name}]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
             api_key = \"sk-test-secret\"\nmax_attempts = 1\naccount = \"shared-key\"\n",
            mock.url
        )
    };
    let config = format!("[providers.shared-key]\n\n{}{}", agent("writer"), agent("reviewer"));
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "writer", "input": "LIMIT one"})).await;
    let parked = api.wait_status(&id, "parked", WAIT).await;
    let event = parked_event(&api, &id).await;
    let until = common::micros(&event["data"]["resets_at"]);
    assert_eq!(common::micros(&parked["run_at"]), common::micros(&event["data"]["until"]), "{parked}");
    assert!(common::micros(&event["data"]["until"]) >= until, "{event}");
    // the other agent shares the account: it waits for the reset, never meeting the limit
    let other = api.submit_id(json!({"agent": "reviewer", "input": "hello"})).await;
    let done = api.wait_terminal(&id, WAIT).await;
    assert_eq!((done["status"].as_str(), done["attempt"].as_u64()), (Some("succeeded"), Some(2)), "{done}");
    assert_eq!(done["result"]["text"], "past the limit");
    let other = api.wait_terminal(&other, WAIT).await;
    assert_eq!(other["status"], "succeeded", "{other}");
    assert!(common::micros(&other["started_at"]) >= until, "the account's other task ran before its reset");
    let refused = mock.state.limited.lock().unwrap().len();
    assert_eq!(refused, 1, "one 429 in all");
}

//! Caps on what tasks and tenants write, through the real binary: a task over `[limits]
//! task_events` or `task_output_bytes` fails `output_limit_exceeded` with no more than its cap
//! stored, a tenant over `[quotas] daily_output_bytes` is refused (and another is not), a
//! store over `[limits] store_max_bytes` refuses new work with 507 and says so in its metrics,
//! the demo agents run within the defaults, and `smith up` marks dead only its own previous
//! nodes in a store it shares.

use crate::common;

use common::{assert_error, Api, Opts, Smith};
use serde_json::{json, Value};
use std::time::Duration;

const ROOT: &str = "root-token-for-tests-0123456789";

async fn key(admin: &Api, tenant: &str) -> Api {
    let (status, body) =
        admin.post("/v1/keys", &json!({"tenant": tenant, "scopes": ["tasks:write", "tasks:read"]})).await;
    assert_eq!(status, 201, "create key: {body}");
    Api::new(&admin.base, Some(body["secret"].as_str().expect("secret").to_string()))
}

fn outputs(frames: &[common::Frame]) -> Vec<Value> {
    frames.iter().filter(|f| f.event == "output").map(|f| f.json()).collect()
}

/// The reproduction (a `stream` task asked for 100,000,000 events) under caps: it fails
/// `output_limit_exceeded`, not retried, and the store holds no more than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_output_caps_fails_and_stores_no_more_than_the_cap() {
    let s = Smith::start(Opts::new().config("[limits]\ntask_events = 100\ntask_output_bytes = 200000\n")).await;

    let id = s.submit_id(json!({"agent": "stream", "input": {"events": 100_000_000u64, "bytes": 100}})).await;
    let task = s.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["code"], "output_limit_exceeded", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(message.contains("100 events") && message.contains("task_events"), "{message}");
    assert_eq!(task["attempt"], 1, "never retried: {task}");
    let frames = s.events(&id, Duration::from_secs(10)).await;
    assert_eq!(outputs(&frames).len(), 100, "what fit is kept, nothing more");

    // 1 MiB events, as in the report: the bytes cap stops it before the first one is stored
    let id = s.submit_id(json!({"agent": "stream", "input": {"events": 100_000_000u64, "bytes": 1_048_576}})).await;
    let task = s.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(task["error"]["code"], "output_limit_exceeded", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(message.contains("200000 bytes") && message.contains("task_output_bytes"), "{message}");
    let frames = s.events(&id, Duration::from_secs(10)).await;
    let stored: usize = outputs(&frames).iter().map(|o| o.to_string().len()).sum();
    assert!(stored <= 200_000, "the store holds {stored} bytes of output");

    // within the caps, the same agent succeeds
    let id = s.submit_id(json!({"agent": "stream", "input": {"events": 99, "bytes": 100}})).await;
    assert_eq!(s.wait_terminal(&id, Duration::from_secs(30)).await["status"], "succeeded");
}

/// The built-in agents, as the tests and `smith bench` use them, run within the default caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_agents_run_within_the_default_caps() {
    let s = Smith::start(Opts::new()).await;
    for body in [
        json!({"agent": "echo", "input": "x".repeat(3 << 20)}),
        // `smith bench --scenario events`: 1,000 events of 14 KiB
        json!({"agent": "stream", "input": {"events": 1000, "bytes": 14 * 1024}}),
        json!({"agent": "stream", "input": {"events": 5, "bytes": 100, "interval_ms": 10}}),
        json!({"agent": "sleep", "input": 10}),
    ] {
        let id = s.submit_id(body.clone()).await;
        let task = s.wait_terminal(&id, Duration::from_secs(60)).await;
        assert_eq!(task["status"], "succeeded", "{body:.80}: {task:.300}");
    }
}

/// A tenant whose tasks wrote its daily output bytes is refused (429, nothing created);
/// another tenant is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_daily_output_bytes_is_refused_and_another_is_not() {
    let config = "[quotas]\ndaily_output_bytes = 1000000\n[quotas.tenant.acme]\ndaily_output_bytes = 5000\n";
    let s = Smith::start(Opts::new().token(ROOT).config(config)).await;
    let acme = key(&s.api(), "acme").await;
    let globex = key(&s.api(), "globex").await;

    let id = acme.submit_id(json!({"agent": "echo", "input": "a".repeat(6000)})).await;
    assert_eq!(acme.wait_terminal(&id, Duration::from_secs(30)).await["status"], "succeeded");
    let (status, body) = acme.post("/v1/tasks", &json!({"agent": "echo", "input": "again"})).await;
    assert_error("acme over its bytes", status, &body, 429, "rate_limited", "daily_output_bytes");
    assert_eq!(acme.list_all("").await.len(), 1, "the refused submission created nothing");

    let id = globex.submit_id(json!({"agent": "echo", "input": "b".repeat(6000)})).await;
    assert_eq!(globex.wait_terminal(&id, Duration::from_secs(30)).await["status"], "succeeded");
    let (status, body) = globex.post("/v1/tasks", &json!({"agent": "echo", "input": "again"})).await;
    assert_eq!(status, 201, "globex is under its quota: {body}");
}

/// A store over `store_max_bytes` refuses submissions with 507, creates nothing, and its
/// gauges say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_new_work_with_507_and_its_gauges_say_so() {
    let s = Smith::start(Opts::new().config("[limits]\nstore_max_bytes = 4096\n")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = s.post("/v1/tasks", &json!({"agent": "echo", "input": "x"})).await;
        if status != 201 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_error("full store", status, &body, 507, "insufficient_storage", "store_max_bytes");
    let before = s.list_all("").await.len();
    let (status, _) = s.post("/v1/tasks", &json!({"agent": "echo", "input": "y"})).await;
    assert_eq!(status, 507);
    assert_eq!(s.list_all("").await.len(), before, "a refused submission creates nothing");

    let metrics = reqwest::get(s.url("/metrics")).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("smith_store_full"), 1.0);
    assert_eq!(value("smith_store_max_bytes"), 4096.0);
    assert!(value("smith_store_size_bytes") > 4096.0);
}

/// `smith up` on a store another process uses: at start it marks dead its own previous
/// incarnation (recorded in its data dir), never a live node of another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smith_up_marks_dead_only_its_own_previous_nodes() {
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("shared.db");
    let config = format!("[store]\nurl = \"sqlite://{}\"\n", db.display());
    let mut s = Smith::start(Opts::new().config(&config)).await;
    let (_, nodes) = s.get("/v1/nodes").await;
    let previous: Vec<String> = nodes["items"]
        .as_array()
        .or(nodes.as_array())
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert!(previous.iter().any(|id| id.starts_with("worker-")), "{nodes}");
    s.kill9().await;

    // another process's worker on the same store, heartbeating
    let store = smith_store::open(&format!("sqlite://{}", db.display()), &Default::default()).await.unwrap();
    let now = smith_core::Micros::now();
    let foreign = smith_core::Node {
        id: "worker-of-another-process".into(),
        role: smith_core::NodeRole::Worker,
        version: "0".into(),
        address: None,
        status: smith_core::NodeStatus::Alive,
        started_at: now,
        // ahead, so no supervisor finds it silent while the test looks
        heartbeat_at: now.plus(Duration::from_secs(3600)),
        load: json!({}),
    };
    store.heartbeat(&foreign).await.unwrap();
    drop(store);

    s.restart().await;
    let (_, nodes) = s.get("/v1/nodes").await;
    let all = nodes["items"].as_array().or(nodes.as_array()).expect("nodes").clone();
    let status = |id: &str| all.iter().find(|n| n["id"] == id).map(|n| n["status"].as_str().unwrap().to_string());
    assert_eq!(status("worker-of-another-process").as_deref(), Some("alive"), "{nodes}");
    for id in &previous {
        assert_eq!(status(id).as_deref(), Some("dead"), "{id}: {nodes}");
    }
}

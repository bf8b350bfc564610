//! Webhooks through the real binary: a receiver in the test (axum on 127.0.0.1) that fails on
//! purpose, signatures checked here with ring, restarts and `kill -9` mid-retry on `smith up`
//! and in the distributed shape, the SSRF guard, a task's own webhook, and the tenant wall.

use crate::common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use common::cluster::{Cluster, Role, Services};
use common::{Api, Opts, Smith};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECS_30: Duration = Duration::from_secs(30);

/// `smith.toml` for tests: receivers run on loopback, retries come fast.
const ALLOW_LOOPBACK: &str = "[webhooks]\nallow_private = true\nbackoff = \"100ms\"\nmax_backoff = \"500ms\"\n";

/// One request a receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    status: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Script {
    hits: Vec<Hit>,
    /// Answers 500 to the first this many requests of each `webhook-id`.
    fail_first: usize,
    /// Answers 500 to everything while set.
    down: bool,
}

/// A webhook receiver on 127.0.0.1 that records every request.
#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

async fn receive(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut s = script.lock().unwrap();
    let id = header("webhook-id");
    let before = s.hits.iter().filter(|h| h.id == id).count();
    let status = if s.down || before < s.fail_first { 500 } else { 200 };
    s.hits.push(Hit {
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let script = Arc::new(Mutex::new(Script { fail_first, ..Default::default() }));
        let app = Router::new().route("/hook", post(receive)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, script }
    }

    fn hits(&self) -> Vec<Hit> {
        self.script.lock().unwrap().hits.clone()
    }

    fn set_down(&self, down: bool) {
        self.script.lock().unwrap().down = down;
    }

    /// The accepted (200) requests, by `webhook-id`.
    fn accepted(&self) -> BTreeMap<String, Vec<Hit>> {
        let mut out: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
        for h in self.hits().into_iter().filter(|h| h.status == 200) {
            out.entry(h.id.clone()).or_default().push(h);
        }
        out
    }

    /// Waits until `n` distinct deliveries were accepted.
    async fn wait_accepted(&self, n: usize, within: Duration) -> BTreeMap<String, Vec<Hit>> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} of {n} deliveries accepted after {within:?}", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks a Standard Webhooks signature independently of the server's code: HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the secret's base64-decoded key.
fn assert_signed(hit: &Hit, secret: &str) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64 key");
    let mut msg = format!("{}.{}.", hit.id, hit.timestamp).into_bytes();
    msg.extend_from_slice(&hit.body);
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), &msg);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
    assert!(hit.signature.split(' ').any(|s| s == expected), "bad signature {:?} (expected {expected})", hit.signature);
    let ts: i64 = hit.timestamp.parse().expect("a numeric webhook-timestamp");
    let now = common::cluster::now_micros() / 1_000_000;
    assert!((now - ts).abs() < 120, "timestamp {ts} is not now ({now})");
}

async fn subscribe(api: &Api, url: &str, kinds: &[&str]) -> (String, String) {
    let (status, hook) = api.post("/v1/webhooks", &json!({"url": url, "kinds": kinds})).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().expect("a generated secret, shown once").to_string();
    (hook["id"].as_str().unwrap().to_string(), secret)
}

async fn deliveries(api: &Api, hook: &str) -> Vec<Value> {
    let (status, page) = api.get(&format!("/v1/webhooks/{hook}/deliveries?limit=500")).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_each_terminal_event_once_accepted_same_id_valid_signature() {
    let rx = Receiver::start(2).await;
    let s = Smith::start(Opts::new().config(ALLOW_LOOPBACK)).await;
    let api = s.api();
    let (hook, secret) = subscribe(&api, &rx.url, &["task.succeeded", "task.failed"]).await;
    let (shown, listed) = (api.get(&format!("/v1/webhooks/{hook}")).await.1, api.get("/v1/webhooks").await.1);
    assert!(!shown.to_string().contains("whsec_") && !listed.to_string().contains("whsec_"), "{shown} {listed}");

    let (ok, _) = api.run(json!({"agent": "echo", "input": "hi"}), SECS_30).await;
    let (bad, _) = api.run(json!({"agent": "fail", "input": "boom", "max_attempts": 1}), SECS_30).await;
    let accepted = rx.wait_accepted(2, SECS_30).await;
    // nothing else arrives later (no duplicate, no other kind)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.accepted().len(), 2, "{:#?}", rx.accepted());
    let mut seen = BTreeMap::new();
    for (id, oks) in &accepted {
        assert_eq!(oks.len(), 1, "{id} accepted more than once");
        let tries: Vec<Hit> = rx.hits().into_iter().filter(|h| h.id == *id).collect();
        assert_eq!(tries.iter().map(|h| h.status).collect::<Vec<_>>(), [500, 500, 200], "{id}");
        for t in &tries {
            assert_signed(t, &secret);
            assert_eq!(t.body, tries[0].body, "every attempt sends the same body");
        }
        let body = oks[0].json();
        assert_eq!(body["type"], body["data"]["kind"], "{body}");
        assert!(body["timestamp"].is_string(), "{body}");
        seen.insert(body["data"]["task_id"].as_str().unwrap().to_string(), body["type"].as_str().unwrap().to_string());
    }
    let want = BTreeMap::from([(ok, "task.succeeded".to_string()), (bad, "task.failed".to_string())]);
    assert_eq!(seen, want);

    // the delivery log says the same, and a delivered one is not replayed
    let log = deliveries(&api, &hook).await;
    assert_eq!(log.len(), 2, "{log:#?}");
    for d in &log {
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_u64(), d["last_status"].as_u64()),
            (Some("delivered"), Some(3), Some(200)),
            "{d}"
        );
        assert!(accepted.contains_key(d["id"].as_str().unwrap()), "{d}");
        assert!(!d.to_string().contains("whsec_") && d.get("url").is_none(), "{d}");
    }
    let did = log[0]["id"].as_str().unwrap();
    let (status, body) = api.post(&format!("/v1/webhooks/{hook}/deliveries/{did}/replay"), &json!({})).await;
    assert_eq!(status, 409, "{body}");

    // deleted: no more deliveries, and it is gone
    let (status, _) = api.send(api.request(reqwest::Method::DELETE, &format!("/v1/webhooks/{hook}"))).await;
    assert_eq!(status, 204);
    assert_eq!(api.get(&format!("/v1/webhooks/{hook}")).await.0, 404);
    api.run(json!({"agent": "echo", "input": "after"}), SECS_30).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rx.accepted().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_marked_failed_and_replayed_on_request() {
    let rx = Receiver::start(0).await;
    rx.set_down(true);
    let config = format!("{ALLOW_LOOPBACK}retry_for = \"1s\"\n");
    let s = Smith::start(Opts::new().config(&config)).await;
    let api = s.api();
    let (hook, secret) = subscribe(&api, &rx.url, &["task.*"]).await;
    api.run(json!({"agent": "echo", "input": "x"}), SECS_30).await;
    let failed = common::cluster::eventually("three deliveries failed", SECS_30, || {
        let api = api.clone();
        let hook = hook.clone();
        async move {
            let log = deliveries(&api, &hook).await;
            if log.len() == 3 && log.iter().all(|d| d["state"] == "failed") {
                Ok(log)
            } else {
                Err(format!("{log:?}"))
            }
        }
    })
    .await;
    let kinds: BTreeSet<&str> = failed.iter().map(|d| d["event_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["task.queued", "task.started", "task.succeeded"]));
    for d in &failed {
        assert!(d["attempts"].as_u64().unwrap() >= 2, "retried before giving up: {d}");
        assert_eq!(d["last_error"], "HTTP 500", "{d}");
        assert!(d["next_at"].is_null(), "{d}");
    }
    rx.set_down(false);
    let did = failed[0]["id"].as_str().unwrap().to_string();
    let (status, body) = api.post(&format!("/v1/webhooks/{hook}/deliveries/{did}/replay"), &json!({})).await;
    assert_eq!((status.as_u16(), body["state"].as_str()), (202, Some("pending")), "{body}");
    let accepted = rx.wait_accepted(1, SECS_30).await;
    assert_eq!(accepted.keys().collect::<Vec<_>>(), [&did], "only the replayed one");
    assert_signed(&accepted[&did][0], &secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_url_is_refused_unless_allowed() {
    let s = Smith::start(Opts::new()).await;
    let api = s.api();
    for url in ["http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::ffff:127.0.0.1]:9/", "http://10.0.0.1/"] {
        let (status, body) = api.post("/v1/webhooks", &json!({"url": url, "kinds": ["*"]})).await;
        assert_eq!(status, 422, "{url}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("public addresses only"), "{url}: {msg}");
        let task = json!({"agent": "echo", "input": 1, "webhook": {"url": url}});
        let (status, body) = api.post("/v1/tasks", &task).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("webhook.url"), "{body}");
    }
    let (_, listed) = api.get("/v1/tasks").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "refused submissions create nothing");
    for (body, why) in [
        (json!({"url": "ftp://x.example/", "kinds": ["*"]}), "http"),
        (json!({"url": "https://x.example/", "kinds": ["task.done"]}), "not an event kind"),
        (json!({"url": "https://x.example/", "kinds": ["*"], "secret": "nope"}), "whsec_"),
    ] {
        let (status, err) = api.post("/v1/webhooks", &body).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(why), "{body}: {err}");
    }
    assert_eq!(api.get("/v1/webhooks").await.1["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_own_webhook_gets_its_events() {
    let rx = Receiver::start(0).await;
    let s = Smith::start(Opts::new().config(ALLOW_LOOPBACK)).await;
    let api = s.api();
    let created = api.submit(json!({"agent": "echo", "input": "own", "webhook": {"url": rx.url}})).await;
    let secret = created["webhook"]["secret"].as_str().expect("generated, shown once").to_string();
    let id = created["id"].as_str().unwrap().to_string();
    api.wait_terminal(&id, SECS_30).await;
    let shown = api.get_task(&id).await;
    assert_eq!(shown["webhook"], json!({"url": rx.url}), "never served again: {shown}");
    let accepted = rx.wait_accepted(1, SECS_30).await;
    let hit = &accepted.values().next().unwrap()[0];
    assert_signed(hit, &secret);
    assert_eq!(
        (hit.json()["type"].as_str(), hit.json()["data"]["task_id"].as_str()),
        (Some("task.succeeded"), Some(id.as_str()))
    );

    // a given secret signs; a session's turns keep the webhook they were given
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hook = json!({"url": rx.url, "secret": given});
    let (status, session) = api.post("/v1/sessions", &json!({"agent": "echo", "input": "t1", "webhook": hook})).await;
    assert_eq!(status, 201, "{session}");
    assert!(!session.to_string().contains("whsec_"), "a given secret is not echoed: {session}");
    let sid = session["id"].as_str().unwrap();
    let (status, turn) = api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "t2"})).await;
    assert_eq!(status, 201, "{turn}");
    let turns = [session["turns"][0]["id"].as_str().unwrap().to_string(), turn["id"].as_str().unwrap().to_string()];
    for t in &turns {
        api.wait_terminal(t, SECS_30).await;
    }
    let accepted = rx.wait_accepted(3, SECS_30).await;
    let mut tasks = BTreeSet::new();
    for hits in accepted.values() {
        let body = hits[0].json();
        if body["data"]["task_id"] != json!(id) {
            assert_signed(&hits[0], given);
            tasks.insert(body["data"]["task_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(tasks, turns.into_iter().collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_see_a_subscription_or_its_deliveries() {
    let rx = Receiver::start(0).await;
    let s = Smith::start(Opts::new().config(ALLOW_LOOPBACK).token("root-token")).await;
    let root = s.api();
    let key = |tenant: &'static str| {
        let root = root.clone();
        async move {
            let body = json!({"tenant": tenant, "scopes": ["tasks:write", "tasks:read"]});
            let (status, k) = root.post("/v1/keys", &body).await;
            assert_eq!(status, 201, "{k}");
            Api::new(&root.base, Some(k["secret"].as_str().unwrap().to_string()))
        }
    };
    let (acme, globex) = (key("acme").await, key("globex").await);
    let (hook, _) = subscribe(&acme, &rx.url, &["task.succeeded"]).await;
    let (theirs, _) = api_run(&globex).await;
    let (mine, _) = api_run(&acme).await;
    let accepted = rx.wait_accepted(1, SECS_30).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let tasks: Vec<String> =
        rx.accepted().values().map(|h| h[0].json()["data"]["task_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(tasks, [mine], "only acme's own events: {accepted:#?} (globex ran {theirs})");
    let did = deliveries(&acme, &hook).await[0]["id"].as_str().unwrap().to_string();

    for path in [format!("/v1/webhooks/{hook}"), format!("/v1/webhooks/{hook}/deliveries")] {
        let (status, body) = globex.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.to_string().contains(&rx.url), "{body}");
    }
    let (status, _) = globex.post(&format!("/v1/webhooks/{hook}/deliveries/{did}/replay"), &json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = globex.send(globex.request(reqwest::Method::DELETE, &format!("/v1/webhooks/{hook}"))).await;
    assert_eq!(status, 404);
    assert_eq!(globex.get("/v1/webhooks").await.1["items"], json!([]));
    // still there for its tenant, and the platform sees every tenant's
    assert_eq!(acme.get(&format!("/v1/webhooks/{hook}")).await.0, 200);
    assert_eq!(root.get("/v1/webhooks").await.1["items"].as_array().unwrap().len(), 1);
}

async fn api_run(api: &Api) -> (String, Value) {
    api.run(json!({"agent": "echo", "input": "x"}), SECS_30).await
}

/// Every task's `task.succeeded` reached the receiver at least once.
async fn all_succeeded_delivered(rx: &Receiver, ids: &BTreeSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got: BTreeSet<String> = rx
            .accepted()
            .values()
            .map(|h| h[0].json())
            .filter(|b| b["type"] == "task.succeeded")
            .map(|b| b["data"]["task_id"].as_str().unwrap().to_string())
            .collect();
        if ids.is_subset(&got) {
            return;
        }
        let missing: Vec<&String> = ids.difference(&got).collect();
        assert!(Instant::now() < deadline, "{} not delivered after {within:?}: {missing:?}", missing.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes the (failing) receiver to `task.succeeded`, runs 20 `echo` tasks and waits until
/// each one's delivery was tried at least once; returns the tasks.
async fn twenty_tried(api: &Api, rx: &Receiver) -> BTreeSet<String> {
    subscribe(api, &rx.url, &["task.succeeded"]).await;
    let mut ids = BTreeSet::new();
    for i in 0..20 {
        ids.insert(api.submit_id(json!({"agent": "echo", "input": i})).await);
    }
    for id in &ids {
        api.wait_terminal(id, SECS_30).await;
    }
    common::cluster::eventually("every delivery tried", SECS_30, || {
        let n = rx.hits().iter().map(|h| h.id.clone()).collect::<BTreeSet<_>>().len();
        async move {
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} tried"))
            }
        }
    })
    .await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_smith_up_mid_retry_loses_no_delivery() {
    let rx = Receiver::start(0).await;
    rx.set_down(true);
    let mut s = Smith::start(Opts::new().config(ALLOW_LOOPBACK)).await;
    let mut ids = twenty_tried(&s.api(), &rx).await;
    s.kill9().await;
    rx.set_down(false);
    s.restart().await;
    let api = s.api();
    // and events committed after the restart too
    for i in 0..5 {
        ids.insert(api.submit_id(json!({"agent": "echo", "input": 100 + i})).await);
    }
    all_succeeded_delivered(&rx, &ids, SECS_30).await;
    let dup = rx.accepted().into_iter().filter(|(_, h)| h.len() > 1).count();
    assert_eq!(dup, 0, "nothing was accepted before the kill, so nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_kill_9_of_gateway_worker_and_supervisor_mid_retry_loses_no_delivery() {
    let Some(services) = Services::from_env() else { return };
    let rx = Receiver::start(0).await;
    rx.set_down(true);
    let cluster = Cluster::new(&services, &format!("[store]\npool_size = 4\n{ALLOW_LOOPBACK}")).await;
    let mut sup = cluster.start(Role::Supervisor).await;
    let mut worker = cluster.start(Role::Worker).await;
    let mut gateway = cluster.start(Role::Gateway).await;
    let mut ids = twenty_tried(&gateway.api(), &rx).await;
    gateway.kill9().await;
    worker.kill9().await;
    sup.kill9().await;
    rx.set_down(false);
    sup.restart().await;
    worker.restart().await;
    gateway.restart().await;
    let api = gateway.api();
    for i in 0..5 {
        ids.insert(api.submit_id(json!({"agent": "echo", "input": 100 + i})).await);
    }
    all_succeeded_delivered(&rx, &ids, Duration::from_secs(60)).await;
}

/// A subscription gets every event committed after it, even when the dispatcher last looked
/// for subscriptions before it existed (it reads only the kinds someone wants: a page read
/// before a `*` subscription must be read again, not passed over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_gets_the_events_committed_right_after_it() {
    let s = Smith::start(Opts::new().config(ALLOW_LOOPBACK)).await;
    let api = s.api();
    for round in 0..5 {
        let rx = Receiver::start(0).await;
        subscribe(&api, &rx.url, &["*"]).await;
        let (id, _) = api.run(json!({"agent": "echo", "input": round}), SECS_30).await;
        let accepted = rx.wait_accepted(4, SECS_30).await;
        let mut kinds: Vec<String> = accepted
            .values()
            .map(|h| h[0].json())
            .filter(|b| b["data"]["task_id"] == json!(id))
            .map(|b| b["type"].as_str().unwrap().to_string())
            .collect();
        kinds.sort();
        assert_eq!(kinds, ["output", "task.queued", "task.started", "task.succeeded"], "round {round}");
        tokio::time::sleep(Duration::from_millis(fastrand_ms(round))).await;
    }
}

/// A different pause before each round, so the subscription lands at different points of the
/// dispatcher's poll.
fn fastrand_ms(round: u64) -> u64 {
    [30, 110, 170, 60, 240][round as usize % 5]
}

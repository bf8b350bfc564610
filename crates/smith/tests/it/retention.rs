//! Retention (docs/retention.md), through the real binary with ages of a few seconds: old
//! finished tasks go with their events, artifacts (records and stored files) and audit records,
//! while running and queued tasks, and a tenant kept forever, stay; usage totals do not move; a
//! replay of the feed from before the horizon gets a `retention` event; the audit log still
//! refuses every other UPDATE and DELETE; and the SQLite file stops growing under a steady load.
//! On `smith up`, and on PostgreSQL with NATS (distributed).

use crate::common::anthropic_mock::Mock;
use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{self, Api, Opts, Smith};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const ROOT: &str = "root-token-for-retention-0123456789";

/// A process agent leaving one artifact, an LLM agent that spends (against the mock), and the
/// retention of this test: finished tasks and audit records after 2 s, tenant `keeper`'s
/// tasks forever, in batches of 3.
fn config(mock: &Mock) -> String {
    format!(
        "[retention]\ntasks = \"2s\"\naudit = \"2s\"\nbatch_size = 3\ninterval = \"200ms\"\n\
         [retention.tenant.keeper]\ntasks = \"forever\"\n\n\
         [agents.artist]\nexecutor = \"process\"\ncommand = \"sh\"\n\
         args = [\"-c\", 'echo kept > \"$SMITH_ARTIFACTS/out.txt\"; echo done']\n\n\
         [agents.writer]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
         api_key = \"sk-test-secret\"\nstall_timeout = \"20s\"\n",
        mock.url
    )
}

async fn key(root: &Api, tenant: &str) -> Api {
    let (status, body) =
        root.post("/v1/keys", &json!({"tenant": tenant, "scopes": ["tasks:write", "tasks:read"]})).await;
    assert_eq!(status, 201, "create key: {body}");
    Api::new(&root.base, Some(body["secret"].as_str().expect("secret").to_string()))
}

/// Usage by tenant and by agent as the platform reads it: (key, input, output, cost).
async fn usage(root: &Api) -> BTreeMap<String, (u64, u64, f64)> {
    let mut out = BTreeMap::new();
    for by in ["tenant", "agent"] {
        let (status, body) = root.get(&format!("/v1/usage?by={by}")).await;
        assert_eq!(status, 200, "{body}");
        for i in body["items"].as_array().expect("items") {
            let k = format!("{by}:{}", i["key"].as_str().unwrap());
            let v = (
                i["input_tokens"].as_u64().unwrap(),
                i["output_tokens"].as_u64().unwrap(),
                i["cost_usd"].as_f64().unwrap(),
            );
            out.insert(k, v);
        }
    }
    out
}

/// The same totals: tokens exactly, cost up to float rounding (sums in another order).
fn assert_same_usage(before: &BTreeMap<String, (u64, u64, f64)>, after: &BTreeMap<String, (u64, u64, f64)>) {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "{before:?}\n{after:?}");
    for (k, (i, o, c)) in before {
        let (i2, o2, c2) = after[k];
        assert_eq!((*i, *o), (i2, o2), "{k}: {before:?}\n{after:?}");
        assert!((c - c2).abs() <= 1e-9 * c.abs().max(1.0), "{k}: cost {c} then {c2}");
    }
}

/// Waits until `GET /v1/tasks/{id}` answers 404 (retention deleted it).
async fn wait_gone(api: &Api, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api.get(&format!("/v1/tasks/{id}")).await;
        if status == 404 {
            return;
        }
        assert!(Instant::now() < deadline, "task {id} was not deleted: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A replay of the feed from position 0 begins with a `retention` event naming the horizon,
/// then goes on after it. Returns the horizon.
async fn replay_is_told(api: &Api) -> u64 {
    let mut s = api.sse("/v1/events", Some("0")).await;
    let first = s.next(Duration::from_secs(10)).await.expect("a first frame");
    assert_eq!(first.event, "retention", "{first:?}");
    let data = first.json();
    let horizon = data["horizon"].as_u64().expect("horizon");
    assert!(horizon > 0, "{data}");
    assert_eq!((data["after"].as_u64(), data["first_position"].as_u64()), (Some(0), Some(horizon + 1)), "{data}");
    assert_eq!(first.num(), horizon, "its id is the horizon, so a resume from it is not told again");
    if let Some(next) = s.next(Duration::from_secs(3)).await {
        assert!(next.num() > horizon, "the stream continues after the horizon: {next:?}");
    }
    let mut again = api.sse("/v1/events", Some(&horizon.to_string())).await;
    if let Some(f) = again.next(Duration::from_secs(2)).await {
        assert_ne!(f.event, "retention", "resumed at the horizon: {f:?}");
    }
    horizon
}

/// The checks every backend shares: tasks, events, artifacts and audit records past their age
/// are gone, everything else stays, usage and the feed are as the docs say.
async fn old_records_go_and_the_rest_stays(root: &Api, artifacts_dir: Option<&Path>) {
    let (acme, keeper) = (key(root, "acme").await, key(root, "keeper").await);
    let mut old = Vec::new();
    for i in 0..4 {
        let (id, t) = acme.run(json!({"agent": "writer", "input": format!("PLAIN line {i}")}), WAIT).await;
        assert_eq!(t["status"], "succeeded", "{t:#}");
        old.push(id);
    }
    let (art, t) = acme.run(json!({"agent": "artist", "input": ""}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let (_, listed) = acme.get(&format!("/v1/tasks/{art}/artifacts")).await;
    assert_eq!(listed["artifacts"][0]["name"], "out.txt", "{listed}");
    let stored = artifacts_dir.map(|d| d.join("acme").join(&art).join("out.txt"));
    if let Some(f) = &stored {
        assert!(f.is_file(), "{f:?}");
    }
    let (kept, t) = keeper.run(json!({"agent": "writer", "input": "PLAIN keep me"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    // one running task, one queued behind it (a session's next turn waits for the one before)
    let (status, session) = acme.post("/v1/sessions", &json!({"agent": "sleep"})).await;
    assert_eq!(status, 201, "{session}");
    let sid = session["id"].as_str().unwrap();
    let running = acme.submit_id(json!({"agent": "sleep", "input": 60000, "session_id": sid})).await;
    acme.wait_status(&running, "running", WAIT).await;
    let queued = acme.submit_id(json!({"agent": "sleep", "input": 1, "session_id": sid})).await;
    let before = usage(root).await;
    let (_, audit) = root.get("/v1/audit").await;
    let first_audit = audit["items"][0]["id"].as_u64().expect("an audit record");

    for id in old.iter().chain([&art]) {
        wait_gone(&acme, id).await;
        assert_eq!(acme.get(&format!("/v1/tasks/{id}/events")).await.0, 404, "events of {id}");
        assert_eq!(root.get(&format!("/v1/tasks/{id}")).await.0, 404, "the platform too");
    }
    assert_eq!(acme.get(&format!("/v1/tasks/{art}/artifacts")).await.0, 404);
    if let Some(f) = &stored {
        assert!(!f.exists(), "the stored file went with its record: {f:?}");
    }
    assert_eq!(keeper.get_task(&kept).await["status"], "succeeded", "tenant keeper keeps its tasks");
    assert_eq!(acme.get_task(&running).await["status"], "running");
    assert_eq!(acme.get_task(&queued).await["status"], "queued");
    assert_same_usage(&before, &usage(root).await);

    // a replay from before the horizon is told, for the platform and for the tenant
    let horizon = replay_is_told(root).await;
    assert!(replay_is_told(&acme).await <= horizon);
    // keeper lost nothing: its replay starts with its own events
    let mut s = keeper.sse("/v1/events", Some("0")).await;
    let f = s.next(Duration::from_secs(10)).await.expect("keeper's first frame");
    assert_ne!(f.event, "retention", "{f:?}");

    // audit records older than 2 s went (the newest always stays)
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, audit) = root.get("/v1/audit").await;
        let oldest = audit["items"][0]["id"].as_u64().unwrap_or(u64::MAX);
        if oldest > first_audit {
            break;
        }
        assert!(Instant::now() < deadline, "old audit records stay: {audit}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(acme.cancel(&running).await.0, 202);
}

/// Retention's counters on the scrape of the process that runs the leader's loop.
async fn assert_counted(root: &Api) {
    let metrics = root.request(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    for kind in ["tasks", "events", "artifacts", "audit"] {
        let line = format!("smith_retention_deleted_total{{kind=\"{kind}\"}} ");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| {
                panic!(
                    "no {line} in the scrape: {:?}",
                    metrics.lines().filter(|l| l.contains("retention")).collect::<Vec<_>>()
                )
            })
            .parse()
            .unwrap();
        assert!(n > 0.0, "{line}{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_finished_tasks_go_with_their_events_artifacts_and_audit_on_smith_up() {
    let mock = Mock::start().await;
    let smith = Smith::start(Opts::new().token(ROOT).config(&config(&mock))).await;
    let root = smith.api();
    old_records_go_and_the_rest_stays(&root, Some(&smith.data_dir().join("artifacts"))).await;
    assert_counted(&root).await;

    // nobody but the purge deletes or edits an audit record, even with the file in hand
    let db = rusqlite::Connection::open(smith.data_dir().join("smith.db")).expect("open the store");
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    for sql in ["DELETE FROM audit", "UPDATE audit SET actor = 'mallory'"] {
        let e = db.execute(sql, []).expect_err(sql).to_string();
        assert!(e.contains("append-only") || e.contains("smith_retention_delete"), "{sql}: {e}");
    }
    let mode: i64 = db.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, 2, "a new store gives freed pages back (incremental)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_finished_tasks_go_on_postgres_with_nats() {
    let Some(services) = Services::from_env() else { return };
    let mock = Mock::start().await;
    let shared = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\ntoken = \"{ROOT}\"\n[artifacts]\nurl = \"file://{}\"\n{}",
        shared.path().display(),
        config(&mock)
    );
    let cluster = Cluster::new(&services, &config).await;
    let (_sup, _worker, gateway) =
        tokio::join!(cluster.start(Role::Supervisor), cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let root = Api::new(&gateway.api().base, Some(ROOT.to_string()));
    old_records_go_and_the_rest_stays(&root, Some(shared.path())).await;

    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&cluster.store).await.expect("connect");
    for sql in ["DELETE FROM audit", "UPDATE audit SET actor = 'mallory'", "TRUNCATE audit"] {
        let e = sqlx::Executor::execute(&mut db, sql).await.expect_err(sql).to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
}

/// Bytes of the SQLite file (its pages; the WAL is cut back on its own).
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_stops_growing_under_a_steady_load() {
    let smith = Smith::start(
        Opts::new().config("[retention]\ntasks = \"2s\"\naudit = \"2s\"\ninterval = \"500ms\"\nbatch_size = 500\n"),
    )
    .await;
    let api = smith.api();
    let db = smith.data_dir().join("smith.db");
    // ~250 tasks a second for 30 s, in bursts of 25 every 100 ms
    let start = Instant::now();
    let mut sizes: Vec<(f64, u64)> = Vec::new();
    let mut submitted = 0u64;
    let mut next_sample = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(30) {
        let burst: Vec<_> = (0..25)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.post("/v1/tasks", &json!({"agent": "echo", "input": {"n": i, "pad": "x".repeat(512)}})).await
                }
            })
            .collect();
        for (status, body) in futures_util::future::join_all(burst).await {
            assert_eq!(status, 201, "{body}");
            submitted += 1;
        }
        if start.elapsed() >= next_sample {
            sizes.push((start.elapsed().as_secs_f64(), file_size(&db)));
            next_sample += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window =
        |from: f64, to: f64| sizes.iter().filter(|(t, _)| *t >= from && *t < to).map(|s| s.1).max().unwrap_or(0);
    let (middle, last) = (window(12.0, 21.0), window(21.0, 31.0));
    let (_, totals) = api.get("/v1/tasks?limit=1").await;
    assert!(totals["items"].is_array());
    println!("submitted {submitted}; file sizes (s, bytes): {sizes:?}");
    // without retention the last window would hold ~2,000 more tasks (> 1 MiB more)
    assert!(
        last <= middle + (256 << 10),
        "the file grew from {middle} to {last} bytes between the later windows: {sizes:?}\n{}",
        common::cluster::tail(&smith.stderr(), 20)
    );
}

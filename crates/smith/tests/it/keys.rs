//! Keyed concurrency through the real binary (docs/concurrency.md): an agent with
//! `concurrency_key = "metadata.user"` and `max_per_key = 1` never runs two tasks of one key at
//! once, on `smith up` and on PostgreSQL with two workers, and every key makes progress while
//! another has a longer backlog; bad keys are refused, naming the field.

use crate::common;
use crate::common::cluster::{Cluster, Role, Services};

use common::{assert_error, Api, Opts, Smith};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const AGENTS: &str = "[agents.keyed]\nexecutor = \"builtin\"\nbuiltin = \"sleep\"\n\
                      concurrency_key = \"metadata.user\"\nmax_per_key = 1\n";

/// The keys, and the key of each of the 40 tasks in the order they are submitted: A twice as
/// often as B and C (interleaved, so that how fast the submissions go does not decide which
/// key has work first).
const KEYS: [&str; 3] = ["A", "B", "C"];
const PATTERN: [&str; 4] = ["A", "B", "A", "C"];
const TASKS: usize = 40;

/// Submits the 40 `sleep` tasks, then samples the running set until all have finished: no
/// sample holds two tasks of one key, and by the time half the tasks have finished every key
/// has finished some of its own.
async fn forty_tasks_over_three_keys(api: &Api) {
    let mut ids = BTreeMap::new();
    for i in 0..TASKS {
        let key = PATTERN[i % PATTERN.len()];
        let id = api.submit_id(json!({"agent": "keyed", "input": 150, "metadata": {"user": key}})).await;
        if i == 0 {
            assert_eq!(api.get_task(&id).await["concurrency_key"], key, "the key is resolved and shown");
        }
        ids.insert(id, key);
    }
    let total = ids.len();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    let mut most_keys_at_once = 0;
    let mut at_half: Option<BTreeMap<&str, usize>> = None;
    loop {
        let running = api.list_all("agent=keyed&status=running").await;
        let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
        for t in &running {
            *by_key.entry(t["concurrency_key"].as_str().unwrap_or("<none>").to_string()).or_default() += 1;
        }
        for (key, n) in &by_key {
            assert!(*n <= 1, "sample {samples}: {n} tasks of key {key} running at once: {running:#?}");
        }
        most_keys_at_once = most_keys_at_once.max(by_key.len());
        samples += 1;

        // this workload's tasks that have succeeded, by key
        let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
        let mut done = 0;
        for t in api.list_all("agent=keyed&status=succeeded").await {
            let Some(&key) = ids.get(t["id"].as_str().unwrap()) else { continue };
            assert_eq!(t["concurrency_key"], key, "{t}");
            *finished.entry(key).or_default() += 1;
            done += 1;
        }
        if at_half.is_none() && done >= total / 2 {
            at_half = Some(finished.clone());
        }
        if done == total {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {total} finished after 120 s: {finished:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_half = at_half.unwrap();
    for key in KEYS {
        let n = at_half.get(key).copied().unwrap_or(0);
        assert!(n >= 3, "key {key} had finished {n} tasks when half of all had: {at_half:?}");
    }
    assert!(most_keys_at_once >= 2, "the keys never ran side by side in {samples} samples");
}

/// Bad keys, and tasks without one, are refused with 422 naming `concurrency_key`.
async fn bad_keys_are_refused(api: &Api) {
    let long = "k".repeat(257);
    let cases: [(&str, Value, &str); 6] = [
        ("empty key", json!({"agent": "keyed", "input": 1, "concurrency_key": ""}), "concurrency_key"),
        ("long key", json!({"agent": "keyed", "input": 1, "concurrency_key": long}), "concurrency_key"),
        ("control character", json!({"agent": "keyed", "input": 1, "concurrency_key": "a\u{7}b"}), "concurrency_key"),
        ("a number", json!({"agent": "keyed", "input": 1, "concurrency_key": 5}), "concurrency_key"),
        ("no metadata.user", json!({"agent": "keyed", "input": 1, "metadata": {}}), "metadata.user"),
        ("an agent without max_per_key", json!({"agent": "sleep", "input": 1, "concurrency_key": "k"}), "max_per_key"),
    ];
    for (what, body, needle) in cases {
        let (status, answer) = api.post("/v1/tasks", &body).await;
        assert_error(what, status, &answer, 422, "unprocessable", needle);
    }
    let before = api.list_all("agent=keyed").await.len();
    // a task's own key wins over the agent's expression
    let own =
        api.submit(json!({"agent": "keyed", "input": 1, "metadata": {"user": "x"}, "concurrency_key": "own"})).await;
    assert_eq!(own["concurrency_key"], "own", "{own}");
    assert_eq!(api.list_all("agent=keyed").await.len(), before + 1, "refused submissions created nothing");
    let (status, agents) = api.get("/v1/agents").await;
    assert_eq!(status, 200);
    let keyed = agents["items"].as_array().unwrap().iter().find(|a| a["name"] == "keyed").expect("keyed listed");
    assert_eq!((&keyed["concurrency_key"], &keyed["max_per_key"]), (&json!("metadata.user"), &json!(1)), "{keyed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_key_holds_and_every_key_progresses_on_smith_up() {
    let s = Smith::start(Opts::new().config(AGENTS)).await;
    bad_keys_are_refused(&s.api()).await;
    forty_tasks_over_three_keys(&s.api()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_key_holds_across_two_workers_on_postgres() {
    let Some(services) = Services::from_env() else { return };
    let cluster = Cluster::new(&services, &format!("[store]\npool_size = 4\n\n{AGENTS}")).await;
    let _sup = cluster.start(Role::Supervisor).await;
    let (_w1, _w2, gw) =
        tokio::join!(cluster.start(Role::Worker), cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let api = gw.api();
    bad_keys_are_refused(&api).await;
    forty_tasks_over_three_keys(&api).await;
    // both workers took part
    let workers: BTreeSet<String> = api
        .list_all("agent=keyed&status=succeeded")
        .await
        .iter()
        .filter_map(|t| t["worker"].as_str().map(str::to_string))
        .collect();
    assert_eq!(workers.len(), 2, "tasks ran on {workers:?}");
}

//! Conformance cases of keyed concurrency: `max_per_key` under concurrent claims, the keys'
//! turns, tenants, tasks without a key, and keys resolved at submission.

use super::{alive, get, success, LONG, S};
use crate::{ClaimRequest, Claimed, KeyCaps, RunningCaps, TaskQuery};
use serde_json::json;
use smith_core::{AgentDef, Code, ExecutorKind, NewTask, Task, TaskId, TaskStatus};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Puts an echo agent `name` whose tasks are capped `max` per key, keyed by `metadata.user`.
async fn keyed_agent(store: &S, name: &str, max: u32) -> Arc<KeyCaps> {
    let mut def = AgentDef::new(name, ExecutorKind::Echo);
    def.concurrency_key = Some("metadata.user".into());
    def.max_per_key = Some(max);
    def.retry_backoff = std::time::Duration::ZERO;
    store.put_agents(&[def.clone()]).await.expect("put_agents");
    Arc::new(KeyCaps::of(&[def]))
}

async fn submit_keyed(store: &S, agent: &str, tenant: &str, user: &str) -> Task {
    let mut t = NewTask::new(agent, json!(user));
    t.tenant = tenant.into();
    t.metadata = json!({"user": user});
    store.submit(t).await.expect("submit").task
}

async fn claim_keyed(store: &S, worker: &str, agent: &str, n: u32, keys: &Arc<KeyCaps>) -> Vec<Claimed> {
    let request = ClaimRequest {
        worker: worker.into(),
        lease: LONG,
        wants: vec![(agent.into(), n)],
        limit: None,
        caps: Arc::new(RunningCaps::default()),
        keys: keys.clone(),
    };
    store.claim(&request).await.expect("claim")
}

/// Running tasks by (tenant, key), as the store has them.
async fn running_by_key(store: &S) -> BTreeMap<(String, String), usize> {
    let q = TaskQuery { status: Some(TaskStatus::Running), limit: 1000, ..Default::default() };
    let mut n = BTreeMap::new();
    for t in store.list_tasks(&q).await.expect("list_tasks").items {
        let key = t.concurrency_key.clone().unwrap_or_else(|| panic!("running task {} has no key", t.id));
        *n.entry((t.tenant, key)).or_default() += 1;
    }
    n
}

fn keys_of(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.task.concurrency_key.clone().unwrap_or_default()).collect()
}

/// Many claims at once by several workers (a PostgreSQL writer batches them; processes take
/// turns) never run more than `max_per_key` of one key, fill every slot the caps allow, and a
/// success, a retry and a release each free their key's room.
pub async fn max_per_key_holds_under_concurrent_claims(store: S) {
    for w in ["w1", "w2", "w3"] {
        alive(&store, w).await;
    }
    let keys = keyed_agent(&store, "keyed", 2).await;
    let users = ["ann", "bob", "cy", "dee", "eve"];
    for i in 0..40 {
        submit_keyed(&store, "keyed", "acme", users[i % users.len()]).await;
    }
    let mut done = 0;
    for round in 0..300 {
        let mut joins = tokio::task::JoinSet::new();
        for i in 0..12 {
            let (s, k) = (store.clone(), keys.clone());
            let worker = ["w1", "w2", "w3"][i % 3];
            joins.spawn(async move { claim_keyed(&s, worker, "keyed", 3, &k).await });
        }
        let mut seen = HashSet::new();
        while let Some(res) = joins.join_next().await {
            for c in res.unwrap() {
                assert!(seen.insert(c.task.id), "task {} handed out twice", c.task.id);
            }
        }
        let running = running_by_key(&store).await;
        for (key, n) in &running {
            assert!(*n <= 2, "round {round}: {n} tasks of {key:?} running: {running:?}");
        }
        let queued = store.queue_stats().await.unwrap().queued;
        if queued == 0 && running.is_empty() {
            break;
        }
        // every key with queued work is at its cap: nothing claimable was left behind
        let q = TaskQuery { status: Some(TaskStatus::Queued), limit: 1000, ..Default::default() };
        for t in store.list_tasks(&q).await.unwrap().items {
            let key = (t.tenant.clone(), t.concurrency_key.clone().unwrap());
            assert_eq!(running.get(&key), Some(&2), "round {round}: {key:?} has room and queued work");
        }
        // end one running task of each key: a success, a retryable failure, a release
        let q = TaskQuery { status: Some(TaskStatus::Running), limit: 1000, ..Default::default() };
        let mut ended = HashSet::new();
        for t in store.list_tasks(&q).await.unwrap().items {
            if !ended.insert(t.concurrency_key.clone()) {
                continue;
            }
            let worker = t.worker.clone().unwrap();
            match (round + ended.len()) % 4 {
                0 if t.attempt < 3 => {
                    let c = store.complete(t.id, t.attempt, vec![], super::failure(true)).await.unwrap();
                    assert_eq!(c.task.status, TaskStatus::Queued);
                }
                1 => {
                    store.release(&worker, &[(t.id, t.attempt)], "drain").await.unwrap();
                }
                _ => {
                    store.complete(t.id, t.attempt, vec![], success(json!(1))).await.unwrap();
                    done += 1;
                }
            }
        }
    }
    assert_eq!(done, 40, "every task ran to its end");
}

/// A key with one task is served within the first round, behind a key with many older tasks
/// of higher priority; claims of one slot serve the keys in turn.
pub async fn keys_take_turns_so_a_busy_key_starves_no_one(store: S) {
    alive(&store, "w").await;
    let keys = keyed_agent(&store, "turns", 100).await;
    let mut busy = Vec::new();
    for _ in 0..30 {
        let mut t = NewTask::new("turns", json!("busy"));
        t.metadata = json!({"user": "busy"});
        t.priority = 9;
        busy.push(store.submit(t).await.unwrap().task.id);
    }
    let late = submit_keyed(&store, "turns", "acme", "late").await;
    let got = claim_keyed(&store, "w", "turns", 2, &keys).await;
    let ids: Vec<TaskId> = got.iter().map(|c| c.task.id).collect();
    assert_eq!(ids.len(), 2, "{got:#?}");
    assert!(ids.contains(&busy[0]) && ids.contains(&late.id), "busy's best and late's only task: {got:#?}");

    // three keys with work: one slot at a time goes round them in turn
    for user in ["a", "b", "c"] {
        for _ in 0..3 {
            submit_keyed(&store, "turns", "acme", user).await;
        }
    }
    let mut order = Vec::new();
    for _ in 0..8 {
        order.extend(keys_of(&claim_keyed(&store, "w", "turns", 1, &keys).await));
    }
    let firsts: HashSet<&String> = order[..4].iter().collect();
    assert_eq!(firsts.len(), 4, "four keys with work, four claims, four keys: {order:?}");
    assert_eq!(order[..4], order[4..], "the same turn again: {order:?}");
}

/// A key counts within its tenant; tasks without a key (queued before their agent had
/// `max_per_key`) still run; keys are resolved at submission and shown on the task.
pub async fn keys_count_per_tenant_and_tasks_without_a_key_still_run(store: S) {
    alive(&store, "w").await;
    store.put_agents(&[AgentDef::new("later", ExecutorKind::Echo)]).await.unwrap();
    let old = store.submit(NewTask::new("later", json!("old"))).await.unwrap().task;
    assert_eq!(old.concurrency_key, None);
    let mut own = NewTask::new("later", json!("x"));
    own.concurrency_key = Some("k".into());
    let refused = store.submit(own).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unprocessable, "a key for an agent without max_per_key: {refused}");

    let keys = keyed_agent(&store, "later", 1).await;
    let a = submit_keyed(&store, "later", "acme", "u").await;
    let b = submit_keyed(&store, "later", "globex", "u").await;
    let a2 = submit_keyed(&store, "later", "acme", "u").await;
    let mut own = NewTask::new("later", json!("own"));
    own.metadata = json!({"user": "ignored"});
    own.concurrency_key = Some("mine".into());
    let own = store.submit(own).await.unwrap().task;
    assert_eq!(get(&store, a.id).await.concurrency_key.as_deref(), Some("u"), "resolved from metadata.user");
    assert_eq!(get(&store, own.id).await.concurrency_key.as_deref(), Some("mine"), "the task's own key wins");
    let missing = store.submit(NewTask::new("later", json!("none"))).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unprocessable, "no metadata.user and no key: {missing}");
    assert!(missing.to_string().contains("concurrency_key"), "{missing}");

    let got = claim_keyed(&store, "w", "later", 10, &keys).await;
    let mut ids: Vec<TaskId> = got.iter().map(|c| c.task.id).collect();
    ids.sort();
    let mut want = vec![old.id, a.id, b.id, own.id];
    want.sort();
    assert_eq!(ids, want, "one of acme's u, globex's u, mine, and the task without a key: {got:#?}");
    assert!(claim_keyed(&store, "w", "later", 10, &keys).await.is_empty(), "acme's u is at its cap");
    store.complete(a.id, 1, vec![], success(json!(1))).await.unwrap();
    let got = claim_keyed(&store, "w", "later", 10, &keys).await;
    assert_eq!(got.iter().map(|c| c.task.id).collect::<Vec<_>>(), [a2.id]);
}

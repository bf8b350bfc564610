//! The conformance suite every store backend must pass (see `store_conformance!`).
//!
//! Each function takes a fresh, empty store and panics when the backend breaks the [`Store`]
//! contract. The suite tests only what the trait promises, never one backend's SQL, so a new
//! backend is done when `store_conformance!(open_my_backend())` passes. Waits are real but
//! short: leases and backoffs of tens of milliseconds, or a `now` handed to `reap`.

use crate::lifecycle;
use crate::{
    ClaimRequest, Claimed, Cutoff, Error, FeedFilter, GlobalEvent, GlobalEventQuery, RunningCaps, Session, Store,
    TaskQuery, TenantLoad, UsageBy, AUDIT_LIMIT,
};
use serde_json::{json, Value};
use smith_core::task::DEFAULT_TENANT;
use smith_core::{
    AgentDef, ApiKey, Artifact, AuditQuery, AuditRecord, Budget, Code, Event, EventDraft, EventKind, ExecutorKind,
    Micros, NewApiKey, NewAuditRecord, NewTask, Node, NodeRole, NodeStatus, Outcome, Scope, Task, TaskError, TaskId,
    TaskStatus, Usage,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod keys;
pub use keys::*;
mod rates;
pub use rates::*;

type S = Arc<dyn Store>;

/// A lease nobody outlives in a test.
const LONG: Duration = Duration::from_secs(600);

/// Expands to one `#[tokio::test]` per suite function, each on a store from `$factory.await`
/// (an async expression evaluated once per test, yielding `Arc<dyn Store>`). The invoking
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
///
/// `store_conformance!(skip_unless_env = "VAR", $factory)`: each test prints
/// `skipped: VAR not set` and passes when the environment variable is unset (a backend that
/// needs a server), before evaluating the factory.
#[macro_export]
macro_rules! store_conformance {
    (@skip $skip:expr, $factory:expr) => {
        $crate::__store_conformance_tests!($skip; $factory;
            submit_round_trips_every_field,
            submit_rejects_unknown_agents_and_invalid_fields,
            idempotency_key_returns_the_original_task,
            claim_takes_highest_priority_then_oldest,
            claim_takes_only_wanted_agents_up_to_n,
            claim_limit_caps_the_total_and_skips_agents_without_work,
            claim_marks_running_and_writes_started,
            concurrent_claims_never_hand_out_a_task_twice,
            running_cap_holds_within_a_claim_and_frees_slots_as_tasks_end,
            running_cap_holds_across_agents_and_concurrent_claims,
            running_cap_of_a_tenant_overrides_the_default,
            a_tenant_at_its_running_cap_holds_back_no_one,
            append_is_fenced_by_status_and_attempt,
            complete_success_records_result_and_terminal_event,
            retryable_failure_backs_off_then_exhausts_attempts,
            non_retryable_failure_fails_at_once,
            timed_out_and_cancelled_outcomes_are_terminal,
            stale_attempt_is_fenced_after_reap_and_reclaim,
            renew_extends_leases_and_reports_cancel,
            reap_requeues_expired_leases,
            reap_requeues_tasks_of_workers_not_alive,
            reap_fails_tasks_with_attempts_exhausted,
            reap_cancels_cancel_requested_tasks,
            release_requeues_without_spending_an_attempt,
            a_task_moves_as_the_lifecycle_says,
            request_cancel_depends_on_status,
            events_pages_every_event_once_in_order,
            feed_is_commit_ordered_and_pages_without_gaps,
            feed_filters_by_kind_agent_and_tenant,
            every_event_carries_its_tenant_and_a_reader_sees_only_its_own,
            feed_includes_system_events,
            feed_head_is_where_new_events_begin,
            feed_cursor_is_the_high_water_mark,
            feed_tail_under_concurrent_writers_misses_nothing,
            list_tasks_newest_first_with_filters_and_paging,
            list_tasks_rejects_malformed_cursor,
            agents_lists_builtins_custom_and_counts,
            tenant_agents_and_session_counts_are_one_tenants,
            list_pages_leave_out_large_values_and_are_bounded_in_bytes,
            nodes_heartbeat_status_and_dead_detection,
            stale_workers_are_quarantined_and_their_tasks_reaped,
            quarantine_holds_through_heartbeats_until_readmitted,
            pool_stats_stay_within_the_limit,
            queue_stats_counts_and_oldest_runnable_age,
            concurrent_submit_and_drain_finishes_each_task_once,
            lease_has_one_holder_until_it_expires_or_is_released,
            parent_and_budget_round_trip_and_filter,
            task_options_round_trip_and_need_their_agent,
            session_turns_are_claimed_one_at_a_time_in_order,
            sessions_are_created_once_for_known_agents,
            global_events_are_fed_and_listed_by_kind_and_tenant,
            usage_totals_sum_by_agent_and_tenant,
            api_keys_are_created_listed_and_revoked,
            api_keys_are_checked_before_they_are_stored,
            audit_records_are_numbered_and_filtered,
            a_submission_and_its_audit_record_are_written_together,
            audit_limit_is_capped_and_bad_records_are_refused,
            audit_tail_under_concurrent_writers_misses_nothing,
            tenant_load_counts_in_flight_tasks_and_usage_since,
            tenant_load_counts_output_bytes_written_since,
            size_bytes_grows_with_what_is_written,
            artifacts_are_fenced_replaced_by_name_and_summed_by_tenant,
            a_request_parks_its_task_until_answered_once,
            a_delayed_task_waits_scheduled_and_an_unstarted_one_expires,
            a_parked_attempt_is_unspent_and_holds_its_account,
            webhooks_and_their_deliveries_move_with_the_cursor,
            task_webhooks_live_tells_whether_a_tasks_webhook_may_still_be_due,
            max_per_key_holds_under_concurrent_claims,
            keys_take_turns_so_a_busy_key_starves_no_one,
            keys_count_per_tenant_and_tasks_without_a_key_still_run,
            rate_buckets_refill_and_never_grant_more_than_they_hold,
            concurrent_rate_takers_never_exceed_the_rate,
            a_schedule_fires_each_fire_time_once_with_its_cursor,
            retention_purges_finished_tasks_and_keeps_usage_totals,
            retention_never_deletes_the_feeds_newest_event,
            retention_purges_artifact_records_of_finished_tasks_only,
            retention_alone_deletes_audit_records,
        );
    };
    (skip_unless_env = $var:literal, $factory:expr) => {
        $crate::store_conformance!(@skip ::std::option::Option::Some($var), $factory);
    };
    ($factory:expr) => {
        $crate::store_conformance!(@skip ::std::option::Option::None, $factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($skip:expr; $factory:expr; $($name:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let skip: ::std::option::Option<&str> = $skip;
                if let ::std::option::Option::Some(var) = skip {
                    if ::std::env::var_os(var).is_none() {
                        ::std::println!("skipped: {var} not set");
                        return;
                    }
                }
                let store: ::std::sync::Arc<dyn $crate::Store> = $factory.await;
                let run = $crate::conformance::$name(store);
                ::tokio::time::timeout(::std::time::Duration::from_secs(60), run)
                    .await
                    .expect("conformance test hung for 60 s");
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers: each makes a case one line.

fn agent(name: &str, max_attempts: u32, backoff_ms: u64) -> AgentDef {
    let mut def = AgentDef::new(name, ExecutorKind::Echo);
    def.max_attempts = max_attempts;
    def.retry_backoff = Duration::from_millis(backoff_ms);
    def
}

async fn define(store: &S, name: &str, max_attempts: u32, backoff_ms: u64) {
    store.put_agents(&[agent(name, max_attempts, backoff_ms)]).await.expect("put_agents");
}

/// A node as listed: as its last heartbeat said it, dated by the store — PostgreSQL dates a
/// heartbeat on its own clock (`liveness.rs`), so within a second of the node's timestamp here.
fn assert_listed(got: Option<&Node>, want: &Node) {
    let got = got.unwrap_or_else(|| panic!("node {} not listed", want.id));
    let off = (got.heartbeat_at.0 - want.heartbeat_at.0).abs();
    assert!(off < 1_000_000, "heartbeat dated {off} µs off: {got:#?} against {want:#?}");
    assert_eq!(Node { heartbeat_at: want.heartbeat_at, ..got.clone() }, *want);
}

fn node(id: &str, status: NodeStatus, heartbeat_at: Micros) -> Node {
    Node {
        id: id.into(),
        role: NodeRole::Worker,
        version: "test".into(),
        address: None,
        status,
        started_at: Micros(heartbeat_at.0 - 1_000_000),
        heartbeat_at,
        load: json!({"running": 0}),
    }
}

/// Registers `worker` as an alive node, as a worker does before it claims.
async fn alive(store: &S, worker: &str) {
    store.heartbeat(&node(worker, NodeStatus::Alive, Micros::now())).await.expect("heartbeat");
}

async fn submit(store: &S, agent: &str) -> Task {
    store.submit(NewTask::new(agent, json!("x"))).await.expect("submit").task
}

/// A claim of up to `n` tasks of `agent` for `worker`, with a lease nobody outlives in a test.
pub fn claim_request(worker: &str, agent: &str, n: u32) -> ClaimRequest {
    ClaimRequest {
        worker: worker.into(),
        lease: LONG,
        wants: vec![(agent.into(), n)],
        limit: None,
        caps: Default::default(),
        keys: Default::default(),
    }
}

async fn claim(store: &S, worker: &str, agent: &str, n: u32, lease: Duration) -> Vec<Claimed> {
    store.claim(&ClaimRequest { lease, ..claim_request(worker, agent, n) }).await.expect("claim")
}

async fn claim_one(store: &S, worker: &str, agent: &str, lease: Duration) -> Claimed {
    let mut got = claim(store, worker, agent, 1, lease).await;
    assert_eq!(got.len(), 1, "expected one {agent} task to claim, got {got:#?}");
    got.remove(0)
}

async fn get(store: &S, id: TaskId) -> Task {
    store.get_task(id).await.expect("get_task").unwrap_or_else(|| panic!("task {id} is missing"))
}

async fn log(store: &S, id: TaskId) -> Vec<Event> {
    store.events(id, 0, 100_000).await.expect("events")
}

async fn feed_all(store: &S) -> Vec<Event> {
    store.feed(0, &FeedFilter::default(), 100_000).await.expect("feed").events
}

fn success(result: Value) -> Outcome {
    Outcome::Succeeded { result, usage: Usage::default() }
}

fn failure(retryable: bool) -> Outcome {
    Outcome::Failed { error: TaskError::new("boom", "it broke"), retryable, usage: Usage::default() }
}

fn output(n: u64) -> EventDraft {
    EventDraft::output(json!({"n": n}))
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

fn delay_ms(e: &Event) -> u64 {
    assert_eq!(e.kind, EventKind::Retrying, "{e:?}");
    e.data["delay_ms"].as_u64().unwrap_or_else(|| panic!("task.retrying without delay_ms: {e:?}"))
}

fn terminal_kind(status: TaskStatus) -> Option<EventKind> {
    match status {
        TaskStatus::Scheduled
        | TaskStatus::Queued
        | TaskStatus::Running
        | TaskStatus::WaitingInput
        | TaskStatus::Parked => None,
        TaskStatus::Expired => Some(EventKind::Expired),
        TaskStatus::Succeeded => Some(EventKind::Succeeded),
        TaskStatus::Failed => Some(EventKind::Failed),
        TaskStatus::Cancelled => Some(EventKind::Cancelled),
        TaskStatus::TimedOut => Some(EventKind::TimedOut),
    }
}

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(res: crate::Result<T>, id: TaskId, what: &str) {
    match res {
        Err(Error::Fenced(got)) => assert_eq!(got, id, "{what}: fenced the wrong task"),
        other => panic!("{what}: expected Err(Fenced({id})), got {other:?}"),
    }
}

/// The invariants of every task's log: seq 1..n starting with `task.queued`, positions
/// increasing, and exactly one terminal event, last, iff the task is terminal.
async fn checked_log(store: &S, id: TaskId) -> Vec<Event> {
    let task = get(store, id).await;
    let events = log(store, id).await;
    assert_eq!(events.first().map(|e| e.kind), Some(EventKind::Queued), "task {id}: {events:#?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "task {id}: seqs must be 1..n: {events:#?}");
        assert_eq!(e.task_id, Some(id));
        assert_eq!(e.agent.as_deref(), Some(task.agent.as_str()));
        assert_eq!(e.tenant.as_deref(), Some(task.tenant.as_str()), "task {id}: every event carries the tenant");
        if i > 0 {
            assert!(e.pos > events[i - 1].pos, "task {id}: pos must grow with seq: {events:#?}");
        }
    }
    let terminals = events.iter().filter(|e| e.kind.is_terminal()).count();
    match terminal_kind(task.status) {
        Some(kind) => {
            assert_eq!(terminals, 1, "task {id} ({}): one terminal event: {events:#?}", task.status);
            assert_eq!(events.last().map(|e| e.kind), Some(kind), "task {id}: terminal event last");
        }
        None => assert_eq!(terminals, 0, "task {id} ({}) has a terminal event: {events:#?}", task.status),
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Submit

pub async fn submit_round_trips_every_field(store: S) {
    let mut def = agent("custom", 4, 20);
    def.timeout = Some(Duration::from_secs(5));
    store.put_agents(&[def]).await.unwrap();

    let mut new = NewTask::new("custom", json!({"prompt": "hi", "n": [1, 2, 3], "nested": {"x": null}}));
    new.priority = 7;
    new.timeout_ms = Some(1234);
    new.max_attempts = Some(2);
    new.idempotency_key = Some("key-1".into());
    new.session_id = Some("session-1".into());
    new.tenant = "acme".into();
    new.metadata = json!({"team": "search", "tags": ["a", "b"]});
    let before = Micros::now();
    let sub = store.submit(new.clone()).await.expect("submit");
    let after = Micros::now();

    assert!(sub.created);
    let t = &sub.task;
    assert_eq!(t.id, new.id);
    assert_eq!(t.agent, "custom");
    assert_eq!(t.input, new.input);
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.priority, 7);
    assert_eq!(t.timeout_ms, Some(1234));
    assert_eq!(t.max_attempts, 2);
    assert_eq!(t.attempt, 0);
    assert_eq!(t.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(t.session_id.as_deref(), Some("session-1"));
    assert_eq!(t.tenant, "acme");
    assert_eq!(t.metadata, new.metadata);
    assert_eq!((t.result.clone(), t.error.clone(), t.usage), (None, None, Usage::default()));
    assert!(!t.cancel_requested);
    assert!(
        before <= t.created_at && t.created_at <= after,
        "created_at {:?} not in [{before:?}, {after:?}]",
        t.created_at
    );
    assert_eq!((t.started_at, t.finished_at, t.worker.clone()), (None, None, None));
    assert_eq!(store.get_task(new.id).await.unwrap().as_ref(), Some(t));

    assert_eq!(sub.events.len(), 1, "{:#?}", sub.events);
    let e = &sub.events[0];
    assert_eq!((e.kind, e.seq, e.task_id, e.attempt), (EventKind::Queued, 1, Some(new.id), 0));
    assert_eq!(e.agent.as_deref(), Some("custom"));
    assert_eq!(log(&store, new.id).await, sub.events);

    // Unset limits come from the agent definition.
    let d = store.submit(NewTask::new("custom", json!(null))).await.unwrap().task;
    assert_eq!((d.timeout_ms, d.max_attempts, d.priority), (Some(5000), 4, 0));
    assert_eq!(d.tenant, DEFAULT_TENANT);
    assert_eq!(d.input, Value::Null);
    assert_eq!(store.get_task(d.id).await.unwrap(), Some(d));

    assert_eq!(store.get_task(TaskId::new()).await.unwrap(), None);
    store.ping().await.expect("ping");
}

pub async fn submit_rejects_unknown_agents_and_invalid_fields(store: S) {
    let mut unknown = NewTask::new("no-such-agent", json!(1));
    unknown.idempotency_key = Some("k".into());
    let mut priority = NewTask::new("echo", json!(1));
    priority.priority = 10;
    let mut attempts = NewTask::new("echo", json!(1));
    attempts.max_attempts = Some(0);
    let cases = [("unknown agent", unknown.clone()), ("priority 10", priority), ("max_attempts 0", attempts)];
    for (case, new) in cases {
        let id = new.id;
        let err = store.submit(new).await.expect_err(case);
        assert_eq!(err.code(), Code::Unprocessable, "{case}: {err}");
        assert_eq!(store.get_task(id).await.unwrap(), None, "{case}: wrote the task");
    }
    let page = store.list_tasks(&TaskQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert!(page.items.is_empty(), "rejected submissions wrote tasks: {:#?}", page.items);
    assert!(feed_all(&store).await.is_empty(), "rejected submissions wrote events");
    assert_eq!(store.queue_stats().await.unwrap().queued, 0);

    // The rejected submission did not take its idempotency key.
    define(&store, "no-such-agent", 3, 20).await;
    let sub = store.submit(unknown).await.unwrap();
    assert!(sub.created);
}

pub async fn idempotency_key_returns_the_original_task(store: S) {
    let keyed = |tenant: &str, input: Value| {
        let mut t = NewTask::new("echo", input);
        t.idempotency_key = Some("same-key".into());
        t.tenant = tenant.into();
        t
    };
    let first = store.submit(keyed("t1", json!(1))).await.unwrap();
    assert!(first.created);
    let events_before = feed_all(&store).await;

    let repeat_new = keyed("t1", json!(2));
    let repeat_id = repeat_new.id;
    let repeat = store.submit(repeat_new).await.unwrap();
    assert!(!repeat.created);
    assert_eq!(repeat.task, first.task, "a repeat returns the original task");
    assert!(repeat.events.is_empty(), "a repeat writes no events: {:#?}", repeat.events);
    assert_eq!(store.get_task(repeat_id).await.unwrap(), None);
    assert_eq!(feed_all(&store).await, events_before, "a repeat wrote events");

    // Concurrent repeats still find the one task.
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (s, new) = (store.clone(), keyed("t1", json!(i)));
        joins.spawn(async move { s.submit(new).await.expect("submit") });
    }
    while let Some(sub) = joins.join_next().await {
        let sub = sub.unwrap();
        assert!(!sub.created);
        assert_eq!(sub.task.id, first.task.id);
    }

    // Keys are per tenant.
    let other = store.submit(keyed("t2", json!(3))).await.unwrap();
    assert!(other.created);
    assert_ne!(other.task.id, first.task.id);

    // A finished task is still the answer, in its current state.
    let c = claim_one(&store, "w1", "echo", LONG).await;
    assert_eq!(c.task.id, first.task.id, "the oldest task is claimed first");
    store.complete(c.task.id, c.task.attempt, vec![], success(json!("ok"))).await.unwrap();
    let done = store.submit(keyed(&c.task.tenant, json!(4))).await.unwrap();
    assert!(!done.created);
    assert_eq!(done.task, get(&store, c.task.id).await);
    assert_eq!(done.task.status, TaskStatus::Succeeded);
    assert_eq!(log(&store, first.task.id).await.len(), 3, "queued, started, succeeded");
}

// ---------------------------------------------------------------------------------------------
// Claim

pub async fn claim_takes_highest_priority_then_oldest(store: S) {
    let mut submitted = Vec::new();
    for priority in [0, 5, 9, 5, 0] {
        let mut new = NewTask::new("echo", json!(priority));
        new.priority = priority;
        submitted.push(store.submit(new).await.unwrap().task.id);
    }
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(claim_one(&store, "w1", "echo", LONG).await.task.id);
    }
    let want: Vec<TaskId> = [2, 1, 3, 0, 4].iter().map(|&i| submitted[i]).collect();
    assert_eq!(order, want, "priority desc, then oldest first");
    assert!(claim(&store, "w1", "echo", 10, LONG).await.is_empty());
}

/// A worker with few free slots offers all of them to every agent: agents without work take
/// none, and the total never exceeds the limit.
pub async fn claim_limit_caps_the_total_and_skips_agents_without_work(store: S) {
    for agent in ["sleep", "sleep", "sleep", "fail", "fail", "fail"] {
        submit(&store, agent).await;
    }
    let req = |limit| ClaimRequest {
        worker: "w1".into(),
        lease: LONG,
        wants: vec![("echo".into(), 2), ("stream".into(), 2), ("sleep".into(), 2), ("fail".into(), 2)],
        limit: Some(limit),
        caps: Default::default(),
        keys: Default::default(),
    };
    // echo and stream have nothing queued: sleep gets the two slots
    let got = store.claim(&req(2)).await.unwrap();
    let agents: Vec<&str> = got.iter().map(|c| c.task.agent.as_str()).collect();
    assert_eq!(agents, ["sleep", "sleep"]);
    // three free: the last sleep, then two fails
    let got = store.claim(&req(3)).await.unwrap();
    let agents: Vec<&str> = got.iter().map(|c| c.task.agent.as_str()).collect();
    assert_eq!(agents, ["sleep", "fail", "fail"]);
    assert!(store.claim(&req(0)).await.unwrap().is_empty(), "limit 0 claims nothing");
    assert_eq!(store.claim(&req(9)).await.unwrap().len(), 1, "one fail left");
}

pub async fn claim_takes_only_wanted_agents_up_to_n(store: S) {
    for agent in ["echo", "echo", "echo", "sleep", "sleep", "sleep", "fail", "fail"] {
        submit(&store, agent).await;
    }
    let request = ClaimRequest {
        worker: "w1".into(),
        lease: LONG,
        wants: vec![("echo".into(), 2), ("sleep".into(), 1), ("stream".into(), 5), ("fail".into(), 0)],
        limit: None,
        caps: Default::default(),
        keys: Default::default(),
    };
    let got = store.claim(&request).await.unwrap();
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    for c in &got {
        *per_agent.entry(c.task.agent.clone()).or_default() += 1;
    }
    assert_eq!(per_agent, HashMap::from([("echo".to_string(), 2), ("sleep".to_string(), 1)]), "{got:#?}");

    let rest = claim(&store, "w2", "echo", 10, LONG).await;
    assert_eq!(rest.len(), 1, "only one echo task is left: {rest:#?}");
    let earlier: HashSet<TaskId> = got.iter().map(|c| c.task.id).collect();
    assert!(!earlier.contains(&rest[0].task.id), "handed out a running task again");

    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (4, 4));
}

pub async fn claim_marks_running_and_writes_started(store: S) {
    let t = submit(&store, "echo").await;
    let before = Micros::now();
    let c = claim_one(&store, "w1", "echo", LONG).await;
    assert_eq!(c.task.id, t.id);
    assert_eq!(c.task.status, TaskStatus::Running);
    assert_eq!(c.task.attempt, 1);
    assert_eq!(c.task.worker.as_deref(), Some("w1"));
    assert!(c.task.started_at.is_some_and(|s| s >= before), "started_at {:?}", c.task.started_at);
    assert_eq!(c.task.finished_at, None);
    assert_eq!(c.task.input, t.input);
    assert_eq!(get(&store, t.id).await, c.task);

    let e = &c.event;
    assert_eq!((e.kind, e.seq, e.task_id, e.attempt), (EventKind::Started, 2, Some(t.id), 1));
    let events = checked_log(&store, t.id).await;
    assert_eq!(kinds(&events), [EventKind::Queued, EventKind::Started]);
    assert_eq!(&events[1], e);

    assert!(claim(&store, "w2", "echo", 10, LONG).await.is_empty(), "a running task was claimed again");
}

pub async fn concurrent_claims_never_hand_out_a_task_twice(store: S) {
    const TASKS: usize = 60;
    for _ in 0..TASKS {
        submit(&store, "echo").await;
    }
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..24 {
        let s = store.clone();
        let worker = if i % 2 == 0 { "w1" } else { "w2" };
        joins.spawn(async move { (worker, claim(&s, worker, "echo", 5, LONG).await) });
    }
    let mut seen: HashMap<TaskId, &str> = HashMap::new();
    while let Some(res) = joins.join_next().await {
        let (worker, got) = res.unwrap();
        for c in got {
            assert_eq!(c.task.worker.as_deref(), Some(worker));
            assert_eq!(c.task.attempt, 1);
            let twice = seen.insert(c.task.id, worker);
            assert!(twice.is_none(), "task {} handed to {twice:?} and {worker}", c.task.id);
        }
    }
    assert_eq!(seen.len(), TASKS, "120 slots for 60 tasks: every task is claimed");
    for (id, worker) in seen {
        assert_eq!(get(&store, id).await.worker.as_deref(), Some(worker));
        assert_eq!(checked_log(&store, id).await.len(), 2, "one task.started per claim");
    }
}

// ---------------------------------------------------------------------------------------------
// Per-tenant running caps

fn caps(default: Option<u64>, tenants: &[(&str, u64)]) -> Arc<RunningCaps> {
    Arc::new(RunningCaps { default, tenants: tenants.iter().map(|(t, n)| (t.to_string(), *n)).collect() })
}

async fn submit_as(store: &S, agent: &str, tenant: &str, priority: u8) -> Task {
    let mut t = NewTask::new(agent, json!(tenant));
    t.tenant = tenant.into();
    t.priority = priority;
    store.submit(t).await.expect("submit").task
}

async fn claim_capped(store: &S, worker: &str, wants: &[(&str, u32)], caps: &Arc<RunningCaps>) -> Vec<Claimed> {
    let wants = wants.iter().map(|(a, n)| (a.to_string(), *n)).collect();
    let request = ClaimRequest {
        worker: worker.into(),
        lease: LONG,
        wants,
        limit: None,
        caps: caps.clone(),
        keys: Default::default(),
    };
    store.claim(&request).await.expect("claim")
}

fn by_tenant<'a>(claimed: impl IntoIterator<Item = &'a Claimed>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for c in claimed {
        *n.entry(c.task.tenant.clone()).or_default() += 1;
    }
    n
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// Tasks running by tenant, as the store has them.
async fn running_by_tenant(store: &S) -> BTreeMap<String, usize> {
    let q = TaskQuery { status: Some(TaskStatus::Running), limit: 1000, ..Default::default() };
    let mut n = BTreeMap::new();
    for t in store.list_tasks(&q).await.expect("list_tasks").items {
        *n.entry(t.tenant).or_default() += 1;
    }
    n
}

pub async fn running_cap_holds_within_a_claim_and_frees_slots_as_tasks_end(store: S) {
    alive(&store, "w").await;
    define(&store, "tries", 3, 0).await;
    let two = caps(Some(2), &[]);
    let mut acme = Vec::new();
    for _ in 0..5 {
        acme.push(submit_as(&store, "tries", "acme", 0).await.id);
    }
    let got = claim_capped(&store, "w", &[("tries", 10)], &two).await;
    assert_eq!(got.iter().map(|c| c.task.id).collect::<Vec<_>>(), acme[..2], "the two oldest, and no more");
    assert!(claim_capped(&store, "w", &[("tries", 10)], &two).await.is_empty(), "acme is at its cap");

    // a success frees a slot: the next oldest runs
    store.complete(acme[0], 1, vec![], success(json!(1))).await.unwrap();
    let next = claim_capped(&store, "w", &[("tries", 10)], &two).await;
    assert_eq!(next.iter().map(|c| c.task.id).collect::<Vec<_>>(), [acme[2]]);
    // so does a failure that sends its task back to the queue: it is the oldest queued again
    let requeued = store.complete(acme[1], 1, vec![], failure(true)).await.unwrap();
    assert_eq!(requeued.task.status, TaskStatus::Queued);
    let mut tries = 0;
    let retry = loop {
        let got = claim_capped(&store, "w", &[("tries", 10)], &two).await;
        if !got.is_empty() {
            break got;
        }
        tries += 1;
        assert!(tries < 200, "the requeued task never became claimable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(retry.iter().map(|c| (c.task.id, c.task.attempt)).collect::<Vec<_>>(), [(acme[1], 2)]);
    // and so does a cancelled one
    store.request_cancel(acme[2]).await.unwrap();
    let cancelled = Outcome::Cancelled { usage: Usage::default() };
    store.complete(acme[2], 1, vec![], cancelled).await.unwrap();
    let next = claim_capped(&store, "w", &[("tries", 10)], &two).await;
    assert_eq!(next.iter().map(|c| c.task.id).collect::<Vec<_>>(), [acme[3]]);
    assert_eq!(running_by_tenant(&store).await, counts(&[("acme", 2)]));
    assert!(claim_capped(&store, "w", &[("tries", 10)], &two).await.is_empty());
}

/// One claim for two agents, then many claims at once (a PostgreSQL writer batches them into
/// one transaction; processes take turns) by several workers, each for two agents: a tenant's
/// running tasks over all of them never pass its cap, and every slot the caps allow is filled.
pub async fn running_cap_holds_across_agents_and_concurrent_claims(store: S) {
    for w in ["w1", "w2", "w3"] {
        alive(&store, w).await;
    }
    let three = caps(Some(3), &[]);
    for agent in ["fail", "stream"] {
        for _ in 0..3 {
            submit_as(&store, agent, "umbrella", 0).await;
        }
    }
    // umbrella's two oldest fail tasks leave it one slot for stream
    let first = claim_capped(&store, "w1", &[("fail", 2), ("stream", 5)], &three).await;
    let agents: Vec<&str> = first.iter().map(|c| c.task.agent.as_str()).collect();
    assert_eq!(agents, ["fail", "fail", "stream"], "{first:#?}");

    for agent in ["echo", "sleep"] {
        for _ in 0..6 {
            submit_as(&store, agent, "acme", 0).await;
        }
        submit_as(&store, agent, "globex", 0).await;
    }
    for _ in 0..4 {
        submit_as(&store, "sleep", "initech", 0).await;
    }
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (s, c) = (store.clone(), three.clone());
        let worker = ["w1", "w2", "w3"][i % 3];
        let wants: &[(&str, u32)] =
            if i % 2 == 0 { &[("echo", 4), ("sleep", 4)] } else { &[("sleep", 4), ("echo", 4)] };
        joins.spawn(async move { claim_capped(&s, worker, wants, &c).await });
    }
    let mut seen = HashSet::new();
    let mut claimed = Vec::new();
    while let Some(res) = joins.join_next().await {
        for c in res.unwrap() {
            assert!(seen.insert(c.task.id), "task {} handed out twice", c.task.id);
            claimed.push(c);
        }
    }
    assert_eq!(by_tenant(&claimed), counts(&[("acme", 3), ("globex", 2), ("initech", 3)]), "{claimed:#?}");
    let running = counts(&[("acme", 3), ("globex", 2), ("initech", 3), ("umbrella", 3)]);
    assert_eq!(running_by_tenant(&store).await, running);
    assert_eq!(store.queue_stats().await.unwrap().queued, 9 + 1 + 3);
}

pub async fn running_cap_of_a_tenant_overrides_the_default(store: S) {
    alive(&store, "w").await;
    for tenant in ["big", "small", "other"] {
        for _ in 0..4 {
            submit_as(&store, "echo", tenant, 0).await;
            submit_as(&store, "sleep", tenant, 0).await;
        }
    }
    let got = claim_capped(&store, "w", &[("echo", 20)], &caps(Some(1), &[("big", 3)])).await;
    assert_eq!(by_tenant(&got), counts(&[("big", 3), ("other", 1), ("small", 1)]));
    // a cap for one tenant only: the others have none (and the running echo tasks count)
    let got = claim_capped(&store, "w", &[("sleep", 20)], &caps(None, &[("small", 2)])).await;
    assert_eq!(by_tenant(&got), counts(&[("big", 4), ("other", 4), ("small", 1)]));
    assert_eq!(running_by_tenant(&store).await, counts(&[("big", 7), ("other", 5), ("small", 2)]));
    // without caps the claim takes everything runnable
    let got = claim(&store, "w", "echo", 20, LONG).await;
    assert_eq!(by_tenant(&got), counts(&[("big", 1), ("other", 3), ("small", 3)]));
}

/// A capped tenant's backlog ahead of everyone (older and of higher priority) does not use up
/// a claim's slots: the claim takes the capped tenant's share and the tasks behind.
pub async fn a_tenant_at_its_running_cap_holds_back_no_one(store: S) {
    alive(&store, "w").await;
    let mut hog = Vec::new();
    for _ in 0..40 {
        hog.push(submit_as(&store, "echo", "hog", 9).await.id);
    }
    let mut small = Vec::new();
    for priority in [0, 3, 0] {
        small.push(submit_as(&store, "echo", "small", priority).await.id);
    }
    let one = caps(Some(1), &[("small", 5)]);
    let got = claim_capped(&store, "w", &[("echo", 3)], &one).await;
    let ids: Vec<TaskId> = got.iter().map(|c| c.task.id).collect();
    assert_eq!(ids, [hog[0], small[1], small[0]], "hog's oldest, then small's by priority and age");
    let got = claim_capped(&store, "w", &[("echo", 3)], &one).await;
    assert_eq!(got.iter().map(|c| c.task.id).collect::<Vec<_>>(), [small[2]]);
    assert!(claim_capped(&store, "w", &[("echo", 3)], &one).await.is_empty());
    // sessions still go one turn at a time under caps
    let turn = |n: u32| {
        let mut t = NewTask::new("sleep", json!(n));
        t.session_id = Some("s".into());
        t.tenant = "small".into();
        t
    };
    let t1 = store.submit(turn(1)).await.unwrap().task;
    store.submit(turn(2)).await.unwrap();
    let got = claim_capped(&store, "w", &[("sleep", 3)], &one).await;
    assert_eq!(got.iter().map(|c| c.task.id).collect::<Vec<_>>(), [t1.id]);
}

// ---------------------------------------------------------------------------------------------
// Append and complete

pub async fn append_is_fenced_by_status_and_attempt(store: S) {
    let t = submit(&store, "echo").await;
    assert_fenced(store.append(t.id, 0, vec![output(0)]).await, t.id, "append to a queued task");
    assert_fenced(store.append(t.id, 1, vec![output(0)]).await, t.id, "append to a queued task");

    let c = claim_one(&store, "w1", "echo", LONG).await;
    let first = store.append(t.id, 1, vec![output(1), output(2)]).await.unwrap();
    let second = store.append(t.id, 1, vec![EventDraft::new(EventKind::Usage, json!({"tokens": 3}))]).await.unwrap();
    assert_eq!(first.iter().chain(&second).map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(kinds(&second), [EventKind::Usage]);
    for e in first.iter().chain(&second) {
        assert_eq!((e.task_id, e.attempt, e.agent.as_deref()), (Some(t.id), 1, Some("echo")));
    }
    assert_eq!(first[1].data, json!({"n": 2}));
    let mut want = vec![log(&store, t.id).await[0].clone(), c.event.clone()];
    want.extend(first.iter().chain(&second).cloned());
    assert_eq!(checked_log(&store, t.id).await, want, "append returns what it stored");

    assert_fenced(store.append(t.id, 2, vec![output(9)]).await, t.id, "append at a later attempt");
    assert_fenced(store.append(t.id, 0, vec![output(9)]).await, t.id, "append at an earlier attempt");
    store.complete(t.id, 1, vec![], success(json!(1))).await.unwrap();
    assert_fenced(store.append(t.id, 1, vec![output(9)]).await, t.id, "append after completion");
    assert_eq!(log(&store, t.id).await.len(), want.len() + 1, "fenced appends wrote events");
}

pub async fn complete_success_records_result_and_terminal_event(store: S) {
    let t = submit(&store, "echo").await;
    let c = claim_one(&store, "w1", "echo", LONG).await;
    store.append(t.id, 1, vec![output(1)]).await.unwrap();
    let usage = Usage { input_tokens: 10, output_tokens: 20, cost_usd: 0.5 };
    let outcome = Outcome::Succeeded { result: json!({"answer": 42}), usage };
    let drafts = vec![output(2), EventDraft::new(EventKind::Message, json!("bye"))];
    let change = store.complete(t.id, 1, drafts, outcome.clone()).await.unwrap();

    let done = &change.task;
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"answer": 42})));
    assert_eq!(done.usage, usage);
    assert_eq!(done.error, None);
    assert_eq!(done.attempt, 1);
    assert!(done.finished_at.is_some_and(|f| Some(f) >= c.task.started_at), "finished_at {:?}", done.finished_at);
    assert_eq!(&get(&store, t.id).await, done);

    assert_eq!(kinds(&change.events), [EventKind::Output, EventKind::Message, EventKind::Succeeded]);
    assert_eq!(change.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    let events = checked_log(&store, t.id).await;
    assert_eq!(events[3..], change.events[..], "complete returns what it stored");

    // Terminal rows never change.
    assert_fenced(store.complete(t.id, 1, vec![output(3)], outcome).await, t.id, "second complete");
    assert_fenced(store.complete(t.id, 1, vec![], failure(true)).await, t.id, "complete after success");
    assert_fenced(store.complete(t.id, 2, vec![], success(json!(0))).await, t.id, "complete at another attempt");
    assert_eq!(&get(&store, t.id).await, done);
    assert_eq!(log(&store, t.id).await, events);
    assert!(claim(&store, "w1", "echo", 1, LONG).await.is_empty());
}

pub async fn retryable_failure_backs_off_then_exhausts_attempts(store: S) {
    const BASE: u64 = 150;
    define(&store, "flaky", 3, BASE).await;
    alive(&store, "w1").await;
    let t = submit(&store, "flaky").await;
    for attempt in 1..=2u32 {
        let c = claim_one(&store, "w1", "flaky", LONG).await;
        assert_eq!(c.task.attempt, attempt);
        let change = store.complete(t.id, attempt, vec![], failure(true)).await.unwrap();
        assert_eq!(change.task.status, TaskStatus::Queued, "attempt {attempt} has a retry left");
        assert_eq!(change.task.worker, None);
        assert_eq!(change.task.error.as_ref().map(|e| e.code.as_str()), Some("boom"));
        assert_eq!(&get(&store, t.id).await, &change.task);
        let retrying = change.events.last().expect("task.retrying");
        let delay = delay_ms(retrying);
        let base = BASE << (attempt - 1);
        assert!((base..=base + base / 10).contains(&delay), "attempt {attempt}: delay {delay} ms, want {base} ms");

        assert!(claim(&store, "w1", "flaky", 1, LONG).await.is_empty(), "claimable before its backoff ended");
        tokio::time::sleep(Duration::from_millis(delay + 5)).await;
    }
    let c = claim_one(&store, "w1", "flaky", LONG).await;
    assert_eq!(c.task.attempt, 3);
    let change = store.complete(t.id, 3, vec![], failure(true)).await.unwrap();
    assert_eq!(change.task.status, TaskStatus::Failed, "attempts exhausted");
    assert_eq!(change.task.error, Some(TaskError::new("boom", "it broke")));
    assert!(change.task.finished_at.is_some());
    assert_eq!(kinds(&change.events), [EventKind::Failed]);
    let events = checked_log(&store, t.id).await;
    use EventKind::*;
    let want = [Queued, Started, Retrying, Started, Retrying, Started, Failed];
    assert_eq!(kinds(&events), want);
    assert!(claim(&store, "w1", "flaky", 1, LONG).await.is_empty());
}

pub async fn non_retryable_failure_fails_at_once(store: S) {
    define(&store, "strict", 5, 1).await;
    let t = submit(&store, "strict").await;
    claim_one(&store, "w1", "strict", LONG).await;
    let change = store.complete(t.id, 1, vec![output(1)], failure(false)).await.unwrap();
    assert_eq!(change.task.status, TaskStatus::Failed);
    assert_eq!(change.task.error, Some(TaskError::new("boom", "it broke")));
    assert_eq!(kinds(&change.events), [EventKind::Output, EventKind::Failed]);
    assert_eq!(get(&store, t.id).await, change.task);
    assert_eq!(checked_log(&store, t.id).await.len(), 4);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(claim(&store, "w1", "strict", 1, LONG).await.is_empty());
}

pub async fn timed_out_and_cancelled_outcomes_are_terminal(store: S) {
    let usage = Usage { input_tokens: 1, output_tokens: 2, cost_usd: 0.25 };
    let cases = [
        (Outcome::TimedOut { usage }, TaskStatus::TimedOut, EventKind::TimedOut),
        (Outcome::Cancelled { usage }, TaskStatus::Cancelled, EventKind::Cancelled),
    ];
    for (outcome, status, kind) in cases {
        let t = submit(&store, "echo").await;
        claim_one(&store, "w1", "echo", LONG).await;
        let change = store.complete(t.id, 1, vec![], outcome.clone()).await.unwrap();
        assert_eq!(change.task.status, status);
        assert_eq!(change.task.usage, usage);
        assert!(change.task.finished_at.is_some());
        assert_eq!(kinds(&change.events), [kind]);
        assert_eq!(get(&store, t.id).await, change.task);
        checked_log(&store, t.id).await;
        assert_fenced(store.complete(t.id, 1, vec![], success(json!(1))).await, t.id, "complete after {status}");
    }
    assert!(claim(&store, "w1", "echo", 10, LONG).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Leases: renew, reap, release

pub async fn stale_attempt_is_fenced_after_reap_and_reclaim(store: S) {
    define(&store, "quick", 3, 20).await;
    alive(&store, "w1").await;
    alive(&store, "w2").await;
    let t = submit(&store, "quick").await;
    claim_one(&store, "w1", "quick", Duration::from_millis(30)).await;
    store.append(t.id, 1, vec![output(1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;

    let reaped = store.reap(Micros::now()).await.unwrap();
    assert_eq!(reaped.iter().map(|c| c.task.id).collect::<Vec<_>>(), [t.id]);
    let delay = delay_ms(reaped[0].events.last().unwrap());
    tokio::time::sleep(Duration::from_millis(delay + 5)).await;

    let c = claim_one(&store, "w2", "quick", LONG).await;
    assert_eq!(c.task.attempt, 2);
    assert_fenced(store.append(t.id, 1, vec![output(2)]).await, t.id, "append by the stale attempt");
    assert_fenced(
        store.complete(t.id, 1, vec![], success(json!("stale"))).await,
        t.id,
        "complete by the stale attempt",
    );
    store.append(t.id, 2, vec![output(3)]).await.unwrap();
    let done = store.complete(t.id, 2, vec![], success(json!("fresh"))).await.unwrap();
    assert_eq!(done.task.result, Some(json!("fresh")));
    assert_eq!(done.task.worker.as_deref(), Some("w2"));
    let events = checked_log(&store, t.id).await;
    use EventKind::*;
    assert_eq!(kinds(&events), [Queued, Started, Output, Retrying, Started, Output, Succeeded]);
    assert_eq!(events.iter().map(|e| e.attempt).collect::<Vec<_>>()[1..], [1, 1, 1, 2, 2, 2]);
}

pub async fn renew_extends_leases_and_reports_cancel(store: S) {
    alive(&store, "w1").await;
    alive(&store, "w2").await;
    let a = submit(&store, "echo").await;
    let b = submit(&store, "echo").await;
    let other = submit(&store, "sleep").await;
    claim(&store, "w1", "echo", 2, Duration::from_secs(1)).await;
    claim_one(&store, "w2", "sleep", Duration::from_secs(1)).await;

    let mut held = store.renew("w1", Duration::from_secs(120)).await.unwrap();
    held.sort_by_key(|h| h.id);
    let mut want = vec![
        crate::Held { id: a.id, attempt: 1, cancel_requested: false },
        crate::Held { id: b.id, attempt: 1, cancel_requested: false },
    ];
    want.sort_by_key(|h| h.id);
    assert_eq!(held, want);
    assert!(store.renew("w-nobody", LONG).await.unwrap().is_empty(), "renew for a worker holding nothing");

    // A minute on: w1's renewed leases hold, w2's unrenewed one has ended.
    let reaped = store.reap(Micros::now().plus(Duration::from_secs(60))).await.unwrap();
    assert_eq!(reaped.iter().map(|c| c.task.id).collect::<Vec<_>>(), [other.id]);
    assert_eq!(get(&store, a.id).await.status, TaskStatus::Running);
    assert_eq!(get(&store, b.id).await.status, TaskStatus::Running);
    assert!(store.renew("w2", LONG).await.unwrap().is_empty(), "renew returned a reaped task");

    store.request_cancel(a.id).await.unwrap();
    store.complete(b.id, 1, vec![], success(json!(1))).await.unwrap();
    let held = store.renew("w1", LONG).await.unwrap();
    assert_eq!(held, [crate::Held { id: a.id, attempt: 1, cancel_requested: true }], "finished tasks are not held");
}

pub async fn reap_requeues_expired_leases(store: S) {
    define(&store, "quick", 3, 20).await;
    alive(&store, "w1").await;
    let short = submit(&store, "quick").await;
    claim_one(&store, "w1", "quick", Duration::from_millis(200)).await;
    let long = submit(&store, "quick").await;
    claim_one(&store, "w1", "quick", LONG).await;
    assert!(store.reap(Micros::now()).await.unwrap().is_empty(), "reaped a live lease");
    tokio::time::sleep(Duration::from_millis(250)).await;

    let reaped = store.reap(Micros::now()).await.unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:#?}");
    let change = &reaped[0];
    assert_eq!(change.task.id, short.id);
    assert_eq!(change.task.status, TaskStatus::Queued);
    assert_eq!(change.task.worker, None);
    assert_eq!(change.task.error.as_ref().map(|e| e.code.as_str()), Some("lease_expired"));
    assert_eq!(kinds(&change.events), [EventKind::Retrying]);
    assert_eq!(get(&store, short.id).await, change.task);
    assert_eq!(get(&store, long.id).await.status, TaskStatus::Running);
    checked_log(&store, short.id).await;

    let delay = delay_ms(&change.events[0]);
    tokio::time::sleep(Duration::from_millis(delay + 5)).await;
    assert_eq!(claim_one(&store, "w1", "quick", LONG).await.task.attempt, 2);
    assert!(store.reap(Micros::now()).await.unwrap().is_empty());
}

pub async fn reap_requeues_tasks_of_workers_not_alive(store: S) {
    let now = Micros::now();
    let long_ago = Micros(now.0 - 600_000_000);
    store.heartbeat(&node("w-stale", NodeStatus::Alive, long_ago)).await.unwrap();
    for w in ["w-live", "w-drain", "w-stopped"] {
        alive(&store, w).await;
    }
    store.set_node_status("w-drain", NodeStatus::Draining).await.unwrap();
    store.set_node_status("w-stopped", NodeStatus::Stopped).await.unwrap();
    let mut held = HashMap::new();
    for w in ["w-stale", "w-live", "w-drain", "w-stopped", "w-ghost"] {
        let t = submit(&store, "echo").await;
        claim_one(&store, w, "echo", LONG).await;
        held.insert(w, t.id);
    }

    // Never registered, or stopped: not alive. Draining workers finish what they hold.
    let mut reaped: Vec<TaskId> = store.reap(Micros::now()).await.unwrap().iter().map(|c| c.task.id).collect();
    reaped.sort();
    let mut want = vec![held["w-ghost"], held["w-stopped"]];
    want.sort();
    assert_eq!(reaped, want);

    let dead = store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap();
    assert_eq!(dead.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["w-stale"]);
    let reaped = store.reap(Micros::now()).await.unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:#?}");
    let change = &reaped[0];
    assert_eq!(change.task.id, held["w-stale"]);
    assert_eq!(change.task.status, TaskStatus::Queued);
    assert_eq!(change.task.error.as_ref().map(|e| e.code.as_str()), Some("worker_lost"));
    assert_eq!(kinds(&change.events), [EventKind::Retrying]);
    delay_ms(&change.events[0]);
    for w in ["w-live", "w-drain"] {
        assert_eq!(get(&store, held[w]).await.status, TaskStatus::Running, "{w}'s task was reaped");
    }
    for w in ["w-ghost", "w-stopped", "w-stale"] {
        let t = get(&store, held[w]).await;
        assert_eq!((t.status, t.error.map(|e| e.code)), (TaskStatus::Queued, Some("worker_lost".into())), "{w}");
        checked_log(&store, held[w]).await;
    }
}

pub async fn reap_fails_tasks_with_attempts_exhausted(store: S) {
    define(&store, "once", 1, 20).await;
    alive(&store, "w1").await;
    let t = submit(&store, "once").await;
    claim_one(&store, "w1", "once", Duration::from_secs(1)).await;
    let reaped = store.reap(Micros::now().plus(Duration::from_secs(5))).await.unwrap();
    assert_eq!(reaped.len(), 1);
    let change = &reaped[0];
    assert_eq!(change.task.status, TaskStatus::Failed);
    assert_eq!(change.task.error.as_ref().map(|e| e.code.as_str()), Some("lease_expired"));
    assert!(change.task.finished_at.is_some());
    assert_eq!(kinds(&change.events), [EventKind::Failed]);
    assert_eq!(get(&store, t.id).await, change.task);
    checked_log(&store, t.id).await;
    assert_fenced(store.complete(t.id, 1, vec![], success(json!(1))).await, t.id, "complete after reaped");
}

pub async fn reap_cancels_cancel_requested_tasks(store: S) {
    alive(&store, "w1").await;
    let t = submit(&store, "echo").await;
    claim_one(&store, "w1", "echo", Duration::from_secs(1)).await;
    store.request_cancel(t.id).await.unwrap();
    let reaped = store.reap(Micros::now().plus(Duration::from_secs(5))).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].task.status, TaskStatus::Cancelled);
    assert_eq!(kinds(&reaped[0].events), [EventKind::Cancelled]);
    assert_eq!(get(&store, t.id).await, reaped[0].task);
    checked_log(&store, t.id).await;
    assert!(claim(&store, "w1", "echo", 1, LONG).await.is_empty());
}

pub async fn release_requeues_without_spending_an_attempt(store: S) {
    define(&store, "once", 1, 20).await;
    define(&store, "twice", 2, 20).await;
    alive(&store, "w1").await;
    let once = submit(&store, "once").await;
    claim_one(&store, "w1", "once", LONG).await;

    assert!(store.release("w2", &[(once.id, 1)], "drain").await.unwrap().is_empty(), "another worker released");
    assert!(store.release("w1", &[(once.id, 2)], "drain").await.unwrap().is_empty(), "another attempt released");
    assert_eq!(get(&store, once.id).await.status, TaskStatus::Running);

    let changes = store.release("w1", &[(once.id, 1)], "drain").await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].task.status, TaskStatus::Queued);
    assert_eq!(changes[0].task.worker, None);
    assert_eq!(get(&store, once.id).await, changes[0].task);
    checked_log(&store, once.id).await;

    // Claimable at once, at a new attempt that fences the released one.
    let again = claim_one(&store, "w1", "once", LONG).await;
    assert_eq!(again.task.attempt, 2);
    assert_fenced(store.append(once.id, 1, vec![output(1)]).await, once.id, "append by the released attempt");
    let done = store.complete(once.id, 2, vec![], success(json!("ran"))).await.unwrap();
    assert_eq!(done.task.status, TaskStatus::Succeeded);

    // With two attempts, a release and a failure still leave one retry.
    let twice = submit(&store, "twice").await;
    claim_one(&store, "w1", "twice", LONG).await;
    store.release("w1", &[(twice.id, 1)], "drain").await.unwrap();
    claim_one(&store, "w1", "twice", LONG).await;
    let change = store.complete(twice.id, 2, vec![], failure(true)).await.unwrap();
    assert_eq!(change.task.status, TaskStatus::Queued, "the release spent an attempt");
    checked_log(&store, twice.id).await;
}

/// The task and events a store answered, against what the lifecycle decides for the same step.
/// Times are the store's own clock, so they are compared by presence.
fn assert_moved(what: &str, task: &Task, events: &[Event], row: &lifecycle::Row, steps: &[lifecycle::Step]) {
    let when = |t: &Task| (t.started_at.is_some(), t.finished_at.is_some());
    let strip = |t: &Task| Task { created_at: Micros(0), started_at: None, finished_at: None, ..t.clone() };
    assert_eq!(strip(task), strip(&row.task), "{what}: the task differs from the lifecycle's");
    assert_eq!(when(task), when(&row.task), "{what}: started/finished differ from the lifecycle's");
    let got: Vec<(u64, EventKind, u32, &Value)> = events.iter().map(|e| (e.seq, e.kind, e.attempt, &e.data)).collect();
    let want: Vec<(u64, EventKind, u32, &Value)> = steps.iter().map(|s| (s.seq, s.kind, s.attempt, &s.data)).collect();
    assert_eq!(got, want, "{what}: the events differ from the lifecycle's");
}

/// Each store moves a task exactly as `lifecycle` says, step by step — claims and renewals
/// (set-based SQL in both stores) included: the same task and the same events.
pub async fn a_task_moves_as_the_lifecycle_says(store: S) {
    let def = agent("life", 2, 0);
    store.put_agents(std::slice::from_ref(&def)).await.expect("put_agents");
    alive(&store, "w1").await;
    let new = NewTask::new("life", json!({"n": 1}));
    let (mut row, queued) = lifecycle::submit(&new, &def, Micros(0));
    let now = Micros::now();
    let lease = now.plus(LONG);

    let submitted = store.submit(new).await.unwrap();
    assert_moved("submit", &submitted.task, &submitted.events, &row, &[queued]);
    let id = row.task.id;

    let claimed = claim_one(&store, "w1", "life", LONG).await;
    let step = lifecycle::claim(&mut row, "w1", lease, now).unwrap();
    assert_moved("claim", &claimed.task, &[claimed.event], &row, &[step]);

    let drafts = vec![output(1), output(2)];
    let events = store.append(id, 1, drafts.clone()).await.unwrap();
    let steps = lifecycle::append(&mut row, 1, &drafts).unwrap();
    assert_moved("append", &get(&store, id).await, &events, &row, &steps);

    let change = store.complete(id, 1, vec![output(3)], failure(true)).await.unwrap();
    let steps = lifecycle::complete(&mut row, 1, &[output(3)], &failure(true), now).unwrap();
    assert_moved("retryable failure", &change.task, &change.events, &row, &steps);

    let claimed = claim_one(&store, "w1", "life", LONG).await;
    let step = lifecycle::claim(&mut row, "w1", lease, now).unwrap();
    assert_moved("claim again", &claimed.task, &[claimed.event], &row, &[step]);

    let held = store.renew("w1", LONG).await.unwrap();
    lifecycle::renew(&mut row, "w1", lease).unwrap();
    assert_eq!(held.iter().map(|h| (h.id, h.attempt)).collect::<Vec<_>>(), [(id, 2)]);

    let changes = store.release("w1", &[(id, 2)], "drain").await.unwrap();
    let step = lifecycle::release(&mut row, "w1", 2, "drain", now).unwrap();
    assert_moved("release", &changes[0].task, &changes[0].events, &row, &[step]);

    let claimed = claim_one(&store, "w1", "life", LONG).await;
    let step = lifecycle::claim(&mut row, "w1", lease, now).unwrap();
    assert_moved("claim after release", &claimed.task, &[claimed.event], &row, &[step]);

    let change = store.request_cancel(id).await.unwrap();
    assert_eq!(lifecycle::cancel(&mut row, now), None);
    assert_moved("cancel while running", &change.task, &change.events, &row, &[]);

    let refused = store.complete(id, 2, vec![], success(json!("late"))).await;
    assert_eq!(
        lifecycle::complete(&mut row, 2, &[], &success(json!("late")), now),
        Err(lifecycle::Refusal::StaleAttempt { attempt: 2, current: 3 })
    );
    assert_fenced(refused, id, "a completion by the released attempt");

    let change = store.complete(id, 3, vec![], failure(true)).await.unwrap();
    let steps = lifecycle::complete(&mut row, 3, &[], &failure(true), now).unwrap();
    assert_moved("a failure after a cancel request", &change.task, &change.events, &row, &steps);
    assert_eq!(change.task.status, TaskStatus::Cancelled);

    let change = store.request_cancel(id).await.unwrap();
    assert_eq!(lifecycle::cancel(&mut row, now), None);
    assert_moved("cancel when finished", &change.task, &change.events, &row, &[]);
    checked_log(&store, id).await;
}

// ---------------------------------------------------------------------------------------------
// Cancel

pub async fn request_cancel_depends_on_status(store: S) {
    let queued = submit(&store, "sleep").await;
    let change = store.request_cancel(queued.id).await.unwrap();
    assert_eq!(change.task.status, TaskStatus::Cancelled);
    assert!(change.task.cancel_requested);
    assert!(change.task.finished_at.is_some());
    assert_eq!(kinds(&change.events), [EventKind::Cancelled]);
    assert_eq!(get(&store, queued.id).await, change.task);
    assert_eq!(checked_log(&store, queued.id).await.last(), change.events.last());
    assert!(claim(&store, "w1", "sleep", 1, LONG).await.is_empty(), "a cancelled task was claimed");

    let running = submit(&store, "echo").await;
    claim_one(&store, "w1", "echo", LONG).await;
    let before = log(&store, running.id).await;
    for _ in 0..2 {
        let change = store.request_cancel(running.id).await.unwrap();
        assert_eq!(change.task.status, TaskStatus::Running);
        assert!(change.task.cancel_requested);
        assert!(change.events.is_empty(), "{:#?}", change.events);
        assert_eq!(get(&store, running.id).await, change.task);
    }
    assert_eq!(log(&store, running.id).await, before, "flagging a running task wrote events");
    let done = store.complete(running.id, 1, vec![], Outcome::Cancelled { usage: Usage::default() }).await.unwrap();
    assert_eq!(done.task.status, TaskStatus::Cancelled);
    checked_log(&store, running.id).await;

    let finished = submit(&store, "echo").await;
    claim_one(&store, "w1", "echo", LONG).await;
    store.complete(finished.id, 1, vec![], success(json!(1))).await.unwrap();
    for id in [queued.id, running.id, finished.id] {
        let (task, events) = (get(&store, id).await, log(&store, id).await);
        let change = store.request_cancel(id).await.unwrap();
        assert_eq!(change.task, task, "a terminal task changed");
        assert!(change.events.is_empty());
        assert_eq!((get(&store, id).await, log(&store, id).await), (task, events));
    }

    let err = store.request_cancel(TaskId::new()).await.expect_err("unknown task");
    assert_eq!(err.code(), Code::NotFound, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Events and the feed

pub async fn events_pages_every_event_once_in_order(store: S) {
    let t = submit(&store, "echo").await;
    claim_one(&store, "w1", "echo", LONG).await;
    store.append(t.id, 1, (0..10).map(output).collect()).await.unwrap();
    let all = checked_log(&store, t.id).await;
    assert_eq!(all.len(), 12);

    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events(t.id, after, 5).await.unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(store.events(t.id, 7, 2).await.unwrap(), all[7..9]);
    assert!(store.events(t.id, 12, 10).await.unwrap().is_empty());
}

/// Writes interleaved events on several tasks of two agents and two tenants, plus a system event.
async fn busy_history(store: &S) -> Vec<TaskId> {
    let mut tasks = Vec::new();
    for (agent, tenant) in [("echo", "t1"), ("sleep", "t1"), ("echo", "t2"), ("sleep", "t2")] {
        let mut new = NewTask::new(agent, json!(tenant));
        new.tenant = tenant.into();
        tasks.push(store.submit(new).await.unwrap().task.id);
    }
    let claimed: Vec<Claimed> =
        [claim(store, "w1", "echo", 2, LONG).await, claim(store, "w1", "sleep", 2, LONG).await].concat();
    for round in 0..3 {
        for c in &claimed {
            store.append(c.task.id, 1, vec![output(round)]).await.unwrap();
        }
    }
    store.append_system(json!({"what": "restart"})).await.unwrap();
    for (i, c) in claimed.iter().enumerate() {
        let outcome = if i % 2 == 0 { success(json!(i)) } else { failure(false) };
        store.complete(c.task.id, 1, vec![], outcome).await.unwrap();
    }
    tasks
}

pub async fn feed_is_commit_ordered_and_pages_without_gaps(store: S) {
    let tasks = busy_history(&store).await;
    let all = feed_all(&store).await;
    for w in all.windows(2) {
        assert!(w[0].pos < w[1].pos, "feed positions must strictly increase: {w:#?}");
    }
    let mut from_logs: Vec<Event> = Vec::new();
    for id in &tasks {
        from_logs.extend(checked_log(&store, *id).await);
    }
    from_logs.extend(all.iter().filter(|e| e.task_id.is_none()).cloned());
    from_logs.sort_by_key(|e| e.pos);
    assert_eq!(all, from_logs, "the feed holds exactly the tasks' events and system events");

    for limit in [1, 3, 7] {
        let mut cursor = 0;
        let mut paged = Vec::new();
        for _ in 0..=all.len() {
            let page = store.feed(cursor, &FeedFilter::default(), limit).await.unwrap();
            assert!(page.events.len() <= limit);
            assert!(page.cursor >= cursor, "the cursor went back from {cursor} to {}", page.cursor);
            if let Some(last) = page.events.last() {
                assert!(page.cursor >= last.pos, "cursor {} before the last event {}", page.cursor, last.pos);
            }
            if page.events.len() < limit {
                assert!(!page.more, "a short page says more: {page:?}");
            }
            cursor = page.cursor;
            paged.extend(page.events);
            if !page.more {
                break;
            }
        }
        assert_eq!(paged, all, "paging by {limit} must give every event exactly once");
        let end = store.feed(cursor, &FeedFilter::default(), limit).await.unwrap();
        assert!(end.events.is_empty() && !end.more && end.cursor >= cursor, "{end:?}");
    }
}

pub async fn feed_filters_by_kind_agent_and_tenant(store: S) {
    busy_history(&store).await;
    let all = feed_all(&store).await;
    let high = all.last().expect("events").pos;
    let filters = [
        FeedFilter { kinds: vec![EventKind::Succeeded, EventKind::Failed], ..Default::default() },
        FeedFilter { agent: Some("sleep".into()), ..Default::default() },
        FeedFilter { agent: Some("echo".into()), kinds: vec![EventKind::Output], ..Default::default() },
        FeedFilter { kinds: vec![EventKind::TimedOut], ..Default::default() },
    ];
    for filter in &filters {
        let want: Vec<Event> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
        let page = store.feed(0, filter, 1000).await.unwrap();
        assert_eq!(page.events, want, "{filter:?}");
        assert!(page.cursor >= high, "{filter:?}: the cursor must pass filtered-out events: {page:?}");
        assert!(!page.more);

        let mut cursor = 0;
        let mut paged = Vec::new();
        for _ in 0..=all.len() {
            let page = store.feed(cursor, filter, 2).await.unwrap();
            assert!(page.cursor >= cursor);
            cursor = page.cursor;
            paged.extend(page.events);
            if !page.more {
                break;
            }
        }
        assert_eq!(paged, want, "{filter:?} paged by 2");
        assert!(cursor >= high, "{filter:?}: paging ended at {cursor}, before {high}");
    }

    // Tenant filters keep the tenant's task events; whether system events pass is the backend's choice.
    let t1 = FeedFilter { tenant: Some("t1".into()), ..Default::default() };
    let got = store.feed(0, &t1, 1000).await.unwrap().events;
    let mut want = Vec::new();
    for e in all.iter().filter(|e| e.task_id.is_some()) {
        if get(&store, e.task_id.unwrap()).await.tenant == "t1" {
            want.push(e.clone());
        }
    }
    let got_tasks: Vec<Event> = got.into_iter().filter(|e| e.task_id.is_some()).collect();
    assert_eq!(got_tasks, want);
}

/// Every event a store returns or creates carries its tenant — a task's events their task's,
/// discoveries and messages the tenant they were made in, fleet events none — and every
/// tenant-filtered read shows exactly what `smith_core::visible_to` allows (the live path's rule).
pub async fn every_event_carries_its_tenant_and_a_reader_sees_only_its_own(store: S) {
    define(&store, "echo", 1, 10).await;
    alive(&store, "w1").await;
    let of = |tenant: &str, input: &str| {
        let mut t = NewTask::new("echo", json!(input));
        t.tenant = tenant.into();
        t
    };
    let has = |events: &[Event], tenant: &str, what: &str| {
        assert!(!events.is_empty(), "{what}: no events");
        for e in events {
            assert_eq!(e.tenant.as_deref(), Some(tenant), "{what}: {e:?}");
        }
    };
    // every way a task's events are made hands them back with the tenant
    let a = store.submit(of("acme", "a")).await.unwrap();
    has(&a.events, "acme", "submit");
    let b = store.submit(of("globex", "b")).await.unwrap();
    has(&b.events, "globex", "submit");
    let claimed = claim(&store, "w1", "echo", 2, LONG).await;
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        has(std::slice::from_ref(&c.event), &c.task.tenant, "claim");
        let appended = store.append(c.task.id, 1, vec![output(1), output(2)]).await.unwrap();
        has(&appended, &c.task.tenant, "append");
    }
    let (ca, cb) =
        if claimed[0].task.tenant == "acme" { (&claimed[0], &claimed[1]) } else { (&claimed[1], &claimed[0]) };
    let done = store.complete(ca.task.id, 1, vec![output(3)], success(json!("ok"))).await.unwrap();
    has(&done.events, "acme", "complete");
    let reaped = store.reap(Micros::now().plus(LONG + Duration::from_secs(60))).await.unwrap();
    let reaped: Vec<Event> = reaped.into_iter().flat_map(|c| c.events).collect();
    has(&reaped, "globex", "reap");
    assert!(reaped.iter().all(|e| e.task_id == Some(cb.task.id)), "{reaped:?}");
    let queued = store.submit(of("acme", "c")).await.unwrap().task;
    let cancelled = store.request_cancel(queued.id).await.unwrap();
    has(&cancelled.events, "acme", "cancel");
    // global events: a discovery and a message of each tenant, a fleet event, and one whose
    // tenant nobody recorded (no tenant reader may see it)
    let global = |kind, tenant: Option<&str>| GlobalEvent {
        kind,
        agent: Some("echo".into()),
        tenant: tenant.map(str::to_string),
        data: json!({"of": tenant}),
    };
    let mut made = Vec::new();
    for (kind, tenant) in [
        (EventKind::Discovery, Some("acme")),
        (EventKind::Message, Some("acme")),
        (EventKind::Discovery, Some("globex")),
        (EventKind::Message, Some("globex")),
        (EventKind::Discovery, None),
    ] {
        let e = store.append_global(global(kind, tenant)).await.unwrap();
        assert_eq!(e.tenant.as_deref(), tenant, "append_global hands back the tenant: {e:?}");
        made.push(e);
    }
    let sys = store.append_system(json!({"type": "node.dead", "node": "w9"})).await.unwrap();
    assert_eq!(sys.tenant, None, "fleet events belong to no tenant: {sys:?}");

    // read back: the feed and every log hold the same tenants
    let all = feed_all(&store).await;
    for id in [a.task.id, b.task.id, queued.id] {
        checked_log(&store, id).await;
    }
    for e in &all {
        match e.task_id {
            Some(id) => assert_eq!(e.tenant.as_deref(), Some(get(&store, id).await.tenant.as_str()), "{e:?}"),
            None if e.kind == EventKind::System => assert_eq!(e.tenant, None, "{e:?}"),
            None => assert_eq!(e.tenant, e.data["of"].as_str().map(str::to_string), "{e:?}"),
        }
    }
    for m in &made {
        assert!(all.contains(m), "the feed returns {m:?} as append_global did");
    }

    // the store's filter is the live path's rule, for every reader and kind filter
    let kinds = [
        vec![],
        vec![EventKind::Discovery, EventKind::Message],
        vec![EventKind::System],
        vec![EventKind::Output, EventKind::Succeeded],
    ];
    for reader in [None, Some("acme"), Some("globex"), Some("initech")] {
        for k in &kinds {
            let filter = FeedFilter { kinds: k.clone(), tenant: reader.map(str::to_string), ..Default::default() };
            let want: Vec<Event> = all
                .iter()
                .filter(|e| smith_core::visible_to(reader, e.kind, e.tenant.as_deref()) && filter.matches(e))
                .cloned()
                .collect();
            let got = store.feed(0, &filter, 1000).await.unwrap().events;
            assert_eq!(got, want, "feed for {reader:?}, kinds {k:?}");
            if let Some(r) = reader {
                assert!(
                    got.iter()
                        .all(|e| e.tenant.as_deref() == Some(r) || (e.tenant.is_none() && e.kind == EventKind::System)),
                    "{got:?}"
                );
            }
            if k.is_empty() {
                continue;
            }
            let query =
                GlobalEventQuery { kinds: k.to_vec(), tenant: reader.map(str::to_string), after: 0, limit: 1000 };
            let listed = store.global_events(&query).await.unwrap();
            let want: Vec<Event> = want.into_iter().filter(|e| e.task_id.is_none()).collect();
            assert_eq!(listed, want, "global_events for {reader:?}, kinds {k:?}");
        }
    }
    let acme = FeedFilter { tenant: Some("acme".into()), ..Default::default() };
    let seen = store.feed(0, &acme, 1000).await.unwrap().events;
    assert!(seen.iter().any(|e| e.task_id == Some(a.task.id)) && seen.contains(&sys), "{seen:?}");
    assert!(!seen.iter().any(|e| e.task_id == Some(b.task.id) || e.tenant.as_deref() == Some("globex")), "{seen:?}");
    assert!(!seen.contains(&made[4]), "an event of no known tenant is no tenant's to see");
}

pub async fn feed_includes_system_events(store: S) {
    let t = submit(&store, "echo").await;
    let sys = store.append_system(json!({"node": "w1", "what": "dead"})).await.unwrap();
    assert_eq!((sys.kind, sys.task_id, sys.seq, sys.agent.clone()), (EventKind::System, None, 0, None));
    assert_eq!(sys.data, json!({"node": "w1", "what": "dead"}));
    let all = feed_all(&store).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].task_id, Some(t.id));
    assert_eq!(all[1], sys);

    let only = FeedFilter { kinds: vec![EventKind::System], ..Default::default() };
    assert_eq!(store.feed(0, &only, 10).await.unwrap().events, std::slice::from_ref(&sys));
    let by_agent = FeedFilter { agent: Some("echo".into()), ..Default::default() };
    assert_eq!(kinds(&store.feed(0, &by_agent, 10).await.unwrap().events), [EventKind::Queued]);
    assert_eq!(store.feed(all[0].pos, &FeedFilter::default(), 10).await.unwrap().events, [sys]);
}

pub async fn feed_head_is_where_new_events_begin(store: S) {
    let empty_head = store.feed_head().await.unwrap();
    let first = submit(&store, "echo").await;
    let after_empty = store.feed(empty_head, &FeedFilter::default(), 100).await.unwrap();
    assert_eq!(after_empty.events, log(&store, first.id).await, "from an empty store's head");

    busy_history(&store).await;
    let head = store.feed_head().await.unwrap();
    let all = feed_all(&store).await;
    assert!(all.iter().all(|e| e.pos <= head), "head {head} is before a committed event");
    let at_head = store.feed(head, &FeedFilter::default(), 100).await.unwrap();
    assert!(at_head.events.is_empty() && !at_head.more, "{at_head:?}");

    let t = submit(&store, "sleep").await;
    let sys = store.append_system(json!({"what": "later"})).await.unwrap();
    let later = store.feed(head, &FeedFilter::default(), 100).await.unwrap();
    let mut want = log(&store, t.id).await;
    want.push(sys.clone());
    assert_eq!(later.events, want, "a reader from the head sees exactly the later events");
    let head = store.feed_head().await.unwrap();
    assert!(head >= sys.pos);
    assert!(store.feed(head, &FeedFilter::default(), 100).await.unwrap().events.is_empty());
}

/// Writers running at once, each on a task of its own, for a reader to tail what they write.
pub struct Writers {
    running: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Writers {
    /// Starts `write(w)` for each writer `w` in `0..n`.
    pub fn start<Fut>(n: usize, write: impl Fn(usize) -> Fut) -> Writers
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let running = Arc::new(AtomicUsize::new(n));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..n {
            let (work, running) = (write(w), running.clone());
            tasks.spawn(async move {
                work.await;
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Writers { running, tasks }
    }

    fn done(&self) -> bool {
        self.running.load(Ordering::SeqCst) == 0
    }

    /// Waits for every writer to end; a writer's panic fails the caller.
    pub async fn finish(self) {
        self.tasks.join_all().await;
    }
}

/// Reads a log while writers add to it, as a tailing reader does: `read(after)` returns a page
/// of the items after position `after`, the position to read after next, and whether more may
/// follow at once. Stops at the first page without more that was asked for once every writer
/// had ended. Returns every item seen, in order.
async fn tail<T, F, Fut>(writers: &Writers, read: F) -> Vec<T>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = (Vec<T>, u64, bool)>,
{
    let (mut after, mut seen) = (0, Vec::new());
    loop {
        // Ask before the page: a page read after the last writer ended is complete.
        let done = writers.done();
        let (page, next, more) = read(after).await;
        assert!(next >= after, "the position went back from {after} to {next}");
        after = next;
        seen.extend(page);
        if done && !more {
            return seen;
        }
        if !more {
            tokio::task::yield_now().await;
        }
    }
}

/// [`tail`] of the whole feed, `limit` events a page.
pub async fn tail_feed(store: &S, writers: &Writers, limit: usize) -> Vec<Event> {
    tail(writers, |cursor| async move {
        let page = store.feed(cursor, &FeedFilter::default(), limit).await.unwrap();
        (page.events, page.cursor, page.more)
    })
    .await
}

/// [`tail`] of the audit log, `limit` records a page.
pub async fn tail_audit(store: &S, writers: &Writers, limit: usize) -> Vec<AuditRecord> {
    tail(writers, |after| async move {
        let page = store.audit(&AuditQuery { after, limit, ..Default::default() }).await.unwrap();
        let next = page.last().map_or(after, |r| r.id);
        let full = page.len() == limit;
        (page, next, full)
    })
    .await
}

/// The feed's cursor is its high-water mark: it moves to the last committed position even when
/// nothing matches, stops at a page's last event when the limit cut it, and a cursor past the
/// end is kept, never moved back.
pub async fn feed_cursor_is_the_high_water_mark(store: S) {
    let empty = store.feed(0, &FeedFilter::default(), 10).await.unwrap();
    assert!(empty.events.is_empty() && !empty.more);
    assert_eq!((empty.cursor, store.feed_head().await.unwrap()), (0, 0));

    let t = submit(&store, "echo").await;
    claim_one(&store, "w1", "echo", LONG).await;
    store.append(t.id, 1, (0..5).map(output).collect()).await.unwrap();
    let high = log(&store, t.id).await.last().unwrap().pos;
    assert_eq!(store.feed_head().await.unwrap(), high);

    // Nothing matches: the cursor still moves to the last committed position.
    let nothing = FeedFilter { agent: Some("sleep".into()), ..Default::default() };
    let page = store.feed(0, &nothing, 10).await.unwrap();
    assert!(page.events.is_empty() && !page.more);
    assert_eq!(page.cursor, high);

    // A page cut by its limit stops at its last event and says so.
    let page = store.feed(0, &FeedFilter::default(), 3).await.unwrap();
    assert!(page.more);
    assert_eq!(page.cursor, page.events[2].pos);
    let rest = store.feed(page.cursor, &FeedFilter::default(), 100).await.unwrap();
    assert_eq!((rest.events.len(), rest.cursor, rest.more), (4, high, false));

    // A cursor past the end is kept, never moved back.
    let ahead = store.feed(high + 100, &FeedFilter::default(), 10).await.unwrap();
    assert!(ahead.events.is_empty() && !ahead.more);
    assert_eq!(ahead.cursor, high + 100);

    let sys = store.append_system(json!({"what": "x"})).await.unwrap();
    let next = store.feed(high, &FeedFilter::default(), 10).await.unwrap();
    assert_eq!(next.cursor, sys.pos);
    assert_eq!(next.events, [sys]);
}

pub async fn feed_tail_under_concurrent_writers_misses_nothing(store: S) {
    let writers = Writers::start(4, |w| {
        let s = store.clone();
        async move {
            let worker = format!("w{w}");
            for _ in 0..10 {
                submit(&s, "echo").await;
                for c in claim(&s, &worker, "echo", 1, LONG).await {
                    s.append(c.task.id, 1, (0..3).map(output).collect()).await.unwrap();
                    s.complete(c.task.id, 1, vec![output(9)], success(json!(w))).await.unwrap();
                }
                s.append_system(json!({"writer": w})).await.unwrap();
            }
        }
    });
    let seen = tail_feed(&store, &writers, 7).await;
    writers.finish().await;
    for w in seen.windows(2) {
        assert!(w[0].pos < w[1].pos, "the tail saw an event twice or out of order: {w:#?}");
    }
    let all = feed_all(&store).await;
    assert_eq!(all.len(), 40 * 7 + 40, "every task's 7 events and the system events");
    assert_eq!(seen, all, "a reader tailing the feed during writes must see every event once");
}

// ---------------------------------------------------------------------------------------------
// Tasks, agents, nodes, stats

/// A task-list filter, and which tasks it must keep.
type Narrow = fn(&mut TaskQuery);
type Keep = fn(&Task) -> bool;

pub async fn list_tasks_newest_first_with_filters_and_paging(store: S) {
    let mut submitted = Vec::new();
    for i in 0..7 {
        let mut new = NewTask::new(if i % 2 == 0 { "echo" } else { "sleep" }, json!(i));
        if i == 6 {
            new.tenant = "other".into();
        }
        submitted.push(store.submit(new).await.unwrap().task.id);
    }
    let done: Vec<TaskId> = claim(&store, "w1", "echo", 2, LONG).await.iter().map(|c| c.task.id).collect();
    for id in &done {
        store.complete(*id, 1, vec![], success(json!(1))).await.unwrap();
    }
    let newest_first: Vec<TaskId> = submitted.iter().rev().copied().collect();
    let query = |f: fn(&mut TaskQuery)| {
        let mut q = TaskQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };

    let all = store.list_tasks(&query(|_| {})).await.unwrap();
    assert_eq!(ids(&all.items), newest_first);
    assert_eq!(all.next_cursor, None);
    for w in all.items.windows(2) {
        assert!(w[0].created_at >= w[1].created_at);
    }
    for t in &all.items {
        assert_eq!(t, &get(&store, t.id).await);
    }

    let cases: [(Narrow, Keep); 4] = [
        (|q| q.status = Some(TaskStatus::Succeeded), |t| t.status == TaskStatus::Succeeded),
        (|q| q.agent = Some("sleep".into()), |t| t.agent == "sleep"),
        (
            |q| {
                q.agent = Some("echo".into());
                q.status = Some(TaskStatus::Queued);
            },
            |t| t.agent == "echo" && t.status == TaskStatus::Queued,
        ),
        (|q| q.tenant = Some("other".into()), |t| t.tenant == "other"),
    ];
    for (i, (filter, keep)) in cases.into_iter().enumerate() {
        let want: Vec<TaskId> = all.items.iter().filter(|t| keep(t)).map(|t| t.id).collect();
        assert!(!want.is_empty(), "case {i} selects nothing");
        let got = store.list_tasks(&query(filter)).await.unwrap();
        assert_eq!(ids(&got.items), want, "case {i}");

        for limit in [1, 2, 3] {
            let mut q = query(filter);
            q.limit = limit;
            let mut paged = Vec::new();
            for _ in 0..=want.len() {
                let page = store.list_tasks(&q).await.unwrap();
                assert!(page.items.len() <= limit);
                paged.extend(ids(&page.items));
                q.cursor = page.next_cursor;
                if q.cursor.is_none() {
                    break;
                }
            }
            assert!(q.cursor.is_none(), "case {i}: paging by {limit} did not end");
            assert_eq!(paged, want, "case {i}: paging by {limit}");
        }
    }
    assert_eq!(done.len(), 2);
}

pub async fn list_tasks_rejects_malformed_cursor(store: S) {
    submit(&store, "echo").await;
    for cursor in ["!!not-a-cursor!!", "", "\u{0}"] {
        let q = TaskQuery { limit: 10, cursor: Some(cursor.into()), ..Default::default() };
        let err = store.list_tasks(&q).await.expect_err(cursor);
        assert_eq!(err.code(), Code::InvalidArgument, "{cursor:?}: {err}");
    }
}

pub async fn tenant_agents_and_session_counts_are_one_tenants(store: S) {
    let mut custom = agent("custom", 4, 20);
    custom.env.insert("KEY".into(), "value".into());
    store.put_agents(&[custom]).await.unwrap();
    for (tenant, n) in [("acme", 3), ("globex", 1)] {
        for _ in 0..n {
            let mut t = NewTask::new("custom", json!(1));
            t.tenant = tenant.into();
            t.session_id = Some("chat".into());
            store.submit(t).await.unwrap();
        }
    }
    claim_one(&store, "w1", "custom", LONG).await;
    let counts = |list: Vec<crate::AgentSummary>| {
        let a = list.into_iter().find(|a| a.def.name == "custom").expect("custom");
        assert_eq!(a.def.env["KEY"], "value", "the store keeps the real values");
        a.queued + a.running
    };
    assert_eq!(counts(store.agents().await.unwrap()), 4);
    assert_eq!(counts(store.tenant_agents("acme").await.unwrap()), 3);
    assert_eq!(counts(store.tenant_agents("globex").await.unwrap()), 1);
    assert_eq!(counts(store.tenant_agents("nobody").await.unwrap()), 0);
    assert!(store.tenant_agents("nobody").await.unwrap().iter().any(|a| a.def.name == "echo"), "every agent listed");
    assert_eq!(store.count_session_tasks("chat", "acme").await.unwrap(), 3);
    assert_eq!(store.count_session_tasks("chat", "globex").await.unwrap(), 1);
    assert_eq!(store.count_session_tasks("other", "acme").await.unwrap(), 0);
}

pub async fn list_pages_leave_out_large_values_and_are_bounded_in_bytes(store: S) {
    let big = "x".repeat(1000);
    let mut ids = Vec::new();
    for input in [json!(big), json!("small"), json!(big)] {
        ids.push(store.submit(NewTask::new("echo", input)).await.unwrap().task.id);
    }
    let q = TaskQuery { limit: 10, value_limit: Some(100), ..Default::default() };
    let page = store.list_tasks(&q).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.omitted.len(), 3);
    // newest first
    assert_eq!(page.items[1].input, json!("small"));
    assert_eq!(page.omitted[1], crate::Omitted::default());
    for i in [0, 2] {
        assert_eq!(page.items[i].input, Value::Null, "left out");
        assert_eq!(page.omitted[i], crate::Omitted { input_bytes: Some(1002), result_bytes: None });
    }
    let full = store.list_tasks(&TaskQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert!(full.items.iter().all(|t| t.input.is_string()) && full.omitted.iter().all(|o| *o == Default::default()));

    // 1,500 bytes hold one big input and the small one, not the second big one
    let mut q = TaskQuery { limit: 10, max_bytes: Some(1500), ..Default::default() };
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = store.list_tasks(&q).await.unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(sizes, vec![2, 1]);
    ids.reverse();
    assert_eq!(seen, ids, "paging by bytes misses nothing");
}

pub async fn agents_lists_builtins_custom_and_counts(store: S) {
    let by_name = |list: Vec<crate::AgentSummary>| -> HashMap<String, crate::AgentSummary> {
        list.into_iter().map(|a| (a.def.name.clone(), a)).collect()
    };
    let listed = by_name(store.agents().await.unwrap());
    for b in AgentDef::builtins() {
        let got = listed.get(&b.name).unwrap_or_else(|| panic!("built-in {} missing", b.name));
        assert_eq!(got.def, b);
        assert_eq!((got.queued, got.running), (0, 0));
    }

    let mut custom = agent("custom", 4, 20);
    custom.timeout = Some(Duration::from_secs(30));
    custom.env.insert("KEY".into(), "value".into());
    store.put_agents(&[custom.clone()]).await.unwrap();
    for _ in 0..3 {
        submit(&store, "custom").await;
    }
    submit(&store, "echo").await;
    claim_one(&store, "w1", "custom", LONG).await;
    let listed = by_name(store.agents().await.unwrap());
    assert_eq!(listed["custom"].def, custom);
    assert_eq!((listed["custom"].queued, listed["custom"].running), (2, 1));
    assert_eq!((listed["echo"].queued, listed["echo"].running), (1, 0));
    assert_eq!((listed["sleep"].queued, listed["sleep"].running), (0, 0));

    custom.max_attempts = 7;
    store.put_agents(&[custom.clone()]).await.unwrap();
    let listed = by_name(store.agents().await.unwrap());
    assert_eq!(listed["custom"].def.max_attempts, 7, "put_agents replaces a definition");
    assert_eq!(submit(&store, "custom").await.max_attempts, 7);
    for b in AgentDef::builtins() {
        assert!(listed.contains_key(&b.name), "built-in {} dropped", b.name);
    }

    let mut bad = agent("bad", 3, 20);
    bad.concurrency = 0;
    let err = store.put_agents(&[bad]).await.expect_err("concurrency 0");
    assert_eq!(err.code(), Code::Unprocessable, "{err}");
    assert!(!by_name(store.agents().await.unwrap()).contains_key("bad"));
}

pub async fn nodes_heartbeat_status_and_dead_detection(store: S) {
    let now = Micros::now();
    let long_ago = Micros(now.0 - 600_000_000);
    let mut w1 = node("w1", NodeStatus::Alive, now);
    let mut gw = node("gw", NodeStatus::Alive, now);
    gw.role = NodeRole::Gateway;
    gw.address = Some("127.0.0.1:8080".into());
    assert_eq!(store.heartbeat(&w1).await.unwrap(), NodeStatus::Alive);
    assert_eq!(store.heartbeat(&gw).await.unwrap(), NodeStatus::Alive);
    let find = |nodes: &[Node], id: &str| nodes.iter().find(|n| n.id == id).cloned();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_listed(find(&nodes, "w1").as_ref(), &w1);
    assert_listed(find(&nodes, "gw").as_ref(), &gw);

    w1.heartbeat_at = now.plus(Duration::from_millis(500));
    w1.load = json!({"running": 5});
    store.heartbeat(&w1).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2, "a heartbeat must update, not insert");
    assert_listed(find(&nodes, "w1").as_ref(), &w1);

    store.set_node_status("w1", NodeStatus::Draining).await.unwrap();
    assert_eq!(find(&store.nodes().await.unwrap(), "w1").unwrap().status, NodeStatus::Draining);

    // Silent gateways and supervisors die; silent workers are quarantined (see the quarantine tests).
    let stale = |id: &str, role: NodeRole, status: NodeStatus| Node { role, ..node(id, status, long_ago) };
    let stale_nodes = [
        stale("stale-alive", NodeRole::Gateway, NodeStatus::Alive),
        stale("stale-draining", NodeRole::Supervisor, NodeStatus::Draining),
        stale("stale-stopped", NodeRole::Gateway, NodeStatus::Stopped),
        stale("stale-worker", NodeRole::Worker, NodeStatus::Draining),
    ];
    for n in &stale_nodes {
        store.heartbeat(n).await.unwrap();
    }
    let mut dead = store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap();
    dead.sort_by(|a, b| a.id.cmp(&b.id));
    let got: Vec<(&str, NodeStatus)> = dead.iter().map(|n| (n.id.as_str(), n.status)).collect();
    assert_eq!(
        got,
        [
            ("stale-alive", NodeStatus::Dead),
            ("stale-draining", NodeStatus::Dead),
            ("stale-worker", NodeStatus::Quarantined)
        ]
    );
    assert!(store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap().is_empty(), "dead twice");

    let nodes = store.nodes().await.unwrap();
    let status = |id: &str| find(&nodes, id).map(|n| n.status);
    assert_eq!(status("stale-alive"), Some(NodeStatus::Dead));
    assert_eq!(status("stale-stopped"), Some(NodeStatus::Stopped));
    assert_eq!(status("stale-worker"), Some(NodeStatus::Quarantined));
    assert_eq!(status("w1"), Some(NodeStatus::Draining));
    assert_eq!(status("gw"), Some(NodeStatus::Alive));

    // A dead node that heartbeats again is alive.
    let back = stale("stale-alive", NodeRole::Gateway, NodeStatus::Alive);
    assert_eq!(store.heartbeat(&Node { heartbeat_at: Micros::now(), ..back }).await.unwrap(), NodeStatus::Alive);
    assert_eq!(find(&store.nodes().await.unwrap(), "stale-alive").unwrap().status, NodeStatus::Alive);
}

pub async fn stale_workers_are_quarantined_and_their_tasks_reaped(store: S) {
    let now = Micros::now();
    let long_ago = Micros(now.0 - 600_000_000);
    store.heartbeat(&node("w-silent", NodeStatus::Alive, long_ago)).await.unwrap();
    let gateway = Node { role: NodeRole::Gateway, ..node("gw-silent", NodeStatus::Alive, long_ago) };
    store.heartbeat(&gateway).await.unwrap();
    alive(&store, "w-live").await;
    define(&store, "quick", 3, 0).await;
    let held = submit(&store, "quick").await;
    claim_one(&store, "w-silent", "quick", LONG).await;
    let kept = submit(&store, "quick").await;
    claim_one(&store, "w-live", "quick", LONG).await;
    assert!(store.reap(Micros::now()).await.unwrap().is_empty(), "a silent but alive worker keeps its task");

    let mut marked = store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap();
    marked.sort_by(|a, b| a.id.cmp(&b.id));
    let got: Vec<(&str, NodeStatus)> = marked.iter().map(|n| (n.id.as_str(), n.status)).collect();
    assert_eq!(got, [("gw-silent", NodeStatus::Dead), ("w-silent", NodeStatus::Quarantined)]);
    assert_eq!(marked[1].role, NodeRole::Worker);

    // A quarantined worker's task is reaped like a dead one's.
    let reaped = store.reap(Micros::now()).await.unwrap();
    assert_eq!(reaped.iter().map(|c| c.task.id).collect::<Vec<_>>(), [held.id], "{reaped:#?}");
    let t = get(&store, held.id).await;
    assert_eq!((t.status, t.error.map(|e| e.code)), (TaskStatus::Queued, Some("worker_lost".into())));
    assert_eq!(kinds(&reaped[0].events), [EventKind::Retrying]);
    checked_log(&store, held.id).await;
    assert_eq!(get(&store, kept.id).await.status, TaskStatus::Running);

    // It claims nothing while quarantined (what it took would only be reaped again); another
    // worker takes its requeued task.
    assert!(claim(&store, "w-silent", "quick", 5, LONG).await.is_empty(), "a quarantined worker claimed");
    let again = claim(&store, "w-live", "quick", 5, LONG).await;
    assert_eq!(again.iter().map(|c| (c.task.id, c.task.attempt)).collect::<Vec<_>>(), [(held.id, 2)]);

    // Claims racing in one batch: the quarantined worker's get nothing, and take nothing from
    // the others'.
    for _ in 0..20 {
        submit(&store, "quick").await;
    }
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let worker = if i % 2 == 0 { "w-silent" } else { "w-live" };
            tokio::spawn(async move { (worker, claim(&store, worker, "quick", 2, LONG).await.len()) })
        })
        .collect();
    let mut got: HashMap<&str, usize> = HashMap::new();
    for r in racers {
        let (worker, n) = r.await.unwrap();
        *got.entry(worker).or_default() += n;
    }
    assert_eq!((got["w-silent"], got["w-live"]), (0, 20));
}

pub async fn quarantine_holds_through_heartbeats_until_readmitted(store: S) {
    let now = Micros::now();
    let long_ago = Micros(now.0 - 600_000_000);
    let find = |nodes: Vec<Node>, id: &str| nodes.into_iter().find(|n| n.id == id).expect("node listed");
    store.heartbeat(&node("w-q", NodeStatus::Alive, long_ago)).await.unwrap();
    store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap();

    // It heartbeats again: time and load are recorded, the quarantine holds, and it is told so.
    for status in [NodeStatus::Alive, NodeStatus::Draining] {
        let mut beat = node("w-q", status, Micros::now());
        beat.load = json!({"running": 3, "as": status.as_str()});
        assert_eq!(store.heartbeat(&beat).await.unwrap(), NodeStatus::Quarantined, "{status:?}");
        let stored = find(store.nodes().await.unwrap(), "w-q");
        let off = (stored.heartbeat_at.0 - beat.heartbeat_at.0).abs();
        assert!(off < 1_000_000, "heartbeat dated {off} µs off");
        assert_eq!((stored.status, &stored.load), (NodeStatus::Quarantined, &beat.load));
    }
    assert!(store.mark_dead_nodes(Micros(Micros::now().0 + 60_000_000)).await.unwrap().is_empty(), "marked twice");
    assert_eq!(find(store.nodes().await.unwrap(), "w-q").status, NodeStatus::Quarantined);

    // Readmitted, it is alive, heartbeats as alive, and claims again.
    assert!(store.readmit_node("w-q").await.unwrap());
    assert_eq!(find(store.nodes().await.unwrap(), "w-q").status, NodeStatus::Alive);
    assert_eq!(store.heartbeat(&node("w-q", NodeStatus::Alive, Micros::now())).await.unwrap(), NodeStatus::Alive);
    let t = submit(&store, "echo").await;
    assert_eq!(claim_one(&store, "w-q", "echo", LONG).await.task.id, t.id);

    // Only a quarantined node is readmitted.
    assert!(!store.readmit_node("w-q").await.unwrap(), "an alive node was readmitted");
    assert!(!store.readmit_node("nobody").await.unwrap(), "an unknown node was readmitted");
    let gateway = Node { role: NodeRole::Gateway, ..node("gw-dead", NodeStatus::Alive, long_ago) };
    store.heartbeat(&gateway).await.unwrap();
    store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap();
    assert!(!store.readmit_node("gw-dead").await.unwrap(), "a dead node was readmitted");
    assert_eq!(find(store.nodes().await.unwrap(), "gw-dead").status, NodeStatus::Dead);

    // Stopping applies to a quarantined node, whether set or heartbeated.
    for (id, by_heartbeat) in [("w-set", false), ("w-beat", true)] {
        store.heartbeat(&node(id, NodeStatus::Alive, long_ago)).await.unwrap();
        store.mark_dead_nodes(Micros(now.0 - 60_000_000)).await.unwrap();
        assert_eq!(find(store.nodes().await.unwrap(), id).status, NodeStatus::Quarantined);
        if by_heartbeat {
            let status = store.heartbeat(&node(id, NodeStatus::Stopped, Micros::now())).await.unwrap();
            assert_eq!(status, NodeStatus::Stopped);
        } else {
            store.set_node_status(id, NodeStatus::Stopped).await.unwrap();
        }
        assert_eq!(find(store.nodes().await.unwrap(), id).status, NodeStatus::Stopped, "{id}");
        assert!(!store.readmit_node(id).await.unwrap(), "{id}: a stopped node was readmitted");
    }
}

pub async fn pool_stats_stay_within_the_limit(store: S) {
    let check = |when: &str| {
        let p = store.pool_stats();
        assert!(p.max >= 1, "{when}: {p:?}");
        assert!(p.busy + p.idle <= p.max, "{when}: {p:?}");
    };
    check("fresh");
    submit(&store, "echo").await;
    store.queue_stats().await.unwrap();
    check("after a write and a read");
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.queue_stats().await })
        })
        .collect();
    for r in reads {
        r.await.unwrap().unwrap();
    }
    check("after concurrent reads");
}

pub async fn queue_stats_counts_and_oldest_runnable_age(store: S) {
    assert_eq!(store.queue_stats().await.unwrap(), crate::QueueStats::default());
    define(&store, "slow-retry", 3, 60_000).await;
    let t = submit(&store, "slow-retry").await;
    claim_one(&store, "w1", "slow-retry", LONG).await;
    store.complete(t.id, 1, vec![], failure(true)).await.unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (1, 0));
    assert_eq!(stats.oldest_queued_age, None, "a task waiting out its backoff is not runnable");

    for _ in 0..3 {
        submit(&store, "echo").await;
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (4, 0));
    let age = stats.oldest_queued_age.expect("runnable tasks have an age");
    assert!(age >= Duration::from_millis(40) && age < Duration::from_secs(30), "age {age:?}");

    let c = claim_one(&store, "w1", "echo", LONG).await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (3, 1));
    store.complete(c.task.id, 1, vec![], success(json!(1))).await.unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (3, 0));
}

pub async fn concurrent_submit_and_drain_finishes_each_task_once(store: S) {
    const TASKS: usize = 200;
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..TASKS {
        let s = store.clone();
        submits.spawn(async move {
            let mut new = NewTask::new("echo", json!(i));
            new.priority = (i % 10) as u8;
            s.submit(new).await.expect("submit").task.id
        });
    }
    let mut submitted = HashSet::new();
    while let Some(id) = submits.join_next().await {
        assert!(submitted.insert(id.unwrap()));
    }

    let finished = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (s, finished) = (store.clone(), finished.clone());
        workers.spawn(async move {
            let worker = format!("w{w}");
            alive(&s, &worker).await;
            let mut mine = Vec::new();
            while finished.load(Ordering::SeqCst) < TASKS {
                let claimed = claim(&s, &worker, "echo", 8, LONG).await;
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for c in claimed {
                    let (id, attempt) = (c.task.id, c.task.attempt);
                    s.append(id, attempt, vec![output(1)]).await.expect("append");
                    let change = s.complete(id, attempt, vec![], success(c.task.input)).await.expect("complete");
                    assert_eq!(change.task.status, TaskStatus::Succeeded);
                    finished.fetch_add(1, Ordering::SeqCst);
                    mine.push(id);
                }
            }
            mine
        });
    }
    let mut done: HashMap<TaskId, usize> = HashMap::new();
    while let Some(mine) = workers.join_next().await {
        for id in mine.unwrap() {
            *done.entry(id).or_default() += 1;
        }
    }
    assert_eq!(done.len(), TASKS);
    assert!(done.values().all(|&n| n == 1), "a task was finished twice");
    assert_eq!(done.keys().copied().collect::<HashSet<_>>(), submitted);

    let mut q = TaskQuery { status: Some(TaskStatus::Succeeded), limit: 1000, ..Default::default() };
    assert_eq!(store.list_tasks(&q).await.unwrap().items.len(), TASKS);
    q.status = None;
    for t in store.list_tasks(&q).await.unwrap().items {
        let events = checked_log(&store, t.id).await;
        use EventKind::*;
        assert_eq!(kinds(&events), [Queued, Started, Output, Succeeded], "task {}", t.id);
    }
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 0));
}

/// The leader lease: one holder at a time; renewable by its holder; free after expiry or release.
pub async fn lease_has_one_holder_until_it_expires_or_is_released(store: S) {
    let name = format!("leader-{}", uuid::Uuid::now_v7().simple());
    let ttl = Duration::from_millis(400);
    assert!(store.acquire_lease(&name, "a", ttl).await.unwrap(), "a free lease is taken");
    assert!(!store.acquire_lease(&name, "b", ttl).await.unwrap(), "a held lease is not taken");
    assert!(store.acquire_lease(&name, "a", ttl).await.unwrap(), "the holder renews");
    // many contenders at once: exactly one wins a free lease
    let other = format!("{name}-race");
    let mut wins = 0;
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let (s, n) = (store.clone(), other.clone());
            tokio::spawn(async move { s.acquire_lease(&n, &format!("c{i}"), LONG).await.unwrap() })
        })
        .collect();
    for t in tries {
        wins += t.await.unwrap() as u32;
    }
    assert_eq!(wins, 1, "exactly one contender holds the lease");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.acquire_lease(&name, "b", ttl).await.unwrap(), "an expired lease is taken over");
    assert!(!store.acquire_lease(&name, "a", ttl).await.unwrap(), "the old holder lost it");
    store.release_lease(&name, "a").await.unwrap();
    assert!(!store.acquire_lease(&name, "a", ttl).await.unwrap(), "release by a non-holder does nothing");
    store.release_lease(&name, "b").await.unwrap();
    assert!(store.acquire_lease(&name, "a", ttl).await.unwrap(), "a released lease is free at once");
}

/// What [`reopening_keeps_everything`] saw, for a backend's own further checks.
pub struct Reopened {
    /// The store as reopened.
    pub store: S,
    /// The feed's cursor before the store was closed.
    pub cursor_before: u64,
    /// The position of the first event appended after reopening.
    pub appended_pos: u64,
}

/// Durability across a close and reopen (not in `store_conformance!`: only the backend's test
/// knows how to reopen the same data): tasks, events, the feed, idempotency keys, agents,
/// nodes, API keys and the audit log survive, a running attempt still holds its task, and
/// positions and audit ids keep growing.
pub async fn reopening_keeps_everything<F, Fut>(store: S, input: Value, reopen: F) -> Reopened
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let long = |worker: &str, agent: &str| ClaimRequest {
        worker: worker.into(),
        lease: LONG,
        wants: vec![(agent.into(), 1)],
        limit: None,
        caps: Default::default(),
        keys: Default::default(),
    };
    let mut custom = AgentDef::new("custom", ExecutorKind::Echo);
    custom.max_attempts = 5;
    store.put_agents(&[custom]).await.unwrap();
    let mut keyed = NewTask::new("custom", input);
    keyed.idempotency_key = Some("k1".into());
    let done = store.submit(keyed.clone()).await.unwrap().task;
    let c = store.claim(&long("w1", "custom")).await.unwrap().remove(0);
    store.append(done.id, c.task.attempt, vec![EventDraft::output("line")]).await.unwrap();
    let usage = Usage { input_tokens: 3, output_tokens: 4, cost_usd: 0.01 };
    store.complete(done.id, 1, vec![], Outcome::Succeeded { result: json!("ok"), usage }).await.unwrap();
    let running = store.submit(NewTask::new("echo", json!(2))).await.unwrap().task;
    store.claim(&long("w1", "echo")).await.unwrap();
    let queued = store.submit(NewTask::new("sleep", json!(3))).await.unwrap().task;
    store.append_system(json!({"what": "restart"})).await.unwrap();
    let node = Node {
        id: "w1".into(),
        role: NodeRole::Worker,
        version: "1".into(),
        address: None,
        status: NodeStatus::Alive,
        started_at: Micros::now(),
        heartbeat_at: Micros::now(),
        load: json!({"running": 1}),
    };
    store.heartbeat(&node).await.unwrap();
    let key = store.create_api_key(new_key("k1", "acme", &[Scope::Admin], 7)).await.unwrap();
    let audited =
        store.append_audit(audit_record(Micros::now(), "token", "acme", "key.create", Some("k1"), 201)).await.unwrap();

    let all = TaskQuery { limit: 100, ..Default::default() };
    let tasks = store.list_tasks(&all).await.unwrap().items;
    let feed = store.feed(0, &FeedFilter::default(), 1000).await.unwrap();
    let agents = store.agents().await.unwrap();
    drop(store);

    let store = reopen().await;
    assert_eq!(store.list_tasks(&all).await.unwrap().items, tasks);
    assert_eq!(store.get_task(done.id).await.unwrap().unwrap().input, keyed.input, "JSON kept exactly");
    let reopened = store.feed(0, &FeedFilter::default(), 1000).await.unwrap();
    assert_eq!(reopened.events, feed.events);
    assert_eq!(reopened.cursor, feed.cursor);
    assert_eq!(store.agents().await.unwrap(), agents);
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    assert_listed(nodes.first(), &node);
    assert_eq!(store.get_task(done.id).await.unwrap().unwrap().usage, usage);
    assert_eq!(store.get_task(queued.id).await.unwrap().unwrap().status, TaskStatus::Queued);
    assert_eq!(store.api_key("k1").await.unwrap(), Some((key, "07".repeat(32))));
    assert_eq!(store.audit(&AuditQuery::default()).await.unwrap(), std::slice::from_ref(&audited));
    let next = store.append_audit(audit_record(Micros::now(), "token", "acme", "task.submit", None, 201)).await;
    assert!(next.unwrap().id > audited.id, "audit ids restarted after reopening");

    keyed.id = Default::default();
    let repeat = store.submit(keyed).await.unwrap();
    assert!(!repeat.created, "the idempotency key was forgotten");
    assert_eq!(repeat.task.id, done.id);

    // The running attempt still holds its task, and new events continue both sequences.
    let appended = store.append(running.id, 1, vec![EventDraft::output("after")]).await.unwrap();
    assert_eq!(appended[0].seq, 3);
    assert!(appended[0].pos > feed.cursor, "positions restarted after reopening");
    let claimed = store.claim(&long("w2", "sleep")).await.unwrap();
    assert_eq!(claimed[0].task.id, queued.id);
    Reopened { store, cursor_before: feed.cursor, appended_pos: appended[0].pos }
}

// ---------------------------------------------------------------------------------------------
// Sub-tasks, budgets, sessions, collaboration events, usage

pub async fn parent_and_budget_round_trip_and_filter(store: S) {
    let parent = submit(&store, "echo").await;
    let mut child = NewTask::new("echo", json!("child"));
    child.parent_id = Some(parent.id);
    child.budget = Budget { max_tokens: Some(1000), max_cost_usd: Some(0.25) };
    let c = store.submit(child.clone()).await.unwrap().task;
    assert_eq!(c.parent_id, Some(parent.id));
    assert_eq!(c.budget, child.budget);
    let read = get(&store, c.id).await;
    assert_eq!(read.parent_id, Some(parent.id));
    assert_eq!(read.budget, child.budget);
    assert_eq!(get(&store, parent.id).await.parent_id, None);
    assert!(get(&store, parent.id).await.budget.is_empty());
    submit(&store, "echo").await;
    let page =
        store.list_tasks(&TaskQuery { parent_id: Some(parent.id), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&page.items), vec![c.id], "only the parent's children");
}

pub async fn task_options_round_trip_and_need_their_agent(store: S) {
    let mut coder = AgentDef::new("coder", ExecutorKind::Process);
    coder.command = Some("true".into());
    coder.workspace = Some(serde_json::from_value(json!({"repo": "/srv/repo"})).unwrap());
    store.put_agents(&[coder]).await.unwrap();
    let schema = json!({"type": "object", "required": ["title"]});
    let mut t = NewTask::new("coder", json!("x"));
    t.workspace = Some(smith_core::TaskWorkspace { base: "feature/x".into() });
    t.output_schema = Some(schema.clone());
    let created = store.submit(t.clone()).await.unwrap().task;
    for read in [created.clone(), get(&store, created.id).await] {
        assert_eq!(read.workspace, t.workspace);
        assert_eq!(read.output_schema.as_ref(), Some(&schema));
    }
    let page = store.list_tasks(&TaskQuery { limit: 10, ..Default::default() }).await.unwrap();
    let listed = page.items.iter().find(|i| i.id == created.id).expect("listed");
    assert_eq!(listed.workspace, t.workspace);
    assert_eq!(get(&store, submit(&store, "echo").await.id).await.workspace, None, "no options: none read");
    // a workspace base for an agent without a workspace is refused, and nothing is stored
    let mut stray = NewTask::new("echo", json!("y"));
    stray.workspace = Some(smith_core::TaskWorkspace { base: "main".into() });
    let e = store.submit(stray.clone()).await.unwrap_err().to_string();
    assert!(e.contains("has no workspace"), "{e}");
    assert!(store.get_task(stray.id).await.unwrap().is_none());
}

pub async fn session_turns_are_claimed_one_at_a_time_in_order(store: S) {
    alive(&store, "w").await;
    let turn = |session: &str, n: u32| {
        let mut t = NewTask::new("echo", json!(n));
        t.session_id = Some(session.into());
        t
    };
    let a1 = store.submit(turn("s-a", 1)).await.unwrap().task;
    let a2 = store.submit(turn("s-a", 2)).await.unwrap().task;
    let b1 = store.submit(turn("s-b", 1)).await.unwrap().task;
    let mut other_tenant = turn("s-a", 1);
    other_tenant.tenant = "other".into();
    let o1 = store.submit(other_tenant).await.unwrap().task;
    let free = submit(&store, "echo").await;

    // One claim asking for everything gets the first turn of each session only.
    let got: HashSet<TaskId> = claim(&store, "w", "echo", 100, LONG).await.iter().map(|c| c.task.id).collect();
    assert_eq!(got, HashSet::from([a1.id, b1.id, o1.id, free.id]), "second turn must wait for the first");
    assert!(claim(&store, "w", "echo", 100, LONG).await.is_empty(), "a2 waits while a1 runs");

    // A retry of turn 1 still comes before turn 2.
    store.complete(a1.id, 1, vec![], failure(true)).await.unwrap();
    let mut tries = 0;
    let next = loop {
        let got = claim(&store, "w", "echo", 100, LONG).await;
        if !got.is_empty() {
            break got;
        }
        tries += 1;
        assert!(tries < 200, "the retried turn never became claimable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(next.iter().map(|c| c.task.id).collect::<Vec<_>>(), vec![a1.id], "the retry, not turn 2");
    store.complete(a1.id, 2, vec![], success(json!("one"))).await.unwrap();
    let last = claim(&store, "w", "echo", 100, LONG).await;
    assert_eq!(last.iter().map(|c| c.task.id).collect::<Vec<_>>(), vec![a2.id]);

    let turns =
        store.list_tasks(&TaskQuery { session_id: Some("s-a".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&turns.items), vec![o1.id, a2.id, a1.id], "newest first, every tenant's");
}

pub async fn sessions_are_created_once_for_known_agents(store: S) {
    let s = Session {
        id: "sess-1".into(),
        agent: "echo".into(),
        tenant: "acme".into(),
        metadata: json!({"topic": "x"}),
        created_at: Micros::now(),
    };
    store.create_session(&s).await.unwrap();
    assert_eq!(store.get_session("sess-1").await.unwrap(), Some(s.clone()));
    assert_eq!(store.get_session("nope").await.unwrap(), None);
    let again = store.create_session(&s).await.unwrap_err();
    assert_eq!(again.code(), Code::Conflict, "{again}");
    let mut unknown = s.clone();
    unknown.id = "sess-2".into();
    unknown.agent = "ghost".into();
    let err = store.create_session(&unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::Unprocessable, "{err}");
    assert_eq!(store.get_session("sess-2").await.unwrap(), None, "a failed create changes nothing");
}

pub async fn global_events_are_fed_and_listed_by_kind_and_tenant(store: S) {
    let ev = |kind, tenant: Option<&str>, n: u32| GlobalEvent {
        kind,
        agent: Some("echo".into()),
        tenant: tenant.map(str::to_string),
        data: json!({"n": n}),
    };
    let d1 = store.append_global(ev(EventKind::Discovery, Some("acme"), 1)).await.unwrap();
    let m1 = store.append_global(ev(EventKind::Message, Some("acme"), 2)).await.unwrap();
    let d2 = store.append_global(ev(EventKind::Discovery, Some("other"), 3)).await.unwrap();
    let sys = store.append_system(json!({"n": 4})).await.unwrap();
    submit(&store, "echo").await;
    assert_eq!((d1.task_id, d1.seq, d1.agent.as_deref()), (None, 0, Some("echo")));
    assert!(d1.pos < m1.pos && m1.pos < d2.pos && d2.pos < sys.pos);

    let list = |kinds: &[EventKind], tenant: Option<&str>, after: u64| {
        let query = GlobalEventQuery { kinds: kinds.to_vec(), tenant: tenant.map(str::to_string), after, limit: 100 };
        let store = store.clone();
        async move { store.global_events(&query).await.unwrap() }
    };
    let all = list(&[EventKind::Discovery], None, 0).await;
    assert_eq!(all.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![d1.pos, d2.pos]);
    let acme = list(&[EventKind::Discovery, EventKind::System], Some("acme"), 0).await;
    assert_eq!(acme.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![d1.pos, sys.pos], "own and fleet events");
    let after = list(&[EventKind::Discovery], None, d1.pos).await;
    assert_eq!(after.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![d2.pos]);
    assert_eq!(list(&[EventKind::Message], None, 0).await[0].data, json!({"n": 2}));

    let fed =
        store.feed(0, &FeedFilter { kinds: vec![EventKind::Discovery], ..Default::default() }, 100).await.unwrap();
    assert_eq!(fed.events.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![d1.pos, d2.pos]);
}

pub async fn usage_totals_sum_by_agent_and_tenant(store: S) {
    alive(&store, "w").await;
    store.put_agents(&[agent("llm", 1, 10)]).await.unwrap();
    let spend = |i: u64, o: u64, c: f64| Usage { input_tokens: i, output_tokens: o, cost_usd: c };
    for (agent, tenant, usage) in
        [("llm", "a", spend(10, 5, 0.5)), ("llm", "b", spend(1, 2, 0.25)), ("echo", "a", spend(100, 0, 0.0))]
    {
        let mut t = NewTask::new(agent, json!("x"));
        t.tenant = tenant.into();
        let t = store.submit(t).await.unwrap().task;
        claim_one(&store, "w", agent, LONG).await;
        store.complete(t.id, 1, vec![], Outcome::Succeeded { result: json!(1), usage }).await.unwrap();
    }
    submit(&store, "echo").await;
    let by_agent: HashMap<String, Usage> = store.usage_totals(UsageBy::Agent).await.unwrap().into_iter().collect();
    assert_eq!(by_agent["llm"], spend(11, 7, 0.75));
    assert_eq!(by_agent["echo"], spend(100, 0, 0.0));
    let by_tenant: HashMap<String, Usage> = store.usage_totals(UsageBy::Tenant).await.unwrap().into_iter().collect();
    assert_eq!(by_tenant["a"], spend(110, 5, 0.5));
    assert_eq!(by_tenant["b"], spend(1, 2, 0.25));
    let agents = store.agents().await.unwrap();
    let llm = agents.iter().find(|a| a.def.name == "llm").unwrap();
    assert_eq!(llm.usage, spend(11, 7, 0.75), "GET /v1/agents shows usage");
}

// ---------------------------------------------------------------------------------------------
// API keys, the audit log, tenant load

/// A key whose secret hash is `n` repeated (any 64 lowercase hex digits will do).
fn new_key(id: &str, tenant: &str, scopes: &[Scope], n: u8) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        tenant: tenant.into(),
        scopes: scopes.to_vec(),
        name: Some(format!("{id}'s label")),
        secret_sha256: format!("{n:02x}").repeat(32),
    }
}

async fn key_ids(store: &S, tenant: Option<&str>) -> Vec<String> {
    store.list_api_keys(tenant).await.expect("list_api_keys").into_iter().map(|k| k.id).collect()
}

pub async fn api_keys_are_created_listed_and_revoked(store: S) {
    let before = Micros::now();
    let a1 = store.create_api_key(new_key("k1", "acme", &[Scope::TasksWrite, Scope::TasksRead], 1)).await.unwrap();
    let after = Micros::now();
    assert_eq!((a1.id.as_str(), a1.tenant.as_str(), a1.name.as_deref()), ("k1", "acme", Some("k1's label")));
    assert_eq!((a1.scopes.as_slice(), a1.revoked_at), (&[Scope::TasksWrite, Scope::TasksRead][..], None));
    assert!(before <= a1.created_at && a1.created_at <= after, "created now: {a1:?}");
    let b1 = store.create_api_key(new_key("k2", "other", &[Scope::Admin], 2)).await.unwrap();
    let mut unnamed = new_key("k3", "acme", &[], 3);
    unnamed.name = None;
    let a2 = store.create_api_key(unnamed).await.unwrap();
    assert_eq!((a2.scopes.len(), a2.name.as_deref()), (0, None));

    // A read gives the key as created, and the hash as stored.
    assert_eq!(store.api_key("k1").await.unwrap(), Some((a1.clone(), "01".repeat(32))));
    assert_eq!(store.api_key("k3").await.unwrap(), Some((a2.clone(), "03".repeat(32))));
    assert_eq!(store.api_key("nope").await.unwrap(), None);

    // An id is taken once, whatever the rest of the key.
    let again = store.create_api_key(new_key("k1", "other", &[Scope::Admin], 9)).await.unwrap_err();
    assert_eq!(again.code(), Code::Conflict, "{again}");
    assert_eq!(store.api_key("k1").await.unwrap(), Some((a1.clone(), "01".repeat(32))), "the first key is kept");

    // Lists: oldest first, by tenant or all (an `ApiKey` has no hash to leak).
    assert_eq!(store.list_api_keys(Some("acme")).await.unwrap(), [a1.clone(), a2.clone()]);
    assert_eq!(store.list_api_keys(None).await.unwrap(), [a1.clone(), b1.clone(), a2.clone()]);
    assert_eq!(key_ids(&store, Some("ghost")).await, Vec::<String>::new());

    // Revocation: kept with the first time, unknown ids are `None`.
    let at = Micros(a1.created_at.0 + 1_000);
    let revoked = store.revoke_api_key("k1", at).await.unwrap().expect("k1 exists");
    assert_eq!(revoked, ApiKey { revoked_at: Some(at), ..a1.clone() });
    let twice = store.revoke_api_key("k1", Micros(at.0 + 5_000_000)).await.unwrap().expect("k1 exists");
    assert_eq!(twice.revoked_at, Some(at), "a second revocation keeps the first time");
    assert_eq!(store.revoke_api_key("nope", at).await.unwrap(), None);
    assert_eq!(store.api_key("k1").await.unwrap(), Some((revoked.clone(), "01".repeat(32))), "revoked keys are read");
    assert_eq!(store.list_api_keys(Some("acme")).await.unwrap(), [revoked, a2], "and listed");
    assert_eq!(store.api_key("k2").await.unwrap().unwrap().0, b1, "other keys are untouched");
}

pub async fn api_keys_are_checked_before_they_are_stored(store: S) {
    // (what is wrong, the key, the code)
    let plaintext = NewApiKey { secret_sha256: "hunter2".into(), ..new_key("p", "acme", &[], 0) };
    let upper = NewApiKey { secret_sha256: "AB".repeat(32), ..new_key("u", "acme", &[], 0) };
    let cases = [
        ("a secret that is not a SHA-256", plaintext, Code::InvalidArgument),
        ("uppercase hex", upper, Code::InvalidArgument),
        ("no id", new_key("", "acme", &[], 1), Code::InvalidArgument),
        ("no tenant", new_key("t", "", &[], 1), Code::InvalidArgument),
        ("a NUL in the id", new_key("n\u{0}ul", "acme", &[], 1), Code::Unprocessable),
        ("a NUL in the tenant", new_key("n", "ac\u{0}me", &[], 1), Code::Unprocessable),
    ];
    for (what, key, code) in cases {
        let err = store.create_api_key(key).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err}");
    }
    assert_eq!(key_ids(&store, None).await, Vec::<String>::new(), "nothing was stored");
}

fn audit_record(
    at: Micros,
    actor: &str,
    tenant: &str,
    action: &str,
    target: Option<&str>,
    status: u16,
) -> NewAuditRecord {
    NewAuditRecord {
        at,
        actor: actor.into(),
        tenant: tenant.into(),
        action: action.into(),
        target: target.map(str::to_string),
        source: "127.0.0.1:5000".into(),
        status,
    }
}

async fn audit_ids(store: &S, q: AuditQuery) -> Vec<u64> {
    store.audit(&q).await.expect("audit").into_iter().map(|r| r.id).collect()
}

/// `submit_audited` stores the task and its request's record, the record naming the task and
/// saying whether it was created (201) or an idempotent repeat returned it (200); a submission
/// the store refuses writes neither.
pub async fn a_submission_and_its_audit_record_are_written_together(store: S) {
    let request = audit_record(Micros::now(), "key:a", "acme", "task.submit", None, 0);
    let mut new = NewTask::new("echo", json!({"n": 1}));
    new.tenant = "acme".into();
    new.idempotency_key = Some("once".into());
    let first = store.submit_audited(new.clone(), request.clone()).await.unwrap();
    let again = store.submit_audited(new, request.clone()).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(again.task.id, first.task.id);
    let unknown = store.submit_audited(NewTask::new("no-such-agent", json!(1)), request.clone()).await;
    assert!(unknown.is_err(), "{unknown:?}");

    let records = store.audit(&AuditQuery { actor: Some("key:a".into()), ..Default::default() }).await.unwrap();
    let got: Vec<(Option<&str>, u16)> = records.iter().map(|r| (r.target.as_deref(), r.status)).collect();
    let id = first.task.id.to_string();
    assert_eq!(got, [(Some(id.as_str()), 201), (Some(id.as_str()), 200)]);
    assert!(records.iter().all(|r| r.action == "task.submit" && r.tenant == "acme" && r.at == request.at));
}

pub async fn audit_records_are_numbered_and_filtered(store: S) {
    let t = Micros(1_700_000_000_000_000);
    let at = |s: i64| Micros(t.0 + s * 1_000_000);
    let news = [
        audit_record(at(0), "key:a", "acme", "task.submit", Some("task-1"), 201),
        audit_record(at(10), "key:a", "acme", "task.cancel", Some("task-1"), 202),
        audit_record(at(20), "token", "other", "key.create", Some("k1"), 201),
        audit_record(at(30), "key:b", "acme", "task.submit", None, 422),
        audit_record(at(40), "jwt:x", "acme", "session.start", None, 201),
    ];
    let mut stored: Vec<AuditRecord> = Vec::new();
    for n in &news {
        let r = store.append_audit(n.clone()).await.unwrap();
        assert_eq!(r, AuditRecord { id: r.id, entry: n.clone() });
        if let Some(last) = stored.last() {
            assert!(r.id > last.id, "ids increase: {} after {}", r.id, last.id);
        }
        stored.push(r);
    }
    assert_eq!(store.audit(&AuditQuery::default()).await.unwrap(), stored, "everything, oldest first");
    let id = |i: usize| stored[i - 1].id;
    let s = |v: &str| Some(v.to_string());
    // (the query, the records it gives, numbered from 1)
    let cases: Vec<(AuditQuery, Vec<usize>)> = vec![
        (AuditQuery { tenant: s("acme"), ..Default::default() }, vec![1, 2, 4, 5]),
        (AuditQuery { actor: s("key:a"), ..Default::default() }, vec![1, 2]),
        (AuditQuery { action: s("task.submit"), ..Default::default() }, vec![1, 4]),
        (AuditQuery { since: Some(at(10)), ..Default::default() }, vec![2, 3, 4, 5]),
        (AuditQuery { until: Some(at(30)), ..Default::default() }, vec![1, 2, 3]),
        (AuditQuery { since: Some(at(10)), until: Some(at(30)), ..Default::default() }, vec![2, 3]),
        (AuditQuery { since: Some(at(11)), until: Some(at(11)), ..Default::default() }, vec![]),
        (AuditQuery { tenant: s("acme"), action: s("task.submit"), ..Default::default() }, vec![1, 4]),
        (AuditQuery { tenant: s("other"), actor: s("key:a"), ..Default::default() }, vec![]),
        (AuditQuery { actor: s("nobody"), ..Default::default() }, vec![]),
        (AuditQuery { after: id(2), ..Default::default() }, vec![3, 4, 5]),
        (AuditQuery { after: id(5), ..Default::default() }, vec![]),
        (AuditQuery { limit: 2, ..Default::default() }, vec![1, 2]),
        (AuditQuery { after: id(2), limit: 2, ..Default::default() }, vec![3, 4]),
        (AuditQuery { tenant: s("acme"), after: id(2), limit: 1, ..Default::default() }, vec![4]),
    ];
    for (q, want) in cases {
        let want: Vec<u64> = want.into_iter().map(id).collect();
        assert_eq!(audit_ids(&store, q.clone()).await, want, "{q:?}");
    }
    // Paging with `after` walks the log once.
    let (mut after, mut paged) = (0, Vec::new());
    loop {
        let page = audit_ids(&store, AuditQuery { after, limit: 2, ..Default::default() }).await;
        let Some(&last) = page.last() else { break };
        paged.extend(page);
        after = last;
    }
    assert_eq!(paged, stored.iter().map(|r| r.id).collect::<Vec<_>>());
}

pub async fn audit_limit_is_capped_and_bad_records_are_refused(store: S) {
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..(AUDIT_LIMIT + 5) {
        let s = store.clone();
        let r = audit_record(Micros(i as i64), "token", "acme", "task.submit", None, 201);
        appends.spawn(async move { s.append_audit(r).await });
    }
    while let Some(res) = appends.join_next().await {
        res.unwrap().unwrap();
    }
    for limit in [0, AUDIT_LIMIT + 1, usize::MAX] {
        let got = store.audit(&AuditQuery { limit, ..Default::default() }).await.unwrap();
        assert_eq!(got.len(), AUDIT_LIMIT, "limit {limit}");
    }
    let last = store.audit(&AuditQuery { limit: AUDIT_LIMIT, ..Default::default() }).await.unwrap().last().unwrap().id;
    assert_eq!(audit_ids(&store, AuditQuery { after: last, ..Default::default() }).await.len(), 5);

    let mut bad = audit_record(Micros::now(), "key:\u{0}", "acme", "task.submit", None, 201);
    let err = store.append_audit(bad.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unprocessable, "{err}");
    bad.actor = "token".into();
    bad.target = Some("\u{0}".into());
    assert_eq!(store.append_audit(bad).await.unwrap_err().code(), Code::Unprocessable);
    let all = AuditQuery { after: last, ..Default::default() };
    assert_eq!(audit_ids(&store, all).await.len(), 5, "a refused record is not stored");
}

/// Records appended by concurrent writers are numbered in commit order: a reader paging with
/// `after` while they write sees each exactly once.
pub async fn audit_tail_under_concurrent_writers_misses_nothing(store: S) {
    let writers = Writers::start(4, |w| {
        let s = store.clone();
        async move {
            for i in 0..40 {
                let target = format!("{w}-{i}");
                s.append_audit(audit_record(Micros::now(), "token", "acme", "task.submit", Some(&target), 201))
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    // mixed into batches with other writes
                    s.submit(NewTask::new("echo", json!(i))).await.unwrap();
                }
            }
        }
    });
    let seen = tail_audit(&store, &writers, 7).await;
    writers.finish().await;
    let all = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 160);
    assert_eq!(seen, all, "the tail saw every record once, in order");
}

pub async fn tenant_load_counts_in_flight_tasks_and_usage_since(store: S) {
    alive(&store, "w").await;
    // acme's tasks run on "tries" (a long backoff keeps a retried task waiting), other's on "sleep"
    define(&store, "tries", 3, 60_000).await;
    let of = |agent: &str, tenant: &str| {
        let mut t = NewTask::new(agent, json!("x"));
        t.tenant = tenant.into();
        t
    };
    let mut acme = Vec::new();
    for _ in 0..3 {
        acme.push(store.submit(of("tries", "acme")).await.unwrap().task);
    }
    for _ in 0..2 {
        store.submit(of("sleep", "other")).await.unwrap();
    }
    let a1 = claim_one(&store, "w", "tries", LONG).await.task;
    assert_eq!(a1.id, acme[0].id);
    let o1 = claim_one(&store, "w", "sleep", LONG).await.task;
    let load = |tenant: &'static str, since: Micros| {
        let store = store.clone();
        // the bytes are `tenant_load_counts_output_bytes_written_since`'s
        async move { TenantLoad { output_bytes: 0, ..store.tenant_load(tenant, since).await.expect("tenant_load") } }
    };
    let figures = |queued, running, tokens, cost_usd| TenantLoad { queued, running, tokens, cost_usd, output_bytes: 0 };
    assert_eq!(load("acme", Micros(0)).await, figures(2, 1, 0, 0.0));
    assert_eq!(load("other", Micros(0)).await, figures(1, 1, 0, 0.0));
    assert_eq!(load("nobody", Micros(0)).await, TenantLoad::default());

    let spend = |i: u64, o: u64, c: f64| Usage { input_tokens: i, output_tokens: o, cost_usd: c };
    let ok = |usage| Outcome::Succeeded { result: json!(1), usage };
    store.complete(a1.id, 1, vec![], ok(spend(10, 5, 0.5))).await.unwrap();
    assert_eq!(load("acme", Micros(0)).await, figures(2, 0, 15, 0.5));

    tokio::time::sleep(Duration::from_millis(3)).await;
    let mark = Micros::now();
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert_eq!(load("acme", mark).await, figures(2, 0, 0, 0.0), "spent before the mark");

    // A failed attempt's usage counts when it ends, though its task is queued again.
    let a2 = claim_one(&store, "w", "tries", LONG).await.task;
    assert_eq!(a2.id, acme[1].id);
    let failed =
        Outcome::Failed { error: TaskError::new("boom", "it broke"), retryable: true, usage: spend(7, 0, 0.125) };
    assert_eq!(store.complete(a2.id, 1, vec![], failed).await.unwrap().task.status, TaskStatus::Queued);
    assert_eq!(load("acme", mark).await, figures(2, 0, 7, 0.125));

    let a3 = claim_one(&store, "w", "tries", LONG).await.task;
    assert_eq!(a3.id, acme[2].id, "the retried task waits out its backoff");
    assert_eq!(load("acme", mark).await, figures(1, 1, 7, 0.125));
    store.complete(a3.id, 1, vec![], ok(spend(1, 2, 0.25))).await.unwrap();
    assert_eq!(load("acme", mark).await, figures(1, 0, 10, 0.375));
    assert_eq!(load("acme", Micros(0)).await, figures(1, 0, 25, 0.875));
    assert_eq!(load("acme", Micros::now().plus(Duration::from_secs(60))).await, figures(1, 0, 0, 0.0));

    // Other tenants' spending is theirs.
    store.complete(o1.id, 1, vec![], ok(spend(100, 0, 1.0))).await.unwrap();
    assert_eq!(load("acme", Micros(0)).await, figures(1, 0, 25, 0.875));
    assert_eq!(load("other", mark).await, figures(1, 0, 100, 1.0));

    // Since the beginning, it is what the usage totals say.
    let totals: HashMap<String, Usage> = store.usage_totals(UsageBy::Tenant).await.unwrap().into_iter().collect();
    assert_eq!(totals["acme"], spend(18, 7, 0.875));
}

pub async fn tenant_load_counts_output_bytes_written_since(store: S) {
    alive(&store, "w").await;
    let of = |tenant: &str| {
        let mut t = NewTask::new("sleep", json!("x"));
        t.tenant = tenant.into();
        t
    };
    let a = store.submit(of("acme")).await.unwrap().task;
    let o = store.submit(of("other")).await.unwrap().task;
    let bytes = |tenant: &'static str, since: Micros| {
        let store = store.clone();
        async move { store.tenant_load(tenant, since).await.expect("tenant_load").output_bytes }
    };
    let before = Micros::now();
    assert_eq!(bytes("acme", Micros(0)).await, 0, "a queued task wrote nothing");
    let a1 = claim_one(&store, "w", "sleep", LONG).await.task;
    let o1 = claim_one(&store, "w", "sleep", LONG).await.task;
    assert_eq!((a1.id, o1.id), (a.id, o.id));
    // each draft's data counts as stored (its JSON text), the started event does not
    let data = json!({"text": "0123456789"});
    let size = crate::json_len(&data);
    assert_eq!(size, 21);
    store.append(a.id, 1, vec![EventDraft::new(EventKind::Output, data.clone()); 3]).await.unwrap();
    assert_eq!(bytes("acme", before).await, 3 * size);
    assert_eq!(bytes("other", before).await, 0, "another tenant's bytes are its own");
    let result = json!("done!");
    let change = store
        .complete(
            a.id,
            1,
            vec![EventDraft::new(EventKind::Output, data.clone())],
            Outcome::Succeeded { result: result.clone(), usage: Usage::default() },
        )
        .await
        .unwrap();
    assert_eq!(change.task.status, TaskStatus::Succeeded);
    assert_eq!(bytes("acme", before).await, 4 * size + crate::json_len(&result));
    // a fenced write counts nothing
    assert!(store.append(a.id, 1, vec![EventDraft::new(EventKind::Output, data.clone())]).await.is_err());
    assert_eq!(bytes("acme", Micros(0)).await, 4 * size + 7);
    // counted by UTC day: nothing was written on a later day
    assert_eq!(bytes("acme", Micros::now().plus(Duration::from_secs(86_400))).await, 0, "nothing written after");
    store
        .complete(
            o.id,
            1,
            vec![],
            Outcome::Failed { error: TaskError::new("boom", "x"), retryable: false, usage: Usage::default() },
        )
        .await
        .unwrap();
    assert_eq!(bytes("other", Micros(0)).await, 0, "a failure holds no result");
}

pub async fn size_bytes_grows_with_what_is_written(store: S) {
    let Some(empty) = store.size_bytes().await.unwrap() else { return };
    assert!(empty > 0, "a store holds its schema");
    alive(&store, "w").await;
    // letters from a xorshift generator: a compressing backend (PostgreSQL's TOAST) keeps them whole
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..50 {
        let text: String = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (b'a' + (x % 26) as u8) as char
            })
            .collect();
        store.submit(NewTask::new("sleep", json!(text))).await.unwrap();
    }
    let full = store.size_bytes().await.unwrap().expect("a size");
    assert!(full >= empty + 500_000, "50 inputs of 20 kB: {empty} → {full}");
}

pub async fn artifacts_are_fenced_replaced_by_name_and_summed_by_tenant(store: S) {
    let art = |name: &str, size: u64, fill: char| Artifact {
        name: name.into(),
        size,
        sha256: fill.to_string().repeat(64),
        created_at: Micros(1_700_000_000_000_000 + size as i64),
    };
    let names = |list: &[Artifact]| list.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    let (acme, globex) = ("acme-artifacts", "globex-artifacts");
    let a = submit_as(&store, "echo", acme, 1).await;
    let b = submit_as(&store, "echo", globex, 0).await;
    assert_fenced(store.put_artifacts(a.id, 0, vec![art("x", 1, 'a')]).await, a.id, "artifacts of a queued task");
    assert_eq!(claim_one(&store, "w1", "echo", LONG).await.task.id, a.id, "the higher priority first");
    assert_eq!(claim_one(&store, "w1", "echo", LONG).await.task.id, b.id);

    let first = vec![art("out/b.bin", 3, 'b'), art("a.txt", 5, 'a'), art("Z", 0, 'c')];
    store.put_artifacts(a.id, 1, first.clone()).await.unwrap();
    store.put_artifacts(b.id, 1, vec![art("a.txt", 7, 'd')]).await.unwrap();
    let listed = store.artifacts(a.id).await.unwrap();
    assert_eq!(names(&listed), ["Z", "a.txt", "out/b.bin"], "listed by name, bytewise");
    assert_eq!(listed[1], first[1], "every field round-trips");
    assert_eq!(store.tenant_artifact_bytes(acme).await.unwrap(), 8);
    assert_eq!(store.tenant_artifact_bytes(globex).await.unwrap(), 7);
    assert_eq!(store.tenant_artifact_bytes("nobody").await.unwrap(), 0);

    // a name already recorded is replaced; the others stay
    store.put_artifacts(a.id, 1, vec![art("a.txt", 2, 'e'), art("new", 1, 'f')]).await.unwrap();
    let listed = store.artifacts(a.id).await.unwrap();
    assert_eq!(names(&listed), ["Z", "a.txt", "new", "out/b.bin"]);
    assert_eq!(listed[1], art("a.txt", 2, 'e'));
    assert_eq!(store.tenant_artifact_bytes(acme).await.unwrap(), 6);

    // fenced: another attempt, an unknown task, a finished task
    assert_fenced(store.put_artifacts(a.id, 2, vec![art("late", 1, 'a')]).await, a.id, "a later attempt");
    let nobody = TaskId::new();
    assert_fenced(store.put_artifacts(nobody, 1, vec![art("x", 1, 'a')]).await, nobody, "an unknown task");
    assert!(store.artifacts(nobody).await.unwrap().is_empty());
    store.complete(a.id, 1, vec![], success(json!("done"))).await.unwrap();
    assert_fenced(store.put_artifacts(a.id, 1, vec![art("late", 1, 'a')]).await, a.id, "a finished task");
    assert_eq!(store.artifacts(a.id).await.unwrap().len(), 4, "fenced puts wrote nothing");

    // records no backend may hold are refused before anything is written
    let bad = [
        vec![art("../up", 1, 'a')],
        vec![art("/abs", 1, 'a')],
        vec![art("nul\0", 1, 'a')],
        vec![Artifact { sha256: "ABC".into(), ..art("x", 1, 'a') }],
        vec![art("twice", 1, 'a'), art("twice", 2, 'b')],
        vec![art("huge", u64::MAX, 'a')],
    ];
    for arts in bad {
        let got = store.put_artifacts(b.id, 1, arts.clone()).await;
        assert!(matches!(&got, Err(e) if e.code() == Code::InvalidArgument), "{arts:?}: {got:?}");
    }
    assert_eq!(names(&store.artifacts(b.id).await.unwrap()), ["a.txt"]);
}

pub async fn a_request_parks_its_task_until_answered_once(store: S) {
    use smith_core::approval::{Answer, ApprovalStatus, Decision, NewRequest, RequestKind, ToolCall};
    let ask = |text: &str| NewRequest {
        kind: RequestKind::Approval,
        tool: Some(ToolCall { name: "Bash".into(), input: json!({"command": text}) }),
        text: None,
        expires_at: Some(Micros(1)),
        on_timeout: Decision::Deny,
        state: Some(json!({"conversation": [text]})),
    };
    let allow = |by: &str| Answer {
        decision: Decision::Allow,
        message: Some("go".into()),
        input: None,
        answer: None,
        by: by.into(),
        at: Micros::now(),
    };
    let (acme, globex) = ("acme-approvals", "globex-approvals");
    let t = submit_as(&store, "echo", acme, 1).await;
    let other = submit_as(&store, "echo", globex, 0).await;
    assert_fenced(store.request_input(t.id, 1, ask("git push")).await, t.id, "a request of a queued task");
    let claimed = claim_one(&store, "w1", "echo", LONG).await;
    assert_eq!(claimed.task.id, t.id);
    claim_one(&store, "w1", "echo", LONG).await;
    assert_fenced(store.request_input(t.id, 2, ask("git push")).await, t.id, "a request of another attempt");

    let asked = store.request_input(t.id, 1, ask("git push origin x")).await.unwrap();
    let a = asked.approval.clone();
    assert_eq!(
        (a.status, a.kind, a.attempt, a.tenant.as_str()),
        (ApprovalStatus::Pending, RequestKind::Approval, 1, acme)
    );
    let task = get(&store, t.id).await;
    assert_eq!((task.status, task.worker.as_deref()), (TaskStatus::WaitingInput, None), "parked, held by nobody");
    assert_eq!(kinds(&asked.change.events), [EventKind::ApprovalRequested]);
    assert_eq!(asked.change.events[0].data["approval_id"], json!(a.id));
    assert_eq!(asked.change.events[0].data["tool"]["input"]["command"], json!("git push origin x"));
    assert!(claim(&store, "w2", "echo", 10, LONG).await.is_empty(), "a waiting task is not claimable");
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.running, stats.waiting), (0, 1, 1), "waiting is neither queued nor running");
    assert!(store.renew("w1", LONG).await.unwrap().iter().all(|h| h.id != t.id), "nor renewed");
    assert_fenced(store.append(t.id, 1, vec![output(1)]).await, t.id, "the parked attempt's late write");
    assert_eq!(store.get_approval(&a.id).await.unwrap().as_ref(), Some(&a), "every field round-trips");
    assert_eq!(a.state, Some(json!({"conversation": ["git push origin x"]})), "the asker's state is kept");
    let expired = store.expired_approvals(Micros::now(), 10).await.unwrap();
    assert_eq!(expired.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), [a.id.as_str()]);

    // listed by tenant, task and status
    let q = |tenant: &str, status: Option<ApprovalStatus>| crate::ApprovalQuery {
        tenant: Some(tenant.into()),
        status,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_approvals(&q(acme, Some(ApprovalStatus::Pending))).await.unwrap().len(), 1);
    assert!(store.list_approvals(&q(globex, None)).await.unwrap().is_empty(), "another tenant's list is empty");

    // answered once: the task is queued again, with the decision and who made it
    let wrong = store.answer_request(other.id, &a.id, allow("mallory")).await;
    assert!(matches!(&wrong, Err(e) if e.code() == Code::NotFound), "another task's request: {wrong:?}");
    let done = store.answer_request(t.id, &a.id, allow("alice")).await.unwrap();
    assert_eq!(done.approval.status, ApprovalStatus::Allowed);
    assert_eq!(done.approval.answer.as_ref().map(|x| x.by.as_str()), Some("alice"));
    assert_eq!((done.change.task.status, done.change.task.attempt), (TaskStatus::Queued, 1));
    assert_eq!(kinds(&done.change.events), [EventKind::ApprovalDecided]);
    assert_eq!(done.change.events[0].data["by"], json!("alice"));
    let twice = store.answer_request(t.id, &a.id, allow("bob")).await;
    assert!(matches!(&twice, Err(e) if e.code() == Code::Conflict), "a second answer: {twice:?}");
    assert!(store.expired_approvals(Micros::now(), 10).await.unwrap().is_empty());

    // the next attempt resumes; the parked one was not spent
    let again = claim_one(&store, "w2", "echo", LONG).await;
    assert_eq!((again.task.id, again.task.attempt), (t.id, 2));
    store.use_answer(&a.id).await.unwrap();
    assert!(store.get_approval(&a.id).await.unwrap().unwrap().used);
    let by_task = crate::ApprovalQuery { task: Some(t.id), limit: 10, ..Default::default() };
    assert_eq!(store.list_approvals(&by_task).await.unwrap().len(), 1);

    // a task cancelled while waiting ends at once, its request with it
    let b = store.request_input(t.id, 2, ask("rm -rf /")).await.unwrap();
    let cancelled = store.request_cancel(t.id).await.unwrap();
    assert_eq!(cancelled.task.status, TaskStatus::Cancelled);
    assert_eq!(store.get_approval(&b.approval.id).await.unwrap().unwrap().status, ApprovalStatus::Cancelled);
    let late = store.answer_request(t.id, &b.approval.id, allow("alice")).await;
    assert!(matches!(&late, Err(e) if e.code() == Code::Conflict), "an answer after the end: {late:?}");
    let log = checked_log(&store, t.id).await;
    assert_eq!(log.last().map(|e| e.kind), Some(EventKind::Cancelled));
}

pub async fn webhooks_and_their_deliveries_move_with_the_cursor(store: S) {
    use smith_core::{AttemptOutcome, DeliveryState, NewDelivery, TaskWebhook, Webhook};
    let secret = smith_core::webhook::generate_secret();
    let hook = |id: &str, tenant: &str, at: i64| Webhook {
        id: id.into(),
        tenant: tenant.into(),
        url: format!("https://{tenant}.example/hook"),
        kinds: vec!["task.*".into(), "approval.requested".into()],
        description: Some("d".into()),
        secret: secret.clone(),
        created_at: Micros(at),
    };
    let (a, b) = (hook("wh-a", "acme", 1), hook("wh-b", "globex", 2));
    store.create_webhook(&a).await.unwrap();
    store.create_webhook(&b).await.unwrap();
    let dup = store.create_webhook(&a).await;
    assert!(matches!(&dup, Err(e) if e.code() == Code::Conflict), "{dup:?}");
    let bad = Webhook { kinds: vec!["nope".into()], ..hook("wh-c", "acme", 3) };
    assert!(store.create_webhook(&bad).await.is_err(), "unknown kinds are refused");
    assert_eq!(store.get_webhook("wh-a").await.unwrap().as_ref(), Some(&a), "every field, the secret too");
    assert_eq!(store.webhooks(Some("acme")).await.unwrap(), vec![a.clone()]);
    assert_eq!(store.webhooks(None).await.unwrap(), vec![a.clone(), b.clone()], "oldest first");
    assert!(store.get_webhook("nope").await.unwrap().is_none());

    // a task's own webhook round-trips with its secret
    let mut t = NewTask::new("echo", json!("x"));
    t.webhook = Some(TaskWebhook { url: "https://x.example/t".into(), secret: Some(secret.clone()) });
    let task = store.submit(t.clone()).await.unwrap().task;
    assert_eq!(get(&store, task.id).await.webhook, t.webhook);
    let plain = submit(&store, "echo").await;
    let found = store.task_webhooks(&[plain.id, task.id, TaskId::new()]).await.unwrap();
    assert_eq!(found, vec![(task.id, t.webhook.clone().unwrap())], "only the tasks that have one");
    assert!(store.task_webhooks(&[]).await.unwrap().is_empty());

    // the cursor starts at the feed's end and moves only from where it is, with its deliveries
    let head = store.feed_head().await.unwrap();
    let cursor = store.webhook_cursor().await.unwrap();
    assert!(cursor <= head, "{cursor} > {head}");
    let delivery = |id: &str, hook: Option<&str>, tenant: &str, pos: u64| NewDelivery {
        id: id.into(),
        webhook_id: hook.map(str::to_string),
        tenant: tenant.into(),
        task_id: Some(task.id),
        event_pos: pos,
        event_type: "task.succeeded".into(),
        url: "https://x.example/t".into(),
        secret: Some(secret.clone()),
        payload: json!({"type": "task.succeeded", "data": {"pos": pos}}),
        created_at: Micros::now(),
    };
    let ds = vec![delivery("msg_1", Some("wh-a"), "acme", 1), delivery("msg_2", Some("wh-a"), "acme", 2)];
    let stale = store.enqueue_deliveries(cursor + 1, head + 2, ds.clone()).await;
    assert!(matches!(&stale, Err(e) if e.code() == Code::Conflict), "{stale:?}");
    assert_eq!(store.webhook_cursor().await.unwrap(), cursor, "a refused move writes nothing");
    assert!(store.deliveries("wh-a", None, 10).await.unwrap().is_empty(), "nor its deliveries");
    store.enqueue_deliveries(cursor, head + 2, ds).await.unwrap();
    store.enqueue_deliveries(head + 2, head + 3, vec![delivery("msg_3", None, "globex", 3)]).await.unwrap();
    assert_eq!(store.webhook_cursor().await.unwrap(), head + 3);
    assert_eq!(store.pending_deliveries().await.unwrap(), vec![("acme".into(), 2), ("globex".into(), 1)]);

    // claimed deliveries are held: not claimed again until the hold passes
    let now = Micros::now();
    let hold = Duration::from_millis(200);
    let got = store.claim_deliveries(now, hold, 2).await.unwrap();
    assert_eq!(got.len(), 2, "{got:#?}");
    let first = got.iter().find(|d| d.id == "msg_1").expect("msg_1 claimed");
    assert_eq!((first.url.as_str(), first.secret.as_deref()), ("https://x.example/t", Some(secret.as_str())));
    assert_eq!(first.payload["data"]["pos"], 1, "the payload as recorded");
    assert_eq!((first.task_id, first.state, first.attempts), (Some(task.id), DeliveryState::Pending, 0));
    let rest = store.claim_deliveries(now, hold, 10).await.unwrap();
    assert_eq!(rest.len(), 1, "only the third is free: {rest:#?}");
    assert!(store.claim_deliveries(now, hold, 10).await.unwrap().is_empty());
    let again = store.claim_deliveries(now.plus(hold * 2), hold, 10).await.unwrap();
    assert_eq!(again.len(), 3, "held deliveries come back after the hold");

    // attempts: retry later, then delivered; a failed one is replayed once
    let outcome = |state, next: Option<Micros>, status: Option<u16>| AttemptOutcome {
        state,
        next_at: next,
        status,
        error: status.filter(|s| *s >= 500).map(|s| format!("HTTP {s}")),
        at: Micros::now(),
    };
    let later = Micros::now().plus(Duration::from_secs(3600));
    store.record_attempt("msg_1", &outcome(DeliveryState::Pending, Some(later), Some(500))).await.unwrap();
    store.record_attempt("msg_2", &outcome(DeliveryState::Delivered, None, Some(200))).await.unwrap();
    store.record_attempt("msg_2", &outcome(DeliveryState::Failed, None, Some(500))).await.unwrap();
    let listed = store.deliveries("wh-a", None, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["msg_2", "msg_1"], "newest first");
    assert_eq!((listed[0].state, listed[0].attempts, listed[0].last_status), (DeliveryState::Delivered, 1, Some(200)));
    assert_eq!(listed[0].next_at, None, "a delivered delivery is sent no more");
    assert_eq!((listed[1].state, listed[1].attempts, listed[1].next_at), (DeliveryState::Pending, 1, Some(later)));
    assert_eq!(listed[1].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(store.deliveries("wh-a", Some("msg_2"), 10).await.unwrap().len(), 1, "paged by id");
    assert!(store.claim_deliveries(Micros::now(), hold, 10).await.unwrap().iter().all(|d| d.id != "msg_1"));

    let replay = store.replay_delivery("wh-a", "msg_2", Micros::now()).await;
    assert!(matches!(&replay, Err(e) if e.code() == Code::Conflict), "a delivered one: {replay:?}");
    store.record_attempt("msg_1", &outcome(DeliveryState::Failed, None, Some(500))).await.unwrap();
    assert!(store.replay_delivery("wh-b", "msg_1", Micros::now()).await.unwrap().is_none(), "another hook's");
    assert!(store.replay_delivery("wh-a", "msg_9", Micros::now()).await.unwrap().is_none());
    let replayed = store.replay_delivery("wh-a", "msg_1", Micros::now()).await.unwrap().expect("replayed");
    assert_eq!((replayed.state, replayed.attempts), (DeliveryState::Pending, 2));
    let due = store.claim_deliveries(Micros::now().plus(Duration::from_secs(1)), hold, 10).await.unwrap();
    assert!(due.iter().any(|d| d.id == "msg_1"), "a replayed delivery is due: {due:#?}");

    // deleting a subscription deletes its deliveries, not another's
    assert!(store.delete_webhook("wh-a").await.unwrap());
    assert!(!store.delete_webhook("wh-a").await.unwrap());
    assert!(store.get_webhook("wh-a").await.unwrap().is_none());
    assert!(store.deliveries("wh-a", None, 10).await.unwrap().is_empty());
    assert_eq!(store.pending_deliveries().await.unwrap(), vec![("globex".into(), 1)]);
}

pub async fn task_webhooks_live_tells_whether_a_tasks_webhook_may_still_be_due(store: S) {
    use smith_core::TaskWebhook;
    submit(&store, "echo").await;
    assert!(!store.task_webhooks_live(Micros(0)).await.unwrap(), "no task has a webhook");
    let mut t = NewTask::new("echo", json!("x"));
    t.webhook = Some(TaskWebhook { url: "https://x.example/t".into(), secret: None });
    let task = store.submit(t).await.unwrap().task;
    let far = Micros(Micros::now().0 + 3_600_000_000);
    assert!(store.task_webhooks_live(far).await.unwrap(), "an unfinished task with a webhook, whatever the time");
    let before_end = Micros::now();
    store.request_cancel(task.id).await.unwrap();
    assert!(store.task_webhooks_live(before_end).await.unwrap(), "it finished since");
    assert!(!store.task_webhooks_live(far).await.unwrap(), "it finished before");
}

pub async fn a_delayed_task_waits_scheduled_and_an_unstarted_one_expires(store: S) {
    define(&store, "timed", 3, 10).await;
    let now = Micros::now();
    // the store's claims run on the real clock: due soon, and waited for
    let later = now.plus(Duration::from_millis(400));
    let mut t = NewTask::new("timed", json!("x"));
    t.run_at = Some(later);
    t.ttl = Some(Duration::from_secs(60));
    let delayed = store.submit(t).await.unwrap();
    assert_eq!(delayed.task.status, TaskStatus::Scheduled);
    assert_eq!(
        (delayed.task.run_at, delayed.task.expires_at),
        (Some(later), Some(later.plus(Duration::from_secs(60))))
    );
    assert_eq!(kinds(&delayed.events), [EventKind::Scheduled]);
    assert_eq!(delayed.events[0].data["run_at"], json!(later));
    assert_eq!(get(&store, delayed.task.id).await, delayed.task, "a scheduled task round-trips");
    let mut past = NewTask::new("timed", json!("now"));
    past.run_at = Some(Micros(now.0 - 1_000_000));
    let at_once = store.submit(past).await.unwrap().task;
    assert_eq!((at_once.status, at_once.run_at), (TaskStatus::Queued, None), "a past run_at starts at once");
    assert_eq!(
        ids(&claim(&store, "w1", "timed", 10, LONG).await.into_iter().map(|c| c.task).collect::<Vec<_>>()),
        [at_once.id]
    );
    assert!(store.advance_timers(now, 100).await.unwrap().is_empty(), "nothing is due yet");
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.scheduled, stats.queued), (1, 0));

    // due: queued, with an event saying what it waited for, then claimable
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(claim(&store, "w1", "timed", 10, LONG).await.is_empty(), "a scheduled task is claimed only once queued");
    let moved = store.advance_timers(later, 100).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].task.status, moved[0].task.run_at), (TaskStatus::Queued, None));
    assert_eq!(kinds(&moved[0].events), [EventKind::Queued]);
    assert_eq!(moved[0].events[0].data["after"], "scheduled");
    assert!(store.advance_timers(later, 100).await.unwrap().is_empty(), "a move is made once");
    assert_eq!(claim_one(&store, "w1", "timed", LONG).await.task.id, delayed.task.id);

    // cancelled while scheduled: it ends at once and never becomes due
    let mut t = NewTask::new("timed", json!("x"));
    t.run_at = Some(later);
    let cancelled = store.submit(t).await.unwrap().task;
    let change = store.request_cancel(cancelled.id).await.unwrap();
    assert_eq!(change.task.status, TaskStatus::Cancelled);
    assert!(store.advance_timers(later.plus(Duration::from_secs(1)), 100).await.unwrap().is_empty());

    // a queued task past its time to live is never claimed, and the timer pass expires it
    let mut t = NewTask::new("timed", json!("x"));
    t.ttl = Some(Duration::from_millis(1));
    let short = store.submit(t).await.unwrap().task;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(claim(&store, "w1", "timed", 10, LONG).await.is_empty(), "a task past its ttl started");
    let expired = store.advance_timers(Micros::now(), 100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].task.id, expired[0].task.status), (short.id, TaskStatus::Expired));
    assert_eq!(kinds(&expired[0].events), [EventKind::Expired]);
    assert_eq!(expired[0].task.error.as_ref().map(|e| e.code.as_str()), Some("expired"));
    let task = get(&store, short.id).await;
    assert_eq!((task.status, task.attempt, task.started_at), (TaskStatus::Expired, 0, None));
    assert_eq!(kinds(&log(&store, short.id).await), [EventKind::Queued, EventKind::Expired]);
}

pub async fn a_parked_attempt_is_unspent_and_holds_its_account(store: S) {
    use crate::lifecycle::Park;
    define(&store, "limited", 1, 10).await;
    let t = store.submit(NewTask::new("limited", json!("x"))).await.unwrap().task;
    let claimed = claim_one(&store, "w1", "limited", LONG).await;
    // the store's claims run on the real clock: the limit resets soon, and is waited for
    let until = Micros::now().plus(Duration::from_millis(500));
    let park =
        Park { until, spread: Duration::ZERO, account: "acct-parked".into(), reason: "usage limit reached".into() };
    assert_fenced(store.park(t.id, 2, vec![], park.clone()).await, t.id, "a park of another attempt");
    let change = store.park(t.id, claimed.task.attempt, vec![output(1)], park.clone()).await.unwrap();
    assert_eq!(
        (change.task.status, change.task.run_at, change.task.worker.as_deref()),
        (TaskStatus::Parked, Some(until), None)
    );
    assert_eq!(kinds(&change.events), [EventKind::Output, EventKind::Parked]);
    assert_eq!(change.events[1].data["account"], "acct-parked");
    assert_eq!(get(&store, t.id).await, change.task, "a parked task round-trips");
    assert_fenced(store.park(t.id, 1, vec![], park.clone()).await, t.id, "a second park of the same attempt");
    let holds = store.account_holds(Micros::now()).await.unwrap();
    let hold = holds.iter().find(|h| h.account == "acct-parked").expect("the account is held");
    assert_eq!((hold.until, hold.reason.as_str()), (until, "usage limit reached"));
    assert!(store.account_holds(until).await.unwrap().iter().all(|h| h.account != "acct-parked"), "a hold ends");
    // an earlier reset never shortens a hold
    let sooner = Park { until: Micros::now().plus(Duration::from_millis(100)), ..park.clone() };
    let other = store.submit(NewTask::new("limited", json!("y"))).await.unwrap().task;
    let c = claim_one(&store, "w1", "limited", LONG).await;
    assert_eq!(c.task.id, other.id);
    store.park(other.id, 1, vec![], sooner).await.unwrap();
    let holds = store.account_holds(Micros::now()).await.unwrap();
    assert_eq!(holds.iter().find(|h| h.account == "acct-parked").map(|h| h.until), Some(until));
    assert_eq!(store.queue_stats().await.unwrap().parked, 2);
    let c = store.request_cancel(other.id).await.unwrap();
    assert_eq!((c.task.status, c.task.run_at), (TaskStatus::Cancelled, None), "a parked task is cancelled at once");

    // the reset: queued again, and the next attempt runs though max_attempts is 1
    assert!(store.advance_timers(Micros(until.0 - 1), 100).await.unwrap().is_empty(), "parked until the reset");
    tokio::time::sleep(Duration::from_millis(550)).await;
    let moved = store.advance_timers(until, 100).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].task.status, &moved[0].events[0].data["after"]), (TaskStatus::Queued, &json!("parked")));
    let again = claim_one(&store, "w1", "limited", LONG).await;
    assert_eq!((again.task.id, again.task.attempt), (t.id, 2));
    let done = store.complete(t.id, 2, vec![], failure(true)).await.unwrap();
    assert_eq!(done.task.status, TaskStatus::Failed, "one attempt spent of one allowed");
}

pub async fn a_schedule_fires_each_fire_time_once_with_its_cursor(store: S) {
    use crate::Fire;
    use smith_core::schedule::{Overlap, Schedule};
    let t0 = Micros(1_800_000_000_000_000);
    let two = Duration::from_secs(2);
    let schedule = |id: &str, tenant: &str| Schedule {
        id: id.into(),
        tenant: tenant.into(),
        name: format!("{id} every 2 s"),
        agent: "echo".into(),
        input: json!({"n": 1}),
        metadata: json!({"team": "a"}),
        priority: 3,
        timeout_ms: Some(60_000),
        max_attempts: Some(2),
        cron: "*/2 * * * * *".into(),
        timezone: "Europe/Berlin".into(),
        overlap: Overlap::Skip,
        catchup: Duration::from_secs(60),
        paused: false,
        next_fire_at: Some(t0),
        last_fire_at: None,
        last_task_id: None,
        last_task_status: None,
        skipped: 0,
        last_skipped_at: None,
        missed: 0,
        created_at: Micros(1_000_000),
        updated_at: Micros(1_000_000),
    };
    let a = schedule("sch-a", "acme");
    let b = Schedule { next_fire_at: Some(t0.plus(Duration::from_secs(3600))), ..schedule("sch-b", "globex") };
    store.create_schedule(&a).await.unwrap();
    store.create_schedule(&b).await.unwrap();
    let dup = store.create_schedule(&a).await;
    assert!(matches!(&dup, Err(e) if e.code() == Code::Conflict), "{dup:?}");
    let bad = Schedule { cron: "* *".into(), ..schedule("sch-c", "acme") };
    assert!(store.create_schedule(&bad).await.is_err(), "a malformed cron is refused");
    assert_eq!(store.get_schedule("sch-a").await.unwrap().as_ref(), Some(&a), "every field");
    assert_eq!(store.schedules(Some("acme")).await.unwrap(), vec![a.clone()]);
    assert_eq!(store.schedules(None).await.unwrap(), vec![a.clone(), b.clone()], "oldest first");
    assert!(store.get_schedule("nope").await.unwrap().is_none());

    // due: by the cursor, earliest first
    assert!(store.due_schedules(Micros(t0.0 - 1), 10).await.unwrap().is_empty());
    assert_eq!(store.next_schedule_fire().await.unwrap(), Some(t0));
    let due = store.due_schedules(t0, 10).await.unwrap();
    assert_eq!(due.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["sch-a"]);

    // a fire submits its task and moves the cursor in one write; a second try of it does neither
    let fire = |from: Micros, task: bool| Fire {
        schedule: "sch-a".into(),
        from,
        to: Some(from.plus(two)),
        fire_at: from,
        task: task.then(|| a.task_for(from)),
        skipped: false,
        missed: 0,
    };
    // a fire whose task is refused (its agent is gone) moves nothing
    let mut ghost = a.task_for(t0);
    ghost.agent = "nobody".into();
    let refused = store.fire_schedule(Fire { task: Some(ghost), ..fire(t0, false) }).await;
    assert!(matches!(&refused, Err(e) if e.code() == Code::Unprocessable), "{refused:?}");
    assert_eq!(store.get_schedule("sch-a").await.unwrap().unwrap().next_fire_at, Some(t0), "refused: nothing moved");
    let first = store.fire_schedule(fire(t0, true)).await.unwrap().expect("a fire that ran");
    assert!(first.created);
    assert_eq!(first.task.idempotency_key.as_deref(), Some(smith_core::schedule::fire_key("sch-a", t0).as_str()));
    assert_eq!((first.task.tenant.as_str(), first.task.priority), ("acme", 3));
    assert_eq!(first.task.metadata["schedule_id"], json!("sch-a"));
    let again = store.fire_schedule(fire(t0, true)).await;
    assert!(matches!(&again, Err(e) if e.code() == Code::Conflict), "a fire time fires once: {again:?}");

    // two leaders firing the next fire time at once: one wins, the other writes nothing
    let t1 = t0.plus(two);
    let (x, y) = tokio::join!(store.fire_schedule(fire(t1, true)), store.fire_schedule(fire(t1, true)));
    let won: Vec<_> = [&x, &y].into_iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "exactly one fire of {t1:?}: {x:?} {y:?}");
    assert!([&x, &y].iter().any(|r| matches!(r, Err(e) if e.code() == Code::Conflict)));
    let page = store.list_tasks(&TaskQuery { tenant: Some("acme".into()), limit: 10, ..Default::default() }).await;
    let keys: HashSet<String> = page.unwrap().items.into_iter().filter_map(|t| t.idempotency_key).collect();
    assert_eq!(keys.len(), 2, "one task per fire time: {keys:?}");
    let now = store.get_schedule("sch-a").await.unwrap().unwrap();
    let second = match (&x, &y) {
        (Ok(Some(s)), _) | (_, Ok(Some(s))) => s.task.id,
        _ => unreachable!("one fire won"),
    };
    assert_eq!((now.next_fire_at, now.last_fire_at, now.last_task_id), (Some(t1.plus(two)), Some(t1), Some(second)));
    assert_eq!(now.last_task_status, Some(TaskStatus::Queued), "the last run's status is read with it");

    // a skipped fire and missed ones move the cursor and are counted; no task
    let t2 = t1.plus(two);
    let skip = Fire { skipped: true, missed: 3, task: None, ..fire(t2, false) };
    assert!(store.fire_schedule(skip).await.unwrap().is_none());
    let now = store.get_schedule("sch-a").await.unwrap().unwrap();
    assert_eq!((now.skipped, now.missed, now.last_skipped_at), (1, 3, Some(t2)));
    assert_eq!((now.next_fire_at, now.last_task_id), (Some(t2.plus(two)), Some(second)), "the last run stays");

    // paused: no cursor, not due, not fired; resumed at the cursor given
    let paused = store.set_schedule_paused("sch-a", true, None).await.unwrap().unwrap();
    assert!(paused.paused && paused.next_fire_at.is_none());
    assert!(store
        .due_schedules(t0.plus(Duration::from_secs(86_400)), 10)
        .await
        .unwrap()
        .iter()
        .all(|s| s.id != "sch-a"));
    let late = store.fire_schedule(fire(t2.plus(two), true)).await;
    assert!(matches!(&late, Err(e) if e.code() == Code::Conflict), "{late:?}");
    let t9 = t0.plus(Duration::from_secs(90));
    let resumed = store.set_schedule_paused("sch-a", false, Some(t9)).await.unwrap().unwrap();
    assert_eq!((resumed.paused, resumed.next_fire_at), (false, Some(t9)));
    assert!(store.set_schedule_paused("nope", true, None).await.unwrap().is_none());

    // deleted: gone, its tasks stay
    assert!(store.delete_schedule("sch-a").await.unwrap());
    assert!(!store.delete_schedule("sch-a").await.unwrap());
    assert!(store.get_schedule("sch-a").await.unwrap().is_none());
    assert!(store.get_task(first.task.id).await.unwrap().is_some());
    let gone = store.fire_schedule(fire(t9, true)).await;
    assert!(matches!(&gone, Err(e) if e.code() == Code::Conflict), "{gone:?}");
}

// ---------------------------------------------------------------------------------------------
// Retention

/// The cutoff of every tenant at `before`, or of one tenant.
fn cutoff(tenant: Option<&str>, except: &[&str], before: Micros) -> Cutoff {
    Cutoff { tenant: tenant.map(str::to_string), except: except.iter().map(|e| e.to_string()).collect(), before }
}

/// Submits a task of `tenant`, runs it as attempt 1 and finishes it having spent `usage`, with
/// artifacts named `artifacts` recorded by the attempt.
async fn finished_with(store: &S, tenant: &str, usage: Usage, artifacts: &[&str]) -> Task {
    let t = submit_as(store, "llm", tenant, 0).await;
    let c = claim(store, "w", "llm", 1, LONG).await;
    assert_eq!(c.first().map(|c| c.task.id), Some(t.id), "the only queued task");
    let arts: Vec<Artifact> = artifacts
        .iter()
        .map(|n| Artifact { name: n.to_string(), size: 2, sha256: "c".repeat(64), created_at: Micros::now() })
        .collect();
    if !arts.is_empty() {
        store.put_artifacts(t.id, 1, arts).await.unwrap();
    }
    store.append(t.id, 1, vec![output(1)]).await.unwrap();
    store.complete(t.id, 1, vec![], Outcome::Succeeded { result: json!(1), usage }).await.unwrap();
    get(store, t.id).await
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn same_usage(a: &[(String, Usage)], b: &[(String, Usage)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, ua), (kb, ub))| {
            ka == kb
                && ua.input_tokens == ub.input_tokens
                && ua.output_tokens == ub.output_tokens
                && close(ua.cost_usd, ub.cost_usd)
        })
}

pub async fn retention_purges_finished_tasks_and_keeps_usage_totals(store: S) {
    alive(&store, "w").await;
    store.put_agents(&[agent("llm", 1, 10)]).await.unwrap();
    let spend = |i: u64, o: u64, c: f64| Usage { input_tokens: i, output_tokens: o, cost_usd: c };
    let a1 = finished_with(&store, "acme", spend(10, 5, 0.5), &["out.txt", "b/c.bin"]).await;
    let a2 = finished_with(&store, "acme", spend(1, 2, 0.125), &[]).await;
    let g1 = finished_with(&store, "globex", spend(7, 7, 0.25), &[]).await;
    let running = submit_as(&store, "llm", "acme", 0).await;
    claim_one(&store, "w", "llm", LONG).await;
    store.append(running.id, 1, vec![output(1)]).await.unwrap();
    let queued = submit_as(&store, "llm", "acme", 0).await;
    // the newest event is a fleet event: no task of the test holds it
    store.append_system(json!({"type": "test"})).await.unwrap();
    let agents_before = store.usage_totals(UsageBy::Agent).await.unwrap();
    let tenants_before = store.usage_totals(UsageBy::Tenant).await.unwrap();
    let acme_agents_before: Vec<(String, Usage)> =
        store.tenant_agents("acme").await.unwrap().into_iter().map(|a| (a.def.name, a.usage)).collect();
    let day = 86_400_000_000i64;
    // one reading of the clock: two would put "midnight" a microsecond before the day began
    let now = Micros::now().0;
    let midnight = Micros(now - now.rem_euclid(day));
    let load_before = store.tenant_load("acme", midnight).await.unwrap();
    assert_eq!(load_before.tokens, 18, "{load_before:?}");
    let head_before = store.feed_head().await.unwrap();
    let later = Micros(Micros::now().0 + 1_000_000);

    // candidates: finished only, oldest first, in the cutoff's scope, with their artifacts
    let every = store.expired_tasks(&cutoff(None, &[], later), 100).await.unwrap();
    let listed: Vec<TaskId> = every.iter().map(|e| e.id).collect();
    assert_eq!(listed, [a1.id, a2.id, g1.id], "finished tasks only, oldest first");
    assert_eq!(every[0].artifacts, ["b/c.bin", "out.txt"]);
    assert_eq!(every[0].tenant, "acme");
    assert_eq!(store.expired_tasks(&cutoff(None, &[], later), 1).await.unwrap().len(), 1, "the limit holds");
    let acme: Vec<TaskId> =
        store.expired_tasks(&cutoff(Some("acme"), &[], later), 100).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(acme, [a1.id, a2.id], "one tenant's");
    let others: Vec<TaskId> =
        store.expired_tasks(&cutoff(None, &["acme"], later), 100).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(others, [g1.id], "every tenant but those with their own ages");
    let earlier = Micros(a1.finished_at.unwrap().0);
    assert!(store.expired_tasks(&cutoff(None, &[], earlier), 100).await.unwrap().is_empty(), "finished before");

    // the purge: unfinished tasks are left alone
    let purged = store.purge_tasks(vec![a1.id, a2.id, running.id, queued.id]).await.unwrap();
    assert_eq!((purged.tasks, purged.kept, purged.artifacts), (2, 2, 2), "{purged:?}");
    assert!(purged.events >= 8, "queued, started, output, succeeded of each: {purged:?}");
    for id in [a1.id, a2.id] {
        assert!(store.get_task(id).await.unwrap().is_none(), "deleted");
        assert!(store.events(id, 0, 100).await.unwrap().is_empty());
        assert!(store.artifacts(id).await.unwrap().is_empty());
    }
    assert_eq!(get(&store, running.id).await.status, TaskStatus::Running);
    assert_eq!(get(&store, queued.id).await.status, TaskStatus::Queued);
    assert_eq!(store.events(running.id, 0, 100).await.unwrap().len(), 3, "a running task's events stay");
    assert_eq!(store.tenant_artifact_bytes("acme").await.unwrap(), 0);

    // usage totals did not move: the rollups and the live rows add up to what they were
    let agents_after = store.usage_totals(UsageBy::Agent).await.unwrap();
    let tenants_after = store.usage_totals(UsageBy::Tenant).await.unwrap();
    assert!(same_usage(&agents_before, &agents_after), "{agents_before:?} / {agents_after:?}");
    assert!(same_usage(&tenants_before, &tenants_after), "{tenants_before:?} / {tenants_after:?}");
    let acme_agents_after: Vec<(String, Usage)> =
        store.tenant_agents("acme").await.unwrap().into_iter().map(|a| (a.def.name, a.usage)).collect();
    assert!(same_usage(&acme_agents_before, &acme_agents_after), "{acme_agents_before:?} / {acme_agents_after:?}");
    let load_after = store.tenant_load("acme", midnight).await.unwrap();
    assert_eq!((load_after.tokens, load_after.queued, load_after.running), (18, 1, 1), "{load_after:?}");
    assert!(close(load_after.cost_usd, load_before.cost_usd), "{load_after:?}");
    let tomorrow = Micros(midnight.0 + day);
    assert_eq!(store.tenant_load("acme", tomorrow).await.unwrap().tokens, 0, "rolled up by day");
    // a second purge of the same ids finds nothing, and the rollups do not count twice
    let again = store.purge_tasks(vec![a1.id, a2.id]).await.unwrap();
    assert_eq!((again.tasks, again.kept), (0, 2));
    assert!(same_usage(&tenants_before, &store.usage_totals(UsageBy::Tenant).await.unwrap()));

    // the feed: positions stand, and each reader is told its own horizon
    assert_eq!(store.feed_head().await.unwrap(), head_before, "the head never moves back");
    let platform = store.feed(0, &FeedFilter::default(), 1000).await.unwrap();
    assert!(purged.horizon > 0 && platform.horizon == purged.horizon, "{purged:?} {platform:?}");
    assert!(platform.events.iter().all(|e| e.task_id != Some(a1.id) && e.task_id != Some(a2.id)));
    assert!(platform.events.iter().any(|e| e.task_id == Some(g1.id)), "another tenant's events stay");
    let reader = |t: &str| FeedFilter { tenant: Some(t.into()), ..Default::default() };
    assert_eq!(store.feed(0, &reader("acme"), 1000).await.unwrap().horizon, purged.horizon);
    assert_eq!(store.feed(0, &reader("globex"), 1000).await.unwrap().horizon, 0, "globex lost nothing");
    let g = store.purge_tasks(vec![g1.id]).await.unwrap();
    assert_eq!(g.tasks, 1);
    assert!(store.feed(0, &reader("globex"), 1000).await.unwrap().horizon > 0);
    assert_eq!(
        store.feed(head_before, &FeedFilter::default(), 10).await.unwrap().horizon,
        g.horizon.max(purged.horizon)
    );
}

pub async fn retention_never_deletes_the_feeds_newest_event(store: S) {
    alive(&store, "w").await;
    store.put_agents(&[agent("llm", 1, 10)]).await.unwrap();
    let first = finished_with(&store, "acme", Usage::default(), &[]).await;
    let last = finished_with(&store, "acme", Usage::default(), &[]).await;
    let head = store.feed_head().await.unwrap();
    let purged = store.purge_tasks(vec![first.id, last.id]).await.unwrap();
    assert_eq!((purged.tasks, purged.kept), (1, 1), "the task holding the newest event waits: {purged:?}");
    assert!(store.get_task(first.id).await.unwrap().is_none());
    assert_eq!(get(&store, last.id).await.status, TaskStatus::Succeeded);
    assert_eq!(store.feed_head().await.unwrap(), head);
    // once a newer event exists it goes, and the next position is still past every old one
    let e = store.append_system(json!({"type": "later"})).await.unwrap();
    assert_eq!(e.pos, head + 1, "no position is handed out twice");
    assert_eq!(store.purge_tasks(vec![last.id]).await.unwrap().tasks, 1);
    let e = store.append_system(json!({"type": "later"})).await.unwrap();
    assert_eq!(e.pos, head + 2);
}

pub async fn retention_purges_artifact_records_of_finished_tasks_only(store: S) {
    alive(&store, "w").await;
    store.put_agents(&[agent("llm", 1, 10)]).await.unwrap();
    let done = finished_with(&store, "acme", Usage::default(), &["a", "b"]).await;
    let plain = finished_with(&store, "acme", Usage::default(), &[]).await;
    let running = submit_as(&store, "llm", "acme", 0).await;
    claim_one(&store, "w", "llm", LONG).await;
    let art = Artifact { name: "r".into(), size: 1, sha256: "d".repeat(64), created_at: Micros::now() };
    store.put_artifacts(running.id, 1, vec![art]).await.unwrap();
    let later = Micros(Micros::now().0 + 1_000_000);
    let expired = store.expired_artifacts(&cutoff(None, &[], later), 100).await.unwrap();
    assert_eq!(expired.len(), 1, "finished tasks with artifacts only: {expired:?}");
    assert_eq!((expired[0].id, expired[0].artifacts.clone()), (done.id, vec!["a".to_string(), "b".to_string()]));
    assert!(store.expired_artifacts(&cutoff(Some("globex"), &[], later), 100).await.unwrap().is_empty());
    let n = store
        .purge_artifacts(vec![(done.id, "a".into()), (done.id, "b".into()), (running.id, "r".into())])
        .await
        .unwrap();
    assert_eq!(n, 2, "a running task's records stay");
    assert!(store.artifacts(done.id).await.unwrap().is_empty());
    assert_eq!(store.artifacts(running.id).await.unwrap().len(), 1);
    assert_eq!(get(&store, done.id).await.status, TaskStatus::Succeeded, "the task itself stays");
    assert!(store.get_task(plain.id).await.unwrap().is_some());
    assert!(store.expired_artifacts(&cutoff(None, &[], later), 100).await.unwrap().is_empty());
}

pub async fn retention_alone_deletes_audit_records(store: S) {
    let t = Micros(1_700_000_000_000_000);
    let at = |s: i64| Micros(t.0 + s * 1_000_000);
    for (s, tenant) in [(0, "acme"), (1, "globex"), (2, "acme"), (3, "acme"), (100, "acme")] {
        store.append_audit(audit_record(at(s), "token", tenant, "task.submit", None, 201)).await.unwrap();
    }
    let acme = |before: i64, limit: usize| {
        let store = store.clone();
        async move { store.purge_audit(&cutoff(Some("acme"), &[], at(before)), limit).await.unwrap() }
    };
    assert_eq!(acme(50, 2).await, 2, "the limit holds");
    assert_eq!(acme(50, 10).await, 1);
    assert_eq!(acme(50, 10).await, 0);
    let left: Vec<(i64, String)> = store
        .audit(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.entry.at.0, r.entry.tenant))
        .collect();
    assert_eq!(left, [(at(1).0, "globex".to_string()), (at(100).0, "acme".to_string())], "oldest of acme's went");
    assert_eq!(store.purge_audit(&cutoff(None, &["globex"], at(50)), 10).await.unwrap(), 0, "globex has its own");
    assert_eq!(store.purge_audit(&cutoff(None, &[], at(50)), 10).await.unwrap(), 1);
    // the newest record stays whatever its age, so appends go on numbered past every deleted one
    assert_eq!(store.purge_audit(&cutoff(None, &[], at(1000)), 10).await.unwrap(), 0, "the newest stays");
    let r = store.append_audit(audit_record(at(200), "token", "acme", "task.submit", None, 201)).await.unwrap();
    assert_eq!(r.id, 6, "{r:?}");
    assert_eq!(store.purge_audit(&cutoff(None, &[], at(1000)), 10).await.unwrap(), 1);
}

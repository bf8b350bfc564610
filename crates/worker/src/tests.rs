//! Unit tests of an attempt's writes against a real (SQLite) store that fails on purpose.

use async_trait::async_trait;
use serde_json::Value;
use smith_core::approval::{Answer, NewRequest};
use smith_core::TaskStatus;
use smith_core::{
    AgentDef, AgentSummary, ApiKey, Approval, Artifact, AuditQuery, AuditRecord, Event, EventDraft, EventKind, Micros,
    NewApiKey, NewAuditRecord, NewTask, Node, NodeStatus, Outcome, Task, TaskId, Usage,
};
use smith_core::{AttemptOutcome, Delivery, NewDelivery, Webhook};
use smith_store::{
    ApprovalQuery, Asked, Change, ClaimRequest, Claimed, Error, FeedFilter, FeedPage, GlobalEvent, GlobalEventQuery,
    Held, PoolStats, QueueStats, Result, Session, Store, Submitted, TaskPage, TaskQuery, TenantLoad, UsageBy,
};
use smith_store::{Cutoff, Expired, Purged};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::{OutputLimits, Worker, WorkerOptions};

/// A store that refuses the first `appends` appends and `completes` completions as a
/// transient outage would (`Unavailable`), and delegates everything else.
struct Flaky {
    inner: Arc<dyn Store>,
    appends: AtomicU32,
    completes: AtomicU32,
    completes_called: AtomicU32,
    /// How long a completion that committed takes to return (ms): a slow store's answer.
    complete_lag_ms: AtomicU32,
}

impl Flaky {
    fn fail(&self, left: &AtomicU32) -> bool {
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[async_trait]
impl Store for Flaky {
    async fn submit(&self, task: NewTask) -> Result<Submitted> {
        self.inner.submit(task).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        self.inner.get_task(id).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        self.inner.list_tasks(query).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        self.inner.claim(request).await
    }

    async fn append(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>) -> Result<Vec<Event>> {
        if self.fail(&self.appends) {
            return Err(Error::Unavailable("flaky: append refused".into()));
        }
        self.inner.append(id, attempt, drafts).await
    }

    async fn complete(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>, outcome: Outcome) -> Result<Change> {
        self.completes_called.fetch_add(1, Ordering::SeqCst);
        if self.fail(&self.completes) {
            return Err(Error::Unavailable("flaky: complete refused".into()));
        }
        let done = self.inner.complete(id, attempt, drafts, outcome).await;
        let lag = self.complete_lag_ms.load(Ordering::SeqCst);
        if lag > 0 {
            tokio::time::sleep(Duration::from_millis(lag.into())).await;
        }
        done
    }

    async fn renew(&self, worker: &str, lease: Duration) -> Result<Vec<Held>> {
        self.inner.renew(worker, lease).await
    }

    async fn release(&self, worker: &str, tasks: &[(TaskId, u32)], reason: &str) -> Result<Vec<Change>> {
        self.inner.release(worker, tasks, reason).await
    }

    async fn reap(&self, now: Micros) -> Result<Vec<Change>> {
        self.inner.reap(now).await
    }

    async fn request_cancel(&self, id: TaskId) -> Result<Change> {
        self.inner.request_cancel(id).await
    }

    async fn events(&self, id: TaskId, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.inner.events(id, after, limit).await
    }

    async fn feed(&self, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage> {
        self.inner.feed(cursor, filter, limit).await
    }

    async fn feed_head(&self) -> Result<u64> {
        self.inner.feed_head().await
    }

    async fn append_system(&self, data: Value) -> Result<Event> {
        self.inner.append_system(data).await
    }

    async fn append_global(&self, event: GlobalEvent) -> Result<Event> {
        self.inner.append_global(event).await
    }

    async fn global_events(&self, query: &GlobalEventQuery) -> Result<Vec<Event>> {
        self.inner.global_events(query).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        self.inner.create_session(session).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        self.inner.get_session(id).await
    }

    async fn usage_totals(&self, by: UsageBy) -> Result<Vec<(String, Usage)>> {
        self.inner.usage_totals(by).await
    }

    async fn tenant_load(&self, tenant: &str, since: Micros) -> Result<TenantLoad> {
        self.inner.tenant_load(tenant, since).await
    }

    async fn put_artifacts(&self, id: TaskId, attempt: u32, artifacts: Vec<Artifact>) -> Result<()> {
        self.inner.put_artifacts(id, attempt, artifacts).await
    }

    async fn artifacts(&self, id: TaskId) -> Result<Vec<Artifact>> {
        self.inner.artifacts(id).await
    }

    async fn tenant_artifact_bytes(&self, tenant: &str) -> Result<u64> {
        self.inner.tenant_artifact_bytes(tenant).await
    }

    async fn request_input(&self, id: TaskId, attempt: u32, request: NewRequest) -> Result<Asked> {
        self.inner.request_input(id, attempt, request).await
    }

    async fn answer_request(&self, id: TaskId, approval: &str, answer: Answer) -> Result<Asked> {
        self.inner.answer_request(id, approval, answer).await
    }

    async fn use_answer(&self, approval: &str) -> Result<()> {
        self.inner.use_answer(approval).await
    }

    async fn get_approval(&self, approval: &str) -> Result<Option<Approval>> {
        self.inner.get_approval(approval).await
    }

    async fn list_approvals(&self, query: &ApprovalQuery) -> Result<Vec<Approval>> {
        self.inner.list_approvals(query).await
    }

    async fn expired_approvals(&self, now: Micros, limit: usize) -> Result<Vec<Approval>> {
        self.inner.expired_approvals(now, limit).await
    }

    async fn advance_timers(&self, now: Micros, limit: usize) -> Result<Vec<Change>> {
        self.inner.advance_timers(now, limit).await
    }

    async fn park(
        &self,
        id: TaskId,
        attempt: u32,
        drafts: Vec<EventDraft>,
        park: smith_store::lifecycle::Park,
    ) -> Result<Change> {
        self.inner.park(id, attempt, drafts, park).await
    }

    async fn account_holds(&self, now: Micros) -> Result<Vec<smith_store::AccountHold>> {
        self.inner.account_holds(now).await
    }

    async fn expired_tasks(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        self.inner.expired_tasks(cutoff, limit).await
    }

    async fn purge_tasks(&self, ids: Vec<TaskId>) -> Result<Purged> {
        self.inner.purge_tasks(ids).await
    }

    async fn expired_artifacts(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        self.inner.expired_artifacts(cutoff, limit).await
    }

    async fn purge_artifacts(&self, records: Vec<(TaskId, String)>) -> Result<u64> {
        self.inner.purge_artifacts(records).await
    }

    async fn purge_audit(&self, cutoff: &Cutoff, limit: usize) -> Result<u64> {
        self.inner.purge_audit(cutoff, limit).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        self.inner.create_api_key(key).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        self.inner.api_key(id).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        self.inner.list_api_keys(tenant).await
    }

    async fn revoke_api_key(&self, id: &str, at: Micros) -> Result<Option<ApiKey>> {
        self.inner.revoke_api_key(id, at).await
    }

    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        self.inner.append_audit(record).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.inner.audit(query).await
    }

    async fn put_agents(&self, defs: &[AgentDef]) -> Result<()> {
        self.inner.put_agents(defs).await
    }

    async fn agents(&self) -> Result<Vec<AgentSummary>> {
        self.inner.agents().await
    }
    async fn tenant_agents(&self, tenant: &str) -> Result<Vec<AgentSummary>> {
        self.inner.tenant_agents(tenant).await
    }
    async fn count_session_tasks(&self, session_id: &str, tenant: &str) -> Result<u64> {
        self.inner.count_session_tasks(session_id, tenant).await
    }

    async fn heartbeat(&self, node: &Node) -> Result<NodeStatus> {
        self.inner.heartbeat(node).await
    }

    async fn set_node_status(&self, id: &str, status: NodeStatus) -> Result<()> {
        self.inner.set_node_status(id, status).await
    }

    async fn readmit_node(&self, id: &str) -> Result<bool> {
        self.inner.readmit_node(id).await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        self.inner.nodes().await
    }

    async fn mark_dead_nodes(&self, stale_before: Micros) -> Result<Vec<Node>> {
        self.inner.mark_dead_nodes(stale_before).await
    }

    async fn size_bytes(&self) -> Result<Option<u64>> {
        self.inner.size_bytes().await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.inner.queue_stats().await
    }

    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.inner.acquire_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.inner.release_lease(name, holder).await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn maintain(&self) -> Result<Option<String>> {
        self.inner.maintain().await
    }

    async fn create_webhook(&self, hook: &Webhook) -> Result<()> {
        self.inner.create_webhook(hook).await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>> {
        self.inner.webhooks(tenant).await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        self.inner.get_webhook(id).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        self.inner.delete_webhook(id).await
    }

    async fn webhook_cursor(&self) -> Result<u64> {
        self.inner.webhook_cursor().await
    }

    async fn enqueue_deliveries(&self, from: u64, to: u64, deliveries: Vec<NewDelivery>) -> Result<()> {
        self.inner.enqueue_deliveries(from, to, deliveries).await
    }

    async fn claim_deliveries(&self, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>> {
        self.inner.claim_deliveries(now, hold, limit).await
    }

    async fn record_attempt(&self, id: &str, outcome: &AttemptOutcome) -> Result<()> {
        self.inner.record_attempt(id, outcome).await
    }

    async fn deliveries(&self, webhook_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        self.inner.deliveries(webhook_id, before, limit).await
    }

    async fn replay_delivery(&self, webhook_id: &str, id: &str, now: Micros) -> Result<Option<Delivery>> {
        self.inner.replay_delivery(webhook_id, id, now).await
    }

    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
        self.inner.pending_deliveries().await
    }

    async fn task_webhooks(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, smith_core::TaskWebhook)>> {
        self.inner.task_webhooks(ids).await
    }

    async fn task_webhooks_live(&self, since: Micros) -> Result<bool> {
        self.inner.task_webhooks_live(since).await
    }

    async fn declare_rate_buckets(&self, specs: &[smith_store::RateSpec]) -> Result<()> {
        self.inner.declare_rate_buckets(specs).await
    }

    async fn take_rate(&self, take: &smith_store::RateTake) -> Result<Option<smith_store::RateGrant>> {
        self.inner.take_rate(take).await
    }

    async fn rate_buckets(&self) -> Result<Vec<smith_store::RateBucket>> {
        self.inner.rate_buckets().await
    }

    async fn create_schedule(&self, schedule: &smith_core::schedule::Schedule) -> Result<()> {
        self.inner.create_schedule(schedule).await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<smith_core::schedule::Schedule>> {
        self.inner.get_schedule(id).await
    }

    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<smith_core::schedule::Schedule>> {
        self.inner.schedules(tenant).await
    }

    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_fire_at: Option<Micros>,
    ) -> Result<Option<smith_core::schedule::Schedule>> {
        self.inner.set_schedule_paused(id, paused, next_fire_at).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        self.inner.delete_schedule(id).await
    }

    async fn due_schedules(&self, now: Micros, limit: usize) -> Result<Vec<smith_core::schedule::Schedule>> {
        self.inner.due_schedules(now, limit).await
    }

    async fn next_schedule_fire(&self) -> Result<Option<Micros>> {
        self.inner.next_schedule_fire().await
    }

    async fn fire_schedule(&self, fire: smith_store::Fire) -> Result<Option<Submitted>> {
        self.inner.fire_schedule(fire).await
    }
}

struct Setup {
    store: Arc<dyn Store>,
    flaky: Arc<Flaky>,
    worker: Worker,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn setup(appends: u32, completes: u32, output: OutputLimits) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let inner =
        smith_store::open(&url, &smith_store::OpenOptions { fsync: false, ..Default::default() }).await.unwrap();
    let flaky = Arc::new(Flaky {
        inner,
        appends: AtomicU32::new(appends),
        completes: AtomicU32::new(completes),
        completes_called: AtomicU32::new(0),
        complete_lag_ms: AtomicU32::new(0),
    });
    let store: Arc<dyn Store> = flaky.clone();
    let bus = smith_bus::open("memory://").await.unwrap();
    let mut opts = WorkerOptions::new("w1", smith_core::AgentDef::builtins());
    opts.poll = Duration::from_millis(20);
    opts.heartbeat = Duration::from_millis(100);
    opts.output = output;
    let worker = Worker::new(opts, store.clone(), bus);
    worker.register().await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(worker.clone().claim_loop(stop.clone()));
    tokio::spawn(worker.clone().lease_keeper(stop.clone()));
    Setup { store, flaky, worker, stop, _dir: dir }
}

impl Setup {
    async fn run(&self, agent: &str, input: Value) -> (Task, Vec<Event>) {
        let id = self.store.submit(NewTask::new(agent, input)).await.unwrap().task.id;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.store.get_task(id).await.unwrap().unwrap();
            if t.status.is_terminal() {
                let events = self.store.events(id, 0, 100_000).await.unwrap();
                return (t, events);
            }
            assert!(tokio::time::Instant::now() < deadline, "task still {} after 20 s", t.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_refused_transiently_is_retried_and_recorded_once() {
    let s = setup(0, 3, OutputLimits::default()).await;
    let (task, events) = s.run("echo", serde_json::json!("hello")).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
    assert_eq!(task.result, Some(serde_json::json!("hello")));
    // one attempt: the executor ran once (a rerun would be attempt 2 with a second start)
    assert_eq!(task.attempt, 1);
    assert_eq!(count(&events, EventKind::Started), 1, "{events:?}");
    assert_eq!(count(&events, EventKind::Succeeded), 1, "{events:?}");
    assert_eq!(s.flaky.completes_called.load(Ordering::SeqCst), 4, "three refusals, then the write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_racing_a_committed_completion_loses_no_lease() {
    // the outcome commits, then the store's answer takes five lease renewals to come back:
    // the renewals no longer hold the task, and that is the completion, not a lost lease
    let s = setup(0, 0, OutputLimits::default()).await;
    s.flaky.complete_lag_ms.store(500, Ordering::SeqCst);
    for i in 0..3 {
        let (task, _) = s.run("echo", serde_json::json!(i)).await;
        assert_eq!(task.status, TaskStatus::Succeeded);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.worker.shared.leases_lost.load(Ordering::Relaxed), 0, "no attempt was stopped as lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_refused_transiently_is_retried_and_loses_nothing() {
    let s = setup(2, 0, OutputLimits::default()).await;
    let (task, events) = s.run("stream", serde_json::json!({"events": 300, "bytes": 10})).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
    assert_eq!(task.attempt, 1);
    assert_eq!(count(&events, EventKind::Output), 300);
    assert_eq!(count(&events, EventKind::Started), 1);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "numbered without gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_event_cap_fails_keeping_what_fit() {
    let s = setup(0, 0, OutputLimits { bytes: 1 << 30, events: 50 }).await;
    let (task, events) = s.run("stream", serde_json::json!({"events": 100_000, "bytes": 10})).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    let error = task.error.expect("an error");
    assert_eq!(error.code, "output_limit_exceeded");
    assert!(error.message.contains("50 events") && error.message.contains("task_events"), "{}", error.message);
    assert_eq!(count(&events, EventKind::Output), 50, "exactly what fit is kept");
    assert_eq!(task.attempt, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_byte_cap_fails_and_a_result_counts() {
    // each event's data is {"i":N,"text":"<100 letters>"}: 120 bytes or so
    let s = setup(0, 0, OutputLimits { bytes: 1000, events: 1_000_000 }).await;
    let (task, events) = s.run("stream", serde_json::json!({"events": 1000, "bytes": 100})).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    let error = task.error.expect("an error");
    assert_eq!(error.code, "output_limit_exceeded");
    assert!(error.message.contains("1000 bytes") && error.message.contains("task_output_bytes"), "{}", error.message);
    let kept: u64 = events.iter().filter(|e| e.kind == EventKind::Output).map(|e| smith_store::json_len(&e.data)).sum();
    assert!(kept <= 1000 && kept > 800, "kept {kept} bytes");
    // within the cap: fine
    let (task, _) = s.run("stream", serde_json::json!({"events": 3, "bytes": 10})).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
    // a result alone over the cap
    // echo writes its input as an event (602 bytes, fits) and as its result (over)
    let (task, _) = s.run("echo", serde_json::json!("x".repeat(600))).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    assert!(task.error.unwrap().message.contains("result"));
}

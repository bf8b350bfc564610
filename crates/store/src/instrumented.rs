//! A [`Store`] that times every operation of another and counts its errors.
//!
//! Every trait method is delegated explicitly, including those with a default body, so the
//! inner backend's own version always runs: a default here would bypass an override there.

use crate::metrics::{ERRORS, OPERATION_DURATION};
use crate::{
    ApprovalQuery, Asked, Change, ClaimRequest, Claimed, Cutoff, Expired, FeedFilter, FeedPage, Fire, GlobalEvent,
    GlobalEventQuery, Held, PoolStats, Purged, QueueStats, RateBucket, RateGrant, RateSpec, RateTake, Result, Session,
    Store, Submitted, TaskPage, TaskQuery, TenantLoad, UsageBy,
};
use async_trait::async_trait;
use serde_json::Value;
use smith_core::approval::{Answer, NewRequest};
use smith_core::schedule::Schedule;
use smith_core::{
    AgentDef, AgentSummary, ApiKey, Approval, Artifact, AttemptOutcome, AuditQuery, AuditRecord, Delivery, Event,
    EventDraft, Micros, NewApiKey, NewAuditRecord, NewDelivery, NewTask, Node, NodeStatus, Outcome, Task, TaskId,
    Usage, Webhook,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records `smith_store_operation_duration_seconds{op}` for every call and
/// `smith_store_errors_total{op,code}` for every error of the store it wraps.
pub struct Instrumented(Arc<dyn Store>);

/// Wraps `store` so its operations are measured.
pub fn instrument(store: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(Instrumented(store))
}

async fn timed<T>(op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
    let start = Instant::now();
    let out = call.await;
    metrics::histogram!(OPERATION_DURATION, "op" => op).record(start.elapsed().as_secs_f64());
    if let Err(e) = &out {
        metrics::counter!(ERRORS, "op" => op, "code" => e.code().as_str()).increment(1);
    }
    out
}

#[async_trait]
impl Store for Instrumented {
    async fn submit(&self, task: NewTask) -> Result<Submitted> {
        timed("submit", self.0.submit(task)).await
    }

    async fn submit_audited(&self, task: NewTask, audit: NewAuditRecord) -> Result<Submitted> {
        timed("submit", self.0.submit_audited(task, audit)).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        timed("get_task", self.0.get_task(id)).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        timed("list_tasks", self.0.list_tasks(query)).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        timed("claim", self.0.claim(request)).await
    }

    async fn append(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>) -> Result<Vec<Event>> {
        timed("append", self.0.append(id, attempt, drafts)).await
    }

    async fn complete(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>, outcome: Outcome) -> Result<Change> {
        timed("complete", self.0.complete(id, attempt, drafts, outcome)).await
    }

    async fn renew(&self, worker: &str, lease: Duration) -> Result<Vec<Held>> {
        timed("renew", self.0.renew(worker, lease)).await
    }

    async fn release(&self, worker: &str, tasks: &[(TaskId, u32)], reason: &str) -> Result<Vec<Change>> {
        timed("release", self.0.release(worker, tasks, reason)).await
    }

    async fn reap(&self, now: Micros) -> Result<Vec<Change>> {
        timed("reap", self.0.reap(now)).await
    }

    async fn request_cancel(&self, id: TaskId) -> Result<Change> {
        timed("request_cancel", self.0.request_cancel(id)).await
    }

    async fn events(&self, id: TaskId, after: u64, limit: usize) -> Result<Vec<Event>> {
        timed("events", self.0.events(id, after, limit)).await
    }

    async fn feed(&self, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage> {
        timed("feed", self.0.feed(cursor, filter, limit)).await
    }

    async fn feed_head(&self) -> Result<u64> {
        timed("feed_head", self.0.feed_head()).await
    }

    async fn append_system(&self, data: Value) -> Result<Event> {
        timed("append_system", self.0.append_system(data)).await
    }

    async fn append_global(&self, event: GlobalEvent) -> Result<Event> {
        timed("append_global", self.0.append_global(event)).await
    }

    async fn global_events(&self, query: &GlobalEventQuery) -> Result<Vec<Event>> {
        timed("global_events", self.0.global_events(query)).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        timed("create_session", self.0.create_session(session)).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        timed("get_session", self.0.get_session(id)).await
    }

    async fn usage_totals(&self, by: UsageBy) -> Result<Vec<(String, Usage)>> {
        timed("usage_totals", self.0.usage_totals(by)).await
    }

    async fn tenant_load(&self, tenant: &str, since: Micros) -> Result<TenantLoad> {
        timed("tenant_load", self.0.tenant_load(tenant, since)).await
    }

    async fn put_artifacts(&self, id: TaskId, attempt: u32, artifacts: Vec<Artifact>) -> Result<()> {
        timed("put_artifacts", self.0.put_artifacts(id, attempt, artifacts)).await
    }

    async fn artifacts(&self, id: TaskId) -> Result<Vec<Artifact>> {
        timed("artifacts", self.0.artifacts(id)).await
    }

    async fn tenant_artifact_bytes(&self, tenant: &str) -> Result<u64> {
        timed("tenant_artifact_bytes", self.0.tenant_artifact_bytes(tenant)).await
    }

    async fn request_input(&self, id: TaskId, attempt: u32, request: NewRequest) -> Result<Asked> {
        timed("request_input", self.0.request_input(id, attempt, request)).await
    }

    async fn answer_request(&self, id: TaskId, approval: &str, answer: Answer) -> Result<Asked> {
        timed("answer_request", self.0.answer_request(id, approval, answer)).await
    }

    async fn use_answer(&self, approval: &str) -> Result<()> {
        timed("use_answer", self.0.use_answer(approval)).await
    }

    async fn get_approval(&self, approval: &str) -> Result<Option<Approval>> {
        timed("get_approval", self.0.get_approval(approval)).await
    }

    async fn list_approvals(&self, query: &ApprovalQuery) -> Result<Vec<Approval>> {
        timed("list_approvals", self.0.list_approvals(query)).await
    }

    async fn expired_approvals(&self, now: Micros, limit: usize) -> Result<Vec<Approval>> {
        timed("expired_approvals", self.0.expired_approvals(now, limit)).await
    }

    async fn advance_timers(&self, now: Micros, limit: usize) -> Result<Vec<Change>> {
        timed("advance_timers", self.0.advance_timers(now, limit)).await
    }

    async fn park(
        &self,
        id: TaskId,
        attempt: u32,
        drafts: Vec<EventDraft>,
        park: crate::lifecycle::Park,
    ) -> Result<Change> {
        timed("park", self.0.park(id, attempt, drafts, park)).await
    }

    async fn account_holds(&self, now: Micros) -> Result<Vec<crate::AccountHold>> {
        timed("account_holds", self.0.account_holds(now)).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        timed("create_api_key", self.0.create_api_key(key)).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        timed("api_key", self.0.api_key(id)).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        timed("list_api_keys", self.0.list_api_keys(tenant)).await
    }

    async fn revoke_api_key(&self, id: &str, at: Micros) -> Result<Option<ApiKey>> {
        timed("revoke_api_key", self.0.revoke_api_key(id, at)).await
    }

    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        timed("append_audit", self.0.append_audit(record)).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        timed("audit", self.0.audit(query)).await
    }

    async fn put_agents(&self, defs: &[AgentDef]) -> Result<()> {
        timed("put_agents", self.0.put_agents(defs)).await
    }

    async fn agents(&self) -> Result<Vec<AgentSummary>> {
        timed("agents", self.0.agents()).await
    }

    async fn tenant_agents(&self, tenant: &str) -> Result<Vec<AgentSummary>> {
        timed("tenant_agents", self.0.tenant_agents(tenant)).await
    }

    async fn count_session_tasks(&self, session_id: &str, tenant: &str) -> Result<u64> {
        timed("count_session_tasks", self.0.count_session_tasks(session_id, tenant)).await
    }

    async fn heartbeat(&self, node: &Node) -> Result<NodeStatus> {
        timed("heartbeat", self.0.heartbeat(node)).await
    }

    async fn set_node_status(&self, id: &str, status: NodeStatus) -> Result<()> {
        timed("set_node_status", self.0.set_node_status(id, status)).await
    }

    async fn readmit_node(&self, id: &str) -> Result<bool> {
        timed("readmit_node", self.0.readmit_node(id)).await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        timed("nodes", self.0.nodes()).await
    }

    async fn mark_dead_nodes(&self, stale_before: Micros) -> Result<Vec<Node>> {
        timed("mark_dead_nodes", self.0.mark_dead_nodes(stale_before)).await
    }

    async fn size_bytes(&self) -> Result<Option<u64>> {
        timed("size_bytes", self.0.size_bytes()).await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        timed("queue_stats", self.0.queue_stats()).await
    }

    fn pool_stats(&self) -> PoolStats {
        self.0.pool_stats()
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        timed("acquire_lease", self.0.acquire_lease(name, holder, ttl)).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        timed("release_lease", self.0.release_lease(name, holder)).await
    }

    async fn ping(&self) -> Result<()> {
        timed("ping", self.0.ping()).await
    }

    async fn maintain(&self) -> Result<Option<String>> {
        timed("maintain", self.0.maintain()).await
    }

    async fn create_webhook(&self, hook: &Webhook) -> Result<()> {
        timed("create_webhook", self.0.create_webhook(hook)).await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>> {
        timed("webhooks", self.0.webhooks(tenant)).await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        timed("get_webhook", self.0.get_webhook(id)).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        timed("delete_webhook", self.0.delete_webhook(id)).await
    }

    async fn webhook_cursor(&self) -> Result<u64> {
        timed("webhook_cursor", self.0.webhook_cursor()).await
    }

    async fn enqueue_deliveries(&self, from: u64, to: u64, deliveries: Vec<NewDelivery>) -> Result<()> {
        timed("enqueue_deliveries", self.0.enqueue_deliveries(from, to, deliveries)).await
    }

    async fn claim_deliveries(&self, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>> {
        timed("claim_deliveries", self.0.claim_deliveries(now, hold, limit)).await
    }

    async fn record_attempt(&self, id: &str, outcome: &AttemptOutcome) -> Result<()> {
        timed("record_attempt", self.0.record_attempt(id, outcome)).await
    }

    async fn deliveries(&self, webhook_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        timed("deliveries", self.0.deliveries(webhook_id, before, limit)).await
    }

    async fn replay_delivery(&self, webhook_id: &str, id: &str, now: Micros) -> Result<Option<Delivery>> {
        timed("replay_delivery", self.0.replay_delivery(webhook_id, id, now)).await
    }

    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
        timed("pending_deliveries", self.0.pending_deliveries()).await
    }

    async fn task_webhooks(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, smith_core::TaskWebhook)>> {
        timed("task_webhooks", self.0.task_webhooks(ids)).await
    }

    async fn task_webhooks_live(&self, since: Micros) -> Result<bool> {
        timed("task_webhooks_live", self.0.task_webhooks_live(since)).await
    }

    async fn declare_rate_buckets(&self, specs: &[RateSpec]) -> Result<()> {
        timed("declare_rate_buckets", self.0.declare_rate_buckets(specs)).await
    }

    async fn take_rate(&self, take: &RateTake) -> Result<Option<RateGrant>> {
        timed("take_rate", self.0.take_rate(take)).await
    }

    async fn rate_buckets(&self) -> Result<Vec<RateBucket>> {
        timed("rate_buckets", self.0.rate_buckets()).await
    }

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        timed("create_schedule", self.0.create_schedule(schedule)).await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>> {
        timed("get_schedule", self.0.get_schedule(id)).await
    }

    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<Schedule>> {
        timed("schedules", self.0.schedules(tenant)).await
    }

    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_fire_at: Option<Micros>,
    ) -> Result<Option<Schedule>> {
        timed("set_schedule_paused", self.0.set_schedule_paused(id, paused, next_fire_at)).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        timed("delete_schedule", self.0.delete_schedule(id)).await
    }

    async fn due_schedules(&self, now: Micros, limit: usize) -> Result<Vec<Schedule>> {
        timed("due_schedules", self.0.due_schedules(now, limit)).await
    }

    async fn next_schedule_fire(&self) -> Result<Option<Micros>> {
        timed("next_schedule_fire", self.0.next_schedule_fire()).await
    }

    async fn fire_schedule(&self, fire: Fire) -> Result<Option<Submitted>> {
        timed("fire_schedule", self.0.fire_schedule(fire)).await
    }

    async fn expired_tasks(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        timed("expired_tasks", self.0.expired_tasks(cutoff, limit)).await
    }

    async fn purge_tasks(&self, ids: Vec<TaskId>) -> Result<Purged> {
        timed("purge_tasks", self.0.purge_tasks(ids)).await
    }

    async fn expired_artifacts(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        timed("expired_artifacts", self.0.expired_artifacts(cutoff, limit)).await
    }

    async fn purge_artifacts(&self, records: Vec<(TaskId, String)>) -> Result<u64> {
        timed("purge_artifacts", self.0.purge_artifacts(records)).await
    }

    async fn purge_audit(&self, cutoff: &Cutoff, limit: usize) -> Result<u64> {
        timed("purge_audit", self.0.purge_audit(cutoff, limit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, OpenOptions};
    use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString};
    use serde_json::json;
    use std::sync::Mutex;

    /// A recorder that keeps every value recorded, as `name{label=value,…}`.
    #[derive(Default, Clone)]
    struct Seen(Arc<Mutex<Vec<(String, f64)>>>);

    struct Handle(String, Seen);

    impl Handle {
        fn push(&self, v: f64) {
            self.1 .0.lock().unwrap().push((self.0.clone(), v));
        }
    }
    impl CounterFn for Handle {
        fn increment(&self, v: u64) {
            self.push(v as f64)
        }
        fn absolute(&self, v: u64) {
            self.push(v as f64)
        }
    }
    impl GaugeFn for Handle {
        fn increment(&self, v: f64) {
            self.push(v)
        }
        fn decrement(&self, v: f64) {
            self.push(-v)
        }
        fn set(&self, v: f64) {
            self.push(v)
        }
    }
    impl HistogramFn for Handle {
        fn record(&self, v: f64) {
            self.push(v)
        }
    }

    impl Seen {
        fn handle(&self, key: &Key) -> Arc<Handle> {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            Arc::new(Handle(format!("{}{{{}}}", key.name(), labels.join(",")), self.clone()))
        }
        fn values(&self, key: &str) -> Vec<f64> {
            self.0.lock().unwrap().iter().filter(|(k, _)| k == key).map(|(_, v)| *v).collect()
        }
    }

    impl metrics::Recorder for Seen {
        fn describe_counter(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }

    #[test]
    fn operations_are_timed_and_errors_counted_by_op_and_code() {
        let seen = Seen::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        metrics::with_local_recorder(&seen, || {
            rt.block_on(async {
                let options = OpenOptions { fsync: false, readers: 1, pool_size: 1 };
                let inner = crate::sqlite::SqliteStore::open(&dir.path().join("s.db"), &options).await.unwrap();
                let store = instrument(Arc::new(inner));
                store.ping().await.unwrap();
                let task = NewTask::new("nobody", json!({}));
                assert!(store.submit(task).await.is_err());
                store.append_system(json!({"what": "test"})).await.unwrap();
                crate::record_pool_stats(store.as_ref());
            })
        });
        assert_eq!(seen.values("smith_store_operation_duration_seconds{op=ping}").len(), 1);
        assert_eq!(seen.values("smith_store_operation_duration_seconds{op=submit}").len(), 1);
        assert_eq!(seen.values("smith_store_errors_total{op=submit,code=unprocessable}"), [1.0]);
        assert!(seen.values("smith_store_errors_total{op=ping,code=unprocessable}").is_empty());
        assert_eq!(seen.values("smith_store_operation_duration_seconds{op=append_system}").len(), 1);
        assert_eq!(seen.values("smith_store_pool_max{}"), [17.0]);
        assert_eq!(seen.values("smith_store_pool_connections{state=idle}").len(), 1);
    }

    /// A store whose only working method is the one with a default body, overridden.
    struct Probe;

    fn no<T>() -> Result<T> {
        Err(Error::Backend("not in the probe".into()))
    }

    #[async_trait]
    impl Store for Probe {
        async fn append_system(&self, data: Value) -> Result<Event> {
            Ok(Event {
                task_id: None,
                seq: 0,
                kind: smith_core::EventKind::System,
                at: Micros(0),
                data,
                agent: Some("probe".into()),
                tenant: None,
                attempt: 0,
                pos: 7,
            })
        }
        async fn append_global(&self, _: GlobalEvent) -> Result<Event> {
            Err(Error::Backend("the default append_system ran".into()))
        }
        async fn submit(&self, _: NewTask) -> Result<Submitted> {
            no()
        }
        async fn get_task(&self, _: TaskId) -> Result<Option<Task>> {
            no()
        }
        async fn list_tasks(&self, _: &TaskQuery) -> Result<TaskPage> {
            no()
        }
        async fn claim(&self, _: &ClaimRequest) -> Result<Vec<Claimed>> {
            no()
        }
        async fn append(&self, _: TaskId, _: u32, _: Vec<EventDraft>) -> Result<Vec<Event>> {
            no()
        }
        async fn complete(&self, _: TaskId, _: u32, _: Vec<EventDraft>, _: Outcome) -> Result<Change> {
            no()
        }
        async fn renew(&self, _: &str, _: Duration) -> Result<Vec<Held>> {
            no()
        }
        async fn release(&self, _: &str, _: &[(TaskId, u32)], _: &str) -> Result<Vec<Change>> {
            no()
        }
        async fn reap(&self, _: Micros) -> Result<Vec<Change>> {
            no()
        }
        async fn request_cancel(&self, _: TaskId) -> Result<Change> {
            no()
        }
        async fn events(&self, _: TaskId, _: u64, _: usize) -> Result<Vec<Event>> {
            no()
        }
        async fn feed(&self, _: u64, _: &FeedFilter, _: usize) -> Result<FeedPage> {
            no()
        }
        async fn feed_head(&self) -> Result<u64> {
            no()
        }
        async fn global_events(&self, _: &GlobalEventQuery) -> Result<Vec<Event>> {
            no()
        }
        async fn create_session(&self, _: &Session) -> Result<()> {
            no()
        }
        async fn get_session(&self, _: &str) -> Result<Option<Session>> {
            no()
        }
        async fn usage_totals(&self, _: UsageBy) -> Result<Vec<(String, Usage)>> {
            no()
        }
        async fn tenant_load(&self, _: &str, _: Micros) -> Result<TenantLoad> {
            no()
        }
        async fn put_artifacts(&self, _: TaskId, _: u32, _: Vec<Artifact>) -> Result<()> {
            no()
        }
        async fn artifacts(&self, _: TaskId) -> Result<Vec<Artifact>> {
            no()
        }
        async fn tenant_artifact_bytes(&self, _: &str) -> Result<u64> {
            no()
        }
        async fn request_input(&self, _: TaskId, _: u32, _: NewRequest) -> Result<Asked> {
            no()
        }
        async fn answer_request(&self, _: TaskId, _: &str, _: Answer) -> Result<Asked> {
            no()
        }
        async fn use_answer(&self, _: &str) -> Result<()> {
            no()
        }
        async fn get_approval(&self, _: &str) -> Result<Option<Approval>> {
            no()
        }
        async fn list_approvals(&self, _: &ApprovalQuery) -> Result<Vec<Approval>> {
            no()
        }
        async fn expired_approvals(&self, _: Micros, _: usize) -> Result<Vec<Approval>> {
            no()
        }
        async fn advance_timers(&self, _: Micros, _: usize) -> Result<Vec<Change>> {
            no()
        }
        async fn park(&self, _: TaskId, _: u32, _: Vec<EventDraft>, _: crate::lifecycle::Park) -> Result<Change> {
            no()
        }
        async fn account_holds(&self, _: Micros) -> Result<Vec<crate::AccountHold>> {
            no()
        }
        async fn create_api_key(&self, _: NewApiKey) -> Result<ApiKey> {
            no()
        }
        async fn api_key(&self, _: &str) -> Result<Option<(ApiKey, String)>> {
            no()
        }
        async fn list_api_keys(&self, _: Option<&str>) -> Result<Vec<ApiKey>> {
            no()
        }
        async fn revoke_api_key(&self, _: &str, _: Micros) -> Result<Option<ApiKey>> {
            no()
        }
        async fn append_audit(&self, _: NewAuditRecord) -> Result<AuditRecord> {
            no()
        }
        async fn audit(&self, _: &AuditQuery) -> Result<Vec<AuditRecord>> {
            no()
        }
        async fn put_agents(&self, _: &[AgentDef]) -> Result<()> {
            no()
        }
        async fn agents(&self) -> Result<Vec<AgentSummary>> {
            no()
        }
        async fn tenant_agents(&self, _: &str) -> Result<Vec<AgentSummary>> {
            no()
        }
        async fn count_session_tasks(&self, _: &str, _: &str) -> Result<u64> {
            no()
        }
        async fn heartbeat(&self, _: &Node) -> Result<NodeStatus> {
            no()
        }
        async fn set_node_status(&self, _: &str, _: NodeStatus) -> Result<()> {
            no()
        }
        async fn readmit_node(&self, _: &str) -> Result<bool> {
            no()
        }
        async fn nodes(&self) -> Result<Vec<Node>> {
            no()
        }
        async fn mark_dead_nodes(&self, _: Micros) -> Result<Vec<Node>> {
            no()
        }
        async fn queue_stats(&self) -> Result<QueueStats> {
            no()
        }
        fn pool_stats(&self) -> PoolStats {
            PoolStats { busy: 1, idle: 2, max: 3 }
        }
        async fn acquire_lease(&self, _: &str, _: &str, _: Duration) -> Result<bool> {
            no()
        }
        async fn release_lease(&self, _: &str, _: &str) -> Result<()> {
            no()
        }
        async fn ping(&self) -> Result<()> {
            no()
        }
        async fn maintain(&self) -> Result<Option<String>> {
            no()
        }
        async fn create_webhook(&self, _: &Webhook) -> Result<()> {
            no()
        }
        async fn webhooks(&self, _: Option<&str>) -> Result<Vec<Webhook>> {
            no()
        }
        async fn get_webhook(&self, _: &str) -> Result<Option<Webhook>> {
            no()
        }
        async fn delete_webhook(&self, _: &str) -> Result<bool> {
            no()
        }
        async fn webhook_cursor(&self) -> Result<u64> {
            no()
        }
        async fn enqueue_deliveries(&self, _: u64, _: u64, _: Vec<NewDelivery>) -> Result<()> {
            no()
        }
        async fn claim_deliveries(&self, _: Micros, _: Duration, _: usize) -> Result<Vec<Delivery>> {
            no()
        }
        async fn record_attempt(&self, _: &str, _: &AttemptOutcome) -> Result<()> {
            no()
        }
        async fn deliveries(&self, _: &str, _: Option<&str>, _: usize) -> Result<Vec<Delivery>> {
            no()
        }
        async fn replay_delivery(&self, _: &str, _: &str, _: Micros) -> Result<Option<Delivery>> {
            no()
        }
        async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
            no()
        }
        async fn task_webhooks(&self, _: &[TaskId]) -> Result<Vec<(TaskId, smith_core::TaskWebhook)>> {
            no()
        }
        async fn task_webhooks_live(&self, _: Micros) -> Result<bool> {
            no()
        }
        async fn declare_rate_buckets(&self, _: &[RateSpec]) -> Result<()> {
            no()
        }
        async fn take_rate(&self, _: &RateTake) -> Result<Option<RateGrant>> {
            no()
        }
        async fn rate_buckets(&self) -> Result<Vec<RateBucket>> {
            no()
        }
        async fn create_schedule(&self, _: &Schedule) -> Result<()> {
            no()
        }
        async fn get_schedule(&self, _: &str) -> Result<Option<Schedule>> {
            no()
        }
        async fn schedules(&self, _: Option<&str>) -> Result<Vec<Schedule>> {
            no()
        }
        async fn set_schedule_paused(&self, _: &str, _: bool, _: Option<Micros>) -> Result<Option<Schedule>> {
            no()
        }
        async fn delete_schedule(&self, _: &str) -> Result<bool> {
            no()
        }
        async fn due_schedules(&self, _: Micros, _: usize) -> Result<Vec<Schedule>> {
            no()
        }
        async fn next_schedule_fire(&self) -> Result<Option<Micros>> {
            no()
        }
        async fn fire_schedule(&self, _: crate::Fire) -> Result<Option<Submitted>> {
            no()
        }
        async fn expired_tasks(&self, _: &Cutoff, _: usize) -> Result<Vec<Expired>> {
            no()
        }
        async fn purge_tasks(&self, _: Vec<TaskId>) -> Result<Purged> {
            no()
        }
        async fn expired_artifacts(&self, _: &Cutoff, _: usize) -> Result<Vec<Expired>> {
            no()
        }
        async fn purge_artifacts(&self, _: Vec<(TaskId, String)>) -> Result<u64> {
            no()
        }
        async fn purge_audit(&self, _: &Cutoff, _: usize) -> Result<u64> {
            no()
        }
    }

    #[tokio::test]
    async fn methods_with_default_bodies_reach_the_inner_override() {
        let store = instrument(Arc::new(Probe));
        let e = store.append_system(json!({"x": 1})).await.expect("the inner append_system");
        assert_eq!((e.agent.as_deref(), e.pos), (Some("probe"), 7));
        assert_eq!(store.pool_stats(), PoolStats { busy: 1, idle: 2, max: 3 });
    }
}

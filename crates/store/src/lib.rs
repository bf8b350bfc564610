//! The durable store: tasks as a leased priority queue, per-task event logs, agents and nodes.
//!
//! Backends sit behind the object-safe [`Store`] trait and are chosen by URL in [`open`].
//! Every backend passes the same `conformance` suite.

mod access;
mod approvals;
mod artifacts;
mod caps;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod error;
mod instrumented;
mod keys;
pub mod lifecycle;
pub mod metrics;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rates;
mod retention;
mod schedules;
pub mod sqlite;
pub mod timers;
mod webhooks;

pub use access::AUDIT_LIMIT;
pub use approvals::{ApprovalQuery, Asked, APPROVAL_LIMIT};
pub use caps::RunningCaps;
pub use error::{Error, Result};
pub use instrumented::{instrument, Instrumented};
pub use keys::KeyCaps;
pub use metrics::{describe_metrics, record_pool_stats};
pub use rates::{RateBucket, RateGrant, RateKind, RateSpec, RateTake};
pub use retention::{Cutoff, Expired, Purged, PURGE_LIMIT};
pub use schedules::Fire;
pub use timers::AccountHold;

use async_trait::async_trait;
use serde_json::Value;
use smith_core::approval::{Answer, NewRequest};
use smith_core::schedule::Schedule;
use smith_core::{
    AgentDef, AgentSummary, ApiKey, Approval, Artifact, AttemptOutcome, AuditQuery, AuditRecord, Delivery, Event,
    EventDraft, EventKind, Micros, NewApiKey, NewAuditRecord, NewDelivery, NewTask, Node, NodeStatus, Outcome, Task,
    TaskId, TaskStatus, TaskWebhook, Usage, Webhook,
};
use std::sync::Arc;
use std::time::Duration;

/// The result of a submission: the task, whether it was created now (false: an existing task
/// with the same idempotency key), and the events written.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: Task,
    pub created: bool,
    pub events: Vec<Event>,
}

/// A task claimed by a worker, with its `task.started` event.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub task: Task,
    pub event: Event,
}

/// What a worker asks for: up to `n` tasks of each agent, in the order given, and at most
/// `limit` in all (each agent may be offered every free slot, since only the store knows
/// which agents have work; the limit keeps the total within the worker's capacity).
///
/// `caps` bounds each tenant's running tasks over every worker: a tenant at its cap gets
/// nothing, and the tasks behind its own are claimed as if it had none queued.
///
/// `keys` names the agents whose running tasks are capped per concurrency key (`max_per_key`):
/// their claims serve the keys in turn and never start a key's task while it has that many
/// running (`keys.rs`). Every other agent's claim is as if it were empty.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub worker: String,
    pub lease: Duration,
    pub wants: Vec<(String, u32)>,
    pub limit: Option<u32>,
    pub caps: Arc<RunningCaps>,
    pub keys: Arc<KeyCaps>,
}

/// A task's state change and the events it wrote.
#[derive(Debug, Clone)]
pub struct Change {
    pub task: Task,
    pub events: Vec<Event>,
}

/// A task still held by a worker after renewing its leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub id: TaskId,
    pub attempt: u32,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub session_id: Option<String>,
    pub parent_id: Option<TaskId>,
    pub limit: usize,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// An input or result longer than this many bytes (as JSON) is left out of its item (the
    /// input reads `null`, the result `None`) and its size reported in [`TaskPage::omitted`];
    /// `None`: every value in full.
    pub value_limit: Option<usize>,
    /// The page ends early once the inputs and results it holds add up to this many bytes
    /// (`next_cursor` then continues it); one item is always returned. `None`: no byte cap.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct TaskPage {
    pub items: Vec<Task>,
    pub next_cursor: Option<String>,
    /// One entry per item, in order: what [`TaskQuery::value_limit`] left out of it.
    pub omitted: Vec<Omitted>,
}

/// The byte sizes of an item's input and result, when they were left out of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Omitted {
    pub input_bytes: Option<u64>,
    pub result_bytes: Option<u64>,
}

impl Omitted {
    /// From the values' sizes (`None` for an absent result) and the page's limit.
    pub fn of(input_bytes: u64, result_bytes: Option<u64>, limit: Option<usize>) -> Omitted {
        let over = |n: u64| limit.is_some_and(|l| n > l as u64);
        Omitted { input_bytes: Some(input_bytes).filter(|n| over(*n)), result_bytes: result_bytes.filter(|n| over(*n)) }
    }

    /// The bytes of the values the item does hold.
    pub fn kept(&self, input_bytes: u64, result_bytes: Option<u64>) -> u64 {
        let input = if self.input_bytes.is_some() { 0 } else { input_bytes };
        let result = if self.result_bytes.is_some() { 0 } else { result_bytes.unwrap_or(0) };
        input + result
    }
}

/// What a feed reader asks for. `tenant` is the reader's tenant (`None`: the platform, which
/// sees every tenant); whatever else it asks, it sees only what [`smith_core::visible_to`]
/// allows it — in the store's SQL (`visible_sql`) as on the live path ([`FeedFilter::accepts`]).
#[derive(Debug, Clone, Default)]
pub struct FeedFilter {
    pub agent: Option<String>,
    pub kinds: Vec<EventKind>,
    pub tenant: Option<String>,
}

impl FeedFilter {
    pub fn matches(&self, e: &Event) -> bool {
        self.accepts(e.kind, e.agent.as_deref(), e.tenant.as_deref())
    }

    /// Whether an event of `kind`, `agent` and `tenant` belongs in this reader's feed. The
    /// tenant is not optional here: a live event is judged by the tenant it carries.
    pub fn accepts(&self, kind: EventKind, agent: Option<&str>, tenant: Option<&str>) -> bool {
        if !smith_core::visible_to(self.tenant.as_deref(), kind, tenant) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return false;
        }
        match &self.agent {
            Some(a) => agent == Some(a.as_str()),
            None => true,
        }
    }
}

/// [`smith_core::visible_to`] as an SQL predicate over the `events` table, for a reader whose
/// tenant is bound at `param` (`?3`, `$4`): its own tenant's rows and tenant-less fleet rows.
/// Both backends use it for every tenant-filtered read of events; the conformance suite checks
/// that it agrees with the Rust rule.
pub(crate) fn visible_sql(param: &str) -> String {
    format!("(tenant = {param} OR (tenant IS NULL AND kind = 'system'))")
}

/// A page of the all-events feed. Every event at or below `cursor` is committed and was
/// considered (returned, or filtered out): a reader resumes after `cursor` without gaps.
#[derive(Debug, Clone)]
pub struct FeedPage {
    pub events: Vec<Event>,
    pub cursor: u64,
    /// True when the page was cut by the limit and more events may follow at once.
    pub more: bool,
    /// The reader's retention horizon, read in the page's snapshot: every event of the
    /// reader's tenant (every tenant's, for the platform) at or below it may have been deleted
    /// (docs/retention.md). 0 while retention has deleted nothing. A reader whose cursor is
    /// below it is told so, and continues from it.
    pub horizon: u64,
}

/// A session: a multi-turn conversation with one agent. Its turns are the tasks carrying its id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: String,
    pub agent: String,
    pub tenant: String,
    pub metadata: Value,
    pub created_at: Micros,
}

/// An event not tied to one task's log: a discovery, a message between agents, a fleet event.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalEvent {
    pub kind: EventKind,
    /// The agent it came from, when an agent made it.
    pub agent: Option<String>,
    /// `None`: every tenant sees it (fleet events).
    pub tenant: Option<String>,
    pub data: Value,
}

/// Which global events to list ([`Store::global_events`]): those of `kinds`, after feed
/// position `after`, oldest first, at most `limit`. `tenant` is the reader's tenant (`None`:
/// the platform); a tenant sees its own events and the fleet's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalEventQuery {
    pub kinds: Vec<EventKind>,
    pub tenant: Option<String>,
    pub after: u64,
    pub limit: usize,
}

/// Usage summed over finished attempts, by agent or by tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Agent,
    Tenant,
}

/// Counts of the queue, for readiness and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub queued: u64,
    pub running: u64,
    /// Tasks parked for a person's answer (`waiting_input`): not load, holding no slot.
    pub waiting: u64,
    /// Tasks submitted to start later, not yet due (`scheduled`): not load either.
    pub scheduled: u64,
    /// Tasks waiting out their provider's usage limit (`parked`).
    pub parked: u64,
    /// Age of the oldest runnable queued task.
    pub oldest_queued_age: Option<Duration>,
}

/// What a tenant has in flight, and what it spent since a time: the figures its quotas check.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TenantLoad {
    /// Queued tasks, with those waiting to be queued (`scheduled`, `parked`).
    pub queued: u64,
    pub running: u64,
    /// Input plus output tokens of the attempts that finished at or after the time asked for
    /// (see [`Store::tenant_load`]).
    pub tokens: u64,
    pub cost_usd: f64,
    /// Bytes of event data and results held by the tenant's tasks that wrote at or after the
    /// time asked for (a task still writing counts everything it wrote).
    pub output_bytes: u64,
}

impl TenantLoad {
    /// From the figures as both backends' SQL reads them: (queued, running, output bytes,
    /// tokens, cost).
    pub(crate) fn from_row((queued, running, output, tokens, cost): (i64, i64, i64, i64, f64)) -> TenantLoad {
        TenantLoad {
            queued: queued as u64,
            running: running as u64,
            tokens: tokens as u64,
            cost_usd: cost,
            output_bytes: output as u64,
        }
    }
}

/// Connections of a store's pool, for metrics. Read from counters: no I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections in use now.
    pub busy: u32,
    /// Connections open and waiting to be used.
    pub idle: u32,
    /// The pool's size limit.
    pub max: u32,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a task and its `task.queued` event in one transaction; a repeated
    /// `(tenant, idempotency_key)` returns the existing task with `created = false`.
    /// Fills `max_attempts` and `timeout_ms` from the agent definition; an unknown agent is an error.
    async fn submit(&self, task: NewTask) -> Result<Submitted>;

    /// [`submit`](Store::submit) and the audit record of the request that made it: `audit`'s
    /// `target` becomes the task's id and its `status` 201 when the task was created, 200 when
    /// an idempotent repeat returned it. A backend that can writes both in one transaction, so
    /// a submission is never accepted unaudited and costs one write, not two; this default
    /// writes the record after the task, and a failure to write it is logged (the task stands).
    async fn submit_audited(&self, task: NewTask, audit: NewAuditRecord) -> Result<Submitted> {
        let submitted = self.submit(task).await?;
        if let Err(e) = self.append_audit(submit_record(audit, &submitted)).await {
            tracing::error!(error = %e, task_id = %submitted.task.id, "cannot write a submission's audit record");
        }
        Ok(submitted)
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>>;

    /// Newest first.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage>;

    /// Claims runnable queued tasks by priority, then age: each becomes `running` with
    /// `attempt + 1`, `worker` and a lease, and gets its `task.started` event. A worker whose
    /// node is quarantined claims nothing (whatever it took would only be reaped again).
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>>;

    /// Appends events to a running task, fenced: only while the task is `running` at `attempt`.
    async fn append(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>) -> Result<Vec<Event>>;

    /// Appends the last events and records the outcome in one fenced transaction. A retryable
    /// failure with attempts left goes back to `queued` after a backoff (`task.retrying`).
    async fn complete(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>, outcome: Outcome) -> Result<Change>;

    /// Renews the leases of every task the worker holds, in one statement; returns them.
    async fn renew(&self, worker: &str, lease: Duration) -> Result<Vec<Held>>;

    /// Hands tasks back for immediate requeue without spending an attempt (drain).
    async fn release(&self, worker: &str, tasks: &[(TaskId, u32)], reason: &str) -> Result<Vec<Change>>;

    /// Requeues (or fails, when attempts are spent) running tasks whose lease ended before `now`,
    /// and those held by a worker that is not alive.
    async fn reap(&self, now: Micros) -> Result<Vec<Change>>;

    /// Records a cancel request. A queued task is cancelled at once; a running task is flagged
    /// for its worker (returned with `status = running`); a terminal task is returned unchanged.
    async fn request_cancel(&self, id: TaskId) -> Result<Change>;

    /// A task's events with `seq > after`, in order.
    async fn events(&self, id: TaskId, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// The all-events feed after `cursor`, commit-ordered.
    async fn feed(&self, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage>;

    /// The feed's current end: a reader starting here sees only events committed later.
    async fn feed_head(&self) -> Result<u64>;

    /// Appends a fleet event (`kind = system`) to the feed.
    async fn append_system(&self, data: Value) -> Result<Event> {
        self.append_global(GlobalEvent { kind: EventKind::System, agent: None, tenant: None, data }).await
    }

    /// Appends an event to the all-events feed only (task id none, seq 0).
    async fn append_global(&self, event: GlobalEvent) -> Result<Event>;

    /// Events not tied to a task, as the query asks.
    async fn global_events(&self, query: &GlobalEventQuery) -> Result<Vec<Event>>;

    /// Creates a session; its agent must exist.
    async fn create_session(&self, session: &Session) -> Result<()>;

    async fn get_session(&self, id: &str) -> Result<Option<Session>>;

    /// Token and cost totals of finished and running attempts, grouped: the live tasks' usage
    /// plus the rollups of tasks retention deleted, read in one snapshot.
    async fn usage_totals(&self, by: UsageBy) -> Result<Vec<(String, Usage)>>;

    /// What a tenant has in flight and has used since `since` (for quotas): its queued and
    /// running tasks, and the tokens (input + output) and USD cost recorded on its tasks whose
    /// usage last grew at or after `since` — the usage [`Store::usage_totals`] sums, dated by
    /// the end of the last attempt that spent (a task retried across `since` counts whole).
    /// Its `output_bytes` are the bytes of event data and results (as stored) its tasks wrote
    /// on the UTC day of `since` or later (counted by day: see [`output_day`]). Usage of tasks
    /// retention deleted counts from their rollups, by day: a rollup of the UTC day of `since`
    /// or later counts whole. Cheap: index lookups only.
    async fn tenant_load(&self, tenant: &str, since: Micros) -> Result<TenantLoad>;

    /// Records artifacts of a task whose bytes are stored, fenced like [`Store::append`]: only
    /// while the task is `running` at `attempt` (else `Fenced`). A name the task already has is
    /// replaced; the others it has stay. The records take the task's tenant. `InvalidArgument`
    /// for a name [`smith_core::artifact::check_name`] refuses, a malformed SHA-256 or a name
    /// given twice.
    async fn put_artifacts(&self, id: TaskId, attempt: u32, artifacts: Vec<Artifact>) -> Result<()>;

    /// A task's artifacts, by name (bytewise).
    async fn artifacts(&self, id: TaskId) -> Result<Vec<Artifact>>;

    /// The bytes of every artifact of `tenant`'s tasks (the per-tenant artifact cap).
    async fn tenant_artifact_bytes(&self, tenant: &str) -> Result<u64>;

    /// An attempt asks a person ([`smith_core::approval`]): fenced like [`Store::append`], the
    /// task parks `waiting_input` (unspent, no lease) with the request's event
    /// (`approval.requested` / `input.requested`) and its record, in one write. A task whose
    /// cancel was requested ends cancelled instead, its record `cancelled`.
    async fn request_input(&self, id: TaskId, attempt: u32, request: NewRequest) -> Result<Asked>;

    /// Answers request `approval` of task `id` (by a person, or by its timeout): the record
    /// takes the answer and the task is queued again with the `approval.decided` event, in one
    /// write. `NotFound` for a request the task does not have; `Conflict` when it was answered
    /// already or its task has finished.
    async fn answer_request(&self, id: TaskId, approval: &str, answer: Answer) -> Result<Asked>;

    /// Records that an attempt was handed the answer of `approval` (an allow is used once).
    async fn use_answer(&self, approval: &str) -> Result<()>;

    async fn get_approval(&self, approval: &str) -> Result<Option<Approval>>;

    /// Requests, newest first, filtered by tenant, task and status.
    async fn list_approvals(&self, query: &ApprovalQuery) -> Result<Vec<Approval>>;

    /// Pending requests whose time ran out before `now`, oldest deadline first.
    async fn expired_approvals(&self, now: Micros, limit: usize) -> Result<Vec<Approval>>;

    // Time in the queue (`timers`): tasks that start later, expire, or wait out a limit.

    /// The leader's timer pass: `scheduled` and `parked` tasks whose `run_at` passed are queued,
    /// and tasks that never started and are past their time to live end `expired` — at most
    /// `limit` of each kind per call. Returns the changes, to publish.
    async fn advance_timers(&self, now: Micros, limit: usize) -> Result<Vec<Change>>;

    /// An attempt stopped at its provider account's usage limit: its last events, then its
    /// task parks until `park.until` without spending the attempt (`lifecycle::park`), and the
    /// account is held until then, in one write. `Fenced` when the attempt no longer holds it.
    async fn park(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>, park: lifecycle::Park) -> Result<Change>;

    /// Provider accounts held past `now` (no task of theirs is claimed before their `until`).
    async fn account_holds(&self, now: Micros) -> Result<Vec<AccountHold>>;

    /// Creates an API key, created now; `Error` with code `Conflict` if the id exists,
    /// `InvalidArgument` when the id or tenant is empty or the hash is not 64 lowercase hex
    /// digits, `Unprocessable` for a NUL character. Returns it as stored.
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey>;

    /// The key (revoked ones too) and its secret's SHA-256 hex as stored, for a constant-time
    /// comparison by the caller.
    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>>;

    /// Keys of one tenant (or all with `None`), oldest first; never their hashes.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>>;

    /// Revokes a key at `at`; a second revocation keeps the first time. `None` for an unknown id.
    async fn revoke_api_key(&self, id: &str, at: Micros) -> Result<Option<ApiKey>>;

    /// Appends one audit record durably (committed before returning), numbered by the store:
    /// ids increase in commit order, so a reader paging with `after` misses nothing. Records are
    /// never changed or deleted. `Unprocessable` for a NUL character in a field.
    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord>;

    /// Audit records matching the query (every `Some` field narrows; `since <= at < until`;
    /// `id > after`), oldest first, at most `limit` (0, or more than [`AUDIT_LIMIT`], means
    /// [`AUDIT_LIMIT`]).
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;

    /// Replaces the stored agent definitions (built-ins are always kept).
    async fn put_agents(&self, defs: &[AgentDef]) -> Result<()>;

    async fn agents(&self) -> Result<Vec<AgentSummary>>;

    /// The agents with one tenant's queued and running counts and usage only: what that
    /// tenant's credential may see.
    async fn tenant_agents(&self, tenant: &str) -> Result<Vec<AgentSummary>>;

    /// How many tasks of `tenant` carry `session_id` (counted, not read).
    async fn count_session_tasks(&self, session_id: &str, tenant: &str) -> Result<u64>;

    /// Registers or refreshes a node (its heartbeat): its status, heartbeat time and load. A
    /// quarantined node stays quarantined when it reports itself alive or draining (only
    /// [`Store::readmit_node`] lets it back); `stopped` always applies. Returns the status now
    /// stored, so a quarantined node learns it must take no work.
    async fn heartbeat(&self, node: &Node) -> Result<NodeStatus>;

    async fn set_node_status(&self, id: &str, status: NodeStatus) -> Result<()>;

    /// Quarantined → alive; returns whether the node was quarantined (anything else is left as it is).
    async fn readmit_node(&self, id: &str) -> Result<bool>;

    async fn nodes(&self) -> Result<Vec<Node>>;

    /// Alive or draining nodes whose last heartbeat is older than `stale_before` become
    /// `quarantined` (workers) or `dead` (other roles); returns them with their new status. Either
    /// way their running tasks are reaped. Dead, stopped and quarantined nodes are forgotten a
    /// day after their last heartbeat.
    async fn mark_dead_nodes(&self, stale_before: Micros) -> Result<Vec<Node>>;

    async fn queue_stats(&self) -> Result<QueueStats>;

    /// The connection pool's state now, from counters (no I/O).
    fn pool_stats(&self) -> PoolStats;

    /// Takes or renews the named lease for `holder` until `ttl` from now, if it is free, expired
    /// or already held by `holder`; returns whether `holder` holds it now. At most one holder
    /// at a time: the supervisors' leader election.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease up if `holder` holds it (a clean shutdown hands leadership over at once).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<()>;

    /// Housekeeping the leader runs now and then so the queue does not slow down as finished
    /// tasks pile up (PostgreSQL: vacuums the tasks table when it has many dead rows, whatever
    /// the server's autovacuum does). Returns what it did, if anything.
    async fn maintain(&self) -> Result<Option<String>>;

    /// The bytes the store occupies (SQLite: its pages plus the WAL file; PostgreSQL:
    /// `pg_database_size`), for the store-size guard; `None` when the backend cannot tell.
    /// Not free: call it on a timer, never per request.
    async fn size_bytes(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    // Retention (docs/retention.md): the leading supervisor's batched deletes.

    /// Finished tasks ([`TaskStatus::is_terminal`]) in the cutoff's scope that finished before
    /// its time, oldest first, at most `limit` (and [`PURGE_LIMIT`]), each with its artifacts'
    /// names.
    async fn expired_tasks(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>>;

    /// Deletes finished tasks in one write: first their usage is added to the per
    /// tenant/agent/day rollups and each tenant's feed horizon is raised to the highest position
    /// of their events, then the tasks go with their events, artifact records, approvals and
    /// webhook deliveries. A task not finished is left alone, and so is the task holding the
    /// feed's newest event (positions are `max + 1`: deleting the newest would hand its
    /// position out again); both count as [`Purged::kept`].
    async fn purge_tasks(&self, ids: Vec<TaskId>) -> Result<Purged>;

    /// Finished tasks in the cutoff's scope that finished before its time and still have
    /// artifact records, oldest first, at most `limit` (and [`PURGE_LIMIT`]), with their names.
    async fn expired_artifacts(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>>;

    /// Deletes artifact records (task, name) of finished tasks (a running task's are left);
    /// returns how many went.
    async fn purge_artifacts(&self, records: Vec<(TaskId, String)>) -> Result<u64>;

    /// Deletes up to `limit` (and [`PURGE_LIMIT`]) audit records in the cutoff's scope dated
    /// before its time, oldest first, in one write: the only deletion the audit log allows
    /// (its triggers refuse every other UPDATE and DELETE). The newest record always stays, so
    /// ids (`max + 1`) are never handed out twice. Returns how many went.
    async fn purge_audit(&self, cutoff: &Cutoff, limit: usize) -> Result<u64>;

    // Webhooks: subscriptions, the dispatcher's cursor and its deliveries.

    /// Records a subscription; `Conflict` if its id exists.
    async fn create_webhook(&self, hook: &Webhook) -> Result<()>;

    /// Subscriptions of one tenant (every tenant with `None`), oldest first, secrets included:
    /// the caller serves them without.
    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>>;

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>>;

    /// Deletes a subscription and its deliveries; whether it existed.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;

    /// The dispatcher's place in the feed: every event at or below it has its deliveries.
    async fn webhook_cursor(&self) -> Result<u64>;

    /// Records `deliveries` (pending, due now) and moves the cursor from `from` to `to`, in one
    /// transaction: either both or neither. `Conflict` when the cursor is not at `from` (another
    /// dispatcher moved it), and nothing is written.
    async fn enqueue_deliveries(&self, from: u64, to: u64, deliveries: Vec<NewDelivery>) -> Result<()>;

    /// Takes up to `limit` pending deliveries due at `now`, oldest due first, and holds them
    /// until `now + hold` (their `next_at`), so a sender that dies mid-attempt has them sent
    /// again after the hold, and no other sender takes them meanwhile.
    async fn claim_deliveries(&self, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>>;

    /// Records how an attempt of a pending delivery ended (`attempts + 1`); a delivery no
    /// longer pending (delivered, failed, deleted) is left as it is.
    async fn record_attempt(&self, id: &str, outcome: &AttemptOutcome) -> Result<()>;

    /// A subscription's deliveries, newest first, ids below `before` when given, at most `limit`.
    async fn deliveries(&self, webhook_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Delivery>>;

    /// A failed delivery of the subscription becomes pending, due at `now`; `None` if there is
    /// no such delivery, `Conflict` if it is not failed.
    async fn replay_delivery(&self, webhook_id: &str, id: &str, now: Micros) -> Result<Option<Delivery>>;

    /// How many deliveries are pending, by tenant.
    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>>;

    /// The webhooks (secret included) of those of `ids` that have one, in one read: what the
    /// dispatcher looks up for a page of terminal events.
    async fn task_webhooks(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, TaskWebhook)>>;

    /// Whether any task with its own webhook is unfinished, or finished at or after `since`
    /// (one probe of a partial index): when none is and nobody subscribes, the dispatcher
    /// passes the feed over unread.
    async fn task_webhooks_live(&self, since: Micros) -> Result<bool>;

    // Provider rate limits: fleet-wide token buckets (docs/rate-limits.md).

    /// Creates each bucket full, or gives an existing one its new capacity and rate (its
    /// level refilled to now at the old rate, then held to the new capacity).
    async fn declare_rate_buckets(&self, specs: &[RateSpec]) -> Result<()>;

    /// One short write: refills the bucket to now (the store's clock), applies the take's
    /// correction, then grants up to `want` whole units if at least `min` are there. `None`
    /// when the bucket was never declared. Concurrent takes never grant more than the bucket
    /// held.
    async fn take_rate(&self, take: &RateTake) -> Result<Option<RateGrant>>;

    /// Every bucket, its level brought to now, by account and kind.
    async fn rate_buckets(&self) -> Result<Vec<RateBucket>>;
    // Schedules: cron timetables the leader fires (docs/schedules.md).

    /// Records a schedule as given (its cursor computed by the caller); `Conflict` if its id
    /// exists, `InvalidArgument` for what [`smith_core::schedule::check`] refuses.
    async fn create_schedule(&self, schedule: &Schedule) -> Result<()>;

    /// A schedule, with its last fired task's status.
    async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>>;

    /// Schedules of one tenant (every tenant with `None`), oldest first.
    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<Schedule>>;

    /// Pauses a schedule (`next_fire_at: None`: its cursor is cleared, so nothing fires) or
    /// resumes it with the cursor given (the first fire after now: fires missed while paused
    /// are not run). Returns it as it is now; `None` for an unknown id.
    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_fire_at: Option<Micros>,
    ) -> Result<Option<Schedule>>;

    /// Deletes a schedule (its fired tasks stay); whether it existed.
    async fn delete_schedule(&self, id: &str) -> Result<bool>;

    /// Unpaused schedules whose next fire is at or before `now`, earliest first, at most `limit`.
    async fn due_schedules(&self, now: Micros, limit: usize) -> Result<Vec<Schedule>>;

    /// The earliest next fire of any unpaused schedule: when the firing loop must look again.
    async fn next_schedule_fire(&self) -> Result<Option<Micros>>;

    /// One firing step ([`Fire`]): moves the schedule's cursor from `fire.from` to `fire.to`,
    /// records the fire (or the skip and the missed fires), and submits its task, all in one
    /// write. `Conflict` (nothing written) when the cursor is no longer at `from` — another
    /// leader fired it, or it was paused or deleted. Returns the submission, if the fire ran.
    async fn fire_schedule(&self, fire: Fire) -> Result<Option<Submitted>>;
}

/// The task-list cursor of a query: list positions below it (`i64::MAX` for the first page).
pub fn list_before(q: &TaskQuery) -> Result<i64> {
    match &q.cursor {
        None => Ok(i64::MAX),
        Some(s) => Ok(s
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| smith_core::Error::invalid(format!("malformed cursor {s:?}")))?),
    }
}

/// The UTC day a time falls on (days since 1970-01-01): what tenants' output bytes are counted by.
pub fn output_day(at: Micros) -> i64 {
    at.0.div_euclid(86_400_000_000)
}

/// A submission's audit record, completed with what the store decided: the task's id, and 201
/// for a new task or 200 for an idempotent repeat.
pub fn submit_record(audit: NewAuditRecord, submitted: &Submitted) -> NewAuditRecord {
    NewAuditRecord {
        target: Some(submitted.task.id.to_string()),
        status: if submitted.created { 201 } else { 200 },
        ..audit
    }
}

/// The length of a value serialized as JSON (as the store writes it), without building the text.
pub fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // writing to a counter cannot fail, and a Value always serializes
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Opens a store by URL: `sqlite://PATH` (or a bare path), or `postgres://…` (`postgresql://…`)
/// when built with the `postgres` feature. Opening applies pending schema migrations.
pub async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let store = sqlite::SqliteStore::open(std::path::Path::new(path), options).await?;
        return Ok(Arc::new(store));
    }
    if is_postgres(url) {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(postgres::PgStore::open(url, options).await?));
    }
    if url.contains("://") {
        let scheme = url.split("://").next().unwrap_or_default();
        return Err(Error::Config(format!(
            "store URL scheme {scheme:?} is not supported by this build (supported: {SUPPORTED})"
        )));
    }
    let store = sqlite::SqliteStore::open(std::path::Path::new(url), options).await?;
    Ok(Arc::new(store))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(feature = "postgres")]
const SUPPORTED: &str = "sqlite://PATH, postgres://…";
#[cfg(not(feature = "postgres"))]
const SUPPORTED: &str = "sqlite://PATH";

/// Applies pending schema migrations to the store at `url` and says what it did (for
/// `smith migrate`). The embedded store migrates whenever it is opened, so for it this opens it.
pub async fn migrate(url: &str) -> Result<String> {
    #[cfg(feature = "postgres")]
    if is_postgres(url) {
        let applied = postgres::migrate_url(url).await?;
        let latest = postgres::schema_version();
        if applied.is_empty() {
            return Ok(format!("schema already at version {latest}; nothing to apply"));
        }
        let list: Vec<String> = applied.iter().map(|v| v.to_string()).collect();
        return Ok(format!("applied migrations {}; schema now at version {latest}", list.join(", ")));
    }
    open(url, &OpenOptions::default()).await?;
    Ok("embedded store opened; its migrations apply on open and are complete".into())
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `true`: fsync every commit (survives power loss). `false`: survives process crashes only.
    pub fsync: bool,
    pub readers: usize,
    /// Connections per process to a networked store (the seed sizes 30 per service).
    pub pool_size: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { fsync: true, readers: 4, pool_size: 30 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live path's filter: the reader's tenant first, whatever else it asks for.
    #[test]
    fn a_feed_filter_never_accepts_another_tenants_event() {
        use EventKind::{Discovery, Output, System};
        let globex = |kinds: Vec<EventKind>, agent: Option<&str>| FeedFilter {
            agent: agent.map(str::to_string),
            kinds,
            tenant: Some("globex".into()),
        };
        for f in [globex(vec![], None), globex(vec![Output, Discovery], None), globex(vec![], Some("echo"))] {
            assert!(!f.accepts(Output, Some("echo"), Some("acme")), "{f:?}");
            assert!(!f.accepts(Discovery, Some("echo"), Some("acme")), "{f:?}");
            assert!(!f.accepts(Output, Some("echo"), None), "an event of no known tenant: {f:?}");
            assert!(f.accepts(Output, Some("echo"), Some("globex")), "{f:?}");
        }
        assert!(globex(vec![], None).accepts(System, None, None), "fleet events are everyone's");
        assert!(!globex(vec![Output], None).accepts(System, None, None), "unless the kinds leave them out");
        assert!(!globex(vec![], Some("sleep")).accepts(Output, Some("echo"), Some("globex")));
        let platform = FeedFilter::default();
        assert!(platform.accepts(Output, Some("echo"), Some("acme")) && platform.accepts(Output, None, None));
        assert_eq!(visible_sql("?3"), "(tenant = ?3 OR (tenant IS NULL AND kind = 'system'))");
    }
}

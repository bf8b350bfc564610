//! The PostgreSQL store: writer tasks that group-commit every write, reads straight from a pool.
//!
//! Why writers: one commit per write is the wall (a WAL flush each), and a round trip per row
//! is the next one. Callers hand their write to a bounded queue; a writer takes every queued
//! write (up to a cap), runs them as a few statements over the whole batch in one transaction,
//! commits once, and only then answers each caller (`writer.rs`). A caller waits one batch;
//! throughput is batch-sized. The feed's positions are assigned under an advisory lock held to
//! the commit, so they are commit-ordered across every process sharing the database.
//!
//! URL: `postgres://user:password@host:port/database`, with libpq-style parameters; a schema
//! other than the default is chosen with `?options[search_path]=NAME`.

mod access;
mod apply;
mod approvals;
mod artifacts;
mod claims;
mod jobs;
mod keys;
mod liveness;
mod migrate;
mod phases;
mod rates;
mod reads;
mod retention;
mod rows;
mod schedules;
mod timers;
mod webhooks;
mod writer;

use crate::access::{check_audit, check_new_key};
use crate::{
    AgentSummary, ApprovalQuery, Asked, Change, ClaimRequest, Claimed, Cutoff, Error, Expired, FeedFilter, FeedPage,
    GlobalEvent, GlobalEventQuery, Held, OpenOptions, PoolStats, Purged, QueueStats, RateBucket, RateGrant, RateSpec,
    RateTake, Result, Session, Store, Submitted, TaskPage, TaskQuery, TenantLoad, UsageBy,
};
use async_trait::async_trait;
use jobs::{
    AnswerJob, AppendJob, CompleteJob, Job, LeaseJob, Op, ParkJob, ReapJob, ReleaseJob, Submission, TimersJob, WaitJob,
};
use smith_core::approval::{Answer, NewRequest};
use smith_core::schedule::Schedule;
use smith_core::{
    AgentDef, ApiKey, Approval, Artifact, AttemptOutcome, AuditQuery, AuditRecord, Delivery, Event, EventDraft, Micros,
    NewApiKey, NewAuditRecord, NewDelivery, NewTask, Node, NodeStatus, Outcome, Task, TaskId, Usage, Webhook,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// How long opening the store waits for the server before saying it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read or a writer waits for a pooled connection (including connecting one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections for liveness writes (`liveness.rs`): a node's heartbeat and its renewals.
const LIVENESS_CONNECTIONS: u32 = 2;
/// Pooled connections idle longer than this are pinged before use.
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// The class half of the feed's advisory lock key (`"SMFD"`); the other half is the events
/// table's oid, so each schema has its own lock.
const FEED_LOCK_CLASS: i32 = 0x534d_4644;

pub struct PgStore {
    ops: mpsc::Sender<Op>,
    pool: PgPool,
    /// Heartbeats and lease renewals, outside the writers' batches.
    liveness: PgPool,
}

/// Maps a driver error: lost or refused connections and transient server states are
/// `Unavailable` (worth retrying), a value the server cannot store (class 22: a NUL byte in
/// text, a number out of range) is `Unprocessable`, a duplicate is `Conflict`, the rest `Backend`.
pub(super) fn db_error(e: sqlx::Error) -> Error {
    use sqlx::Error as E;
    match &e {
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            Error::Unavailable(format!("PostgreSQL: {e}"))
        }
        E::Configuration(_) => Error::Config(format!("PostgreSQL: {e}")),
        E::Database(d) => {
            let code = d.code().unwrap_or_default();
            // 08: connection exception, 53: insufficient resources, 57P: shutdown or restart,
            // 40001/40P01: serialization failure or deadlock (the batch may be retried)
            let transient =
                ["08", "53", "57P"].iter().any(|c| code.starts_with(c)) || code == "40001" || code == "40P01";
            if transient {
                Error::Unavailable(format!("PostgreSQL: {e}"))
            } else if code.starts_with("22") {
                Error::Domain(smith_core::Error::unprocessable(format!(
                    "PostgreSQL cannot store a value: {}",
                    d.message()
                )))
            } else if d.is_unique_violation() {
                Error::Domain(smith_core::Error::new(smith_core::Code::Conflict, format!("PostgreSQL: {e}")))
            } else {
                Error::Backend(format!("PostgreSQL ({code}): {e}"))
            }
        }
        _ => Error::Backend(format!("PostgreSQL: {e}")),
    }
}

/// A TLS failure that retrying cannot mend: the server's certificate is refused, or TLS is
/// required and the server offers none. sqlx reports a refused certificate as an I/O error.
fn is_tls_refusal(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            let text = io.to_string();
            text.contains("invalid peer certificate") || text.contains("certificate verify failed")
        }
        _ => false,
    }
}

/// The certificate files a PostgreSQL URL names (`sslrootcert`, `sslcert`, `sslkey`) must be
/// readable: sqlx would say only "No such file or directory", at the first connection.
fn check_tls_files(url: &str) -> Result<()> {
    let Some((_, query)) = url.split_once('?') else { return Ok(()) };
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if !matches!(key, "sslrootcert" | "sslcert" | "sslkey") {
            continue;
        }
        let path = percent_decode(value);
        if let Err(e) = std::fs::File::open(&path) {
            return Err(Error::Config(format!("cannot read {key} {path}: {e}")));
        }
    }
    Ok(())
}

/// `%XX` escapes decoded (a URL's query value); anything else as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long a session may sit idle inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION: &str = "5s";

/// Parses the URL and applies the options; never echoes the URL (it may hold a password).
fn connect_options(url: &str, options: &OpenOptions) -> Result<PgConnectOptions> {
    let mut opts =
        PgConnectOptions::from_str(url).map_err(|e| Error::Config(format!("invalid PostgreSQL URL: {e}")))?;
    check_tls_files(url)?;
    if opts.get_application_name().is_none() {
        opts = opts.application_name("smith");
    }
    // Plan every statement for its parameters and the table as it is now. A generic plan, cached
    // after five executions, is frozen at the statistics of that moment: made while the queue was
    // nearly empty it scans the whole table, and keeps doing so as the table grows to millions.
    opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
    // A process frozen inside a transaction (SIGSTOP, a paused VM, a stalled host) would hold
    // its locks — the feed lock every writer of the cluster takes among them — for as long as
    // it stays frozen. The server ends such a transaction (and its connection) instead: ours
    // take milliseconds between statements.
    opts = opts.options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
    if !options.fsync {
        // Commits return before their WAL is flushed: a server crash may lose the last moments
        // of writes (never corrupt them), as `fsync = false` promises.
        opts = opts.options([("synchronous_commit", "off")]);
    }
    Ok(opts)
}

/// Connects once, with a deadline and an error that says what went wrong where.
async fn connect(opts: &PgConnectOptions) -> Result<PgConnection> {
    let database = opts.get_database().unwrap_or(opts.get_username()).to_string();
    // where, without the credentials
    let place = match opts.get_socket() {
        Some(dir) => format!("postgres://{database} (socket in {})", dir.display()),
        None => format!("postgres://{}:{}/{database}", opts.get_host(), opts.get_port()),
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(opts)).await {
        Err(_) => Err(Error::Unavailable(format!(
            "cannot connect to {place}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(sqlx::Error::Database(d))) => {
            let code = d.code().unwrap_or_default().to_string();
            let message = d.message().to_string();
            Err(match code.as_str() {
                "3D000" => Error::Config(format!("cannot open {place}: no such database ({message})")),
                c if c.starts_with("28") => {
                    Error::Config(format!("cannot open {place}: user {:?} refused ({message})", opts.get_username()))
                }
                _ => db_error(sqlx::Error::Database(d)),
            })
        }
        Ok(Err(e)) if is_tls_refusal(&e) => Err(Error::Config(format!("cannot connect to {place}: {e}"))),
        Ok(Err(e)) => Err(Error::Unavailable(format!("cannot connect to {place}: {e}"))),
    }
}

/// Applies pending migrations to the database at `url`; returns the versions applied now.
pub async fn migrate_url(url: &str) -> Result<Vec<u32>> {
    let opts = connect_options(url, &OpenOptions::default())?;
    let mut conn = connect(&opts).await?;
    let applied = migrate::run(&mut conn).await;
    let _ = conn.close().await;
    applied
}

/// The newest schema version this build knows.
pub fn schema_version() -> u32 {
    migrate::latest()
}

impl PgStore {
    /// Connects, applies pending migrations, keeps the built-in agents, and starts the writers.
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Self> {
        let opts = connect_options(url, options)?;
        let mut conn = connect(&opts).await?;
        migrate::run(&mut conn).await?;
        phases::put_agents(&mut conn, &[]).await.map_err(db_error)?;
        let events_oid: i64 = sqlx::query_scalar("SELECT 'events'::regclass::oid::bigint")
            .fetch_one(&mut conn)
            .await
            .map_err(db_error)?;
        let _ = conn.close().await;

        let pool_size = options.pool_size.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            // No round trip before every read, only before reads on connections idle for a while
            // (the server may have restarted or dropped them since).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_CHECK {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(opts.clone());
        // Heartbeats and lease renewals: their own connections, never waiting for the pool's.
        let liveness = PgPoolOptions::new()
            .max_connections(LIVENESS_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(opts);
        // One writer per process. Every process sharing the database already brings its own,
        // and all of them queue for the feed lock; more writers per process only split the same
        // load into smaller batches that queue there too. Measured with gateway, worker and
        // supervisor as separate processes at ~3,400 tasks/s: one writer each gave dispatch
        // p50 7-8 ms / p99 19-26 ms and 6,000-6,400 tasks/s; two each, p50 13-14 ms / p99
        // 32-49 ms and ~5,900 tasks/s; three or four, worse again. The rest of the pool serves reads.
        let writers = 1;
        let (tx, rx) = mpsc::channel(writer::QUEUE_DEPTH);
        // The oid is a u32; the lock key takes its bits as an i32.
        let feed_lock = (FEED_LOCK_CLASS, events_oid as u32 as i32);
        writer::spawn(writers, Arc::new(Mutex::new(rx)), pool.clone(), feed_lock);
        Ok(PgStore { ops: tx, pool, liveness })
    }

    /// Queues a write for the next batch; resolves after its commit.
    async fn write<I, O>(&self, op: fn(Job<I, O>) -> Op, input: I) -> Result<O> {
        let (job, rx) = Job::new(input);
        self.ops.send(op(job)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Unavailable("store writer stopped".into())
}

#[async_trait]
impl Store for PgStore {
    async fn submit(&self, task: NewTask) -> Result<Submitted> {
        task.validate()?;
        self.write(Op::Submit, Submission { task: Box::new(task), audit: None, fire: None }).await
    }

    async fn submit_audited(&self, task: NewTask, audit: NewAuditRecord) -> Result<Submitted> {
        task.validate()?;
        check_audit(&audit)?;
        self.write(Op::Submit, Submission { task: Box::new(task), audit: Some(Box::new(audit)), fire: None }).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        reads::get_task(&self.pool, id).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        reads::list_tasks(&self.pool, query).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.wants.iter().all(|(_, n)| *n == 0) {
            return Ok(Vec::new());
        }
        self.write(Op::Claim, request.clone()).await
    }

    async fn append(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>) -> Result<Vec<Event>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        self.write(Op::Append, AppendJob { id, attempt, drafts }).await
    }

    async fn complete(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>, outcome: Outcome) -> Result<Change> {
        self.write(Op::Complete, CompleteJob { id, attempt, drafts, outcome }).await
    }

    async fn renew(&self, worker: &str, lease: Duration) -> Result<Vec<Held>> {
        liveness::renew(&self.liveness, worker, Micros::now().plus(lease)).await
    }

    async fn release(&self, worker: &str, tasks: &[(TaskId, u32)], reason: &str) -> Result<Vec<Change>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let job = ReleaseJob { worker: worker.to_string(), tasks: tasks.to_vec(), reason: reason.to_string() };
        self.write(Op::Release, job).await
    }

    async fn reap(&self, now: Micros) -> Result<Vec<Change>> {
        // Look first on a reader: the common answer is "nothing", and it must not take a batch.
        let victims = reads::reap_candidates(&self.pool, now).await?;
        if victims.is_empty() {
            return Ok(Vec::new());
        }
        self.write(Op::Reap, ReapJob { now, victims }).await
    }

    async fn request_cancel(&self, id: TaskId) -> Result<Change> {
        self.write(Op::Cancel, id).await
    }

    async fn request_input(&self, id: TaskId, attempt: u32, request: NewRequest) -> Result<Asked> {
        // checked here: a refusal in the batch is a job's answer, never the batch's failure
        request.validate()?;
        self.write(Op::Wait, WaitJob { id, attempt, request }).await
    }

    async fn answer_request(&self, id: TaskId, approval: &str, answer: Answer) -> Result<Asked> {
        self.write(Op::Answer, AnswerJob { id, approval: approval.to_string(), answer }).await
    }

    async fn use_answer(&self, approval: &str) -> Result<()> {
        approvals::use_answer(&self.pool, approval).await
    }

    async fn get_approval(&self, approval: &str) -> Result<Option<Approval>> {
        approvals::get(&self.pool, approval).await
    }

    async fn list_approvals(&self, query: &ApprovalQuery) -> Result<Vec<Approval>> {
        approvals::list(&self.pool, query).await
    }

    async fn expired_approvals(&self, now: Micros, limit: usize) -> Result<Vec<Approval>> {
        approvals::expired(&self.pool, now, limit).await
    }

    async fn advance_timers(&self, now: Micros, limit: usize) -> Result<Vec<Change>> {
        // Look first on a reader: the common answer is "nothing", and it must not take a batch.
        let ids = timers::candidates(&self.pool, now, limit).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(Op::Timers, TimersJob { now, ids }).await
    }

    async fn park(
        &self,
        id: TaskId,
        attempt: u32,
        drafts: Vec<EventDraft>,
        park: crate::lifecycle::Park,
    ) -> Result<Change> {
        self.write(Op::Park, ParkJob { id, attempt, drafts, park }).await
    }

    async fn account_holds(&self, now: Micros) -> Result<Vec<crate::AccountHold>> {
        timers::holds(&self.pool, now).await
    }

    async fn events(&self, id: TaskId, after: u64, limit: usize) -> Result<Vec<Event>> {
        reads::events(&self.pool, id, after, limit).await
    }

    async fn feed(&self, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage> {
        reads::feed(&self.pool, cursor, filter, limit).await
    }

    async fn feed_head(&self) -> Result<u64> {
        reads::feed_head(&self.pool).await
    }

    async fn append_global(&self, event: GlobalEvent) -> Result<Event> {
        self.write(Op::Global, event).await
    }

    async fn global_events(&self, query: &GlobalEventQuery) -> Result<Vec<Event>> {
        reads::global_events(&self.pool, query).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        reads::create_session(&self.pool, session).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        reads::get_session(&self.pool, id).await
    }

    async fn usage_totals(&self, by: UsageBy) -> Result<Vec<(String, Usage)>> {
        reads::usage_totals(&self.pool, by).await
    }

    async fn tenant_load(&self, tenant: &str, since: Micros) -> Result<TenantLoad> {
        access::tenant_load(&self.pool, tenant, since).await
    }

    async fn put_artifacts(&self, id: TaskId, attempt: u32, artifacts: Vec<Artifact>) -> Result<()> {
        crate::artifacts::check(&artifacts)?;
        artifacts::put(&self.pool, id, attempt, &artifacts).await
    }

    async fn artifacts(&self, id: TaskId) -> Result<Vec<Artifact>> {
        artifacts::list(&self.pool, id).await
    }

    async fn tenant_artifact_bytes(&self, tenant: &str) -> Result<u64> {
        artifacts::tenant_bytes(&self.pool, tenant).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        check_new_key(&key)?;
        access::create_api_key(&self.pool, &key, Micros::now()).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        access::api_key(&self.pool, id).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        access::list_api_keys(&self.pool, tenant).await
    }

    async fn revoke_api_key(&self, id: &str, at: Micros) -> Result<Option<ApiKey>> {
        access::revoke_api_key(&self.pool, id, at).await
    }

    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        // checked here: a value the server refused at the batch's end would fail the whole batch
        check_audit(&record)?;
        self.write(Op::Audit, record).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        access::audit(&self.pool, query).await
    }

    async fn put_agents(&self, defs: &[AgentDef]) -> Result<()> {
        for d in defs {
            d.validate()?;
        }
        self.write(Op::PutAgents, defs.to_vec()).await
    }

    async fn agents(&self) -> Result<Vec<AgentSummary>> {
        reads::agents(&self.pool, None).await
    }

    async fn tenant_agents(&self, tenant: &str) -> Result<Vec<AgentSummary>> {
        reads::agents(&self.pool, Some(tenant)).await
    }

    async fn count_session_tasks(&self, session_id: &str, tenant: &str) -> Result<u64> {
        reads::count_session_tasks(&self.pool, session_id, tenant).await
    }

    async fn heartbeat(&self, node: &Node) -> Result<NodeStatus> {
        liveness::heartbeat(&self.liveness, node).await
    }

    async fn set_node_status(&self, id: &str, status: NodeStatus) -> Result<()> {
        self.write(Op::SetNodeStatus, (id.to_string(), status)).await
    }

    async fn readmit_node(&self, id: &str) -> Result<bool> {
        self.write(Op::Readmit, id.to_string()).await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        reads::nodes(&self.pool).await
    }

    async fn mark_dead_nodes(&self, stale_before: Micros) -> Result<Vec<Node>> {
        // judged on the store's clock: silent for longer than `stale_before`'s age now
        self.write(Op::MarkDead, liveness::age(stale_before)).await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        reads::queue_stats(&self.pool, Micros::now()).await
    }

    /// The process's pool, shared by reads and the writer (which holds one connection while it
    /// runs, so `busy` is at least 1 once it has written).
    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = (self.pool.num_idle() as u32).min(size);
        PoolStats { busy: size - idle, idle, max: self.pool.options().get_max_connections() }
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let job = LeaseJob { name: name.to_string(), holder: holder.to_string(), ttl: Some(ttl) };
        self.write(Op::Lease, job).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let job = LeaseJob { name: name.to_string(), holder: holder.to_string(), ttl: None };
        self.write(Op::Lease, job).await.map(|_| ())
    }

    async fn size_bytes(&self) -> Result<Option<u64>> {
        let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(Some(size.max(0) as u64))
    }

    async fn expired_tasks(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        retention::expired_tasks(&self.pool, cutoff, limit).await
    }

    async fn purge_tasks(&self, ids: Vec<TaskId>) -> Result<Purged> {
        retention::purge_tasks(&self.pool, &ids).await
    }

    async fn expired_artifacts(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        retention::expired_artifacts(&self.pool, cutoff, limit).await
    }

    async fn purge_artifacts(&self, records: Vec<(TaskId, String)>) -> Result<u64> {
        retention::purge_artifacts(&self.pool, &records).await
    }

    async fn purge_audit(&self, cutoff: &Cutoff, limit: usize) -> Result<u64> {
        retention::purge_audit(&self.pool, cutoff, limit).await
    }

    async fn maintain(&self) -> Result<Option<String>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables \
             WHERE relid = to_regclass('tasks')",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some((live, dead)) = row else { return Ok(None) };
        // plain VACUUM takes no lock that blocks claims or writes; it only reclaims dead rows
        if dead < 20_000 || dead < live / 5 {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        // Paced like autovacuum (2 ms per cost unit budget) so its I/O does not stall the
        // writers' commits; a manual VACUUM otherwise runs unthrottled.
        sqlx::Executor::execute(&mut *conn, "SET vacuum_cost_delay = 2").await.map_err(db_error)?;
        let done = sqlx::Executor::execute(&mut *conn, "VACUUM (ANALYZE) tasks").await.map_err(db_error);
        let _ = sqlx::Executor::execute(&mut *conn, "RESET vacuum_cost_delay").await;
        done?;
        Ok(Some(format!("vacuumed tasks ({dead} dead rows, {live} live)")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_error)?;
        if self.ops.is_closed() {
            return Err(stopped());
        }
        Ok(())
    }

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        crate::schedules::check(schedule)?;
        schedules::create(&self.pool, schedule).await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>> {
        schedules::get(&self.pool, id).await
    }

    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<Schedule>> {
        schedules::list(&self.pool, tenant).await
    }

    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_fire_at: Option<Micros>,
    ) -> Result<Option<Schedule>> {
        schedules::set_paused(&self.pool, id, paused, next_fire_at).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        schedules::delete(&self.pool, id).await
    }

    async fn due_schedules(&self, now: Micros, limit: usize) -> Result<Vec<Schedule>> {
        schedules::due(&self.pool, now, limit).await
    }

    async fn next_schedule_fire(&self) -> Result<Option<Micros>> {
        schedules::next_fire(&self.pool).await
    }

    async fn fire_schedule(&self, mut fire: crate::Fire) -> Result<Option<Submitted>> {
        let Some(task) = fire.task.take() else {
            schedules::pass_over(&self.pool, &fire).await?;
            return Ok(None);
        };
        task.validate()?;
        let job = Submission { task: Box::new(task), audit: None, fire: Some(Box::new(fire)) };
        self.write(Op::Submit, job).await.map(Some)
    }

    async fn create_webhook(&self, hook: &Webhook) -> Result<()> {
        crate::webhooks::check(hook)?;
        webhooks::create(&self.pool, hook).await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>> {
        webhooks::list(&self.pool, tenant).await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        webhooks::get(&self.pool, id).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        webhooks::delete(&self.pool, id).await
    }

    async fn webhook_cursor(&self) -> Result<u64> {
        webhooks::cursor(&self.pool).await
    }

    async fn enqueue_deliveries(&self, from: u64, to: u64, deliveries: Vec<NewDelivery>) -> Result<()> {
        for d in &deliveries {
            crate::webhooks::check_delivery(d)?;
        }
        webhooks::enqueue(&self.pool, from, to, &deliveries).await
    }

    async fn claim_deliveries(&self, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>> {
        webhooks::claim(&self.pool, now, hold, limit).await
    }

    async fn record_attempt(&self, id: &str, outcome: &AttemptOutcome) -> Result<()> {
        webhooks::record(&self.pool, id, outcome).await
    }

    async fn deliveries(&self, webhook_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        webhooks::list_deliveries(&self.pool, webhook_id, before, limit).await
    }

    async fn replay_delivery(&self, webhook_id: &str, id: &str, now: Micros) -> Result<Option<Delivery>> {
        webhooks::replay(&self.pool, webhook_id, id, now).await
    }

    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
        webhooks::pending(&self.pool).await
    }

    async fn task_webhooks(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, smith_core::TaskWebhook)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        webhooks::task_webhooks(&self.pool, ids).await
    }

    async fn task_webhooks_live(&self, since: Micros) -> Result<bool> {
        webhooks::task_webhooks_live(&self.pool, since).await
    }

    async fn declare_rate_buckets(&self, specs: &[RateSpec]) -> Result<()> {
        for s in specs {
            crate::rates::check_spec(s)?;
        }
        rates::declare(&self.pool, specs).await
    }

    async fn take_rate(&self, take: &RateTake) -> Result<Option<RateGrant>> {
        crate::rates::check_take(take)?;
        rates::take(&self.pool, take).await
    }

    async fn rate_buckets(&self) -> Result<Vec<RateBucket>> {
        rates::list(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_configuration_errors_that_do_not_echo_the_url() {
        for url in ["postgres://user:secret@host:notaport/db", "postgres://user:secret@[::1/db"] {
            match connect_options(url, &OpenOptions::default()) {
                Err(Error::Config(m)) => assert!(!m.contains("secret"), "{url}: {m}"),
                other => panic!("{url}: expected a configuration error, got {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn missing_certificate_files_are_named_configuration_errors() {
        let url = "postgres://u:secret@h/db?sslmode=verify-full&sslrootcert=/no%20such/ca.pem";
        match connect_options(url, &OpenOptions::default()) {
            Err(Error::Config(m)) => {
                assert!(m.contains("sslrootcert /no such/ca.pem"), "{m}");
                assert!(!m.contains("secret"), "{m}");
            }
            other => panic!("expected a configuration error, got {:?}", other.map(|_| ())),
        }
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}

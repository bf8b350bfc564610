//! The embedded SQLite store: one writer thread that group-commits every write, many WAL readers.
//!
//! Why one writer: SQLite serialises writers anyway, and one fsync per task is the wall.
//! Callers send closures to the writer over a bounded channel; it runs every queued closure
//! in one transaction (each inside a savepoint, so one failure does not undo its neighbours),
//! commits once, and only then answers each caller. A caller waits one batch; throughput is
//! batch-sized. A single writer also makes `events.pos` commit-ordered, which the feed relies on.

mod access;
mod approvals;
mod artifacts;
mod keys;
mod ops;
mod rates;
mod retention;
mod schedules;
mod timers;
mod webhooks;

use crate::access::{check_audit, check_new_key};
use crate::{
    AgentSummary, ApprovalQuery, Asked, Change, ClaimRequest, Claimed, Cutoff, Error, Expired, FeedFilter, FeedPage,
    Fire, GlobalEvent, GlobalEventQuery, Held, OpenOptions, PoolStats, Purged, QueueStats, RateBucket, RateGrant,
    RateSpec, RateTake, Result, Session, Store, Submitted, TaskPage, TaskQuery, TenantLoad, UsageBy,
};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use smith_core::approval::{Answer, NewRequest};
use smith_core::schedule::Schedule;
use smith_core::{
    AgentDef, ApiKey, Approval, Artifact, AttemptOutcome, AuditQuery, AuditRecord, Delivery, Event, EventDraft, Micros,
    NewApiKey, NewAuditRecord, NewDelivery, NewTask, Node, NodeStatus, Outcome, Task, TaskId, Usage, Webhook,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_leader.sql"),
    include_str!("../../migrations/sqlite/0003_collaboration.sql"),
    include_str!("../../migrations/sqlite/0004_access.sql"),
    include_str!("../../migrations/sqlite/0005_running_caps.sql"),
    include_str!("../../migrations/sqlite/0006_output_bytes.sql"),
    include_str!("../../migrations/sqlite/0007_task_options.sql"),
    include_str!("../../migrations/sqlite/0008_artifacts.sql"),
    include_str!("../../migrations/sqlite/0009_approvals.sql"),
    include_str!("../../migrations/sqlite/0010_webhooks.sql"),
    include_str!("../../migrations/sqlite/0011_timers.sql"),
    include_str!("../../migrations/sqlite/0012_concurrency_keys.sql"),
    include_str!("../../migrations/sqlite/0013_rate_limits.sql"),
    include_str!("../../migrations/sqlite/0014_schedules.sql"),
    include_str!("../../migrations/sqlite/0015_retention.sql"),
];
/// Closures per transaction at most; bounds one batch's latency.
const MAX_BATCH: usize = 512;
/// Writes waiting for the writer at most; callers wait (backpressure) beyond that.
const QUEUE_DEPTH: usize = 8192;
/// What the WAL file is cut back to when the log restarts.
const WAL_KEEP_BYTES: i64 = 64 << 20;
/// Idle readers kept at most; a burst of reads beyond them opens short-lived extra readers.
const KEEP_READERS: usize = 16;

/// A write waiting for the writer thread. It may run twice: a batch in which a write fails
/// after changing rows is rolled back and run again with each write in its own savepoint.
trait WriteJob: Send {
    fn run(&mut self, tx: &Tx) -> Ran;
    /// Answers the caller once the batch's commit is known.
    fn answer(self: Box<Self>, commit: &Result<(), String>);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    Ok,
    /// Failed before changing anything: the batch may commit around it.
    FailedClean,
    /// Failed (or panicked) after changing rows: those changes must be undone.
    FailedDirty,
}

struct Write<R, F> {
    f: F,
    out: Option<Result<R>>,
    tx: oneshot::Sender<Result<R>>,
}

impl<R: Send, F: Fn(&Tx) -> Result<R> + Send> WriteJob for Write<R, F> {
    fn run(&mut self, tx: &Tx) -> Ran {
        let before = tx.total_changes();
        // a panicking write must not take the writer (and so the whole store) down with it
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.f)(tx)))
            .unwrap_or_else(|_| Err(Error::Backend("a store write panicked; it was rolled back".into())));
        let ran = match &out {
            Ok(_) => Ran::Ok,
            Err(_) if tx.total_changes() == before => Ran::FailedClean,
            Err(_) => Ran::FailedDirty,
        };
        tx.end_write(ran == Ran::Ok);
        self.out = Some(out);
        ran
    }

    fn answer(self: Box<Self>, commit: &Result<(), String>) {
        let res = match commit {
            Ok(()) => self.out.unwrap_or_else(|| Err(Error::Unavailable("store write was not run".into()))),
            Err(e) => Err(Error::Unavailable(format!("commit failed: {e}"))),
        };
        let _ = self.tx.send(res);
    }
}

type Job = Box<dyn WriteJob>;

/// The writer's connection inside a batch's transaction, with what the batch's writes add to
/// `tenant_output`: summed per (tenant, day) and written once, just before the commit — one
/// upsert a batch instead of one per write (a completion would otherwise pay a statement for it).
pub(super) struct Tx<'a> {
    conn: &'a Connection,
    /// Bytes the running write stored, by (tenant, day); kept only if the write succeeds.
    write: std::cell::RefCell<Vec<(String, i64, u64)>>,
    /// Bytes the batch's succeeded writes stored.
    batch: std::cell::RefCell<std::collections::HashMap<(String, i64), u64>>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'a> Tx<'a> {
    fn new(conn: &'a Connection) -> Self {
        Tx { conn, write: Default::default(), batch: Default::default() }
    }

    /// Counts bytes a tenant's task stored on `day` toward its daily total.
    pub(super) fn add_output(&self, tenant: &str, day: i64, bytes: u64) {
        if bytes > 0 {
            self.write.borrow_mut().push((tenant.to_string(), day, bytes));
        }
    }

    /// Ends one write: what it counted joins the batch's totals if it succeeded.
    fn end_write(&self, ok: bool) {
        let mut write = self.write.borrow_mut();
        if ok {
            let mut batch = self.batch.borrow_mut();
            for (tenant, day, bytes) in write.drain(..) {
                *batch.entry((tenant, day)).or_default() += bytes;
            }
        }
        write.clear();
    }

    /// Forgets the batch's totals (its transaction was rolled back).
    fn rolled_back(&self) {
        self.write.borrow_mut().clear();
        self.batch.borrow_mut().clear();
    }

    /// Writes the batch's totals, inside its transaction.
    fn flush_output(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.batch.borrow_mut());
        if batch.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO tenant_output (tenant, day, bytes) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant, day) DO UPDATE SET bytes = bytes + excluded.bytes",
        )?;
        for ((tenant, day), bytes) in batch {
            stmt.execute(rusqlite::params![tenant, day, bytes as i64])?;
        }
        Ok(())
    }
}

pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    /// True while the writer runs a batch.
    writing: Arc<AtomicBool>,
    /// The checkpointer thread runs while this lives.
    _alive: Arc<()>,
    readers: Arc<ReadPool>,
    path: PathBuf,
}

struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    /// Idle connections, mirrored outside the lock for [`Store::pool_stats`].
    idle_count: AtomicU32,
    /// Readers taken and not yet given back.
    busy: AtomicU32,
    path: PathBuf,
}

impl ReadPool {
    fn new(path: PathBuf) -> Self {
        ReadPool { idle: Mutex::new(Vec::new()), idle_count: AtomicU32::new(0), busy: AtomicU32::new(0), path }
    }

    /// A reader, given back when the loan drops (closed instead if its user panicked).
    fn lend(&self) -> Result<Loan<'_>> {
        let conn = self.take()?;
        Ok(Loan { pool: self, conn: Some(conn) })
    }

    fn take(&self) -> Result<Connection> {
        let pooled = {
            let mut idle = self.idle.lock().expect("pool lock");
            let c = idle.pop();
            self.idle_count.store(idle.len() as u32, Ordering::Relaxed);
            c
        };
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path, true, false)?,
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Returns a taken reader (`busy`), or adds a new one to the pool.
    fn give(&self, c: Connection, busy: bool) {
        if busy {
            self.busy.fetch_sub(1, Ordering::Relaxed);
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < KEEP_READERS {
            idle.push(c);
        }
        self.idle_count.store(idle.len() as u32, Ordering::Relaxed);
    }
}

struct Loan<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl std::ops::Deref for Loan<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("a loan holds its connection until dropped")
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if std::thread::panicking() {
            self.pool.busy.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.pool.give(conn, true);
    }
}

fn open_conn(path: &Path, read_only: bool, fsync: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        // The WAL file keeps its high-water mark unless told otherwise: each time the log
        // restarts (every frame checkpointed, the next write begins at its start) SQLite cuts
        // the file back to this size, so a burst's growth does not stay on disk.
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    }
    conn.pragma_update(None, "cache_size", -16_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Config(format!(
            "database schema version {version} is newer than this binary knows ({known}); upgrade smith"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied store migration");
    }
    Ok(())
}

impl SqliteStore {
    pub async fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let fsync = options.fsync;
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let mut conn = open_conn(&p, false, fsync)?;
            retention::prepare_new(&conn)?;
            retention::register(&conn)?;
            migrate(&mut conn)?;
            ops::put_agents(&conn, &[])?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::Backend(e.to_string()))??;

        // Checkpoints run on their own connection and thread, so copying WAL pages back into
        // the database (and its fsync) never stalls the writer.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let alive = Arc::new(());
        let checkpointer = open_conn(&path, false, fsync)?;
        checkpointer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let watch = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("smith-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, watch))
            .map_err(|e| Error::Backend(format!("cannot start checkpoint thread: {e}")))?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writing = Arc::new(AtomicBool::new(false));
        let flag = writing.clone();
        std::thread::Builder::new()
            .name("smith-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &flag))
            .map_err(|e| Error::Backend(format!("cannot start writer thread: {e}")))?;
        let readers = Arc::new(ReadPool::new(path.clone()));
        for _ in 0..options.readers {
            let c = open_conn(&path, true, false)?;
            readers.give(c, false);
        }
        Ok(SqliteStore { writer: tx, writing, _alive: alive, readers, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside the writer's next batch transaction; resolves after the commit.
    async fn write<R: Send + 'static>(&self, f: impl Fn(&Tx) -> Result<R> + Send + 'static) -> Result<R> {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(Write { f, out: None, tx });
        self.writer.send(job).await.map_err(|_| Error::Unavailable("store writer stopped".into()))?;
        rx.await.map_err(|_| Error::Unavailable("store writer stopped".into()))?
    }

    async fn read<R: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<R> + Send + 'static) -> Result<R> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lend()?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Backend(format!("reader panicked: {e}")))?
    }
}

/// Copies committed WAL frames into the database in the background (PASSIVE: never blocks the
/// writer or readers), until the store is dropped.
fn checkpoint_loop(conn: Connection, alive: std::sync::Weak<()>) {
    let mut last_done = 0;
    while alive.upgrade().is_some() {
        let copied =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
        let pause = match copied {
            // behind and making progress: go again soon
            Ok((log, done)) if log > done && done != last_done => {
                last_done = done;
                1
            }
            Ok((_, done)) => {
                last_done = done;
                20
            }
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed");
                200
            }
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, writing: &AtomicBool) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        writing.store(true, Ordering::Relaxed);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = run_batch(&conn, &mut batch);
        if let Err(e) = &commit {
            tracing::error!(error = %e, "store commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch.drain(..) {
            job.answer(&commit);
        }
        writing.store(false, Ordering::Relaxed);
    }
}

/// Runs a batch in one transaction. Fast path: no savepoints (they copy every page a write
/// touches). Only when a write fails after changing rows is the batch undone and run again
/// with each write in its own savepoint.
fn run_batch(conn: &Connection, batch: &mut [Job]) -> Result<(), String> {
    let tx = Tx::new(conn);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    let dirty = batch.iter_mut().any(|job| job.run(&tx) == Ran::FailedDirty);
    if dirty {
        conn.execute_batch("ROLLBACK").map_err(|e| e.to_string())?;
        tx.rolled_back();
        conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
        for job in batch.iter_mut() {
            conn.execute_batch("SAVEPOINT job").map_err(|e| e.to_string())?;
            if job.run(&tx) != Ran::Ok {
                conn.execute_batch("ROLLBACK TO job").map_err(|e| e.to_string())?;
            }
            conn.execute_batch("RELEASE job").map_err(|e| e.to_string())?;
        }
    }
    tx.flush_output().map_err(|e| format!("cannot add the batch's output bytes: {e}"))?;
    conn.execute_batch("COMMIT").map_err(|e| e.to_string())
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, task: NewTask) -> Result<Submitted> {
        task.validate()?;
        self.write(move |c| ops::submit(c, &task, Micros::now())).await
    }

    async fn submit_audited(&self, task: NewTask, audit: NewAuditRecord) -> Result<Submitted> {
        task.validate()?;
        check_audit(&audit)?;
        self.write(move |c| {
            let submitted = ops::submit(c, &task, Micros::now())?;
            access::append_audit(c, &crate::submit_record(audit.clone(), &submitted))?;
            Ok(submitted)
        })
        .await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        self.read(move |c| ops::get_task(c, id)).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        let q = query.clone();
        self.read(move |c| ops::list_tasks(c, &q)).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        let r = request.clone();
        self.write(move |c| ops::claim(c, &r, Micros::now())).await
    }

    async fn append(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>) -> Result<Vec<Event>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |c| ops::append(c, id, attempt, &drafts, Micros::now())).await
    }

    async fn complete(&self, id: TaskId, attempt: u32, drafts: Vec<EventDraft>, outcome: Outcome) -> Result<Change> {
        self.write(move |c| ops::complete(c, id, attempt, &drafts, &outcome, Micros::now())).await
    }

    async fn renew(&self, worker: &str, lease: Duration) -> Result<Vec<Held>> {
        let w = worker.to_string();
        self.write(move |c| ops::renew(c, &w, Micros::now().plus(lease))).await
    }

    async fn release(&self, worker: &str, tasks: &[(TaskId, u32)], reason: &str) -> Result<Vec<Change>> {
        let (w, t, r) = (worker.to_string(), tasks.to_vec(), reason.to_string());
        self.write(move |c| ops::release(c, &w, &t, &r, Micros::now())).await
    }

    async fn reap(&self, now: Micros) -> Result<Vec<Change>> {
        // Look first on a reader: the common answer is "nothing", and it must not hold the writer.
        let victims = self.read(move |c| ops::reap_candidates(c, now)).await?;
        if victims.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |c| ops::reap(c, &victims, now)).await
    }

    async fn request_cancel(&self, id: TaskId) -> Result<Change> {
        self.write(move |c| ops::request_cancel(c, id, Micros::now())).await
    }

    async fn events(&self, id: TaskId, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.read(move |c| ops::events(c, id, after, limit)).await
    }

    async fn feed(&self, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage> {
        let f = filter.clone();
        self.read(move |c| ops::feed(c, cursor, &f, limit)).await
    }

    async fn feed_head(&self) -> Result<u64> {
        self.read(|c| Ok(c.query_row("SELECT coalesce(max(pos), 0) FROM events", [], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    async fn append_global(&self, event: GlobalEvent) -> Result<Event> {
        self.write(move |c| ops::append_global(c, &event, Micros::now())).await
    }

    async fn global_events(&self, query: &GlobalEventQuery) -> Result<Vec<Event>> {
        let query = query.clone();
        self.read(move |c| ops::global_events(c, &query)).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        let s = session.clone();
        self.write(move |c| ops::create_session(c, &s)).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_string();
        self.read(move |c| ops::get_session(c, &id)).await
    }

    async fn usage_totals(&self, by: UsageBy) -> Result<Vec<(String, Usage)>> {
        self.read(move |c| ops::usage_totals(c, by)).await
    }

    async fn tenant_load(&self, tenant: &str, since: Micros) -> Result<TenantLoad> {
        let tenant = tenant.to_string();
        self.read(move |c| access::tenant_load(c, &tenant, since)).await
    }

    async fn put_artifacts(&self, id: TaskId, attempt: u32, artifacts: Vec<Artifact>) -> Result<()> {
        crate::artifacts::check(&artifacts)?;
        self.write(move |c| artifacts::put(c, id, attempt, &artifacts)).await
    }

    async fn request_input(&self, id: TaskId, attempt: u32, request: NewRequest) -> Result<Asked> {
        self.write(move |c| approvals::request(c, id, attempt, &request, Micros::now())).await
    }

    async fn answer_request(&self, id: TaskId, approval: &str, answer: Answer) -> Result<Asked> {
        let approval = approval.to_string();
        self.write(move |c| approvals::answer(c, id, &approval, answer.clone(), Micros::now())).await
    }

    async fn use_answer(&self, approval: &str) -> Result<()> {
        let approval = approval.to_string();
        self.write(move |c| approvals::use_answer(c, &approval)).await
    }

    async fn get_approval(&self, approval: &str) -> Result<Option<Approval>> {
        let approval = approval.to_string();
        self.read(move |c| approvals::get(c, &approval)).await
    }

    async fn list_approvals(&self, query: &ApprovalQuery) -> Result<Vec<Approval>> {
        let q = query.clone();
        self.read(move |c| approvals::list(c, &q)).await
    }

    async fn expired_approvals(&self, now: Micros, limit: usize) -> Result<Vec<Approval>> {
        self.read(move |c| approvals::expired(c, now, limit)).await
    }

    async fn advance_timers(&self, now: Micros, limit: usize) -> Result<Vec<Change>> {
        // Look first on a reader: the common answer is "nothing", and it must not hold the writer.
        let ids = self.read(move |c| timers::candidates(c, now, limit)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |c| timers::advance(c, &ids, now)).await
    }

    async fn park(
        &self,
        id: TaskId,
        attempt: u32,
        drafts: Vec<EventDraft>,
        park: crate::lifecycle::Park,
    ) -> Result<Change> {
        self.write(move |c| timers::park(c, id, attempt, &drafts, &park, Micros::now())).await
    }

    async fn account_holds(&self, now: Micros) -> Result<Vec<crate::AccountHold>> {
        self.read(move |c| timers::holds(c, now)).await
    }

    async fn artifacts(&self, id: TaskId) -> Result<Vec<Artifact>> {
        self.read(move |c| artifacts::list(c, id)).await
    }

    async fn tenant_artifact_bytes(&self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_string();
        self.read(move |c| artifacts::tenant_bytes(c, &tenant)).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        check_new_key(&key)?;
        self.write(move |c| access::create_api_key(c, &key, Micros::now())).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        let id = id.to_string();
        self.read(move |c| access::api_key(c, &id)).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        let tenant = tenant.map(str::to_string);
        self.read(move |c| access::list_api_keys(c, tenant.as_deref())).await
    }

    async fn revoke_api_key(&self, id: &str, at: Micros) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.write(move |c| access::revoke_api_key(c, &id, at)).await
    }

    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        check_audit(&record)?;
        self.write(move |c| access::append_audit(c, &record)).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let q = query.clone();
        self.read(move |c| access::audit(c, &q)).await
    }

    async fn put_agents(&self, defs: &[AgentDef]) -> Result<()> {
        for d in defs {
            d.validate()?;
        }
        let defs = defs.to_vec();
        self.write(move |c| ops::put_agents(c, &defs)).await
    }

    async fn agents(&self) -> Result<Vec<AgentSummary>> {
        self.read(|c| ops::agents(c, None)).await
    }

    async fn tenant_agents(&self, tenant: &str) -> Result<Vec<AgentSummary>> {
        let tenant = tenant.to_string();
        self.read(move |c| ops::agents(c, Some(&tenant))).await
    }

    async fn count_session_tasks(&self, session_id: &str, tenant: &str) -> Result<u64> {
        let (sid, tenant) = (session_id.to_string(), tenant.to_string());
        self.read(move |c| ops::count_session_tasks(c, &sid, &tenant)).await
    }

    async fn heartbeat(&self, node: &Node) -> Result<NodeStatus> {
        let n = node.clone();
        self.write(move |c| ops::heartbeat(c, &n)).await
    }

    async fn set_node_status(&self, id: &str, status: NodeStatus) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| ops::set_node_status(c, &id, status)).await
    }

    async fn readmit_node(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| ops::readmit_node(c, &id)).await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        self.read(ops::nodes).await
    }

    async fn mark_dead_nodes(&self, stale_before: Micros) -> Result<Vec<Node>> {
        self.write(move |c| ops::mark_dead_nodes(c, stale_before)).await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.read(|c| ops::queue_stats(c, Micros::now())).await
    }

    /// The writer connection (busy while it runs a batch) and the readers kept. A burst of
    /// reads beyond the kept readers opens short-lived extra ones, counted as busy, so `busy`
    /// may then pass `max - idle`.
    fn pool_stats(&self) -> PoolStats {
        let writing = self.writing.load(Ordering::Relaxed) as u32;
        PoolStats {
            busy: self.readers.busy.load(Ordering::Relaxed) + writing,
            idle: self.readers.idle_count.load(Ordering::Relaxed) + (1 - writing),
            max: KEEP_READERS as u32 + 1,
        }
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c| ops::acquire_lease(c, &name, &holder, Micros::now(), ttl)).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c| ops::release_lease(c, &name, &holder)).await
    }

    /// SQLite reuses freed pages by itself; there is nothing to do on a schedule.
    async fn maintain(&self) -> Result<Option<String>> {
        Ok(None)
    }

    async fn expired_tasks(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        let cutoff = cutoff.clone();
        self.read(move |c| retention::expired_tasks(c, &cutoff, limit)).await
    }

    async fn purge_tasks(&self, ids: Vec<TaskId>) -> Result<Purged> {
        self.write(move |c| retention::purge_tasks(c, &ids)).await
    }

    async fn expired_artifacts(&self, cutoff: &Cutoff, limit: usize) -> Result<Vec<Expired>> {
        let cutoff = cutoff.clone();
        self.read(move |c| retention::expired_artifacts(c, &cutoff, limit)).await
    }

    async fn purge_artifacts(&self, records: Vec<(TaskId, String)>) -> Result<u64> {
        self.write(move |c| retention::purge_artifacts(c, &records)).await
    }

    async fn purge_audit(&self, cutoff: &Cutoff, limit: usize) -> Result<u64> {
        let cutoff = cutoff.clone();
        self.write(move |c| retention::purge_audit(c, &cutoff, limit)).await
    }

    async fn size_bytes(&self) -> Result<Option<u64>> {
        let pages: u64 = self
            .read(|c| {
                let count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                Ok((count.max(0) * size.max(0)) as u64)
            })
            .await?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        // no WAL file (just checkpointed and truncated) is an empty one
        let wal = tokio::fs::metadata(&wal).await.map(|m| m.len()).unwrap_or(0);
        Ok(Some(pages + wal))
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await?;
        if self.writer.is_closed() {
            return Err(Error::Unavailable("store writer stopped".into()));
        }
        Ok(())
    }

    async fn create_webhook(&self, hook: &Webhook) -> Result<()> {
        crate::webhooks::check(hook)?;
        let hook = hook.clone();
        self.write(move |c| webhooks::create(c, &hook)).await
    }

    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>> {
        let tenant = tenant.map(str::to_string);
        self.read(move |c| webhooks::list(c, tenant.as_deref())).await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        let id = id.to_string();
        self.read(move |c| webhooks::get(c, &id)).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| webhooks::delete(c, &id)).await
    }

    async fn webhook_cursor(&self) -> Result<u64> {
        self.read(webhooks::cursor).await
    }

    async fn enqueue_deliveries(&self, from: u64, to: u64, deliveries: Vec<NewDelivery>) -> Result<()> {
        for d in &deliveries {
            crate::webhooks::check_delivery(d)?;
        }
        self.write(move |c| webhooks::enqueue(c, from, to, &deliveries)).await
    }

    async fn claim_deliveries(&self, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>> {
        self.write(move |c| webhooks::claim(c, now, hold, limit)).await
    }

    async fn record_attempt(&self, id: &str, outcome: &AttemptOutcome) -> Result<()> {
        let (id, outcome) = (id.to_string(), outcome.clone());
        self.write(move |c| webhooks::record(c, &id, &outcome)).await
    }

    async fn deliveries(&self, webhook_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
        let (hook, before) = (webhook_id.to_string(), before.map(str::to_string));
        self.read(move |c| webhooks::list_deliveries(c, &hook, before.as_deref(), limit)).await
    }

    async fn replay_delivery(&self, webhook_id: &str, id: &str, now: Micros) -> Result<Option<Delivery>> {
        let (hook, id) = (webhook_id.to_string(), id.to_string());
        self.write(move |c| webhooks::replay(c, &hook, &id, now)).await
    }

    async fn pending_deliveries(&self) -> Result<Vec<(String, u64)>> {
        self.read(webhooks::pending).await
    }

    async fn task_webhooks(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, smith_core::TaskWebhook)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.read(move |c| webhooks::task_webhooks(c, &ids)).await
    }

    async fn task_webhooks_live(&self, since: Micros) -> Result<bool> {
        self.read(move |c| webhooks::task_webhooks_live(c, since)).await
    }

    async fn declare_rate_buckets(&self, specs: &[RateSpec]) -> Result<()> {
        for s in specs {
            crate::rates::check_spec(s)?;
        }
        let specs = specs.to_vec();
        self.write(move |c| rates::declare(c, &specs, Micros::now())).await
    }

    async fn take_rate(&self, take: &RateTake) -> Result<Option<RateGrant>> {
        crate::rates::check_take(take)?;
        let take = take.clone();
        self.write(move |c| rates::take_one(c, &take, Micros::now())).await
    }

    async fn rate_buckets(&self) -> Result<Vec<RateBucket>> {
        self.read(|c| rates::list(c, Micros::now())).await
    }

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        crate::schedules::check(schedule)?;
        let schedule = schedule.clone();
        self.write(move |c| schedules::create(c, &schedule)).await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>> {
        let id = id.to_string();
        self.read(move |c| schedules::get(c, &id)).await
    }

    async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<Schedule>> {
        let tenant = tenant.map(str::to_string);
        self.read(move |c| schedules::list(c, tenant.as_deref())).await
    }

    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_fire_at: Option<Micros>,
    ) -> Result<Option<Schedule>> {
        let id = id.to_string();
        self.write(move |c| schedules::set_paused(c, &id, paused, next_fire_at)).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| schedules::delete(c, &id)).await
    }

    async fn due_schedules(&self, now: Micros, limit: usize) -> Result<Vec<Schedule>> {
        self.read(move |c| schedules::due(c, now, limit)).await
    }

    async fn next_schedule_fire(&self) -> Result<Option<Micros>> {
        self.read(schedules::next_fire).await
    }

    async fn fire_schedule(&self, fire: Fire) -> Result<Option<Submitted>> {
        if let Some(t) = &fire.task {
            t.validate()?;
        }
        self.write(move |c| schedules::fire(c, &fire)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tenant_load` runs on every submission when quotas are set: it must read indexes only,
    /// never scan the tasks table.
    #[tokio::test]
    async fn tenant_load_reads_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions { fsync: false, readers: 1, pool_size: 1 };
        let store = SqliteStore::open(&dir.path().join("s.db"), &options).await.unwrap();
        let plan: Vec<String> = store
            .read(|c| {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", access::TENANT_LOAD))?;
                let rows = st.query_map(["acme", "0", "0"], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
            .unwrap();
        let uses = |index: &str| plan.iter().filter(|step| step.contains(index)).count();
        assert_eq!((uses("tasks_tenant_active"), uses("tasks_tenant_spent")), (2, 1), "{plan:#?}");
        assert_eq!(uses("tasks_tenant_waiting"), 1, "{plan:#?}");
        assert_eq!(uses("tenant_output USING PRIMARY KEY"), 1, "{plan:#?}");
        assert!(plan.iter().all(|step| !step.starts_with("SCAN")), "{plan:#?}");
    }

    /// A submission's audit record of tenant acme, dated `at`.
    fn audit_record(at: i64) -> smith_core::NewAuditRecord {
        smith_core::NewAuditRecord {
            at: Micros(at),
            actor: "token".into(),
            tenant: "acme".into(),
            action: "task.submit".into(),
            target: None,
            source: "127.0.0.1:1".into(),
            status: 201,
        }
    }

    /// The audit log is append-only in the schema too, whatever SQL a future change adds.
    #[tokio::test]
    async fn audit_records_cannot_be_changed_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions { fsync: false, readers: 1, pool_size: 1 };
        let store = SqliteStore::open(&dir.path().join("s.db"), &options).await.unwrap();
        store.append_audit(audit_record(1)).await.unwrap();
        for sql in ["UPDATE audit SET status = 200", "DELETE FROM audit"] {
            let err = store.write(move |c| Ok(c.execute(sql, [])?)).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        assert_eq!(store.audit(&AuditQuery::default()).await.unwrap().len(), 1);
    }

    /// Retention's guard: only the store's writer, inside the audit purge, may delete an audit
    /// record; any other connection to the file is refused (it lacks the trigger's function).
    /// A new file vacuums incrementally.
    #[tokio::test]
    async fn only_the_purge_deletes_audit_records_and_new_files_vacuum_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions { fsync: false, readers: 1, pool_size: 1 };
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, &options).await.unwrap();
        for at in [1, 2] {
            store.append_audit(audit_record(at)).await.unwrap();
        }
        let other = Connection::open(&path).unwrap();
        for sql in ["DELETE FROM audit", "UPDATE audit SET status = 200"] {
            let err = other.execute(sql, []).unwrap_err().to_string();
            assert!(err.contains("smith_retention_delete") || err.contains("append-only"), "{sql}: {err}");
        }
        let cutoff = crate::Cutoff { tenant: None, except: vec![], before: Micros(10) };
        assert_eq!(store.purge_audit(&cutoff, 10).await.unwrap(), 1, "the newest stays");
        let err = store.write(|c| Ok(c.execute("DELETE FROM audit", [])?)).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "the flag is down again: {err}");
        let mode: i64 = other.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 2, "incremental");
    }

    /// A fresh store with a scratch table `t (v INTEGER NOT NULL)`; the dir lives as long as it.
    async fn store_with_table_t() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions { fsync: false, readers: 1, pool_size: 1 };
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db"), &options).await.unwrap());
        store.write(|c| Ok(c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")?)).await.unwrap();
        (dir, store)
    }

    /// Runs `write(i, c)` for every `i` in `0..n` as writes queued at once, so that they share
    /// batches; returns their results in order.
    async fn concurrent_writes<F>(store: &Arc<SqliteStore>, n: i64, write: F) -> Vec<Result<()>>
    where
        F: Fn(i64, &Tx) -> Result<()> + Copy + Send + 'static,
    {
        let mut handles = Vec::new();
        for i in 0..n {
            let s = store.clone();
            handles.push(tokio::spawn(async move { s.write(move |c| write(i, c)).await }));
        }
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap());
        }
        results
    }

    /// A batch writes its writes' output bytes once, summed by tenant and day, and only those of
    /// the writes that succeeded — whether the batch ran fast or was redone with savepoints.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_counts_the_output_bytes_of_its_succeeded_writes_only() {
        let (_dir, store) = store_with_table_t().await;
        concurrent_writes(&store, 300, |i, c| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            c.add_output(tenant, 7, 10);
            match i % 3 {
                // fails after changing rows: the batch is redone with savepoints
                1 => {
                    c.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                    Err(Error::Backend("fails after writing".into()))
                }
                // fails before changing anything
                2 => Err(Error::Backend("fails clean".into())),
                _ => Ok(()),
            }
        })
        .await;
        let totals: Vec<(String, i64, i64)> = store
            .read(|c| {
                let mut st = c.prepare("SELECT tenant, day, bytes FROM tenant_output ORDER BY tenant")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
            .unwrap();
        // i % 3 == 0 succeeds: 100 writes, 50 of each tenant
        assert_eq!(totals, vec![("acme".to_string(), 7, 500), ("globex".to_string(), 7, 500)]);
    }

    /// Writes that fail after changing rows are undone without undoing their batch neighbours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_undone_and_its_neighbours_commit() {
        let (_dir, store) = store_with_table_t().await;
        let results = concurrent_writes(&store, 200, |i, c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
            if i % 2 == 1 {
                return Err(Error::Backend("fails after writing".into()));
            }
            Ok(())
        })
        .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 100);
        let kept: Vec<i64> = store
            .read(|c| {
                let mut st = c.prepare("SELECT v FROM t ORDER BY v")?;
                let rows = st.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
            .unwrap();
        assert_eq!(kept, (0..200).filter(|i| i % 2 == 0).collect::<Vec<_>>());
        // and a panicking write neither kills the writer nor leaves anything behind
        let r = store.write(|c| -> Result<()> {
            c.execute("INSERT INTO t (v) VALUES (-1)", [])?;
            panic!("boom")
        });
        assert!(r.await.is_err());
        store.write(|c| Ok(c.execute("INSERT INTO t (v) VALUES (1000)", [])?)).await.unwrap();
        let n: i64 =
            store.read(|c| Ok(c.query_row("SELECT count(*) FROM t WHERE v < 0", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 0);
    }
}

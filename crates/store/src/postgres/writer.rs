//! The writers: tasks that take write jobs from one bounded channel, run as many as are queued
//! (up to [`MAX_BATCH`]) in one transaction, commit once, then answer each caller.
//!
//! A batch runs in phases, each one statement (or a few) for all its jobs of one kind rather
//! than statements per job: misc writes (agents, nodes, leases, fleet events), then every
//! submission in one `INSERT … SELECT FROM UNNEST`, then every change to existing tasks
//! (appends, completions, releases, cancels, reaps) by loading their rows `FOR UPDATE`
//! in one statement, applying the jobs in memory in arrival order (`apply.rs`) and writing the
//! changed rows back in one statement, then the claims (`FOR UPDATE SKIP LOCKED`). Jobs in one
//! batch were all in flight at once, so any order among them is a valid history; the phase
//! order also keeps lock waits acyclic between writers: row locks are taken sorted by id, and
//! claims, which never wait, come last.
//!
//! Events are not inserted as jobs run but collected ([`EventBuf`]) and inserted at the end of
//! the batch in one statement, under a transaction-level advisory lock (the feed lock) held
//! until the commit; so are audit records ([`AuditBuf`]), numbered the same way. `pos` is assigned under that lock as the previous maximum plus one, so every
//! writer of every process sharing the database hands out positions in commit order, without
//! gaps: a reader whose snapshot shows position `p` also shows every position below it, which is
//! what makes the feed's cursor safe (a sequence would hand out positions in call order, and a
//! late commit would slip in behind a reader's cursor). Inserting last keeps the lock's hold
//! short: the batch's claims (which must not run concurrently, see `phases.rs`), one insert and
//! the commit.
//!
//! Failures: jobs that fail on their own terms (fenced, unknown agent, …) fail without changing
//! rows, and the batch commits around them with no savepoints (a savepoint per job costs round
//! trips and, past 64 per transaction, slows every snapshot in the server). When a statement
//! fails, PostgreSQL aborts the whole transaction: the batch is rolled back and run again with
//! each job alone in its own savepoint, so only the job that fails again is refused.

use super::jobs::{Ctx, Job, Op};
use super::phases::{self, Appends};
#[cfg(doc)]
use super::rows::{AuditBuf, EventBuf};
use super::rows::{Positions, Shift};
use crate::{Error, Result};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// Jobs per transaction at most; bounds one batch's latency and its statements' array sizes.
pub(super) const MAX_BATCH: usize = 512;
/// Jobs waiting for a writer at most; callers wait (backpressure) beyond that.
pub(super) const QUEUE_DEPTH: usize = 8192;

/// What the batch driver does with any job, whatever its types.
trait Pending {
    /// Forgets the output of a run that was rolled back.
    fn reset(&mut self);
    fn fail(&mut self, e: Error);
    /// Sends the output, its placeholders shifted by `Ok(by)`, or the commit's error.
    fn answer(&mut self, committed: std::result::Result<Shift, &Error>);
}

impl<I, O: Positions> Pending for Job<I, O> {
    fn reset(&mut self) {
        self.out = None;
    }

    fn fail(&mut self, e: Error) {
        self.out = Some(Err(e));
    }

    fn answer(&mut self, committed: std::result::Result<Shift, &Error>) {
        let Some(reply) = self.reply.take() else { return };
        let res = match committed {
            Err(e) => Err(batch_failed(e)),
            Ok(by) => match self.out.take() {
                Some(Ok(mut out)) => {
                    out.shift(by);
                    Ok(out)
                }
                Some(Err(e)) => Err(e),
                None => Err(Error::Backend("store write was not run".into())),
            },
        };
        let _ = reply.send(res);
    }
}

/// What each job of a batch that failed as a whole is told: nothing of it was committed.
fn batch_failed(e: &Error) -> Error {
    match e {
        Error::Domain(d) => Error::Domain(d.clone()),
        Error::Config(m) => Error::Config(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(format!("write not committed: {m}")),
        Error::Backend(m) => Error::Backend(format!("write not committed: {m}")),
        // answers to single jobs, never a batch's failure
        other @ (Error::Fenced(_) | Error::NotFound(_)) => Error::Backend(format!("write not committed: {other}")),
    }
}

impl Op {
    fn pending(&mut self) -> &mut dyn Pending {
        match self {
            Op::Submit(j) => j,
            Op::Claim(j) => j,
            Op::Append(j) => j,
            Op::Complete(j) => j,
            Op::Release(j) => j,
            Op::Reap(j) => j,
            Op::Cancel(j) => j,
            Op::Wait(j) => j,
            Op::Answer(j) => j,
            Op::Timers(j) => j,
            Op::Park(j) => j,
            Op::Global(j) => j,
            Op::PutAgents(j) => j,
            Op::SetNodeStatus(j) => j,
            Op::Readmit(j) => j,
            Op::MarkDead(j) => j,
            Op::Lease(j) => j,
            Op::Audit(j) => j,
        }
    }
}

/// The receiving end every writer of a store takes batches from, one writer at a time.
pub(super) type Queue = Arc<Mutex<mpsc::Receiver<Op>>>;

/// Starts `n` writers. Each ends when every sender is gone (the store was dropped) and the
/// queue is drained; a writer that panics is logged and started again, its batch's callers
/// answered "unavailable" by their dropped reply channels.
pub(super) fn spawn(n: usize, queue: Queue, pool: PgPool, feed_lock: (i32, i32)) {
    for i in 0..n {
        let (queue, pool) = (queue.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                let run = tokio::spawn(run(queue.clone(), pool.clone(), feed_lock));
                match run.await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => tracing::error!(writer = i, "store writer panicked; restarting it"),
                    Err(_) => return,
                }
            }
        });
    }
}

async fn run(queue: Queue, pool: PgPool, feed_lock: (i32, i32)) {
    let mut ctx = Ctx::new(feed_lock);
    let mut conn: Option<PoolConnection<Postgres>> = None;
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(op) => batch.push(op),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        }
        let c = match begin(&pool, &mut conn).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "store writer cannot start a transaction");
                answer_all(&mut batch, Err(&e));
                continue;
            }
        };
        match run_batch(c, &mut batch, &mut ctx).await {
            Ok(by) => answer_all(&mut batch, Ok(by)),
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "store batch failed");
                // An unknown state (broken connection, failed rollback) is not reused.
                if exec(c, "ROLLBACK").await.is_err() {
                    conn = None;
                }
                answer_all(&mut batch, Err(&e));
            }
        }
    }
}

/// Opens a transaction on the writer's connection, connecting first when it has none. A held
/// connection that fails at once (the server restarted or dropped it) is replaced, so the first
/// batch after a restart does not fail for nothing; so are pooled ones that turn out dead too.
async fn begin<'c>(pool: &PgPool, conn: &'c mut Option<PoolConnection<Postgres>>) -> Result<&'c mut PgConnection> {
    const TRIES: usize = 4;
    let mut last = None;
    for i in 0..TRIES {
        if conn.is_none() {
            let mut c = pool.acquire().await.map_err(super::db_error)?;
            // Dropped only on failure or when the writer ends, maybe inside a transaction:
            // closing it then, rather than pooling it, keeps that transaction from a reader.
            c.close_on_drop();
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { continue };
        match exec(c, BEGIN).await {
            Ok(()) => return conn.as_deref_mut().ok_or_else(|| Error::Unavailable("no connection".into())),
            Err(e) => {
                tracing::info!(error = %e, attempt = i + 1, "store writer connection failed; reconnecting");
                *conn = None;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Unavailable("store writer has no connection".into())))
}

fn answer_all(batch: &mut Vec<Op>, committed: std::result::Result<Shift, &Error>) {
    for mut op in batch.drain(..) {
        op.pending().answer(committed);
    }
}

async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    // a plain string goes by the simple query protocol: one round trip, no statement to prepare
    sqlx::Executor::execute(&mut *conn, sql).await.map_err(super::db_error)?;
    Ok(())
}

const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Runs a batch in the transaction [`begin`] opened and commits it; returns how far to shift the
/// placeholder positions of its events and ids of its audit records.
async fn run_batch(conn: &mut PgConnection, batch: &mut [Op], ctx: &mut Ctx) -> Result<Shift> {
    let mut appends = Appends::default();
    ctx.locked = false;
    if let Err(e) = phases::run(conn, batch, &mut appends, ctx).await {
        tracing::warn!(error = %e, jobs = batch.len(), "a store batch failed; running its jobs one by one");
        exec(conn, "ROLLBACK").await?;
        ctx.locked = false;
        appends = Appends::default();
        for op in batch.iter_mut() {
            op.pending().reset();
        }
        exec(conn, BEGIN).await?;
        // Claims last: they take the feed lock, and no job should wait for a row lock under it.
        batch.sort_by_key(|op| matches!(op, Op::Claim(_)));
        for op in batch.iter_mut() {
            let (mark, locked) = (appends.mark(), ctx.locked);
            exec(conn, "SAVEPOINT job").await?;
            if let Err(e) = phases::run(conn, std::slice::from_mut(op), &mut appends, ctx).await {
                // rolling back to the savepoint also gives up a lock taken since
                exec(conn, "ROLLBACK TO SAVEPOINT job").await?;
                appends.truncate(mark);
                ctx.locked = locked;
                op.pending().fail(e);
            }
            exec(conn, "RELEASE SAVEPOINT job").await?;
        }
    }
    let pos = phases::insert_events(conn, &appends.events, ctx).await?;
    let audit = phases::insert_audit(conn, &appends.audit, ctx).await?;
    exec(conn, "COMMIT").await?;
    Ok(Shift { pos, audit })
}

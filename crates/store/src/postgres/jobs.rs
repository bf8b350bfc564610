//! What a batch of the PostgreSQL writer is made of — the write jobs, one per caller — and the
//! state a writer keeps across its batches. Shared by the batch driver (`writer.rs`) and its
//! phases (`phases.rs`, `claims.rs`), which depend on this and never on each other's driver.

use super::db_error;
use crate::{Change, ClaimRequest, Claimed, Result, Submitted};
use smith_core::{
    AgentDef, AuditRecord, Event, EventDraft, Micros, NewAuditRecord, NewTask, Node, NodeStatus, Outcome, TaskId,
};
use sqlx::PgConnection;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;

/// A write waiting for its batch: the input, the output once run, and its caller.
pub(super) struct Job<I, O> {
    pub input: I,
    pub out: Option<Result<O>>,
    pub(super) reply: Option<oneshot::Sender<Result<O>>>,
}

impl<I, O> Job<I, O> {
    pub fn new(input: I) -> (Self, oneshot::Receiver<Result<O>>) {
        let (tx, rx) = oneshot::channel();
        (Job { input, out: None, reply: Some(tx) }, rx)
    }
}

/// A task to submit, and the audit record of the request that submits it (written in the same
/// transaction, completed with the task's id and whether it was created).
pub(super) struct Submission {
    /// Boxed: a task is the largest input of any write, and the queue holds every kind.
    pub task: Box<NewTask>,
    /// Boxed: most submissions carry none, and the job stays small in the queue.
    pub audit: Option<Box<NewAuditRecord>>,
    /// The schedule step this task is the fire of (its `task` moved out to `task`): its cursor
    /// moves in the same transaction, and the task is not inserted when the cursor moved on.
    pub fire: Option<Box<crate::Fire>>,
}

pub(super) struct AppendJob {
    pub id: TaskId,
    pub attempt: u32,
    pub drafts: Vec<EventDraft>,
}

pub(super) struct CompleteJob {
    pub id: TaskId,
    pub attempt: u32,
    pub drafts: Vec<EventDraft>,
    pub outcome: Outcome,
}

pub(super) struct ReleaseJob {
    pub worker: String,
    pub tasks: Vec<(TaskId, u32)>,
    pub reason: String,
}

/// Attempts to reap, as seen on a reader before the batch; checked again under lock.
pub(super) struct ReapJob {
    pub now: Micros,
    pub victims: Vec<(TaskId, u32)>,
}

/// A request of an attempt (`Store::request_input`).
pub(super) struct WaitJob {
    pub id: TaskId,
    pub attempt: u32,
    pub request: smith_core::approval::NewRequest,
}

/// An answer to request `approval` of task `id` (`Store::answer_request`).
pub(super) struct AnswerJob {
    pub id: TaskId,
    pub approval: String,
    pub answer: smith_core::approval::Answer,
}

/// The timer pass's candidates, as seen on a reader before the batch; judged again under lock.
pub(super) struct TimersJob {
    pub now: Micros,
    pub ids: Vec<TaskId>,
}

/// An attempt parking at its provider account's limit (`Store::park`).
pub(super) struct ParkJob {
    pub id: TaskId,
    pub attempt: u32,
    pub drafts: Vec<EventDraft>,
    pub park: crate::lifecycle::Park,
}

pub(super) struct LeaseJob {
    pub name: String,
    pub holder: String,
    /// `None`: give the lease up.
    pub ttl: Option<Duration>,
}

/// Every write the store makes.
pub(super) enum Op {
    Submit(Job<Submission, Submitted>),
    Claim(Job<ClaimRequest, Vec<Claimed>>),
    Append(Job<AppendJob, Vec<Event>>),
    Complete(Job<CompleteJob, Change>),
    Release(Job<ReleaseJob, Vec<Change>>),
    Reap(Job<ReapJob, Vec<Change>>),
    Cancel(Job<TaskId, Change>),
    Wait(Job<WaitJob, crate::Asked>),
    Answer(Job<AnswerJob, crate::Asked>),
    Timers(Job<TimersJob, Vec<Change>>),
    Park(Job<ParkJob, Change>),
    Global(Job<crate::GlobalEvent, Event>),
    PutAgents(Job<Vec<AgentDef>, ()>),
    SetNodeStatus(Job<(String, NodeStatus), ()>),
    Readmit(Job<String, bool>),
    /// Silent for longer than this many µs, on the store's clock.
    MarkDead(Job<i64, Vec<Node>>),
    Lease(Job<LeaseJob, bool>),
    Audit(Job<NewAuditRecord, AuditRecord>),
}

/// A writer's state across batches.
pub(super) struct Ctx {
    /// The feed's advisory lock: `(class, the events table's oid)`, so stores in different
    /// schemas of one database do not serialise each other.
    pub feed_lock: (i32, i32),
    /// Whether the current transaction holds the feed lock.
    pub locked: bool,
    /// Parsed agent definitions by name, with the text they were parsed from: a submission
    /// looks its agent up every time, and parsing is the expensive part.
    pub(super) agents: HashMap<String, (String, AgentDef)>,
}

impl Ctx {
    pub fn new(feed_lock: (i32, i32)) -> Self {
        Ctx { feed_lock, locked: false, agents: HashMap::new() }
    }
}

/// Takes the feed lock until the transaction ends. Whoever holds it must never wait for a row
/// lock (claims skip locked rows, events conflict with no one), so it cannot close a cycle of
/// waits; it is held from the claims to the commit.
pub(super) async fn lock_feed(conn: &mut PgConnection, ctx: &mut Ctx) -> Result<()> {
    if ctx.locked {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(ctx.feed_lock.0)
        .bind(ctx.feed_lock.1)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    ctx.locked = true;
    Ok(())
}

//! Rows as the PostgreSQL store reads them, the batch's buffer of events to insert, and the
//! placeholder positions those events carry until the batch commits.

use crate::lifecycle::Step;
use crate::{Change, Claimed, Error, Held, Result, Submitted};
use serde_json::Value;
use smith_core::{
    AuditRecord, Event, EventKind, Micros, NewAuditRecord, Node, NodeRole, NodeStatus, Task, TaskError, TaskId, Usage,
};
use sqlx::postgres::PgRow;
use sqlx::Row;

/// The task columns every task query selects, in the shape [`task_row`] decodes.
pub(super) const TASK_COLS: &str = "seq, id::text AS id, tenant, agent, input::text AS input, status, priority, \
    timeout_ms, max_attempts, attempt, idempotency_key, session_id, metadata::text AS metadata, \
    result::text AS result, error::text AS error, usage::text AS usage, cancel_requested, created_at, started_at, \
    finished_at, worker, released, backoff_ms, backoff_max_ms, last_seq, lease_until, run_at, \
    parent_id::text AS parent_id, budget::text AS budget, spent_at, \
    options::text AS options, expires_at";

pub(super) const EVENT_COLS: &str =
    "pos, task_id::text AS task_id, seq, kind, agent, attempt, at, data::text AS data, tenant";

pub(super) const NODE_COLS: &str = "id, role, version, address, status, started_at, heartbeat_at, load::text AS load";

/// A task row with the bookkeeping columns the API does not show: the lifecycle's row.
pub(super) type TaskRow = crate::lifecycle::Row;

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(r: &'r PgRow, col: &str) -> Result<T> {
    r.try_get(col).map_err(|e| Error::Backend(format!("cannot read column {col}: {e}")))
}

fn json(r: &PgRow, col: &str) -> Result<Value> {
    let s: String = get(r, col)?;
    serde_json::from_str(&s).map_err(|e| Error::Backend(format!("corrupt JSON in column {col}: {e}")))
}

fn opt_json<T: serde::de::DeserializeOwned>(r: &PgRow, col: &str) -> Result<Option<T>> {
    let s: Option<String> = get(r, col)?;
    match s {
        None => Ok(None),
        Some(s) => {
            serde_json::from_str(&s).map(Some).map_err(|e| Error::Backend(format!("corrupt JSON in column {col}: {e}")))
        }
    }
}

fn parse<T: std::str::FromStr>(r: &PgRow, col: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = get(r, col)?;
    s.parse::<T>().map_err(|e| Error::Backend(format!("corrupt value {s:?} in column {col}: {e}")))
}

/// Unsigned API values are stored in signed columns bit for bit (`u64 as i64`), so they
/// round-trip exactly; the conversions back are the inverse casts.
fn u32_col(r: &PgRow, col: &str) -> Result<u32> {
    Ok(get::<i32>(r, col)? as u32)
}

fn u64_col(r: &PgRow, col: &str) -> Result<u64> {
    Ok(get::<i64>(r, col)? as u64)
}

pub(super) fn task_row(r: &PgRow) -> Result<TaskRow> {
    let mut task = Task {
        id: parse(r, "id")?,
        tenant: get(r, "tenant")?,
        agent: get(r, "agent")?,
        input: json(r, "input")?,
        status: parse(r, "status")?,
        priority: get::<i16>(r, "priority")? as u8,
        timeout_ms: get::<Option<i64>>(r, "timeout_ms")?.map(|v| v as u64),
        max_attempts: u32_col(r, "max_attempts")?,
        attempt: u32_col(r, "attempt")?,
        idempotency_key: get(r, "idempotency_key")?,
        session_id: get(r, "session_id")?,
        metadata: json(r, "metadata")?,
        result: opt_json(r, "result")?,
        error: opt_json::<TaskError>(r, "error")?,
        usage: opt_json::<Usage>(r, "usage")?.unwrap_or_default(),
        cancel_requested: get(r, "cancel_requested")?,
        created_at: Micros(get(r, "created_at")?),
        started_at: get::<Option<i64>>(r, "started_at")?.map(Micros),
        finished_at: get::<Option<i64>>(r, "finished_at")?.map(Micros),
        worker: get(r, "worker")?,
        parent_id: get::<Option<String>>(r, "parent_id")?
            .map(|s| s.parse::<TaskId>().map_err(|e| Error::Backend(e.to_string())))
            .transpose()?,
        budget: opt_json(r, "budget")?.unwrap_or_default(),
        workspace: None,
        output_schema: None,
        webhook: None,
        run_at: None,
        expires_at: get::<Option<i64>>(r, "expires_at")?.map(Micros),
        concurrency_key: None,
        traceparent: None,
    };
    if let Some(options) = opt_json(r, "options")? {
        task.set_options(options);
    }
    let run_at = Micros(get(r, "run_at")?);
    task.run_at = crate::lifecycle::deferred_until(task.status, run_at);
    Ok(TaskRow {
        task,
        released: u32_col(r, "released")?,
        backoff_ms: u64_col(r, "backoff_ms")?,
        backoff_max_ms: u64_col(r, "backoff_max_ms")?,
        last_seq: u64_col(r, "last_seq")?,
        lease_until: get::<Option<i64>>(r, "lease_until")?.map(Micros),
        run_at,
        spent_at: get::<Option<i64>>(r, "spent_at")?.map(Micros),
    })
}

pub(super) fn event_row(r: &PgRow) -> Result<Event> {
    let task_id: Option<String> = get(r, "task_id")?;
    let task_id = match task_id {
        None => None,
        Some(s) => Some(s.parse::<TaskId>().map_err(|e| Error::Backend(format!("corrupt task id {s:?}: {e}")))?),
    };
    Ok(Event {
        pos: u64_col(r, "pos")?,
        task_id,
        seq: u64_col(r, "seq")?,
        kind: parse::<EventKind>(r, "kind")?,
        agent: get(r, "agent")?,
        tenant: get(r, "tenant")?,
        attempt: u32_col(r, "attempt")?,
        at: Micros(get(r, "at")?),
        data: json(r, "data")?,
    })
}

pub(super) fn node_row(r: &PgRow) -> Result<Node> {
    let role: String = get(r, "role")?;
    let status: String = get(r, "status")?;
    Ok(Node {
        id: get(r, "id")?,
        role: NodeRole::parse(&role).ok_or_else(|| Error::Backend(format!("corrupt node role {role:?}")))?,
        version: get(r, "version")?,
        address: get(r, "address")?,
        status: NodeStatus::parse(&status).ok_or_else(|| Error::Backend(format!("corrupt node status {status:?}")))?,
        started_at: Micros(get(r, "started_at")?),
        heartbeat_at: Micros(get(r, "heartbeat_at")?),
        load: json(r, "load")?,
    })
}

/// The events a batch writes, column by column (the shape `UNNEST` takes). They are inserted
/// together when the batch ends; until then each [`Event`] handed out carries its index here as
/// its `pos`, and [`Positions::shift`] turns that into the real position after the insert.
#[derive(Debug, Default)]
pub(super) struct EventBuf {
    pub task_id: Vec<Option<String>>,
    pub seq: Vec<i64>,
    pub kind: Vec<&'static str>,
    pub agent: Vec<Option<String>>,
    pub tenant: Vec<Option<String>>,
    pub attempt: Vec<i32>,
    pub at: Vec<i64>,
    pub data: Vec<String>,
    /// Bytes each event adds to its tenant's stored output (its data when an executor wrote it,
    /// the result on a success), for `tenant_output`.
    pub output: Vec<i64>,
}

impl EventBuf {
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Forgets the events pushed after the first `n` (a job rolled back to its savepoint).
    pub fn truncate(&mut self, n: usize) {
        self.output.truncate(n);
        self.task_id.truncate(n);
        self.seq.truncate(n);
        self.kind.truncate(n);
        self.agent.truncate(n);
        self.tenant.truncate(n);
        self.attempt.truncate(n);
        self.at.truncate(n);
        self.data.truncate(n);
    }

    /// Counts `bytes` as output its task's tenant stored, on the last queued event (which must
    /// be that task's): `insert_events` adds them to `tenant_output`.
    pub fn count_output(&mut self, bytes: u64) {
        if let Some(last) = self.output.last_mut() {
            *last += bytes as i64;
        }
    }

    /// The length of the last queued event's data as it will be stored.
    pub fn last_data_len(&self) -> u64 {
        self.data.last().map_or(0, |d| d.len() as u64)
    }

    /// Queues one of `task`'s events and returns it with a placeholder position.
    pub fn push(&mut self, task: &Task, step: Step, at: Micros) -> Event {
        let Step { seq, kind, attempt, data, .. } = step;
        let pos = self.len() as u64;
        self.output.push(0);
        self.task_id.push(Some(task.id.to_string()));
        self.seq.push(seq as i64);
        self.kind.push(kind.as_str());
        self.agent.push(Some(task.agent.clone()));
        self.tenant.push(Some(task.tenant.clone()));
        self.attempt.push(attempt as i32);
        self.at.push(at.0);
        self.data.push(data.to_string());
        Event::of_task(Some(task), seq, kind, attempt, at, data, pos)
    }

    /// Queues an event outside every task's log (a discovery, a message, a fleet event).
    pub fn push_global(&mut self, e: &crate::GlobalEvent, at: Micros) -> Event {
        let pos = self.len() as u64;
        self.output.push(0);
        self.task_id.push(None);
        self.seq.push(0);
        self.kind.push(e.kind.as_str());
        self.agent.push(e.agent.clone());
        self.tenant.push(e.tenant.clone());
        self.attempt.push(0);
        self.at.push(at.0);
        self.data.push(e.data.to_string());
        Event {
            task_id: None,
            seq: 0,
            kind: e.kind,
            at,
            data: e.data.clone(),
            agent: e.agent.clone(),
            tenant: e.tenant.clone(),
            attempt: 0,
            pos,
        }
    }
}

/// The audit records a batch appends, column by column, inserted when the batch ends under the
/// feed lock like its events; until then each [`AuditRecord`] handed out carries its index here
/// as its `id`.
#[derive(Debug, Default)]
pub(super) struct AuditBuf {
    pub at: Vec<i64>,
    pub actor: Vec<String>,
    pub tenant: Vec<String>,
    pub action: Vec<String>,
    pub target: Vec<Option<String>>,
    pub source: Vec<String>,
    pub status: Vec<i32>,
}

impl AuditBuf {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Forgets the records pushed after the first `n` (a job rolled back to its savepoint).
    pub fn truncate(&mut self, n: usize) {
        self.at.truncate(n);
        self.actor.truncate(n);
        self.tenant.truncate(n);
        self.action.truncate(n);
        self.target.truncate(n);
        self.source.truncate(n);
        self.status.truncate(n);
    }

    /// Queues a record and returns it with a placeholder id.
    pub fn push(&mut self, r: &NewAuditRecord) -> AuditRecord {
        let id = self.len() as u64;
        self.at.push(r.at.0);
        self.actor.push(r.actor.clone());
        self.tenant.push(r.tenant.clone());
        self.action.push(r.action.clone());
        self.target.push(r.target.clone());
        self.source.push(r.source.clone());
        self.status.push(i32::from(r.status));
        r.numbered(id)
    }
}

/// How far a committed batch moves its placeholders: event index → feed position, audit index
/// → audit id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Shift {
    pub pos: u64,
    pub audit: u64,
}

/// Outputs that carry placeholder positions (or audit ids) until their batch commits.
pub(super) trait Positions {
    /// Turns every placeholder into the value the batch's inserts gave it.
    fn shift(&mut self, _by: Shift) {}
}

impl Positions for () {}
impl Positions for bool {}
impl Positions for Held {}
impl Positions for Node {}
impl Positions for NodeStatus {}

impl Positions for Event {
    fn shift(&mut self, by: Shift) {
        self.pos += by.pos;
    }
}

impl Positions for AuditRecord {
    fn shift(&mut self, by: Shift) {
        self.id += by.audit;
    }
}

impl<T: Positions> Positions for Vec<T> {
    fn shift(&mut self, by: Shift) {
        for item in self {
            item.shift(by);
        }
    }
}

impl Positions for crate::Asked {
    fn shift(&mut self, by: Shift) {
        self.change.shift(by);
    }
}

impl Positions for Submitted {
    fn shift(&mut self, by: Shift) {
        self.events.shift(by);
    }
}

impl Positions for Claimed {
    fn shift(&mut self, by: Shift) {
        self.event.shift(by);
    }
}

impl Positions for Change {
    fn shift(&mut self, by: Shift) {
        self.events.shift(by);
    }
}

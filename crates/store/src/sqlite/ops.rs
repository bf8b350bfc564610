//! The SQL of the SQLite store: every function runs on a connection the caller owns
//! (the writer's batch transaction, or a reader).

use super::Tx;
use crate::caps::Room;
use crate::lifecycle::{self, Output, Step};
use crate::{
    Change, ClaimRequest, Claimed, Error, FeedFilter, FeedPage, GlobalEvent, GlobalEventQuery, Held, Omitted,
    QueueStats, Result, Session, Submitted, TaskPage, TaskQuery, UsageBy,
};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use smith_core::{
    AgentDef, AgentSummary, BreakerState, Event, EventDraft, Micros, NewTask, Node, NodeRole, NodeStatus, Outcome,
    Task, TaskId, Usage,
};
use std::collections::HashMap;
use std::time::Duration;

const TASK_COLS: &str = "id, tenant, agent, input, status, priority, timeout_ms, max_attempts, attempt, \
    idempotency_key, session_id, metadata, result, error, usage, cancel_requested, created_at, started_at, \
    finished_at, worker, released, backoff_ms, backoff_max_ms, last_seq, rowid, parent_id, budget, lease_until, run_at, \
    spent_at, options, expires_at";
const EVENT_COLS: &str = "pos, task_id, seq, kind, agent, attempt, at, data, tenant";

/// A task row with the bookkeeping columns the API does not show: the lifecycle's row.
type TaskRow = lifecycle::Row;

fn json_col(r: &Row, i: usize) -> rusqlite::Result<Value> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

fn opt_json_col<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = r.get(i)?;
    match s {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))),
    }
}

fn parse_col<T: std::str::FromStr>(r: &Row, i: usize) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = r.get(i)?;
    s.parse::<T>().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

fn task_row(r: &Row) -> rusqlite::Result<TaskRow> {
    let mut task = Task {
        id: parse_col(r, 0)?,
        tenant: r.get(1)?,
        agent: r.get(2)?,
        input: json_col(r, 3)?,
        status: parse_col(r, 4)?,
        priority: r.get(5)?,
        timeout_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        max_attempts: r.get(7)?,
        attempt: r.get(8)?,
        idempotency_key: r.get(9)?,
        session_id: r.get(10)?,
        metadata: json_col(r, 11)?,
        result: opt_json_col(r, 12)?,
        error: opt_json_col(r, 13)?,
        usage: opt_json_col(r, 14)?.unwrap_or_default(),
        cancel_requested: r.get::<_, i64>(15)? != 0,
        created_at: Micros(r.get(16)?),
        started_at: r.get::<_, Option<i64>>(17)?.map(Micros),
        finished_at: r.get::<_, Option<i64>>(18)?.map(Micros),
        worker: r.get(19)?,
        parent_id: r
            .get::<_, Option<String>>(25)?
            .map(|s| {
                s.parse::<TaskId>().map_err(|e| rusqlite::Error::FromSqlConversionFailure(25, Type::Text, Box::new(e)))
            })
            .transpose()?,
        budget: opt_json_col(r, 26)?.unwrap_or_default(),
        workspace: None,
        output_schema: None,
        webhook: None,
        run_at: None,
        expires_at: r.get::<_, Option<i64>>(31)?.map(Micros),
        concurrency_key: None,
        traceparent: None,
    };
    if let Some(options) = opt_json_col(r, 30)? {
        task.set_options(options);
    }
    let run_at = Micros(r.get(28)?);
    task.run_at = lifecycle::deferred_until(task.status, run_at);
    Ok(TaskRow {
        task,
        released: r.get(20)?,
        backoff_ms: r.get::<_, i64>(21)? as u64,
        backoff_max_ms: r.get::<_, i64>(22)? as u64,
        last_seq: r.get::<_, i64>(23)? as u64,
        lease_until: r.get::<_, Option<i64>>(27)?.map(Micros),
        run_at,
        spent_at: r.get::<_, Option<i64>>(29)?.map(Micros),
    })
}

fn event_row(r: &Row) -> rusqlite::Result<Event> {
    let task_id: Option<String> = r.get(1)?;
    let task_id = match task_id {
        None => None,
        Some(s) => Some(
            s.parse::<TaskId>().map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e)))?,
        ),
    };
    Ok(Event {
        pos: r.get::<_, i64>(0)? as u64,
        task_id,
        seq: r.get::<_, i64>(2)? as u64,
        kind: parse_col(r, 3)?,
        agent: r.get(4)?,
        attempt: r.get(5)?,
        at: Micros(r.get(6)?),
        data: json_col(r, 7)?,
        tenant: r.get(8)?,
    })
}

pub(super) fn load(c: &Connection, id: TaskId) -> Result<Option<TaskRow>> {
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1");
    Ok(c.prepare_cached(&sql)?.query_row([id.to_string()], task_row).optional()?)
}

/// Inserts one of `task`'s events; returns it and the bytes of its data as stored.
fn insert_event(c: &Connection, task: &Task, step: Step, at: Micros) -> Result<(Event, u64)> {
    let Step { seq, kind, attempt, data, .. } = step;
    let mut stmt = c.prepare_cached(
        "INSERT INTO events (task_id, seq, kind, agent, tenant, attempt, at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let text = data.to_string();
    let bytes = text.len() as u64;
    stmt.execute(params![
        task.id.to_string(),
        seq as i64,
        kind.as_str(),
        task.agent,
        task.tenant,
        attempt,
        at.0,
        text
    ])?;
    Ok((Event::of_task(Some(task), seq, kind, attempt, at, data, c.last_insert_rowid() as u64), bytes))
}

fn agent_def(c: &Connection, name: &str) -> Result<Option<AgentDef>> {
    let def: Option<String> = c
        .prepare_cached("SELECT definition FROM agents WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let Some(raw) = def else { return Ok(None) };
    // Parsed definitions are cached by their text: a submit looks its agent up every time.
    thread_local! {
        static PARSED: std::cell::RefCell<HashMap<String, (String, AgentDef)>> = Default::default();
    }
    if let Some(hit) = PARSED.with(|p| p.borrow().get(name).filter(|(r, _)| *r == raw).map(|(_, d)| d.clone())) {
        return Ok(Some(hit));
    }
    let parsed: AgentDef = serde_json::from_str(&raw)?;
    PARSED.with(|p| p.borrow_mut().insert(name.to_string(), (raw, parsed.clone())));
    Ok(Some(parsed))
}

pub(super) fn submit(c: &Tx, t: &NewTask, now: Micros) -> Result<Submitted> {
    let Some(def) = agent_def(c, &t.agent)? else {
        return Err(smith_core::Error::unprocessable(format!("unknown agent {:?}", t.agent)).into());
    };
    t.validate_for(&def)?;
    if let Some(key) = &t.idempotency_key {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE tenant = ?1 AND idempotency_key = ?2");
        let existing = c.prepare_cached(&sql)?.query_row(params![t.tenant, key], task_row).optional()?;
        if let Some(row) = existing {
            return Ok(Submitted { task: row.task, created: false, events: Vec::new() });
        }
    }
    let (row, queued) = lifecycle::submit(t, &def, now);
    let task = &row.task;
    c.prepare_cached(
        "INSERT INTO tasks (id, tenant, agent, input, status, priority, timeout_ms, max_attempts, backoff_ms, \
         backoff_max_ms, idempotency_key, session_id, metadata, created_at, run_at, last_seq, parent_id, budget, \
         options, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
         ?19, ?20)",
    )?
    .execute(params![
        task.id.to_string(),
        task.tenant,
        task.agent,
        task.input.to_string(),
        task.status.as_str(),
        task.priority,
        task.timeout_ms.map(|v| v as i64),
        task.max_attempts,
        row.backoff_ms as i64,
        row.backoff_max_ms as i64,
        task.idempotency_key,
        task.session_id,
        task.metadata.to_string(),
        task.created_at.0,
        row.run_at.0,
        row.last_seq as i64,
        task.parent_id.map(|p| p.to_string()),
        (!task.budget.is_empty()).then(|| serde_json::to_string(&task.budget).expect("budget serializes")),
        task.options_json(),
        task.expires_at.map(|m| m.0),
    ])?;
    let events = emit(c, &row.task, vec![queued], now)?;
    Ok(Submitted { task: row.task, created: true, events })
}

/// A `SELECT … WHERE` and its parameters, narrowed by the filters a query sets.
pub(super) struct Filters {
    sql: String,
    args: Vec<Box<dyn rusqlite::ToSql>>,
}

impl Filters {
    /// `sql` ends in a condition on `?1`, which is `first`.
    pub fn new(sql: String, first: impl rusqlite::ToSql + 'static) -> Filters {
        Filters { sql, args: vec![Box::new(first)] }
    }

    /// Adds ` AND {cond} ?N` with `value` as parameter N, when there is a value.
    pub fn and(&mut self, cond: &str, value: Option<impl rusqlite::ToSql + 'static>) {
        let Some(value) = value else { return };
        self.args.push(Box::new(value));
        self.sql.push_str(&format!(" AND {cond} ?{}", self.args.len()));
    }

    /// The statement ended by ` {tail} ?N` (an `ORDER BY … LIMIT`) with `last` as parameter N.
    pub fn finish(mut self, tail: &str, last: i64) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
        self.args.push(Box::new(last));
        self.sql.push_str(&format!(" {tail} ?{}", self.args.len()));
        (self.sql, self.args)
    }
}

pub(super) fn get_task(c: &Connection, id: TaskId) -> Result<Option<Task>> {
    Ok(load(c, id)?.map(|r| r.task))
}

pub(super) fn list_tasks(c: &Connection, q: &TaskQuery) -> Result<TaskPage> {
    let before = crate::list_before(q)?;
    let limit = q.limit.clamp(1, 1000);
    // sizes at 32 and 33 (after the task's columns); a value over the limit is not read at all
    let mut cols = TASK_COLS.to_string();
    if let Some(n) = q.value_limit {
        cols = cols
            .replace(
                "agent, input, status",
                &format!("agent, CASE WHEN length(CAST(input AS BLOB)) > {n} THEN 'null' ELSE input END, status"),
            )
            .replace(
                "metadata, result, error",
                &format!("metadata, CASE WHEN length(CAST(result AS BLOB)) > {n} THEN NULL ELSE result END, error"),
            );
    }
    let sql =
        format!("SELECT {cols}, length(CAST(input AS BLOB)), length(CAST(result AS BLOB)) FROM tasks WHERE rowid < ?1");
    let mut f = Filters::new(sql, before);
    f.and("status =", q.status.map(|s| s.as_str()));
    f.and("agent =", q.agent.clone());
    f.and("tenant =", q.tenant.clone());
    f.and("session_id =", q.session_id.clone());
    f.and("parent_id =", q.parent_id.map(|p| p.to_string()));
    let (sql, args) = f.finish("ORDER BY rowid DESC LIMIT", (limit + 1) as i64);
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
        // the two sizes follow the task's columns
        let sizes = (r.get::<_, i64>(32)? as u64, r.get::<_, Option<i64>>(33)?.map(|n| n as u64));
        Ok((task_row(r)?, r.get::<_, i64>(24)?, sizes))
    })?;
    let mut items = Vec::with_capacity(limit);
    let mut omitted = Vec::new();
    let mut bytes = 0u64;
    let mut next_cursor = None;
    let mut more = false;
    for row in rows {
        let (row, rowid, (input_bytes, result_bytes)) = row?;
        let left_out = Omitted::of(input_bytes, result_bytes, q.value_limit);
        let size = left_out.kept(input_bytes, result_bytes);
        let full = q.max_bytes.is_some_and(|m| bytes + size > m as u64);
        if items.len() == limit || (full && !items.is_empty()) {
            // the query asked for one more than the page: this row proves another page follows
            more = true;
            break;
        }
        bytes += size;
        items.push(row.task);
        omitted.push(left_out);
        next_cursor = Some(rowid);
    }
    let next_cursor = if more { next_cursor.map(|v| v.to_string()) } else { None };
    Ok(TaskPage { items, next_cursor, omitted })
}

/// A queued task `t` that is no later turn of a session whose earlier turn has not finished, and
/// not past its time to live (`lifecycle::startable`).
/// `:now` stands for the statement's parameter holding now: see [`startable`].
const STARTABLE: &str = "(t.expires_at IS NULL OR t.expires_at > :now OR t.attempt > 0) \
     AND (t.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks p \
     WHERE p.session_id = t.session_id AND p.tenant = t.tenant AND p.rowid < t.rowid \
     AND p.status IN ('scheduled', 'queued', 'running', 'waiting_input', 'parked')))";

/// [`STARTABLE`] with `now` (a parameter, `?N`) in place of `:now`.
pub(super) fn startable(now: &str) -> String {
    STARTABLE.replace(":now", now)
}

/// Claims a task: `?1` worker, `?2` lease end, `?3` now.
const CLAIM_SET: &str = "UPDATE tasks SET status = 'running', attempt = attempt + 1, worker = ?1, lease_until = ?2, \
     started_at = ?3, last_seq = last_seq + 1";

pub(super) fn claim(c: &Tx, req: &ClaimRequest, now: Micros) -> Result<Vec<Claimed>> {
    let quarantined =
        c.prepare_cached("SELECT 1 FROM nodes WHERE id = ?1 AND status = 'quarantined'")?.exists([&req.worker])?;
    if quarantined {
        return Ok(Vec::new());
    }
    let lease_until = now.plus(req.lease);
    let sql = format!(
        "{CLAIM_SET} WHERE rowid IN (SELECT rowid FROM tasks t WHERE status = 'queued' AND agent = ?4 AND run_at <= ?3 \
                                     AND {} ORDER BY priority DESC, rowid LIMIT ?5) \
         RETURNING {TASK_COLS}",
        startable("?3")
    );
    // Under running caps, the tenants' running tasks now (this is the only writer, so nothing
    // else claims until this transaction commits), less what this claim takes as it goes.
    let mut room = if req.caps.is_unlimited() { None } else { Some(Room::new(&req.caps, running_by_tenant(c)?)) };
    let mut out = Vec::new();
    let mut left = req.limit.unwrap_or(u32::MAX);
    for (agent, n) in &req.wants {
        let n = (*n).min(left);
        if n == 0 {
            continue;
        }
        let mut rows: Vec<(TaskRow, i64)> = match room.as_mut() {
            room if req.keys.cap(agent).is_some() => {
                let cap = req.keys.cap(agent).unwrap_or(u32::MAX);
                let mut stmt = c.prepare_cached(&format!("{CLAIM_SET} WHERE rowid = ?4 RETURNING {TASK_COLS}"))?;
                let mut rows = Vec::new();
                for rowid in super::keys::picks(c, agent, n, cap, now, room, STARTABLE)? {
                    rows.push(stmt.query_row(params![req.worker, lease_until.0, now.0, rowid], |r| {
                        Ok((task_row(r)?, r.get::<_, i64>(24)?))
                    })?);
                }
                rows
            }
            None => {
                let mut stmt = c.prepare_cached(&sql)?;
                let it = stmt.query_map(params![req.worker, lease_until.0, now.0, agent, n as i64], |r| {
                    Ok((task_row(r)?, r.get::<_, i64>(24)?))
                })?;
                it.collect::<rusqlite::Result<_>>()?
            }
            Some(room) => {
                let mut stmt = c.prepare_cached(&format!("{CLAIM_SET} WHERE rowid = ?4 RETURNING {TASK_COLS}"))?;
                let mut rows = Vec::new();
                for rowid in capped_picks(c, agent, n, now, room)? {
                    let row = stmt.query_row(params![req.worker, lease_until.0, now.0, rowid], |r| {
                        Ok((task_row(r)?, r.get::<_, i64>(24)?))
                    })?;
                    room.take(&row.0.task.tenant);
                    rows.push(row);
                }
                rows
            }
        };
        left = left.saturating_sub(rows.len() as u32);
        rows.sort_by_key(|(r, rowid)| (std::cmp::Reverse(r.task.priority), *rowid));
        for (row, _) in rows {
            let event = emit(c, &row.task, vec![lifecycle::started(&row)], now)?.remove(0);
            out.push(Claimed { task: row.task, event });
        }
    }
    Ok(out)
}

/// Running tasks by tenant.
fn running_by_tenant(c: &Connection) -> Result<HashMap<String, u64>> {
    let mut stmt = c.prepare_cached("SELECT tenant, count(*) FROM tasks WHERE status = 'running' GROUP BY tenant")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The rowids of the best `n` runnable tasks of `agent` that fit their tenants' free running
/// slots: each tenant with queued work (found one index probe at a time) offers its best tasks
/// up to its room, and the offers are merged by priority, then age. A tenant at its cap costs
/// one probe, however long its backlog, and holds back no one else's tasks.
fn capped_picks(c: &Connection, agent: &str, n: u32, now: Micros, room: &Room) -> Result<Vec<i64>> {
    let tenants: Vec<String> = {
        let mut stmt = c.prepare_cached(
            "WITH RECURSIVE queued(tenant) AS ( \
                 SELECT (SELECT tenant FROM tasks WHERE status = 'queued' AND agent = ?1 ORDER BY tenant LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT tenant FROM tasks WHERE status = 'queued' AND agent = ?1 AND tenant > queued.tenant \
                         ORDER BY tenant LIMIT 1) \
                 FROM queued WHERE queued.tenant IS NOT NULL) \
             SELECT tenant FROM queued WHERE tenant IS NOT NULL",
        )?;
        let it = stmt.query_map([agent], |r| r.get(0))?;
        it.collect::<rusqlite::Result<_>>()?
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT priority, rowid FROM tasks t WHERE status = 'queued' AND agent = ?1 AND tenant = ?2 AND run_at <= ?3 \
         AND {} ORDER BY priority DESC, rowid LIMIT ?4",
        startable("?3")
    ))?;
    let mut picks: Vec<(i64, i64)> = Vec::new();
    for tenant in &tenants {
        let k = room.left(tenant).map_or(u64::from(n), |free| free.min(u64::from(n)));
        if k == 0 {
            continue;
        }
        let it = stmt.query_map(params![agent, tenant, now.0, k as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for pick in it {
            picks.push(pick?);
        }
    }
    picks.sort_by_key(|&(priority, rowid)| (std::cmp::Reverse(priority), rowid));
    picks.truncate(n as usize);
    Ok(picks.into_iter().map(|(_, rowid)| rowid).collect())
}

/// Inserts a transition's events for `task` and counts the output they store for its tenant.
fn emit(c: &Tx, task: &Task, steps: Vec<Step>, now: Micros) -> Result<Vec<Event>> {
    let mut out = Vec::with_capacity(steps.len());
    let mut stored = 0;
    for s in steps {
        let output = s.output;
        let (event, bytes) = insert_event(c, task, s, now)?;
        stored += match output {
            Output::None => 0,
            Output::Data => bytes,
            Output::Bytes(n) => n,
        };
        out.push(event);
    }
    if stored > 0 {
        c.add_output(&task.tenant, crate::output_day(now), stored);
    }
    Ok(out)
}

/// Writes back the columns a transition may change.
fn store_row(c: &Connection, row: &TaskRow) -> Result<()> {
    let t = &row.task;
    c.prepare_cached(
        "UPDATE tasks SET status = ?2, attempt = ?3, worker = ?4, lease_until = ?5, run_at = ?6, started_at = ?7, \
         finished_at = ?8, result = ?9, error = ?10, usage = ?11, cancel_requested = ?12, released = ?13, \
         last_seq = ?14, spent_at = ?15 WHERE id = ?1",
    )?
    .execute(params![
        t.id.to_string(),
        t.status.as_str(),
        t.attempt,
        t.worker,
        row.lease_until.map(|m| m.0),
        row.run_at.0,
        t.started_at.map(|m| m.0),
        t.finished_at.map(|m| m.0),
        t.result.as_ref().map(|v| v.to_string()),
        t.error.as_ref().map(|e| serde_json::to_string(e).expect("error serializes")),
        stored_usage(&t.usage),
        t.cancel_requested,
        row.released,
        row.last_seq as i64,
        row.spent_at.map(|m| m.0),
    ])?;
    Ok(())
}

/// Writes a row a transition changed, and its events.
pub(super) fn write(c: &Tx, row: TaskRow, steps: Vec<Step>, now: Micros) -> Result<Change> {
    store_row(c, &row)?;
    let events = emit(c, &row.task, steps, now)?;
    Ok(Change { task: row.task, events })
}

pub(super) fn append(c: &Tx, id: TaskId, attempt: u32, drafts: &[EventDraft], now: Micros) -> Result<Vec<Event>> {
    let Some(mut row) = load(c, id)? else { return Err(Error::Fenced(id)) };
    let steps = lifecycle::append(&mut row, attempt, drafts).map_err(|_| Error::Fenced(id))?;
    c.prepare_cached("UPDATE tasks SET last_seq = ?2 WHERE id = ?1")?
        .execute(params![id.to_string(), row.last_seq as i64])?;
    emit(c, &row.task, steps, now)
}

pub(super) fn complete(
    c: &Tx,
    id: TaskId,
    attempt: u32,
    drafts: &[EventDraft],
    outcome: &Outcome,
    now: Micros,
) -> Result<Change> {
    let Some(mut row) = load(c, id)? else { return Err(Error::NotFound(id)) };
    let steps = lifecycle::complete(&mut row, attempt, drafts, outcome, now).map_err(|_| Error::Fenced(id))?;
    write(c, row, steps, now)
}

pub(super) fn renew(c: &Connection, worker: &str, until: Micros) -> Result<Vec<Held>> {
    let mut stmt = c.prepare_cached(
        "UPDATE tasks SET lease_until = ?1 WHERE worker = ?2 AND status = 'running' RETURNING id, attempt, cancel_requested",
    )?;
    let rows = stmt.query_map(params![until.0, worker], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, i64>(2)? != 0))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, attempt, cancel_requested) = row?;
        let id = id.parse::<TaskId>()?;
        out.push(Held { id, attempt, cancel_requested });
    }
    Ok(out)
}

pub(super) fn release(c: &Tx, worker: &str, tasks: &[(TaskId, u32)], reason: &str, now: Micros) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for (id, attempt) in tasks {
        let Some(mut row) = load(c, *id)? else { continue };
        if let Ok(step) = lifecycle::release(&mut row, worker, *attempt, reason, now) {
            out.push(write(c, row, vec![step], now)?);
        }
    }
    Ok(out)
}

/// Running tasks whose lease ended, or whose worker is not alive: `(id, attempt)`.
pub(super) fn reap_candidates(c: &Connection, now: Micros) -> Result<Vec<(TaskId, u32)>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, attempt FROM tasks WHERE status = 'running' AND (lease_until < ?1 OR worker IS NULL \
         OR worker NOT IN (SELECT id FROM nodes WHERE status IN ('alive', 'draining')))",
    )?;
    let rows = stmt.query_map([now.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, attempt) = row?;
        out.push((id.parse::<TaskId>()?, attempt));
    }
    Ok(out)
}

pub(super) fn reap(c: &Tx, victims: &[(TaskId, u32)], now: Micros) -> Result<Vec<Change>> {
    // The victims were chosen on a reader, before this transaction: the lifecycle judges each
    // again on the row as it is now (a lease renewed or a worker back alive keeps its task).
    let mut alive = c.prepare_cached("SELECT 1 FROM nodes WHERE id = ?1 AND status IN ('alive', 'draining')")?;
    let mut out = Vec::new();
    for (id, attempt) in victims {
        let Some(mut row) = load(c, *id)? else { continue };
        let worker_alive = match &row.task.worker {
            Some(w) => alive.exists([w])?,
            None => false,
        };
        if let Ok(step) = lifecycle::reap(&mut row, *attempt, worker_alive, now) {
            out.push(write(c, row, vec![step], now)?);
        }
    }
    Ok(out)
}

pub(super) fn request_cancel(c: &Tx, id: TaskId, now: Micros) -> Result<Change> {
    let Some(mut row) = load(c, id)? else { return Err(Error::NotFound(id)) };
    let requested = row.task.cancel_requested;
    let waited = row.task.status == smith_core::TaskStatus::WaitingInput;
    let steps: Vec<Step> = lifecycle::cancel(&mut row, now).into_iter().collect();
    if steps.is_empty() && requested == row.task.cancel_requested {
        return Ok(Change { task: row.task, events: Vec::new() });
    }
    if waited {
        super::approvals::cancel_pending(c, id)?;
    }
    write(c, row, steps, now)
}

pub(super) fn events(c: &Connection, id: TaskId, after: u64, limit: usize) -> Result<Vec<Event>> {
    let sql = format!("SELECT {EVENT_COLS} FROM events WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![id.to_string(), after as i64, limit as i64], event_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn feed(c: &Connection, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage> {
    // One read transaction: the high-water mark and the page come from the same snapshot.
    c.execute_batch("BEGIN")?;
    let out = feed_in_snapshot(c, cursor, filter, limit);
    c.execute_batch("COMMIT")?;
    out
}

fn feed_in_snapshot(c: &Connection, cursor: u64, filter: &FeedFilter, limit: usize) -> Result<FeedPage> {
    let high: i64 = c.prepare_cached("SELECT coalesce(max(pos), 0) FROM events")?.query_row([], |r| r.get(0))?;
    let high = high as u64;
    let horizon: i64 = c
        .prepare_cached("SELECT coalesce(max(pos), 0) FROM retention_horizons WHERE ?1 IS NULL OR tenant = ?1")?
        .query_row([&filter.tenant], |r| r.get(0))?;
    let horizon = horizon as u64;
    if high <= cursor {
        return Ok(FeedPage { events: Vec::new(), cursor: cursor.max(high), more: false, horizon });
    }
    let mut sql = format!("SELECT {EVENT_COLS} FROM events WHERE pos > ?1 AND pos <= ?2");
    if !filter.kinds.is_empty() {
        // kinds come from the closed enum, so quoting them inline is safe
        let list: Vec<String> = filter.kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
        sql.push_str(&format!(" AND kind IN ({})", list.join(",")));
    }
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(cursor as i64), Box::new(high as i64)];
    if let Some(a) = &filter.agent {
        args.push(Box::new(a.clone()));
        sql.push_str(&format!(" AND agent = ?{}", args.len()));
    }
    if let Some(t) = &filter.tenant {
        args.push(Box::new(t.clone()));
        sql.push_str(&format!(" AND {}", crate::visible_sql(&format!("?{}", args.len()))));
    }
    args.push(Box::new(limit as i64));
    sql.push_str(&format!(" ORDER BY pos LIMIT ?{}", args.len()));
    let mut stmt = c.prepare_cached(&sql)?;
    let events: Vec<Event> = stmt
        .query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), event_row)?
        .collect::<rusqlite::Result<_>>()?;
    if events.len() == limit {
        let last = events.last().map(|e| e.pos).unwrap_or(cursor);
        return Ok(FeedPage { events, cursor: last, more: true, horizon });
    }
    Ok(FeedPage { events, cursor: high, more: false, horizon })
}

pub(super) fn append_global(c: &Connection, e: &GlobalEvent, now: Micros) -> Result<Event> {
    c.prepare_cached(
        "INSERT INTO events (task_id, seq, kind, agent, tenant, attempt, at, data) VALUES (NULL, 0, ?1, ?2, ?3, 0, ?4, ?5)",
    )?
    .execute(params![e.kind.as_str(), e.agent, e.tenant, now.0, e.data.to_string()])?;
    Ok(Event {
        task_id: None,
        seq: 0,
        kind: e.kind,
        at: now,
        data: e.data.clone(),
        agent: e.agent.clone(),
        tenant: e.tenant.clone(),
        attempt: 0,
        pos: c.last_insert_rowid() as u64,
    })
}

pub(super) fn global_events(c: &Connection, q: &GlobalEventQuery) -> Result<Vec<Event>> {
    let GlobalEventQuery { kinds, tenant, after, limit } = q;
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    // kinds come from the closed enum, so quoting them inline is safe
    let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
    let mut sql =
        format!("SELECT {EVENT_COLS} FROM events WHERE task_id IS NULL AND kind IN ({}) AND pos > ?1", list.join(","));
    if tenant.is_some() {
        sql.push_str(&format!(" AND {}", crate::visible_sql("?3")));
    }
    sql.push_str(" ORDER BY pos LIMIT ?2");
    let mut stmt = c.prepare_cached(&sql)?;
    let (after, limit) = (*after as i64, *limit as i64);
    let rows = match tenant {
        Some(t) => stmt.query_map(params![after, limit, t], event_row)?.collect::<rusqlite::Result<_>>()?,
        None => stmt.query_map(params![after, limit], event_row)?.collect::<rusqlite::Result<_>>()?,
    };
    Ok(rows)
}

pub(super) fn create_session(c: &Connection, s: &Session) -> Result<()> {
    if agent_def(c, &s.agent)?.is_none() {
        return Err(smith_core::Error::unprocessable(format!("unknown agent {:?}", s.agent)).into());
    }
    let n = c
        .prepare_cached(
            "INSERT INTO sessions (id, tenant, agent, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![s.id, s.tenant, s.agent, s.metadata.to_string(), s.created_at.0])?;
    if n == 0 {
        return Err(
            smith_core::Error::new(smith_core::Code::Conflict, format!("session {} already exists", s.id)).into()
        );
    }
    Ok(())
}

pub(super) fn get_session(c: &Connection, id: &str) -> Result<Option<Session>> {
    Ok(c.prepare_cached("SELECT id, tenant, agent, metadata, created_at FROM sessions WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(Session {
                id: r.get(0)?,
                tenant: r.get(1)?,
                agent: r.get(2)?,
                metadata: json_col(r, 3)?,
                created_at: Micros(r.get(4)?),
            })
        })
        .optional()?)
}

/// Usage as stored: NULL while nothing was spent, so totals read only tasks that spent.
fn stored_usage(u: &Usage) -> Option<String> {
    (!u.is_zero()).then(|| serde_json::to_string(u).expect("usage serializes"))
}

pub(super) fn usage_totals(c: &Connection, by: UsageBy) -> Result<Vec<(String, Usage)>> {
    let col = match by {
        UsageBy::Agent => "agent",
        UsageBy::Tenant => "tenant",
    };
    let sql = format!(
        "SELECT k, sum(i), sum(o), sum(c) FROM ( \
             SELECT {col} AS k, sum(json_extract(usage, '$.input_tokens')) AS i, \
                 sum(json_extract(usage, '$.output_tokens')) AS o, sum(json_extract(usage, '$.cost_usd')) AS c \
             FROM tasks WHERE usage IS NOT NULL GROUP BY {col} \
             UNION ALL SELECT {col}, sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM usage_rollups GROUP BY {col}) \
         GROUP BY k ORDER BY k"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([], named_usage)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.into_iter().filter(|(_, u)| !u.is_zero()).collect())
}

/// One tenant's token and cost totals by agent.
fn tenant_usage_by_agent(c: &Connection, tenant: &str) -> Result<Vec<(String, Usage)>> {
    let mut stmt = c.prepare_cached(
        "SELECT k, sum(i), sum(o), sum(c) FROM ( \
             SELECT agent AS k, sum(json_extract(usage, '$.input_tokens')) AS i, \
                 sum(json_extract(usage, '$.output_tokens')) AS o, sum(json_extract(usage, '$.cost_usd')) AS c \
             FROM tasks WHERE usage IS NOT NULL AND tenant = ?1 GROUP BY agent \
             UNION ALL SELECT agent, sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM usage_rollups \
                 WHERE tenant = ?1 GROUP BY agent) \
         GROUP BY k",
    )?;
    let rows = stmt.query_map([tenant], named_usage)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A row of (name, summed input tokens, output tokens, cost), the sums NULL when none spent.
fn named_usage(r: &Row) -> rusqlite::Result<(String, Usage)> {
    let usage = Usage {
        input_tokens: r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64,
        output_tokens: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
        cost_usd: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
    };
    Ok((r.get(0)?, usage))
}

pub(super) fn count_session_tasks(c: &Connection, session_id: &str, tenant: &str) -> Result<u64> {
    let n: i64 = c
        .prepare_cached("SELECT count(*) FROM tasks WHERE session_id = ?1 AND tenant = ?2")?
        .query_row(params![session_id, tenant], |r| r.get(0))?;
    Ok(n as u64)
}

/// Upserts the given definitions, and the built-ins unless a definition overrides one.
pub(super) fn put_agents(c: &Connection, defs: &[AgentDef]) -> Result<()> {
    let now = Micros::now();
    let mut all: Vec<AgentDef> =
        AgentDef::builtins().into_iter().filter(|b| !defs.iter().any(|d| d.name == b.name)).collect();
    all.extend(defs.iter().cloned());
    let mut stmt = c.prepare_cached(
        "INSERT INTO agents (name, definition, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
    )?;
    for d in &all {
        stmt.execute(params![d.name, serde_json::to_string(d)?, now.0])?;
    }
    Ok(())
}

/// Every agent with its counts and usage: every tenant's, or one tenant's only.
pub(super) fn agents(c: &Connection, tenant: Option<&str>) -> Result<Vec<AgentSummary>> {
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    {
        let mut stmt = c.prepare_cached(
            "SELECT agent, status, count(*) FROM tasks WHERE status IN ('queued', 'running') \
             AND (?1 IS NULL OR tenant = ?1) GROUP BY agent, status",
        )?;
        let rows =
            stmt.query_map([tenant], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
        for row in rows {
            let (a, s, n) = row?;
            counts.insert((a, s), n as u64);
        }
    }
    let usage: HashMap<String, Usage> = match tenant {
        None => usage_totals(c, UsageBy::Agent)?.into_iter().collect(),
        Some(t) => tenant_usage_by_agent(c, t)?.into_iter().collect(),
    };
    let mut stmt = c.prepare_cached("SELECT definition FROM agents ORDER BY name")?;
    let defs = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for d in defs {
        let def = serde_json::from_str::<AgentDef>(&d?)?;
        let queued = counts.get(&(def.name.clone(), "queued".into())).copied().unwrap_or(0);
        let running = counts.get(&(def.name.clone(), "running".into())).copied().unwrap_or(0);
        let usage = usage.get(&def.name).copied().unwrap_or_default();
        out.push(AgentSummary { def, queued, running, usage, breaker: BreakerState::Closed });
    }
    Ok(out)
}

pub(super) fn heartbeat(c: &Connection, n: &Node) -> Result<NodeStatus> {
    let status: String = c
        .prepare_cached(
            "INSERT INTO nodes (id, role, version, address, status, started_at, heartbeat_at, load) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT(id) DO UPDATE SET version = excluded.version, address = excluded.address, \
             status = CASE WHEN nodes.status = 'quarantined' AND excluded.status IN ('alive', 'draining') \
                           THEN 'quarantined' ELSE excluded.status END, \
             heartbeat_at = excluded.heartbeat_at, load = excluded.load \
         RETURNING status",
        )?
        .query_row(
            params![
                n.id,
                n.role.as_str(),
                n.version,
                n.address,
                n.status.as_str(),
                n.started_at.0,
                n.heartbeat_at.0,
                n.load.to_string()
            ],
            |r| r.get(0),
        )?;
    NodeStatus::parse(&status).ok_or_else(|| Error::Backend(format!("unknown node status {status:?}")))
}

pub(super) fn set_node_status(c: &Connection, id: &str, status: NodeStatus) -> Result<()> {
    c.prepare_cached("UPDATE nodes SET status = ?2 WHERE id = ?1")?.execute(params![id, status.as_str()])?;
    Ok(())
}

pub(super) fn readmit_node(c: &Connection, id: &str) -> Result<bool> {
    let changed = c
        .prepare_cached("UPDATE nodes SET status = 'alive' WHERE id = ?1 AND status = 'quarantined'")?
        .execute([id])?;
    Ok(changed == 1)
}

fn node_row(r: &Row) -> rusqlite::Result<Node> {
    let role: String = r.get(1)?;
    let status: String = r.get(4)?;
    let bad = |i: usize, s: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, Type::Text, format!("unknown value {s:?}").into())
    };
    Ok(Node {
        id: r.get(0)?,
        role: NodeRole::parse(&role).ok_or_else(|| bad(1, &role))?,
        version: r.get(2)?,
        address: r.get(3)?,
        status: NodeStatus::parse(&status).ok_or_else(|| bad(4, &status))?,
        started_at: Micros(r.get(5)?),
        heartbeat_at: Micros(r.get(6)?),
        load: json_col(r, 7)?,
    })
}

const NODE_COLS: &str = "id, role, version, address, status, started_at, heartbeat_at, load";

pub(super) fn nodes(c: &Connection) -> Result<Vec<Node>> {
    let sql = format!("SELECT {NODE_COLS} FROM nodes ORDER BY role, started_at, id");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([], node_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Stopped, dead and quarantined nodes are kept this long for `GET /v1/nodes`, then forgotten.
const NODE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Silent workers are quarantined (they may come back, and must be readmitted), other roles die.
pub(super) fn mark_dead_nodes(c: &Connection, stale_before: Micros) -> Result<Vec<Node>> {
    let sql = format!(
        "UPDATE nodes SET status = CASE WHEN role = 'worker' THEN 'quarantined' ELSE 'dead' END \
         WHERE status IN ('alive', 'draining') AND heartbeat_at < ?1 RETURNING {NODE_COLS}"
    );
    let dead: Vec<Node> =
        c.prepare_cached(&sql)?.query_map([stale_before.0], node_row)?.collect::<rusqlite::Result<_>>()?;
    let forget_before = Micros(Micros::now().0 - NODE_MEMORY.as_micros() as i64);
    c.prepare_cached("DELETE FROM nodes WHERE status IN ('dead', 'stopped', 'quarantined') AND heartbeat_at < ?1")?
        .execute([forget_before.0])?;
    Ok(dead)
}

pub(super) fn queue_stats(c: &Connection, now: Micros) -> Result<QueueStats> {
    let count = |status: &str| -> Result<u64> {
        Ok(c.prepare_cached("SELECT count(*) FROM tasks WHERE status = ?1")?
            .query_row([status], |r| r.get::<_, i64>(0))? as u64)
    };
    let oldest: Option<i64> = c
        .prepare_cached("SELECT created_at FROM tasks WHERE status = 'queued' AND run_at <= ?1 ORDER BY rowid LIMIT 1")?
        .query_row([now.0], |r| r.get(0))
        .optional()?;
    Ok(QueueStats {
        queued: count("queued")?,
        running: count("running")?,
        waiting: count("waiting_input")?,
        scheduled: count("scheduled")?,
        parked: count("parked")?,
        oldest_queued_age: oldest.map(|t| Duration::from_micros(now.since(Micros(t)) as u64)),
    })
}

pub(super) fn acquire_lease(c: &Connection, name: &str, holder: &str, now: Micros, ttl: Duration) -> Result<bool> {
    let until = now.plus(ttl);
    let changed = c
        .prepare_cached(
            "INSERT INTO leader_leases (name, holder, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE leader_leases.holder = excluded.holder OR leader_leases.until < ?4",
        )?
        .execute(params![name, holder, until.0, now.0])?;
    Ok(changed == 1)
}

pub(super) fn release_lease(c: &Connection, name: &str, holder: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM leader_leases WHERE name = ?1 AND holder = ?2")?.execute(params![name, holder])?;
    Ok(())
}

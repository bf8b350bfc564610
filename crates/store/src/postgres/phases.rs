//! The SQL of a write batch, phase by phase (see `writer.rs` for the order and why). Each phase
//! takes the whole batch, picks its own jobs and sets their outputs; an `Err` is a failed
//! statement, which has aborted the transaction.

use super::apply;
use super::db_error;
use super::jobs::{lock_feed, Ctx, Job, LeaseJob, Op, Submission};
use super::liveness::STORE_NOW;
use super::rows::{node_row, task_row, AuditBuf, EventBuf, TaskRow, NODE_COLS, TASK_COLS};
use crate::lifecycle::{self, Step};
use crate::{Error, Result, Submitted};
use smith_core::{AgentDef, Code, Micros, Node, Task, TaskId, TaskStatus};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// What a batch inserts when it ends, under the feed lock: its events and audit records.
#[derive(Debug, Default)]
pub(super) struct Appends {
    pub events: EventBuf,
    pub audit: AuditBuf,
}

impl Appends {
    /// How much is queued now, to go back to with [`Appends::truncate`].
    pub fn mark(&self) -> (usize, usize) {
        (self.events.len(), self.audit.len())
    }

    pub fn truncate(&mut self, (events, audit): (usize, usize)) {
        self.events.truncate(events);
        self.audit.truncate(audit);
    }
}

/// Runs every phase of a batch (or of one job, alone in its savepoint).
pub(super) async fn run(conn: &mut PgConnection, ops: &mut [Op], out: &mut Appends, ctx: &mut Ctx) -> Result<()> {
    for op in ops.iter_mut() {
        if let Op::Audit(j) = op {
            // checked before it was queued; numbered when the batch ends
            j.out = Some(Ok(out.audit.push(&j.input)));
        }
    }
    misc(conn, ops, &mut out.events).await?;
    submit(conn, ops, out, ctx).await?;
    let ev = &mut out.events;
    task_changes(conn, ops, ev).await?;
    super::claims::claims(conn, ops, ev, ctx).await
}

// ---------------------------------------------------------------------------------------------
// Agents, nodes, leases and fleet events: few, so one statement per job.

async fn misc(conn: &mut PgConnection, ops: &mut [Op], ev: &mut EventBuf) -> Result<()> {
    for op in ops.iter_mut() {
        match op {
            Op::Global(j) => j.out = Some(Ok(ev.push_global(&j.input, Micros::now()))),
            Op::PutAgents(j) => {
                put_agents(conn, &j.input).await.map_err(db_error)?;
                j.out = Some(Ok(()));
            }
            Op::SetNodeStatus(j) => {
                let (id, status) = &j.input;
                sqlx::query("UPDATE nodes SET status = $2 WHERE id = $1")
                    .bind(id)
                    .bind(status.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                j.out = Some(Ok(()));
            }
            Op::Readmit(j) => {
                let done = sqlx::query("UPDATE nodes SET status = 'alive' WHERE id = $1 AND status = 'quarantined'")
                    .bind(&j.input)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                j.out = Some(Ok(done.rows_affected() == 1));
            }
            Op::MarkDead(j) => j.out = Some(Ok(mark_dead_nodes(conn, j.input).await?)),
            Op::Lease(j) => j.out = Some(Ok(lease(conn, &j.input).await.map_err(db_error)?)),
            _ => {}
        }
    }
    Ok(())
}

/// Upserts the given definitions, and the built-ins unless a definition overrides one.
pub(super) async fn put_agents(conn: &mut PgConnection, defs: &[AgentDef]) -> sqlx::Result<()> {
    // One row per name (the last definition wins), sorted: concurrent writers lock rows in one order.
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    for d in AgentDef::builtins().iter().chain(defs) {
        all.insert(d.name.clone(), serde_json::to_string(d).expect("an agent definition serializes"));
    }
    let (names, definitions): (Vec<String>, Vec<String>) = all.into_iter().unzip();
    sqlx::query(
        "INSERT INTO agents (name, definition, updated_at) \
         SELECT u.name, u.definition::json, $3 FROM UNNEST($1::text[], $2::text[]) AS u(name, definition) \
         ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
    )
    .bind(names)
    .bind(definitions)
    .bind(Micros::now().0)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stopped, dead and quarantined nodes are kept this long for `GET /v1/nodes`, then forgotten.
const NODE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Silent workers are quarantined (they may come back, and must be readmitted), other roles die.
async fn mark_dead_nodes(conn: &mut PgConnection, silent_for: i64) -> Result<Vec<Node>> {
    let sql = format!(
        "UPDATE nodes SET status = CASE WHEN role = 'worker' THEN 'quarantined' ELSE 'dead' END \
         WHERE status IN ('alive', 'draining') AND heartbeat_at < {STORE_NOW} - $1 \
         RETURNING {NODE_COLS}"
    );
    let rows = sqlx::query(&sql).bind(silent_for).fetch_all(&mut *conn).await.map_err(db_error)?;
    let dead = rows.iter().map(node_row).collect::<Result<Vec<_>>>()?;
    let forget = format!(
        "DELETE FROM nodes WHERE status IN ('dead', 'stopped', 'quarantined') AND heartbeat_at < {STORE_NOW} - $1"
    );
    sqlx::query(&forget).bind(NODE_MEMORY.as_micros() as i64).execute(&mut *conn).await.map_err(db_error)?;
    Ok(dead)
}

/// Takes or renews a named lease (`ttl`), or gives it up (`None`); whether `holder` holds it now.
async fn lease(conn: &mut PgConnection, l: &LeaseJob) -> sqlx::Result<bool> {
    let Some(ttl) = l.ttl else {
        sqlx::query("DELETE FROM leader_leases WHERE name = $1 AND holder = $2")
            .bind(&l.name)
            .bind(&l.holder)
            .execute(conn)
            .await?;
        return Ok(false);
    };
    let now = Micros::now();
    let done = sqlx::query(
        "INSERT INTO leader_leases (name, holder, until) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE leader_leases.holder = excluded.holder OR leader_leases.until < $4",
    )
    .bind(&l.name)
    .bind(&l.holder)
    .bind(now.plus(ttl).0)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------------
// Submissions: one INSERT for the batch.

/// Looks up the definitions of `names`; unknown names are missing from the map.
async fn agent_defs(conn: &mut PgConnection, names: Vec<String>, ctx: &mut Ctx) -> Result<HashMap<String, AgentDef>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, definition::text FROM agents WHERE name = ANY($1::text[])")
            .bind(names)
            .fetch_all(conn)
            .await
            .map_err(db_error)?;
    let mut out = HashMap::with_capacity(rows.len());
    for (name, raw) in rows {
        let def = match ctx.agents.get(&name) {
            Some((cached, def)) if *cached == raw => def.clone(),
            _ => {
                let def: AgentDef = serde_json::from_str(&raw)
                    .map_err(|e| Error::Backend(format!("corrupt definition of agent {name:?}: {e}")))?;
                ctx.agents.insert(name.clone(), (raw, def.clone()));
                def
            }
        };
        out.insert(name, def);
    }
    Ok(out)
}

/// The columns of the submitted tasks, as `UNNEST` takes them.
#[derive(Default)]
struct NewRows {
    id: Vec<String>,
    tenant: Vec<String>,
    agent: Vec<String>,
    input: Vec<String>,
    priority: Vec<i16>,
    timeout_ms: Vec<Option<i64>>,
    max_attempts: Vec<i32>,
    backoff_ms: Vec<i64>,
    backoff_max_ms: Vec<i64>,
    key: Vec<Option<String>>,
    session: Vec<Option<String>>,
    metadata: Vec<String>,
    parent: Vec<Option<String>>,
    budget: Vec<Option<String>>,
    options: Vec<Option<String>>,
    status: Vec<&'static str>,
    run_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
}

/// The batch's submissions, and the audit records of those that carry one.
async fn submit(conn: &mut PgConnection, ops: &mut [Op], out: &mut Appends, ctx: &mut Ctx) -> Result<()> {
    super::schedules::advance(conn, ops).await?;
    submit_tasks(conn, ops, &mut out.events, ctx).await?;
    super::schedules::link(conn, ops).await?;
    for op in ops.iter_mut() {
        if let Op::Submit(j) = op {
            if let (Some(audit), Some(Ok(submitted))) = (&j.input.audit, &j.out) {
                out.audit.push(&crate::submit_record((**audit).clone(), submitted));
            }
        }
    }
    Ok(())
}

async fn submit_tasks(conn: &mut PgConnection, ops: &mut [Op], ev: &mut EventBuf, ctx: &mut Ctx) -> Result<()> {
    // a fire refused by its schedule's cursor is answered already
    let mut jobs: Vec<&mut Job<Submission, Submitted>> = ops
        .iter_mut()
        .filter_map(|op| if let Op::Submit(j) = op { Some(j) } else { None })
        .filter(|j| j.out.is_none())
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    let names: BTreeSet<String> = jobs.iter().map(|j| j.input.task.agent.clone()).collect();
    let defs = agent_defs(conn, names.into_iter().collect(), ctx).await?;
    let now = Micros::now();

    // The task each job would create; `None` for an unknown agent (answered at once).
    let mut planned: Vec<Option<(TaskRow, Step)>> = Vec::with_capacity(jobs.len());
    let mut rows = NewRows::default();
    let mut ids: HashSet<TaskId> = HashSet::new();
    for j in jobs.iter_mut() {
        let t = &j.input.task;
        let Some(def) = defs.get(&t.agent) else {
            j.out = Some(Err(smith_core::Error::unprocessable(format!("unknown agent {:?}", t.agent)).into()));
            planned.push(None);
            continue;
        };
        if let Err(e) = t.validate_for(def) {
            j.out = Some(Err(e.into()));
            planned.push(None);
            continue;
        }
        let (row, queued) = lifecycle::submit(t, def, now);
        let task = &row.task;
        // A repeated id in one batch is never inserted twice: the repeat resolves like a conflict.
        if ids.insert(task.id) {
            rows.id.push(task.id.to_string());
            rows.tenant.push(task.tenant.clone());
            rows.agent.push(task.agent.clone());
            rows.input.push(task.input.to_string());
            rows.priority.push(i16::from(task.priority));
            rows.timeout_ms.push(task.timeout_ms.map(|v| v as i64));
            rows.max_attempts.push(task.max_attempts as i32);
            rows.backoff_ms.push(row.backoff_ms as i64);
            rows.backoff_max_ms.push(row.backoff_max_ms as i64);
            rows.key.push(task.idempotency_key.clone());
            rows.session.push(task.session_id.clone());
            rows.metadata.push(task.metadata.to_string());
            rows.parent.push(task.parent_id.map(|p| p.to_string()));
            rows.budget.push((!task.budget.is_empty()).then(|| serde_json::to_string(&task.budget).expect("budget")));
            rows.options.push(task.options_json());
            rows.status.push(task.status.as_str());
            rows.run_at.push(row.run_at.0);
            rows.expires_at.push(task.expires_at.map(|m| m.0));
        }
        planned.push(Some((row, queued)));
    }

    let mut inserted: HashSet<TaskId> = HashSet::new();
    if !rows.id.is_empty() {
        // A conflict on the id or on (tenant, idempotency_key) inserts nothing and raises nothing,
        // so one repeat cannot abort its batch; ORDER BY keeps the first of a key in a batch.
        let got: Vec<String> = sqlx::query_scalar(
            "INSERT INTO tasks (id, tenant, agent, input, status, priority, timeout_ms, max_attempts, backoff_ms, \
                 backoff_max_ms, idempotency_key, session_id, metadata, created_at, run_at, last_seq, parent_id, \
                 budget, options, expires_at) \
             SELECT u.id::uuid, u.tenant, u.agent, u.input::json, u.status, u.priority, u.timeout_ms, u.max_attempts, \
                 u.backoff_ms, u.backoff_max_ms, u.key, u.session, u.metadata::json, $13, u.run_at, 1, u.parent::uuid, \
                 u.budget::json, u.options::json, u.expires_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::int8[], $7::int4[], \
                 $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[], $14::text[], $15::text[], \
                 $16::text[], $17::text[], $18::int8[], $19::int8[]) \
                 WITH ORDINALITY \
                 AS u(id, tenant, agent, input, priority, timeout_ms, max_attempts, backoff_ms, backoff_max_ms, \
                      key, session, metadata, parent, budget, options, status, run_at, expires_at, n) \
             ORDER BY u.n \
             ON CONFLICT DO NOTHING \
             RETURNING id::text",
        )
        .bind(&rows.id)
        .bind(&rows.tenant)
        .bind(&rows.agent)
        .bind(&rows.input)
        .bind(&rows.priority)
        .bind(&rows.timeout_ms)
        .bind(&rows.max_attempts)
        .bind(&rows.backoff_ms)
        .bind(&rows.backoff_max_ms)
        .bind(&rows.key)
        .bind(&rows.session)
        .bind(&rows.metadata)
        .bind(now.0)
        .bind(&rows.parent)
        .bind(&rows.budget)
        .bind(&rows.options)
        .bind(&rows.status)
        .bind(&rows.run_at)
        .bind(&rows.expires_at)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        for id in got {
            inserted.insert(id.parse::<TaskId>().map_err(|e| Error::Backend(e.to_string()))?);
        }
    }

    // Answer the created ones; find what the others' keys already name.
    let mut repeats: Vec<(usize, String, String)> = Vec::new();
    for (i, (j, planned)) in jobs.iter_mut().zip(planned).enumerate() {
        let Some((row, queued)) = planned else { continue };
        if inserted.remove(&row.task.id) {
            let events = apply::emit(&row, vec![queued], now, ev);
            j.out = Some(Ok(Submitted { task: row.task, created: true, events }));
            continue;
        }
        let task = row.task;
        if let Some(key) = task.idempotency_key {
            repeats.push((i, task.tenant, key));
        } else {
            let e = smith_core::Error::new(Code::Conflict, format!("task {} already exists", task.id));
            j.out = Some(Err(e.into()));
        }
    }
    if repeats.is_empty() {
        return Ok(());
    }
    let (tenants, keys): (Vec<String>, Vec<String>) = repeats.iter().map(|(_, t, k)| (t.clone(), k.clone())).unzip();
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks \
         WHERE (tenant, idempotency_key) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
           AND idempotency_key IS NOT NULL"
    );
    let found = sqlx::query(&sql).bind(tenants).bind(keys).fetch_all(&mut *conn).await.map_err(db_error)?;
    let mut existing: HashMap<(String, String), Task> = HashMap::with_capacity(found.len());
    for r in &found {
        let row = task_row(r)?;
        let key = row.task.idempotency_key.clone().unwrap_or_default();
        existing.insert((row.task.tenant.clone(), key), row.task);
    }
    for (i, tenant, key) in repeats {
        jobs[i].out = Some(match existing.get(&(tenant, key)) {
            Some(task) => Ok(Submitted { task: task.clone(), created: false, events: Vec::new() }),
            // the key is free: the conflict was on the task id
            None => Err(smith_core::Error::new(Code::Conflict, "a task with this id already exists").into()),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Changes to existing tasks: one locking SELECT, the rules in memory, one UPDATE.

/// Every task the batch's appends, completions, cancels, releases and reaps touch.
fn touched_ids(ops: &[Op]) -> BTreeSet<TaskId> {
    let mut ids = BTreeSet::new();
    for op in ops {
        match op {
            Op::Append(j) => {
                ids.insert(j.input.id);
            }
            Op::Complete(j) => {
                ids.insert(j.input.id);
            }
            Op::Cancel(j) => {
                ids.insert(j.input);
            }
            Op::Wait(j) => {
                ids.insert(j.input.id);
            }
            Op::Answer(j) => {
                ids.insert(j.input.id);
            }
            Op::Park(j) => {
                ids.insert(j.input.id);
            }
            Op::Timers(j) => ids.extend(j.input.ids.iter().copied()),
            Op::Release(j) => ids.extend(j.input.tasks.iter().map(|(id, _)| *id)),
            Op::Reap(j) => ids.extend(j.input.victims.iter().map(|(id, _)| *id)),
            _ => {}
        }
    }
    ids
}

async fn task_changes(conn: &mut PgConnection, ops: &mut [Op], ev: &mut EventBuf) -> Result<()> {
    let ids = touched_ids(ops);
    if ids.is_empty() {
        return Ok(());
    }
    // Locked in id order, as every writer does, so two batches never wait on each other in a cycle.
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY tasks.id FOR UPDATE");
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let loaded = sqlx::query(&sql).bind(ids).fetch_all(&mut *conn).await.map_err(db_error)?;
    let mut rows: BTreeMap<TaskId, TaskRow> = BTreeMap::new();
    for r in &loaded {
        let row = task_row(r)?;
        rows.insert(row.task.id, row);
    }
    let before: HashMap<TaskId, Version> = rows.values().map(|r| (r.task.id, version(r))).collect();
    let alive = alive_workers(conn, ops, &rows).await?;
    let answering: Vec<String> = ops
        .iter()
        .filter_map(|op| if let Op::Answer(j) = op { Some(j.input.approval.clone()) } else { None })
        .collect();
    let mut records = super::approvals::lock(conn, answering).await?;
    let (mut asked, mut answered, mut cancelled) = (Vec::new(), Vec::new(), Vec::new());
    let mut holds = Vec::new();

    let now = Micros::now();
    for op in ops.iter_mut() {
        match op {
            Op::Append(j) => {
                let a = &j.input;
                j.out = Some(apply::append(rows.get_mut(&a.id), a.id, a.attempt, &a.drafts, now, ev));
            }
            Op::Complete(j) => {
                let c = &j.input;
                j.out = Some(apply::complete(rows.get_mut(&c.id), c.id, c.attempt, &c.drafts, &c.outcome, now, ev));
            }
            Op::Cancel(j) => {
                let waited = rows.get(&j.input).is_some_and(|r| r.task.status == TaskStatus::WaitingInput);
                let out = apply::request_cancel(rows.get_mut(&j.input), j.input, now, ev);
                if waited && out.as_ref().is_ok_and(|c| c.task.status.is_terminal()) {
                    cancelled.push(j.input.to_string());
                }
                j.out = Some(out);
            }
            Op::Wait(j) => {
                let w = &j.input;
                let out = apply::wait(rows.get_mut(&w.id), w.id, w.attempt, &w.request, now, ev);
                if let Ok(a) = &out {
                    asked.push(a.approval.clone());
                }
                j.out = Some(out);
            }
            Op::Answer(j) => {
                let a = &j.input;
                let out = apply::answer(rows.get_mut(&a.id), records.get_mut(&a.approval), a, now, ev);
                if let Ok(done) = &out {
                    answered.push(done.approval.clone());
                }
                j.out = Some(out);
            }
            Op::Release(j) => {
                let r = &j.input;
                let mut out = Vec::new();
                for (id, attempt) in &r.tasks {
                    let Some(row) = rows.get_mut(id) else { continue };
                    out.extend(apply::release(row, &r.worker, *attempt, &r.reason, now, ev));
                }
                j.out = Some(Ok(out));
            }
            Op::Reap(j) => {
                let r = &j.input;
                let mut out = Vec::new();
                for (id, attempt) in &r.victims {
                    let Some(row) = rows.get_mut(id) else { continue };
                    let worker_alive = row.task.worker.as_ref().is_some_and(|w| alive.contains(w));
                    out.extend(apply::reap(row, *attempt, worker_alive, r.now, ev));
                }
                j.out = Some(Ok(out));
            }
            Op::Timers(j) => {
                let t = &j.input;
                let out = t.ids.iter().filter_map(|id| apply::advance(rows.get_mut(id)?, t.now, ev)).collect();
                j.out = Some(Ok(out));
            }
            Op::Park(j) => {
                let p = &j.input;
                let out = apply::park(rows.get_mut(&p.id), p.id, p.attempt, &p.drafts, &p.park, now, ev);
                if out.as_ref().is_ok_and(|c| c.task.status == TaskStatus::Parked) {
                    holds.push(p.park.clone());
                }
                j.out = Some(out);
            }
            _ => {}
        }
    }
    let changed: Vec<&TaskRow> = rows.values().filter(|r| before.get(&r.task.id) != Some(&version(r))).collect();
    write_back(conn, &changed).await?;
    super::timers::hold(conn, &holds, now).await?;
    super::approvals::insert(conn, &asked).await?;
    super::approvals::update(conn, &answered).await?;
    super::approvals::cancel_pending(conn, cancelled).await
}

/// The columns a change always touches (a new result, error or usage comes with a new event, so
/// with a new `last_seq`): equal versions mean an unchanged row, without comparing payloads.
type Version = (TaskStatus, u64, bool, Option<Micros>, Option<String>, Micros, u32);

fn version(r: &TaskRow) -> Version {
    let t = &r.task;
    (t.status, r.last_seq, t.cancel_requested, r.lease_until, t.worker.clone(), r.run_at, r.released)
}

/// The workers of the rows a reap looks at that are alive or draining (they keep their tasks).
async fn alive_workers(
    conn: &mut PgConnection,
    ops: &[Op],
    rows: &BTreeMap<TaskId, TaskRow>,
) -> Result<HashSet<String>> {
    let mut workers: BTreeSet<String> = BTreeSet::new();
    for op in ops {
        if let Op::Reap(j) = op {
            let of = |(id, _): &(TaskId, u32)| rows.get(id).and_then(|r| r.task.worker.clone());
            workers.extend(j.input.victims.iter().filter_map(of));
        }
    }
    if workers.is_empty() {
        return Ok(HashSet::new());
    }
    let alive: Vec<String> =
        sqlx::query_scalar("SELECT id FROM nodes WHERE status IN ('alive', 'draining') AND id = ANY($1::text[])")
            .bind(workers.into_iter().collect::<Vec<_>>())
            .fetch_all(conn)
            .await
            .map_err(db_error)?;
    Ok(alive.into_iter().collect())
}

/// Writes the mutable columns of changed rows back, in one statement.
async fn write_back(conn: &mut PgConnection, rows: &[&TaskRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut id = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut result = Vec::with_capacity(n);
    let mut error = Vec::with_capacity(n);
    let mut usage = Vec::with_capacity(n);
    let mut finished_at = Vec::with_capacity(n);
    let mut worker = Vec::with_capacity(n);
    let mut lease_until = Vec::with_capacity(n);
    let mut run_at = Vec::with_capacity(n);
    let mut released = Vec::with_capacity(n);
    let mut last_seq = Vec::with_capacity(n);
    let mut cancel = Vec::with_capacity(n);
    let mut spent_at = Vec::with_capacity(n);
    for r in rows {
        let t = &r.task;
        id.push(t.id.to_string());
        status.push(t.status.as_str());
        result.push(t.result.as_ref().map(|v| v.to_string()));
        error.push(t.error.as_ref().map(|e| serde_json::to_string(e).expect("an error serializes")));
        // NULL while nothing was spent, so usage totals read only tasks that spent
        usage.push((!t.usage.is_zero()).then(|| serde_json::to_string(&t.usage).expect("usage serializes")));
        finished_at.push(t.finished_at.map(|m| m.0));
        worker.push(t.worker.clone());
        lease_until.push(r.lease_until.map(|m| m.0));
        run_at.push(r.run_at.0);
        released.push(r.released as i32);
        last_seq.push(r.last_seq as i64);
        cancel.push(t.cancel_requested);
        spent_at.push(r.spent_at.map(|m| m.0));
    }
    sqlx::query(
        "UPDATE tasks AS t SET status = u.status, result = u.result::json, error = u.error::json, \
             usage = u.usage::json, finished_at = u.finished_at, worker = u.worker, lease_until = u.lease_until, \
             run_at = u.run_at, released = u.released, last_seq = u.last_seq, cancel_requested = u.cancel_requested, \
             spent_at = u.spent_at \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], \
             $8::int8[], $9::int8[], $10::int4[], $11::int8[], $12::bool[], $13::int8[]) \
             AS u(id, status, result, error, usage, finished_at, worker, lease_until, run_at, released, last_seq, \
                  cancel_requested, spent_at) \
         WHERE t.id = u.id",
    )
    .bind(id)
    .bind(status)
    .bind(result)
    .bind(error)
    .bind(usage)
    .bind(finished_at)
    .bind(worker)
    .bind(lease_until)
    .bind(run_at)
    .bind(released)
    .bind(last_seq)
    .bind(cancel)
    .bind(spent_at)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The batch's events, last.

/// Inserts the batch's events under the feed lock; returns how far to shift their placeholder
/// positions (index `i` becomes position `previous maximum + 1 + i`).
pub(super) async fn insert_events(conn: &mut PgConnection, ev: &EventBuf, ctx: &mut Ctx) -> Result<u64> {
    if ev.is_empty() {
        return Ok(0);
    }
    let (tenant, day, bytes) = tenant_output(ev);
    // A statement of its own: the insert's snapshot must be taken after the lock is granted, so
    // that it sees the previous holder's committed events.
    lock_feed(conn, ctx).await?;
    // The events and the tenants' output bytes in one statement: one round trip under the lock.
    let before: i64 = sqlx::query_scalar(
        "WITH head AS (SELECT coalesce(max(pos), 0) AS pos FROM events), \
         ins AS ( \
             INSERT INTO events (pos, task_id, seq, kind, agent, tenant, attempt, at, data) \
             SELECT head.pos + u.n, u.task_id::uuid, u.seq, u.kind, u.agent, u.tenant, u.attempt, u.at, u.data::json \
             FROM head, UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int8[], \
                 $8::text[]) WITH ORDINALITY AS u(task_id, seq, kind, agent, tenant, attempt, at, data, n)), \
         output AS ( \
             INSERT INTO tenant_output (tenant, day, bytes) SELECT * FROM UNNEST($9::text[], $10::int8[], $11::int8[]) \
             ON CONFLICT (tenant, day) DO UPDATE SET bytes = tenant_output.bytes + excluded.bytes) \
         SELECT pos FROM head",
    )
    .bind(&ev.task_id)
    .bind(&ev.seq)
    .bind(&ev.kind)
    .bind(&ev.agent)
    .bind(&ev.tenant)
    .bind(&ev.attempt)
    .bind(&ev.at)
    .bind(&ev.data)
    .bind(tenant)
    .bind(day)
    .bind(bytes)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(before as u64 + 1)
}

/// The batch's stored output summed by tenant and day, as the columns of the upsert into
/// `tenant_output` — still under the feed lock: batches of every process are serialized there
/// already, so the rows' locks cost no wait of their own.
fn tenant_output(ev: &EventBuf) -> (Vec<&str>, Vec<i64>, Vec<i64>) {
    let mut totals: BTreeMap<(&str, i64), i64> = BTreeMap::new();
    for i in 0..ev.len() {
        if let (Some(tenant), bytes @ 1..) = (&ev.tenant[i], ev.output[i]) {
            *totals.entry((tenant.as_str(), crate::output_day(Micros(ev.at[i])))).or_default() += bytes;
        }
    }
    let (mut tenant, mut day, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for ((t, d), b) in totals {
        tenant.push(t);
        day.push(d);
        bytes.push(b);
    }
    (tenant, day, bytes)
}

/// Inserts the batch's audit records under the feed lock; returns how far to shift their
/// placeholder ids (index `i` becomes id `previous maximum + 1 + i`), so ids increase in commit
/// order as feed positions do.
pub(super) async fn insert_audit(conn: &mut PgConnection, audit: &AuditBuf, ctx: &mut Ctx) -> Result<u64> {
    if audit.is_empty() {
        return Ok(0);
    }
    // A statement of its own after the lock, as for events: it must see the previous holder's rows.
    lock_feed(conn, ctx).await?;
    let before: i64 = sqlx::query_scalar(
        "WITH head AS (SELECT coalesce(max(id), 0) AS id FROM audit), \
         ins AS ( \
             INSERT INTO audit (id, at, actor, tenant, action, target, source, status) \
             SELECT head.id + u.n, u.at, u.actor, u.tenant, u.action, u.target, u.source, u.status \
             FROM head, UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[]) \
                 WITH ORDINALITY AS u(at, actor, tenant, action, target, source, status, n)) \
         SELECT id FROM head",
    )
    .bind(&audit.at)
    .bind(&audit.actor)
    .bind(&audit.tenant)
    .bind(&audit.action)
    .bind(&audit.target)
    .bind(&audit.source)
    .bind(&audit.status)
    .fetch_one(conn)
    .await
    .map_err(db_error)?;
    Ok(before as u64 + 1)
}

//! The claims of a write batch: last, under the feed lock. SKIP LOCKED alone lets two
//! concurrent claims miss work: a claim whose snapshot predates a submission's commit skips the
//! one older task another claim has locked, and returns nothing while a task is queued. Claims
//! that run one at a time (in every process), each after the previous one committed, see every
//! committed task that no one else is claiming. They never wait (SKIP LOCKED), so holding the
//! lock through them is safe.
//!
//! The same serialization makes per-tenant running caps exact: running tasks only come from
//! claims, so the tenants' running counts read after the lock stay true for the whole batch
//! once the batch's own claims are added as they return.

use super::db_error;
use super::jobs::{lock_feed, Ctx, Job, Op};
use super::rows::{task_row, EventBuf, TaskRow, TASK_COLS};
use crate::caps::Room;
use crate::{ClaimRequest, Claimed, Error, Result, RunningCaps};
use smith_core::Micros;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::sync::Arc;

/// Tasks one claim takes of one agent at most ("up to n": a larger `n` gets this many).
const MAX_CLAIM: u32 = 1000;

/// A queued task `t` that is no later turn of a session whose earlier turn has not finished, and
/// not past its time to live (`lifecycle::startable`). `:now` stands for the statement's
/// parameter holding now: see [`startable`].
const STARTABLE: &str = "(t.expires_at IS NULL OR t.expires_at > :now OR t.attempt > 0) \
     AND (t.session_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks p \
     WHERE p.session_id = t.session_id AND p.tenant = t.tenant AND p.seq < t.seq \
     AND p.status IN ('scheduled', 'queued', 'running', 'waiting_input', 'parked')))";

/// [`STARTABLE`] with `now` (a parameter, `$N`) in place of `:now`.
fn startable(now: &str) -> String {
    STARTABLE.replace(":now", now)
}

/// The slots (`$4` workers, `$5` lease ends, numbered in arrival order and left out when their
/// worker is quarantined) matched by rank to `picked`, and the claim itself. `$2` is now.
const MATCH_AND_CLAIM: &str = "slots AS ( \
         SELECT slot_worker, slot_lease, n AS slot, row_number() OVER (ORDER BY n) AS k \
         FROM UNNEST($4::text[], $5::int8[]) WITH ORDINALITY AS s(slot_worker, slot_lease, n) \
         WHERE NOT EXISTS (SELECT 1 FROM nodes \
                           WHERE nodes.id = s.slot_worker AND nodes.status = 'quarantined')) \
     UPDATE tasks SET status = 'running', attempt = attempt + 1, worker = slots.slot_worker, \
         lease_until = slots.slot_lease, started_at = $2, last_seq = last_seq + 1 \
     FROM picked JOIN slots ON slots.k = picked.k \
     WHERE tasks.id = picked.pick_id";

/// Without caps: the `$3` best runnable tasks of agent `$1`, locked, ranked.
fn uncapped_sql() -> String {
    let runnable = startable("$2");
    format!(
        "WITH picked AS ( \
             SELECT pick_id, row_number() OVER (ORDER BY priority DESC, seq) AS k FROM ( \
                 SELECT id AS pick_id, priority, seq FROM tasks t \
                 WHERE status = 'queued' AND agent = $1 AND run_at <= $2 AND {runnable} \
                 ORDER BY priority DESC, seq LIMIT $3 FOR UPDATE SKIP LOCKED) AS q), \
         {MATCH_AND_CLAIM} \
         RETURNING slots.slot AS slot, {TASK_COLS}"
    )
}

/// Under caps: each tenant with queued tasks of agent `$1` (found one index probe at a time)
/// offers its best runnable tasks up to its free slots — `$7[i]` for tenant `$6[i]`, else `$8`
/// (null: no cap) — and the `$3` best offers are locked and ranked. A tenant at its cap costs
/// one probe however long its backlog, and the tasks behind its own are offered as usual.
///
/// The probes say `agent <= $1 AND (agent, tenant) > ($1, previous)` rather than `agent = $1 AND
/// tenant > previous`: the same rows, but only `tasks_claim_tenant` can start a scan there, so
/// a generic plan cannot pick `tasks_tenant_active` and wade through other agents' backlogs.
fn capped_sql() -> String {
    let runnable = startable("$2");
    format!(
        "WITH RECURSIVE queued AS ( \
             (SELECT t.tenant FROM tasks t WHERE t.status = 'queued' \
              AND t.agent <= $1 AND (t.agent, t.tenant) >= ($1, '') ORDER BY t.agent, t.tenant LIMIT 1) \
             UNION ALL \
             SELECT (SELECT t.tenant FROM tasks t WHERE t.status = 'queued' \
                     AND t.agent <= $1 AND (t.agent, t.tenant) > ($1, queued.tenant) \
                     ORDER BY t.agent, t.tenant LIMIT 1) \
             FROM queued WHERE queued.tenant IS NOT NULL), \
         room AS ( \
             SELECT queued.tenant, least(coalesce(listed.free, $8::int8, $3::int8), $3::int8) AS free \
             FROM queued LEFT JOIN UNNEST($6::text[], $7::int8[]) AS listed(tenant, free) \
                 ON listed.tenant = queued.tenant \
             WHERE queued.tenant IS NOT NULL), \
         offered AS ( \
             SELECT o.id, o.priority, o.seq FROM room CROSS JOIN LATERAL ( \
                 SELECT t.id, t.priority, t.seq FROM tasks t \
                 WHERE t.status = 'queued' AND t.agent = $1 AND t.tenant = room.tenant AND t.run_at <= $2 \
                 AND {runnable} \
                 ORDER BY t.priority DESC, t.seq LIMIT room.free) AS o \
             WHERE room.free > 0 \
             ORDER BY o.priority DESC, o.seq LIMIT $3), \
         picked AS ( \
             SELECT pick_id, row_number() OVER (ORDER BY priority DESC, seq) AS k FROM ( \
                 SELECT id AS pick_id, priority, seq FROM tasks \
                 WHERE id IN (SELECT id FROM offered) AND status = 'queued' \
                 ORDER BY priority DESC, seq FOR UPDATE SKIP LOCKED) AS q), \
         {MATCH_AND_CLAIM} \
         RETURNING slots.slot AS slot, {TASK_COLS}"
    )
}

/// The tasks `$6` (ids in the order a keyed walk took them, `keys.rs`) if still queued, locked,
/// ranked by that order (`$1` and `$3` repeat the agent and the slots).
fn keyed_sql() -> String {
    format!(
        "WITH picked AS ( \
             SELECT pick_id, row_number() OVER (ORDER BY ord) AS k FROM ( \
                 SELECT t.id AS pick_id, w.ord FROM UNNEST($6::uuid[]) WITH ORDINALITY AS w(id, ord) \
                 JOIN tasks t ON t.id = w.id WHERE t.status = 'queued' AND t.agent = $1 \
                 ORDER BY w.ord LIMIT $3 FOR UPDATE OF t SKIP LOCKED) AS q), \
         {MATCH_AND_CLAIM} \
         RETURNING slots.slot AS slot, {TASK_COLS}"
    )
}

/// Running tasks by tenant.
async fn running_by_tenant(conn: &mut PgConnection) -> Result<HashMap<String, u64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant, count(*) FROM tasks WHERE status = 'running' GROUP BY tenant")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
    Ok(rows.into_iter().map(|(t, n)| (t, n as u64)).collect())
}

/// The task slots a batch's claims ask of one agent, in arrival order: the claimant's worker and
/// lease end, and which claim (and which of its wants) the slot belongs to.
struct Slots<'a> {
    agent: &'a str,
    workers: Vec<String>,
    leases: Vec<i64>,
    owners: Vec<(usize, usize)>,
}

/// One statement per agent for every claim of the batch: the claims' slots are numbered in
/// arrival order and matched to the runnable tasks by rank (priority, then age), so each claim
/// gets what it would have got running alone after the claims before it.
/// Slots of quarantined workers are left out before matching, so they get nothing.
/// Claims with different running caps (workers configured differently) take turns, each with
/// its own statements, counting what the others claimed.
pub(super) async fn claims(conn: &mut PgConnection, ops: &mut [Op], ev: &mut EventBuf, ctx: &mut Ctx) -> Result<()> {
    let mut jobs: Vec<&mut Job<ClaimRequest, Vec<Claimed>>> =
        ops.iter_mut().filter_map(|op| if let Op::Claim(j) = op { Some(j) } else { None }).collect();
    if jobs.is_empty() {
        return Ok(());
    }
    lock_feed(conn, ctx).await?;
    let now = Micros::now();
    let mut groups: Vec<(Arc<RunningCaps>, Vec<usize>)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let same = |caps: &Arc<RunningCaps>| Arc::ptr_eq(caps, &job.input.caps) || **caps == *job.input.caps;
        match groups.iter_mut().find(|(caps, _)| same(caps)) {
            Some((_, members)) => members.push(j),
            None => groups.push((job.input.caps.clone(), vec![j])),
        }
    }
    let mut left: Vec<u32> = jobs.iter().map(|j| j.input.limit.unwrap_or(u32::MAX)).collect();
    // claimed rows per job and want, in rank order
    let mut got: Vec<Vec<Vec<TaskRow>>> = jobs.iter().map(|j| vec![Vec::new(); j.input.wants.len()]).collect();
    // running tasks by tenant, read once the first capped claim needs them
    let mut running: Option<HashMap<String, u64>> = None;
    let (uncapped, capped, keyed) = (uncapped_sql(), capped_sql(), keyed_sql());
    for (caps, members) in &groups {
        let mut room = None;
        if !caps.is_unlimited() {
            let now_running = match running.take() {
                Some(r) => r,
                None => running_by_tenant(conn).await?,
            };
            room = Some(Room::new(caps, now_running));
        }
        // agents in the order the claims name them; each claim's limit is spent agent by agent
        let mut names: Vec<&str> = Vec::new();
        for &j in members {
            for (agent, _) in &jobs[j].input.wants {
                if !names.contains(&agent.as_str()) {
                    names.push(agent);
                }
            }
        }
        for agent in names {
            let mut slots = Slots { agent, workers: Vec::new(), leases: Vec::new(), owners: Vec::new() };
            for &j in members {
                let job = &jobs[j];
                for (w, (a, n)) in job.input.wants.iter().enumerate() {
                    if a != agent {
                        continue;
                    }
                    for _ in 0..(*n).min(MAX_CLAIM).min(left[j]) {
                        slots.workers.push(job.input.worker.clone());
                        slots.leases.push(now.plus(job.input.lease).0);
                        slots.owners.push((j, w));
                    }
                }
            }
            let Slots { agent, workers, leases, owners } = slots;
            if owners.is_empty() {
                continue;
            }
            // capped per key when a claim naming the agent says so (the tightest cap if several do)
            let key_cap = members.iter().filter_map(|&j| jobs[j].input.keys.cap(agent)).min();
            let keyed_ids = match key_cap {
                Some(cap) => {
                    let n = owners.len() as u32;
                    Some(super::keys::picks(conn, agent, n, cap, now, room.as_mut(), STARTABLE).await?)
                }
                None => None,
            };
            let sql = match (&keyed_ids, &room) {
                (Some(_), _) => &keyed,
                (None, Some(_)) => &capped,
                (None, None) => &uncapped,
            };
            let query = sqlx::query(sql).bind(agent).bind(now.0).bind(owners.len() as i64).bind(&workers).bind(&leases);
            let query = match (&keyed_ids, &room) {
                (Some(ids), _) => query.bind(ids),
                (None, None) => query,
                (None, Some(room)) => {
                    let (tenants, free) = room.listed();
                    query.bind(tenants).bind(free).bind(room.fresh())
                }
            };
            let rows = query.fetch_all(&mut *conn).await.map_err(db_error)?;
            let mut ranked = Vec::with_capacity(rows.len());
            for r in &rows {
                let slot: i64 = sqlx::Row::try_get(r, "slot").map_err(db_error)?;
                ranked.push((slot, task_row(r)?));
            }
            ranked.sort_by_key(|(slot, _)| *slot);
            for (slot, row) in ranked {
                let owner = usize::try_from(slot - 1).ok().and_then(|i| owners.get(i));
                let Some(&(j, w)) = owner else {
                    return Err(Error::Backend(format!("claim returned unknown slot {slot}")));
                };
                match (room.as_mut(), running.as_mut()) {
                    // the keyed walk counted what it picked into the room already
                    (Some(_), _) if keyed_ids.is_some() => {}
                    (Some(room), _) => room.take(&row.task.tenant),
                    (None, Some(running)) => *running.entry(row.task.tenant.clone()).or_default() += 1,
                    (None, None) => {}
                }
                left[j] = left[j].saturating_sub(1);
                got[j][w].push(row);
            }
        }
        if let Some(room) = room {
            running = Some(room.into_running());
        }
    }
    for (job, wants) in jobs.iter_mut().zip(got) {
        let mut out = Vec::new();
        for row in wants.into_iter().flatten() {
            let started = crate::lifecycle::started(&row);
            let event = super::apply::emit(&row, vec![started], now, ev).remove(0);
            out.push(Claimed { task: row.task, event });
        }
        job.out = Some(Ok(out));
    }
    Ok(())
}

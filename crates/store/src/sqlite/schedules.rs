//! The SQL of schedules in the SQLite store. A firing step is one closure on the writer: the
//! cursor's compare-and-set, the fire's record and its task's submission commit together.

use super::{ops, Tx};
use crate::schedules::{conflict, json_of, overlap_of, Fire, COLS};
use crate::{Result, Submitted};
use rusqlite::{params, Connection, OptionalExtension, Row};
use smith_core::schedule::Schedule;
use smith_core::{Micros, TaskStatus};
use std::time::Duration;

const FROM: &str = "FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id";

type Raw = (Schedule, String, String, String, Option<String>, Option<String>);

fn row(r: &Row) -> rusqlite::Result<Raw> {
    let s = Schedule {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        agent: r.get(3)?,
        input: serde_json::Value::Null,
        metadata: serde_json::Value::Null,
        priority: r.get(6)?,
        timeout_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        max_attempts: r.get::<_, Option<i64>>(8)?.map(|v| v as u32),
        cron: r.get(9)?,
        timezone: r.get(10)?,
        overlap: Default::default(),
        catchup: Duration::from_millis(r.get::<_, i64>(12)? as u64),
        paused: r.get(13)?,
        next_fire_at: r.get::<_, Option<i64>>(14)?.map(Micros),
        last_fire_at: r.get::<_, Option<i64>>(15)?.map(Micros),
        last_task_id: None,
        last_task_status: None,
        skipped: r.get::<_, i64>(17)? as u64,
        last_skipped_at: r.get::<_, Option<i64>>(18)?.map(Micros),
        missed: r.get::<_, i64>(19)? as u64,
        created_at: Micros(r.get(20)?),
        updated_at: Micros(r.get(21)?),
    };
    Ok((s, r.get(4)?, r.get(5)?, r.get(11)?, r.get(16)?, r.get(22)?))
}

fn finish(rows: Vec<Raw>) -> Result<Vec<Schedule>> {
    let mut out = Vec::with_capacity(rows.len());
    for (mut s, input, metadata, overlap, task, status) in rows {
        s.input = json_of("input", &input)?;
        s.metadata = json_of("metadata", &metadata)?;
        s.overlap = overlap_of(&overlap)?;
        s.last_task_id = task.map(|t| t.parse()).transpose()?;
        s.last_task_status = status.map(|t| t.parse::<TaskStatus>()).transpose()?;
        out.push(s);
    }
    Ok(out)
}

fn query(c: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Schedule>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(args, row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    finish(rows)
}

pub(super) fn create(c: &Tx, s: &Schedule) -> Result<()> {
    let n = c
        .prepare_cached(
            "INSERT INTO schedules (id, tenant, name, agent, input, metadata, priority, timeout_ms, max_attempts, cron, \
             timezone, overlap, catchup_ms, paused, next_fire_at, last_fire_at, last_task_id, skipped, last_skipped_at, \
             missed, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL, NULL, 0, NULL, 0, ?16, ?16) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            s.id,
            s.tenant,
            s.name,
            s.agent,
            s.input.to_string(),
            s.metadata.to_string(),
            s.priority,
            s.timeout_ms.map(|v| v as i64),
            s.max_attempts,
            s.cron,
            s.timezone,
            s.overlap.as_str(),
            s.catchup.as_millis() as i64,
            s.paused,
            s.next_fire_at.map(|m| m.0),
            s.created_at.0,
        ])?;
    if n == 0 {
        return Err(
            smith_core::Error::new(smith_core::Code::Conflict, format!("schedule {} already exists", s.id)).into()
        );
    }
    Ok(())
}

pub(super) fn get(c: &Connection, id: &str) -> Result<Option<Schedule>> {
    Ok(query(c, &format!("SELECT {COLS} {FROM} WHERE s.id = ?1"), [id])?.pop())
}

pub(super) fn list(c: &Connection, tenant: Option<&str>) -> Result<Vec<Schedule>> {
    query(c, &format!("SELECT {COLS} {FROM} WHERE ?1 IS NULL OR s.tenant = ?1 ORDER BY s.created_at, s.id"), [tenant])
}

pub(super) fn set_paused(c: &Tx, id: &str, paused: bool, next: Option<Micros>) -> Result<Option<Schedule>> {
    let n = c
        .prepare_cached("UPDATE schedules SET paused = ?2, next_fire_at = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, paused, next.map(|m| m.0), Micros::now().0])?;
    if n == 0 {
        return Ok(None);
    }
    get(c, id)
}

pub(super) fn delete(c: &Tx, id: &str) -> Result<bool> {
    Ok(c.prepare_cached("DELETE FROM schedules WHERE id = ?1")?.execute([id])? > 0)
}

pub(super) fn due(c: &Connection, now: Micros, limit: usize) -> Result<Vec<Schedule>> {
    let sql = format!(
        "SELECT {COLS} {FROM} WHERE s.next_fire_at IS NOT NULL AND s.next_fire_at <= ?1 \
         ORDER BY s.next_fire_at LIMIT ?2"
    );
    query(c, &sql, params![now.0, limit as i64])
}

pub(super) fn next_fire(c: &Connection) -> Result<Option<Micros>> {
    let at: Option<i64> = c
        .prepare_cached("SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL")?
        .query_row([], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(at.map(Micros))
}

pub(super) fn fire(c: &Tx, f: &Fire) -> Result<Option<Submitted>> {
    let now = Micros::now();
    let fired = f.task.as_ref().map(|_| f.fire_at.0);
    let skipped_at = f.skipped.then_some(f.fire_at.0);
    let n = c
        .prepare_cached(
            "UPDATE schedules SET next_fire_at = ?3, last_fire_at = coalesce(?4, last_fire_at), \
             skipped = skipped + ?5, last_skipped_at = coalesce(?6, last_skipped_at), missed = missed + ?7, \
             updated_at = ?8 WHERE id = ?1 AND next_fire_at = ?2",
        )?
        .execute(params![
            f.schedule,
            f.from.0,
            f.to.map(|m| m.0),
            fired,
            i64::from(f.skipped),
            skipped_at,
            f.missed as i64,
            now.0
        ])?;
    if n == 0 {
        return Err(conflict(&f.schedule));
    }
    let Some(task) = &f.task else { return Ok(None) };
    let submitted = ops::submit(c, task, now)?;
    c.prepare_cached("UPDATE schedules SET last_task_id = ?2 WHERE id = ?1")?
        .execute(params![f.schedule, submitted.task.id.to_string()])?;
    Ok(Some(submitted))
}

//! Schedules in the PostgreSQL store. Records, reads, pauses and passed-over fires go straight
//! to the pool; a fire that submits a task rides in the writer's batch with it
//! ([`advance`] before the batch's submissions, [`link`] after), so the cursor's
//! compare-and-set and the task commit in one transaction.

use super::db_error;
use super::jobs::{Job, Op, Submission};
use crate::schedules::{conflict, json_of, overlap_of, Fire, COLS};
use crate::{Result, Submitted};
use smith_core::schedule::Schedule;
use smith_core::{Code, Micros, TaskStatus};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::time::Duration;

const FROM: &str = "FROM schedules s LEFT JOIN tasks t ON t.id = s.last_task_id";

fn cols() -> String {
    COLS.replace("s.last_task_id,", "s.last_task_id::text AS last_task_id,")
}

fn row(r: &PgRow) -> Result<Schedule> {
    let get_i64 = |i: usize| r.try_get::<Option<i64>, _>(i).map_err(db_error);
    let task: Option<String> = r.try_get(16).map_err(db_error)?;
    let status: Option<String> = r.try_get(22).map_err(db_error)?;
    Ok(Schedule {
        id: r.try_get(0).map_err(db_error)?,
        tenant: r.try_get(1).map_err(db_error)?,
        name: r.try_get(2).map_err(db_error)?,
        agent: r.try_get(3).map_err(db_error)?,
        input: json_of("input", r.try_get(4).map_err(db_error)?)?,
        metadata: json_of("metadata", r.try_get(5).map_err(db_error)?)?,
        priority: r.try_get::<i16, _>(6).map_err(db_error)? as u8,
        timeout_ms: get_i64(7)?.map(|v| v as u64),
        max_attempts: r.try_get::<Option<i32>, _>(8).map_err(db_error)?.map(|v| v as u32),
        cron: r.try_get(9).map_err(db_error)?,
        timezone: r.try_get(10).map_err(db_error)?,
        overlap: overlap_of(r.try_get(11).map_err(db_error)?)?,
        catchup: Duration::from_millis(r.try_get::<i64, _>(12).map_err(db_error)? as u64),
        paused: r.try_get(13).map_err(db_error)?,
        next_fire_at: get_i64(14)?.map(Micros),
        last_fire_at: get_i64(15)?.map(Micros),
        last_task_id: task.map(|t| t.parse()).transpose()?,
        last_task_status: status.map(|s| s.parse::<TaskStatus>()).transpose()?,
        skipped: r.try_get::<i64, _>(17).map_err(db_error)? as u64,
        last_skipped_at: get_i64(18)?.map(Micros),
        missed: r.try_get::<i64, _>(19).map_err(db_error)? as u64,
        created_at: Micros(r.try_get(20).map_err(db_error)?),
        updated_at: Micros(r.try_get(21).map_err(db_error)?),
    })
}

pub(super) async fn create(pool: &PgPool, s: &Schedule) -> Result<()> {
    let done = sqlx::query(
        "INSERT INTO schedules (id, tenant, name, agent, input, metadata, priority, timeout_ms, max_attempts, cron, \
         timezone, overlap, catchup_ms, paused, next_fire_at, last_fire_at, last_task_id, skipped, last_skipped_at, \
         missed, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, NULL, NULL, 0, NULL, 0, $16, $16) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&s.id)
    .bind(&s.tenant)
    .bind(&s.name)
    .bind(&s.agent)
    .bind(s.input.to_string())
    .bind(s.metadata.to_string())
    .bind(i16::from(s.priority))
    .bind(s.timeout_ms.map(|v| v as i64))
    .bind(s.max_attempts.map(|v| v as i32))
    .bind(&s.cron)
    .bind(&s.timezone)
    .bind(s.overlap.as_str())
    .bind(s.catchup.as_millis() as i64)
    .bind(s.paused)
    .bind(s.next_fire_at.map(|m| m.0))
    .bind(s.created_at.0)
    .execute(pool)
    .await
    .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(
            smith_core::Error::new(smith_core::Code::Conflict, format!("schedule {} already exists", s.id)).into()
        );
    }
    Ok(())
}

pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<Schedule>> {
    let sql = format!("SELECT {} {FROM} WHERE s.id = $1", cols());
    let r = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(db_error)?;
    r.as_ref().map(row).transpose()
}

pub(super) async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<Schedule>> {
    let sql = format!(
        "SELECT {} {FROM} WHERE $1::text IS NULL OR s.tenant = $1 ORDER BY s.created_at, s.id COLLATE \"C\"",
        cols()
    );
    let rows = sqlx::query(&sql).bind(tenant).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(row).collect()
}

pub(super) async fn set_paused(
    pool: &PgPool,
    id: &str,
    paused: bool,
    next: Option<Micros>,
) -> Result<Option<Schedule>> {
    let done = sqlx::query("UPDATE schedules SET paused = $2, next_fire_at = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(paused)
        .bind(next.map(|m| m.0))
        .bind(Micros::now().0)
        .execute(pool)
        .await
        .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(pool, id).await
}

pub(super) async fn delete(pool: &PgPool, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id).execute(pool).await.map_err(db_error)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn due(pool: &PgPool, now: Micros, limit: usize) -> Result<Vec<Schedule>> {
    let sql = format!(
        "SELECT {} {FROM} WHERE s.next_fire_at IS NOT NULL AND s.next_fire_at <= $1 ORDER BY s.next_fire_at LIMIT $2",
        cols()
    );
    let rows = sqlx::query(&sql).bind(now.0).bind(limit as i64).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(row).collect()
}

pub(super) async fn next_fire(pool: &PgPool) -> Result<Option<Micros>> {
    let at: Option<i64> = sqlx::query_scalar("SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    Ok(at.map(Micros))
}

/// The cursor's compare-and-set and the fire's record; whether it applied.
async fn step(conn: &mut PgConnection, f: &Fire, task: Option<String>) -> Result<bool> {
    let fired = task.as_ref().map(|_| f.fire_at.0);
    let skipped_at = f.skipped.then_some(f.fire_at.0);
    let done = sqlx::query(
        "UPDATE schedules SET next_fire_at = $3, last_fire_at = coalesce($4, last_fire_at), \
         last_task_id = coalesce($5::uuid, last_task_id), skipped = skipped + $6, \
         last_skipped_at = coalesce($7, last_skipped_at), missed = missed + $8, updated_at = $9 \
         WHERE id = $1 AND next_fire_at = $2",
    )
    .bind(&f.schedule)
    .bind(f.from.0)
    .bind(f.to.map(|m| m.0))
    .bind(fired)
    .bind(task)
    .bind(i64::from(f.skipped))
    .bind(skipped_at)
    .bind(f.missed as i64)
    .bind(Micros::now().0)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

/// A step that submits nothing (a skip, missed fires): one statement on the pool.
pub(super) async fn pass_over(pool: &PgPool, f: &Fire) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    if !step(&mut conn, f, None).await? {
        return Err(conflict(&f.schedule));
    }
    Ok(())
}

/// The batch's fires, before its submissions: each moves its schedule's cursor (locking the
/// row) or, when another leader moved it first, is refused so its task is never inserted.
pub(super) async fn advance(conn: &mut PgConnection, ops: &mut [Op]) -> Result<()> {
    for op in ops.iter_mut() {
        let Op::Submit(j) = op else { continue };
        let Some(f) = &j.input.fire else { continue };
        if !step(conn, f, Some(j.input.task.id.to_string())).await? {
            j.out = Some(Err(conflict(&f.schedule)));
        }
    }
    Ok(())
}

/// After the batch's submissions: a fire whose key named an existing task points at it; a fire
/// whose task was refused after its cursor moved fails the batch, so that run alone (in its
/// savepoint) it is refused whole and its cursor stays where it was.
pub(super) async fn link(conn: &mut PgConnection, ops: &mut [Op]) -> Result<()> {
    for op in ops.iter_mut() {
        let Op::Submit(j) = op else { continue };
        let Job { input: Submission { fire: Some(f), task, .. }, out: Some(out), .. } = j else {
            continue;
        };
        let got = match out {
            Ok(Submitted { task: got, .. }) => got,
            // refused by its cursor in `advance`: nothing moved
            Err(e) if e.code() == Code::Conflict => continue,
            Err(e) => return Err(smith_core::Error::new(e.code(), e.to_string()).into()),
        };
        if got.id != task.id {
            sqlx::query("UPDATE schedules SET last_task_id = $2::uuid WHERE id = $1")
                .bind(&f.schedule)
                .bind(got.id.to_string())
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
    }
    Ok(())
}

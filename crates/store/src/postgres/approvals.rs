//! Requests a person answers, in the PostgreSQL store. A request and an answer are jobs of the
//! writers' batches (`Op::Wait`, `Op::Answer`): their task rows are locked with the batch's, an
//! answered record is locked after them (`lock`), and the records are written before the
//! batch's events (`insert`, `update`). Reads go straight to the pool.

use super::db_error;
use crate::approvals::ApprovalQuery;
use crate::{Error, Result};
use smith_core::{Approval, Micros, TaskId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;

const COLS: &str = "id, task_id::text AS task_id, tenant, agent, attempt, kind, status, tool::text AS tool, text, \
     created_at, expires_at, on_timeout, answer::text AS answer, used, state::text AS state";

fn approval_row(r: &PgRow) -> Result<Approval> {
    fn named<T: std::str::FromStr<Err = smith_core::Error>>(r: &PgRow, col: &str) -> Result<T> {
        let v: String = r.try_get(col).map_err(db_error)?;
        v.parse().map_err(|e: smith_core::Error| Error::Backend(format!("approvals.{col}: {}", e.message)))
    }
    let task: String = r.try_get("task_id").map_err(db_error)?;
    let json = |col: &str| -> Result<Option<String>> { r.try_get(col).map_err(db_error) };
    Ok(Approval {
        id: r.try_get("id").map_err(db_error)?,
        task_id: task.parse::<TaskId>().map_err(|e| Error::Backend(format!("approvals.task_id: {}", e.message)))?,
        tenant: r.try_get("tenant").map_err(db_error)?,
        agent: r.try_get("agent").map_err(db_error)?,
        attempt: r.try_get::<i32, _>("attempt").map_err(db_error)? as u32,
        kind: named(r, "kind")?,
        status: named(r, "status")?,
        tool: crate::approvals::parse_json(json("tool")?)?,
        text: r.try_get("text").map_err(db_error)?,
        created_at: Micros(r.try_get("created_at").map_err(db_error)?),
        expires_at: r.try_get::<Option<i64>, _>("expires_at").map_err(db_error)?.map(Micros),
        on_timeout: named(r, "on_timeout")?,
        answer: crate::approvals::parse_json(json("answer")?)?,
        used: r.try_get("used").map_err(db_error)?,
        state: crate::approvals::parse_json(json("state")?)?,
    })
}

/// Locks the records a batch answers (after its task rows), by id.
pub(super) async fn lock(conn: &mut PgConnection, ids: Vec<String>) -> Result<HashMap<String, Approval>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!("SELECT {COLS} FROM approvals WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE");
    let rows = sqlx::query(&sql).bind(ids).fetch_all(conn).await.map_err(db_error)?;
    rows.iter().map(|r| approval_row(r).map(|a| (a.id.clone(), a))).collect()
}

pub(super) async fn insert(conn: &mut PgConnection, new: &[Approval]) -> Result<()> {
    for a in new {
        sqlx::query(
            "INSERT INTO approvals (id, task_id, tenant, agent, attempt, kind, status, tool, text, created_at, \
             expires_at, on_timeout, state) VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8::json, $9, $10, $11, $12, \
             $13::json)",
        )
        .bind(&a.id)
        .bind(a.task_id.to_string())
        .bind(&a.tenant)
        .bind(&a.agent)
        .bind(a.attempt as i32)
        .bind(a.kind.as_str())
        .bind(a.status.as_str())
        .bind(a.tool.as_ref().map(|t| serde_json::to_string(t).expect("a tool call serializes")))
        .bind(&a.text)
        .bind(a.created_at.0)
        .bind(a.expires_at.map(|m| m.0))
        .bind(a.on_timeout.as_str())
        .bind(a.state.as_ref().map(|v| v.to_string()))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

pub(super) async fn update(conn: &mut PgConnection, answered: &[Approval]) -> Result<()> {
    for a in answered {
        sqlx::query("UPDATE approvals SET status = $2, answer = $3::json WHERE id = $1")
            .bind(&a.id)
            .bind(a.status.as_str())
            .bind(a.answer.as_ref().map(|x| serde_json::to_string(x).expect("an answer serializes")))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// The pending records of tasks that were cancelled while waiting are cancelled with them.
pub(super) async fn cancel_pending(conn: &mut PgConnection, tasks: Vec<String>) -> Result<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE approvals SET status = 'cancelled' WHERE task_id = ANY($1::uuid[]) AND status = 'pending'")
        .bind(tasks)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn use_answer(pool: &PgPool, id: &str) -> Result<()> {
    sqlx::query("UPDATE approvals SET used = true WHERE id = $1").bind(id).execute(pool).await.map_err(db_error)?;
    Ok(())
}

pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<Approval>> {
    let sql = format!("SELECT {COLS} FROM approvals WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(db_error)?;
    row.as_ref().map(approval_row).transpose()
}

pub(super) async fn list(pool: &PgPool, q: &ApprovalQuery) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE ($1::text IS NULL OR tenant = $1) \
         AND ($2::text IS NULL OR task_id = $2::uuid) AND ($3::text IS NULL OR status = $3) \
         AND ($4::text IS NULL OR id < $4 COLLATE \"C\") ORDER BY id COLLATE \"C\" DESC LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(&q.tenant)
        .bind(q.task.map(|t| t.to_string()))
        .bind(q.status.map(|s| s.as_str()))
        .bind(&q.before)
        .bind(q.limit() as i64)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(approval_row).collect()
}

pub(super) async fn expired(pool: &PgPool, now: Micros, limit: usize) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status = 'pending' AND expires_at < $1 ORDER BY expires_at LIMIT $2"
    );
    let rows = sqlx::query(&sql).bind(now.0).bind(limit as i64).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(approval_row).collect()
}

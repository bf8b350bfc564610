//! The SQL of requests a person answers, in the SQLite store: a request and an answer are each
//! one write of the writer's batch with the task's change; reads on a reader.

use super::ops::{load, write};
use super::Tx;
use crate::approvals::{self, parse_json, ApprovalQuery, Asked};
use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use smith_core::approval::{Answer, NewRequest};
use smith_core::{Approval, Micros, TaskId};

const COLS: &str =
    "id, task_id, tenant, agent, attempt, kind, status, tool, text, created_at, expires_at, on_timeout, \
     answer, used, state";

fn named<T: std::str::FromStr<Err = smith_core::Error>>(i: usize, v: String) -> rusqlite::Result<T> {
    v.parse().map_err(|e: smith_core::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.message.into())
    })
}

type Parts = (Approval, Option<String>, Option<String>, Option<String>);

fn approval_row(r: &Row) -> rusqlite::Result<Parts> {
    let task: String = r.get(1)?;
    let task_id = task
        .parse::<TaskId>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.message.into()))?;
    let a = Approval {
        id: r.get(0)?,
        task_id,
        tenant: r.get(2)?,
        agent: r.get(3)?,
        attempt: r.get(4)?,
        kind: named(5, r.get(5)?)?,
        status: named(6, r.get(6)?)?,
        tool: None,
        text: r.get(8)?,
        created_at: Micros(r.get(9)?),
        expires_at: r.get::<_, Option<i64>>(10)?.map(Micros),
        on_timeout: named(11, r.get(11)?)?,
        answer: None,
        used: r.get(13)?,
        state: None,
    };
    Ok((a, r.get(7)?, r.get(12)?, r.get(14)?))
}

fn finish((mut a, tool, answer, state): Parts) -> Result<Approval> {
    a.tool = parse_json(tool)?;
    a.answer = parse_json(answer)?;
    a.state = parse_json(state)?;
    Ok(a)
}

fn insert(c: &Connection, a: &Approval) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO approvals (id, task_id, tenant, agent, attempt, kind, status, tool, text, created_at, expires_at, \
         on_timeout, answer, used, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, 0, ?13)",
    )?
    .execute(params![
        a.id,
        a.task_id.to_string(),
        a.tenant,
        a.agent,
        a.attempt,
        a.kind.as_str(),
        a.status.as_str(),
        a.tool.as_ref().map(|t| serde_json::to_string(t).expect("a tool call serializes")),
        a.text,
        a.created_at.0,
        a.expires_at.map(|m| m.0),
        a.on_timeout.as_str(),
        a.state.as_ref().map(|v| v.to_string()),
    ])?;
    Ok(())
}

pub(super) fn request(c: &Tx, id: TaskId, attempt: u32, r: &NewRequest, now: Micros) -> Result<Asked> {
    let Some(mut row) = load(c, id)? else { return Err(Error::Fenced(id)) };
    let (approval, step) = approvals::wait(&mut row, attempt, r, now)?;
    let change = write(c, row, vec![step], now)?;
    insert(c, &approval)?;
    Ok(Asked { approval, change })
}

pub(super) fn answer(c: &Tx, id: TaskId, approval: &str, answer: Answer, now: Micros) -> Result<Asked> {
    let not_found = || Error::Domain(smith_core::Error::not_found(format!("request {approval} not found")));
    let mut a = get(c, approval)?.ok_or_else(not_found)?;
    let Some(mut row) = load(c, id)? else { return Err(Error::NotFound(id)) };
    let step = approvals::answer(&mut row, &mut a, answer, now)?;
    let change = write(c, row, vec![step], now)?;
    c.prepare_cached("UPDATE approvals SET status = ?2, answer = ?3 WHERE id = ?1")?.execute(params![
        a.id,
        a.status.as_str(),
        a.answer.as_ref().map(|x| serde_json::to_string(x).expect("an answer serializes")),
    ])?;
    Ok(Asked { approval: a, change })
}

/// Pending requests of a task that ended (cancelled while waiting) are cancelled with it.
pub(super) fn cancel_pending(c: &Connection, id: TaskId) -> Result<()> {
    c.prepare_cached("UPDATE approvals SET status = 'cancelled' WHERE task_id = ?1 AND status = 'pending'")?
        .execute([id.to_string()])?;
    Ok(())
}

pub(super) fn use_answer(c: &Connection, approval: &str) -> Result<()> {
    c.prepare_cached("UPDATE approvals SET used = 1 WHERE id = ?1")?.execute([approval])?;
    Ok(())
}

pub(super) fn get(c: &Connection, approval: &str) -> Result<Option<Approval>> {
    let sql = format!("SELECT {COLS} FROM approvals WHERE id = ?1");
    c.prepare_cached(&sql)?.query_row([approval], approval_row).optional()?.map(finish).transpose()
}

pub(super) fn list(c: &Connection, q: &ApprovalQuery) -> Result<Vec<Approval>> {
    let mut sql = format!("SELECT {COLS} FROM approvals WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    let mut add = |cond: &str, v: Box<dyn rusqlite::ToSql>, sql: &mut String| {
        args.push(v);
        sql.push_str(&format!(" AND {cond} ?{}", args.len()));
    };
    if let Some(t) = &q.tenant {
        add("tenant =", Box::new(t.clone()), &mut sql);
    }
    if let Some(t) = q.task {
        add("task_id =", Box::new(t.to_string()), &mut sql);
    }
    if let Some(s) = q.status {
        add("status =", Box::new(s.as_str()), &mut sql);
    }
    if let Some(b) = &q.before {
        add("id <", Box::new(b.clone()), &mut sql);
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit()));
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())), approval_row)?;
    rows.map(|r| finish(r?)).collect()
}

pub(super) fn expired(c: &Connection, now: Micros, limit: usize) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {COLS} FROM approvals WHERE status = 'pending' AND expires_at < ?1 ORDER BY expires_at LIMIT ?2"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![now.0, limit as i64], approval_row)?;
    rows.map(|r| finish(r?)).collect()
}

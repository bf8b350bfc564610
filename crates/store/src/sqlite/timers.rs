//! The SQL of the timer pass and of parking, in the SQLite store: candidates are found on a
//! reader (the common answer is "none"), then judged again by the lifecycle in the writer's
//! transaction.

use super::ops::{load, write};
use super::Tx;
use crate::lifecycle::{self, Park};
use crate::timers::AccountHold;
use crate::{Change, Error, Result};
use rusqlite::{params, Connection};
use smith_core::{EventDraft, Micros, TaskId};

/// Tasks the timer pass may move at `now`: scheduled or parked ones due, and unstarted ones
/// past their time to live; at most `limit` of each, the earliest first.
pub(super) fn candidates(c: &Connection, now: Micros, limit: usize) -> Result<Vec<TaskId>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT id FROM tasks WHERE status IN ('scheduled', 'parked') AND run_at <= ?1 ORDER BY run_at LIMIT ?2",
        "SELECT id FROM tasks WHERE expires_at IS NOT NULL AND attempt = 0 AND status IN ('scheduled', 'queued') \
         AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
    ] {
        let mut stmt = c.prepare_cached(sql)?;
        for id in stmt.query_map(params![now.0, limit as i64], |r| r.get::<_, String>(0))? {
            out.push(id?.parse::<TaskId>()?);
        }
    }
    Ok(out)
}

/// Applies the timer transitions to `ids` as they are now: an expiry first (a scheduled task
/// past its time to live never joins the queue), else a due task's move to the queue.
pub(super) fn advance(c: &Tx, ids: &[TaskId], now: Micros) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for id in ids {
        let Some(mut row) = load(c, *id)? else { continue };
        let step = match lifecycle::expire(&mut row, now) {
            Ok(step) => step,
            Err(_) => match lifecycle::due(&mut row, now) {
                Ok(step) => step,
                Err(_) => continue,
            },
        };
        out.push(write(c, row, vec![step], now)?);
    }
    Ok(out)
}

/// Parks the attempt's task and holds its account until the later of its current hold and
/// `park.until`.
pub(super) fn park(
    c: &Tx,
    id: TaskId,
    attempt: u32,
    drafts: &[EventDraft],
    park: &Park,
    now: Micros,
) -> Result<Change> {
    let Some(mut row) = load(c, id)? else { return Err(Error::Fenced(id)) };
    let steps = lifecycle::park(&mut row, attempt, drafts, park, now).map_err(|_| Error::Fenced(id))?;
    c.prepare_cached(
        "INSERT INTO account_holds (account, until, reason, at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (account) DO UPDATE SET until = max(until, excluded.until), reason = excluded.reason, \
         at = excluded.at",
    )?
    .execute(params![park.account, park.until.0, park.reason, now.0])?;
    write(c, row, steps, now)
}

pub(super) fn holds(c: &Connection, now: Micros) -> Result<Vec<AccountHold>> {
    let mut stmt = c.prepare_cached("SELECT account, until, reason FROM account_holds WHERE until > ?1")?;
    let rows = stmt
        .query_map([now.0], |r| Ok(AccountHold { account: r.get(0)?, until: Micros(r.get(1)?), reason: r.get(2)? }))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

//! The SQL of retention in the SQLite store (docs/retention.md): candidates are read on a
//! reader; every purge is one write in the writer's batch, so it holds the database for one
//! short statement group inside a group commit, never for a whole pass.
//!
//! Space: a new database is created with `auto_vacuum = INCREMENTAL`, and a purge that leaves
//! more than [`KEEP_FREE_PAGES`] free pages gives at most [`VACUUM_STEP`] of them back to the
//! file system (`PRAGMA incremental_vacuum(n)`). A database created before has
//! `auto_vacuum = NONE`, which only a full `VACUUM` can change: its freed pages are reused by
//! new rows (the file stops growing) but the file does not shrink.

use super::Tx;
use crate::retention::terminal_sql;
use crate::{Cutoff, Expired, Purged, Result, PURGE_LIMIT};
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use smith_core::TaskId;
use std::cell::Cell;

/// Free pages a purge leaves in the file for the next inserts (16 MiB of 4 KiB pages).
const KEEP_FREE_PAGES: i64 = 4096;
/// Pages one purge gives back at most: a bounded step, not a long write.
const VACUUM_STEP: i64 = 2048;

thread_local! {
    /// Set on the writer thread only while [`purge_audit`] deletes.
    static AUDIT_DELETE: Cell<bool> = const { Cell::new(false) };
}

/// Registers `smith_retention_delete()`, which the audit log's delete trigger asks, on the
/// writer's connection: 1 only while this thread runs the audit purge. No other connection
/// has the function, so a DELETE through one fails.
pub(super) fn register(c: &Connection) -> rusqlite::Result<()> {
    c.create_scalar_function(
        "smith_retention_delete",
        0,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS,
        |_| Ok(AUDIT_DELETE.with(|f| f.get()) as i64),
    )
}

/// Makes a new (empty) database reclaim freed pages incrementally; an existing one keeps its mode.
pub(super) fn prepare_new(c: &Connection) -> rusqlite::Result<()> {
    let tables: i64 = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        // the WAL switch has already written the header: a VACUUM of the empty file applies it
        c.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// The scope of a cutoff as SQL over `tenant`, its argument pushed onto `args`.
fn scope(cutoff: &Cutoff, args: &mut Vec<Box<dyn ToSql>>) -> String {
    match &cutoff.tenant {
        Some(t) => {
            args.push(Box::new(t.clone()));
            format!(" AND tenant = ?{}", args.len())
        }
        None if cutoff.except.is_empty() => String::new(),
        None => {
            args.push(Box::new(serde_json::to_string(&cutoff.except).expect("names serialize")));
            format!(" AND tenant NOT IN (SELECT value FROM json_each(?{}))", args.len())
        }
    }
}

fn limit(n: usize) -> i64 {
    n.clamp(1, PURGE_LIMIT) as i64
}

fn artifact_names(c: &Connection, id: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT name FROM artifacts WHERE task_id = ?1 ORDER BY name")?;
    let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn expired_rows(c: &Connection, sql: &str, args: &[Box<dyn ToSql>]) -> Result<Vec<Expired>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows: Vec<(String, String)> = stmt
        .query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, tenant) in rows {
        let artifacts = artifact_names(c, &id)?;
        out.push(Expired { id: id.parse()?, tenant, artifacts });
    }
    Ok(out)
}

pub(super) fn expired_tasks(c: &Connection, cutoff: &Cutoff, n: usize) -> Result<Vec<Expired>> {
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(cutoff.before.0)];
    let scope = scope(cutoff, &mut args);
    args.push(Box::new(limit(n)));
    let sql = format!(
        "SELECT id, tenant FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?1 AND status IN ({}){scope} \
         ORDER BY finished_at LIMIT ?{}",
        terminal_sql(),
        args.len()
    );
    expired_rows(c, &sql, &args)
}

pub(super) fn expired_artifacts(c: &Connection, cutoff: &Cutoff, n: usize) -> Result<Vec<Expired>> {
    // walks the artifact records (far fewer than tasks), not every old task
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(cutoff.before.0)];
    let scope = scope(cutoff, &mut args);
    args.push(Box::new(limit(n)));
    let sql = format!(
        "SELECT id, tenant FROM tasks WHERE id IN (SELECT DISTINCT task_id FROM artifacts) \
         AND finished_at IS NOT NULL AND finished_at < ?1 AND status IN ({}){scope} ORDER BY finished_at LIMIT ?{}",
        terminal_sql(),
        args.len()
    );
    expired_rows(c, &sql, &args)
}

/// Rolls up the usage of the tasks listed (a JSON array of ids at `?1`) by tenant, agent and the
/// UTC day of `spent_at`, adding to what earlier purges rolled up.
const ROLLUP: &str = "INSERT INTO usage_rollups (tenant, agent, day, input_tokens, output_tokens, cost_usd, tasks) \
     SELECT tenant, agent, coalesce(spent_at, finished_at) / 86400000000, \
         coalesce(sum(json_extract(usage, '$.input_tokens')), 0), coalesce(sum(json_extract(usage, '$.output_tokens')), 0), \
         coalesce(sum(json_extract(usage, '$.cost_usd')), 0.0), count(*) \
     FROM tasks WHERE id IN (SELECT value FROM json_each(?1)) AND usage IS NOT NULL GROUP BY 1, 2, 3 \
     ON CONFLICT (tenant, agent, day) DO UPDATE SET input_tokens = input_tokens + excluded.input_tokens, \
         output_tokens = output_tokens + excluded.output_tokens, cost_usd = cost_usd + excluded.cost_usd, \
         tasks = tasks + excluded.tasks";

/// Raises each tenant's horizon to the highest position of the listed tasks' events.
const HORIZON: &str = "INSERT INTO retention_horizons (tenant, pos) \
     SELECT t.tenant, max(e.pos) FROM tasks t JOIN events e ON e.task_id = t.id \
     WHERE t.id IN (SELECT value FROM json_each(?1)) GROUP BY t.tenant \
     ON CONFLICT (tenant) DO UPDATE SET pos = max(pos, excluded.pos)";

pub(super) fn purge_tasks(c: &Tx, ids: &[TaskId]) -> Result<Purged> {
    let asked: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let head: Option<String> = c
        .prepare_cached("SELECT task_id FROM events WHERE pos = (SELECT max(pos) FROM events)")?
        .query_row([], |r| r.get(0))
        .optional()?
        .flatten();
    let sql = format!(
        "SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ({})",
        terminal_sql()
    );
    let finished: Vec<String> = c
        .prepare_cached(&sql)?
        .query_map([serde_json::to_string(&asked).expect("ids serialize")], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let gone: Vec<String> = finished.into_iter().filter(|id| head.as_ref() != Some(id)).collect();
    let mut out = Purged { kept: (asked.len() - gone.len()) as u64, ..Purged::default() };
    if !gone.is_empty() {
        let list = serde_json::to_string(&gone).expect("ids serialize");
        c.prepare_cached(ROLLUP)?.execute([&list])?;
        c.prepare_cached(HORIZON)?.execute([&list])?;
        let delete = |table: &str, col: &str| -> Result<u64> {
            let sql = format!("DELETE FROM {table} WHERE {col} IN (SELECT value FROM json_each(?1))");
            Ok(c.prepare_cached(&sql)?.execute([&list])? as u64)
        };
        out.events = delete("events", "task_id")?;
        out.artifacts = delete("artifacts", "task_id")?;
        out.approvals = delete("approvals", "task_id")?;
        out.deliveries = delete("webhook_deliveries", "task_id")?;
        out.tasks = delete("tasks", "id")?;
        reclaim(c)?;
    }
    out.horizon = c
        .prepare_cached("SELECT coalesce(max(pos), 0) FROM retention_horizons")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64;
    Ok(out)
}

pub(super) fn purge_artifacts(c: &Tx, records: &[(TaskId, String)]) -> Result<u64> {
    let sql = format!(
        "DELETE FROM artifacts WHERE task_id = ?1 AND name = ?2 \
         AND EXISTS (SELECT 1 FROM tasks WHERE id = ?1 AND status IN ({}))",
        terminal_sql()
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut n = 0;
    for (id, name) in records {
        n += stmt.execute(params![id.to_string(), name])? as u64;
    }
    Ok(n)
}

/// Clears the audit purge's flag however the delete ends.
struct AuditDelete;

impl AuditDelete {
    fn allow() -> AuditDelete {
        AUDIT_DELETE.with(|f| f.set(true));
        AuditDelete
    }
}

impl Drop for AuditDelete {
    fn drop(&mut self) {
        AUDIT_DELETE.with(|f| f.set(false));
    }
}

pub(super) fn purge_audit(c: &Tx, cutoff: &Cutoff, n: usize) -> Result<u64> {
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(cutoff.before.0)];
    let scope = scope(cutoff, &mut args);
    args.push(Box::new(limit(n)));
    let sql = format!(
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1{scope} \
         AND id < (SELECT max(id) FROM audit) ORDER BY at LIMIT ?{})",
        args.len()
    );
    let _allowed = AuditDelete::allow();
    let n = c.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())))?;
    Ok(n as u64)
}

/// Gives free pages beyond [`KEEP_FREE_PAGES`] back, at most [`VACUUM_STEP`] at a time (a
/// no-op unless the database was created with incremental auto-vacuum).
fn reclaim(c: &Connection) -> Result<()> {
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if free > KEEP_FREE_PAGES {
        c.execute_batch(&format!("PRAGMA incremental_vacuum({})", (free - KEEP_FREE_PAGES).min(VACUUM_STEP)))?;
    }
    Ok(())
}

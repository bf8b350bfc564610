//! The SQL of artifact records in the SQLite store: writes in the writer's batch, fenced by
//! the task's attempt like an append; reads on a reader.

use super::ops::load;
use super::Tx;
use crate::{lifecycle, Error, Result};
use rusqlite::{params, Connection, Row};
use smith_core::{Artifact, Micros, TaskId};

pub(super) fn put(c: &Tx, id: TaskId, attempt: u32, artifacts: &[Artifact]) -> Result<()> {
    let Some(row) = load(c, id)? else { return Err(Error::Fenced(id)) };
    lifecycle::held(&row, attempt).map_err(|_| Error::Fenced(id))?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO artifacts (task_id, name, tenant, size, sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (task_id, name) DO UPDATE SET \
         size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at",
    )?;
    for a in artifacts {
        stmt.execute(params![id.to_string(), a.name, row.task.tenant, a.size as i64, a.sha256, a.created_at.0])?;
    }
    Ok(())
}

fn artifact_row(r: &Row) -> rusqlite::Result<Artifact> {
    Ok(Artifact { name: r.get(0)?, size: r.get::<_, i64>(1)? as u64, sha256: r.get(2)?, created_at: Micros(r.get(3)?) })
}

pub(super) fn list(c: &Connection, id: TaskId) -> Result<Vec<Artifact>> {
    let mut stmt =
        c.prepare_cached("SELECT name, size, sha256, created_at FROM artifacts WHERE task_id = ?1 ORDER BY name")?;
    let rows = stmt.query_map([id.to_string()], artifact_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn tenant_bytes(c: &Connection, tenant: &str) -> Result<u64> {
    let sql = "SELECT coalesce(sum(size), 0) FROM artifacts WHERE tenant = ?1";
    Ok(c.prepare_cached(sql)?.query_row([tenant], |r| r.get::<_, i64>(0))? as u64)
}

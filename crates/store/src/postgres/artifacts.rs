//! Artifact records in the PostgreSQL store, straight on the pool like sessions and keys (one
//! per finished attempt that left files, outside the writers' batches): the put is one
//! transaction that share-locks the task row, checks the attempt's fence with
//! [`lifecycle::held`], and upserts every record in one statement.

use super::db_error;
use super::rows::{task_row, TASK_COLS};
use crate::{lifecycle, Error, Result};
use smith_core::{Artifact, Micros, TaskId};
use sqlx::{PgPool, Row};

pub(super) async fn put(pool: &PgPool, id: TaskId, attempt: u32, artifacts: &[Artifact]) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    // FOR SHARE: the task cannot end (or be reaped) until the records are in; writers that
    // change it wait for this short transaction, which holds no other lock
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1::uuid FOR SHARE");
    let Some(row) = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *tx).await.map_err(db_error)? else {
        return Err(Error::Fenced(id));
    };
    let row = task_row(&row)?;
    lifecycle::held(&row, attempt).map_err(|_| Error::Fenced(id))?;
    let names: Vec<&str> = artifacts.iter().map(|a| a.name.as_str()).collect();
    let sizes: Vec<i64> = artifacts.iter().map(|a| a.size as i64).collect();
    let hashes: Vec<&str> = artifacts.iter().map(|a| a.sha256.as_str()).collect();
    let dates: Vec<i64> = artifacts.iter().map(|a| a.created_at.0).collect();
    sqlx::query(
        "INSERT INTO artifacts (task_id, name, tenant, size, sha256, created_at) \
         SELECT $1::uuid, n, $2, s, h, d FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::int8[]) AS a(n, s, h, d) \
         ON CONFLICT (task_id, name) DO UPDATE SET \
         size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at",
    )
    .bind(id.to_string())
    .bind(&row.task.tenant)
    .bind(&names)
    .bind(&sizes)
    .bind(&hashes)
    .bind(&dates)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

pub(super) async fn list(pool: &PgPool, id: TaskId) -> Result<Vec<Artifact>> {
    let rows = sqlx::query(
        "SELECT name, size, sha256, created_at FROM artifacts WHERE task_id = $1::uuid ORDER BY name COLLATE \"C\"",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(Artifact {
            name: r.try_get("name").map_err(db_error)?,
            size: r.try_get::<i64, _>("size").map_err(db_error)? as u64,
            sha256: r.try_get("sha256").map_err(db_error)?,
            created_at: Micros(r.try_get("created_at").map_err(db_error)?),
        });
    }
    Ok(out)
}

pub(super) async fn tenant_bytes(pool: &PgPool, tenant: &str) -> Result<u64> {
    let (n,): (i64,) = sqlx::query_as("SELECT coalesce(sum(size), 0)::int8 FROM artifacts WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    Ok(n.max(0) as u64)
}

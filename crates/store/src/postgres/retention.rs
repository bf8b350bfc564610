//! The SQL of retention in the PostgreSQL store (docs/retention.md). Each purge is one short
//! transaction on the pool, bounded by its batch: the listed rows are deleted by key
//! (`= ANY($1)`), never by a scan, and no lock is held beyond the batch's own rows. Partitions
//! were not worth it here: a task is deleted by its own tenant's age and only once finished, so
//! no time range of the events table ever becomes droppable whole (a long-running task's
//! early events sit among deleted ones).

use super::db_error;
use crate::retention::terminal_sql;
use crate::{Cutoff, Expired, Purged, Result, PURGE_LIMIT};
use smith_core::TaskId;
use sqlx::{PgPool, Postgres, Row};

fn limit(n: usize) -> i64 {
    n.clamp(1, PURGE_LIMIT) as i64
}

/// The scope of a cutoff as SQL over `tenant`, with parameters `$2` (the tenant, or the
/// tenants left out).
fn scope(cutoff: &Cutoff) -> &'static str {
    match cutoff.tenant {
        Some(_) => " AND tenant = $2",
        None => " AND NOT (tenant = ANY($2::text[]))",
    }
}

fn bind_scope<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    cutoff: &'q Cutoff,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    match &cutoff.tenant {
        Some(t) => q.bind(t),
        None => q.bind(&cutoff.except),
    }
}

async fn expired_rows(pool: &PgPool, sql: &str, cutoff: &Cutoff, n: usize) -> Result<Vec<Expired>> {
    let q = sqlx::query(sql).bind(cutoff.before.0);
    let rows = bind_scope(q, cutoff).bind(limit(n)).fetch_all(pool).await.map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get("id").map_err(db_error)?;
        out.push(Expired {
            id: id.parse()?,
            tenant: r.try_get("tenant").map_err(db_error)?,
            artifacts: r.try_get::<Vec<String>, _>("names").map_err(db_error)?,
        });
    }
    Ok(out)
}

pub(super) async fn expired_tasks(pool: &PgPool, cutoff: &Cutoff, n: usize) -> Result<Vec<Expired>> {
    let sql = format!(
        "SELECT t.id::text AS id, t.tenant, \
             ARRAY(SELECT name FROM artifacts a WHERE a.task_id = t.id ORDER BY name) AS names \
         FROM (SELECT id, tenant, finished_at FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1 \
             AND status IN ({}){} ORDER BY finished_at LIMIT $3) t ORDER BY t.finished_at",
        terminal_sql(),
        scope(cutoff)
    );
    expired_rows(pool, &sql, cutoff, n).await
}

pub(super) async fn expired_artifacts(pool: &PgPool, cutoff: &Cutoff, n: usize) -> Result<Vec<Expired>> {
    // walks the artifact records (far fewer than tasks), not every old task
    let sql = format!(
        "SELECT t.id::text AS id, t.tenant, \
             ARRAY(SELECT name FROM artifacts a WHERE a.task_id = t.id ORDER BY name) AS names \
         FROM (SELECT id, tenant, finished_at FROM tasks WHERE id IN (SELECT DISTINCT task_id FROM artifacts) \
             AND finished_at IS NOT NULL AND finished_at < $1 AND status IN ({}){} ORDER BY finished_at LIMIT $3) t \
         ORDER BY t.finished_at",
        terminal_sql(),
        scope(cutoff)
    );
    expired_rows(pool, &sql, cutoff, n).await
}

pub(super) async fn purge_tasks(pool: &PgPool, ids: &[TaskId]) -> Result<Purged> {
    let asked: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut tx = pool.begin().await.map_err(db_error)?;
    // the rows in id order, as the writers lock them; terminal rows never change again, so
    // this waits at most for a batch refusing a stale write to one of them
    let sql = format!(
        "SELECT id::text FROM tasks WHERE id = ANY($1::uuid[]) AND status IN ({}) ORDER BY id FOR UPDATE",
        terminal_sql()
    );
    let finished: Vec<String> = sqlx::query_scalar(&sql).bind(&asked).fetch_all(&mut *tx).await.map_err(db_error)?;
    // positions are max + 1: the feed's newest event stays, and with it its task for now
    let head: Option<Option<String>> = sqlx::query_scalar("SELECT task_id::text FROM events ORDER BY pos DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
    let head = head.flatten();
    let gone: Vec<String> = finished.into_iter().filter(|id| head.as_ref() != Some(id)).collect();
    let mut out = Purged { kept: (asked.len() - gone.len()) as u64, ..Purged::default() };
    if !gone.is_empty() {
        sqlx::query(
            "INSERT INTO usage_rollups (tenant, agent, day, input_tokens, output_tokens, cost_usd, tasks) \
             SELECT tenant, agent, coalesce(spent_at, finished_at) / 86400000000, \
                 coalesce(sum((usage->>'input_tokens')::int8), 0), coalesce(sum((usage->>'output_tokens')::int8), 0), \
                 coalesce(sum((usage->>'cost_usd')::float8), 0), count(*) \
             FROM tasks WHERE id = ANY($1::uuid[]) AND usage IS NOT NULL GROUP BY 1, 2, 3 \
             ON CONFLICT (tenant, agent, day) DO UPDATE SET \
                 input_tokens = usage_rollups.input_tokens + excluded.input_tokens, \
                 output_tokens = usage_rollups.output_tokens + excluded.output_tokens, \
                 cost_usd = usage_rollups.cost_usd + excluded.cost_usd, tasks = usage_rollups.tasks + excluded.tasks",
        )
        .bind(&gone)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO retention_horizons (tenant, pos) \
             SELECT t.tenant, max(e.pos) FROM tasks t JOIN events e ON e.task_id = t.id \
             WHERE t.id = ANY($1::uuid[]) GROUP BY t.tenant \
             ON CONFLICT (tenant) DO UPDATE SET pos = greatest(retention_horizons.pos, excluded.pos)",
        )
        .bind(&gone)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        out.events = delete(&mut tx, "events", "task_id", &gone).await?;
        out.artifacts = delete(&mut tx, "artifacts", "task_id", &gone).await?;
        out.approvals = delete(&mut tx, "approvals", "task_id", &gone).await?;
        out.deliveries = delete(&mut tx, "webhook_deliveries", "task_id", &gone).await?;
        out.tasks = delete(&mut tx, "tasks", "id", &gone).await?;
    }
    let horizon: i64 = sqlx::query_scalar("SELECT coalesce(max(pos), 0)::int8 FROM retention_horizons")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    out.horizon = horizon as u64;
    tx.commit().await.map_err(db_error)?;
    Ok(out)
}

/// Deletes the rows of `table` whose `col` is one of `ids`; how many.
async fn delete(tx: &mut sqlx::PgConnection, table: &str, col: &str, ids: &[String]) -> Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE {col} = ANY($1::uuid[])");
    let done = sqlx::query(&sql).bind(ids).execute(&mut *tx).await.map_err(db_error)?;
    Ok(done.rows_affected())
}

pub(super) async fn purge_artifacts(pool: &PgPool, records: &[(TaskId, String)]) -> Result<u64> {
    let tasks: Vec<String> = records.iter().map(|(t, _)| t.to_string()).collect();
    let names: Vec<&str> = records.iter().map(|(_, n)| n.as_str()).collect();
    let sql = format!(
        "DELETE FROM artifacts a USING UNNEST($1::uuid[], $2::text[]) AS r(task_id, name), tasks t \
         WHERE a.task_id = r.task_id AND a.name = r.name AND t.id = a.task_id AND t.status IN ({})",
        terminal_sql()
    );
    let done = sqlx::query(&sql).bind(&tasks).bind(&names).execute(pool).await.map_err(db_error)?;
    Ok(done.rows_affected())
}

pub(super) async fn purge_audit(pool: &PgPool, cutoff: &Cutoff, n: usize) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    // the trigger lets a DELETE through only while this transaction-local setting is on
    sqlx::query("SELECT set_config('smith.retention_delete', 'on', true)").execute(&mut *tx).await.map_err(db_error)?;
    let sql = format!(
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1{} \
         AND id < (SELECT max(id) FROM audit) ORDER BY at LIMIT $3)",
        scope(cutoff)
    );
    let q = sqlx::query(&sql).bind(cutoff.before.0);
    let done = bind_scope(q, cutoff).bind(limit(n)).execute(&mut *tx).await.map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(done.rows_affected())
}

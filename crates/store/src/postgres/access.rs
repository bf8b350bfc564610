//! API keys, the audit log's reads and tenant load in the PostgreSQL store. Keys are written
//! straight to the pool, as sessions are: rare, single-row, and committed by the statement.
//! Audit records go through the writer instead (`phases::insert_audit`): one per mutating
//! request, so they share their batch's commit, and are numbered in commit order.

use super::db_error;
use crate::access::{audit_limit, parse_scopes, scopes_text};
use crate::{Result, TenantLoad};
use smith_core::{ApiKey, AuditQuery, AuditRecord, Micros, NewApiKey, NewAuditRecord};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

const KEY_COLS: &str = "id, tenant, scopes, name, created_at, revoked_at";
const AUDIT_COLS: &str = "id, at, actor, tenant, action, target, source, status";

fn key_row(r: &PgRow) -> Result<ApiKey> {
    let scopes: String = r.try_get("scopes").map_err(db_error)?;
    Ok(ApiKey {
        id: r.try_get("id").map_err(db_error)?,
        tenant: r.try_get("tenant").map_err(db_error)?,
        scopes: parse_scopes(&scopes)?,
        name: r.try_get("name").map_err(db_error)?,
        created_at: Micros(r.try_get("created_at").map_err(db_error)?),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at").map_err(db_error)?.map(Micros),
    })
}

fn audit_row(r: &PgRow) -> Result<AuditRecord> {
    let entry = NewAuditRecord {
        at: Micros(r.try_get("at").map_err(db_error)?),
        actor: r.try_get("actor").map_err(db_error)?,
        tenant: r.try_get("tenant").map_err(db_error)?,
        action: r.try_get("action").map_err(db_error)?,
        target: r.try_get("target").map_err(db_error)?,
        source: r.try_get("source").map_err(db_error)?,
        status: r.try_get::<i32, _>("status").map_err(db_error)? as u16,
    };
    Ok(entry.numbered(r.try_get::<i64, _>("id").map_err(db_error)? as u64))
}

pub(super) async fn create_api_key(pool: &PgPool, k: &NewApiKey, now: Micros) -> Result<ApiKey> {
    let done = sqlx::query(
        "INSERT INTO api_keys (id, tenant, scopes, name, secret_sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&k.id)
    .bind(&k.tenant)
    .bind(scopes_text(&k.scopes))
    .bind(&k.name)
    .bind(&k.secret_sha256)
    .bind(now.0)
    .execute(pool)
    .await
    .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(k.conflict().into());
    }
    Ok(k.created(now))
}

pub(super) async fn api_key(pool: &PgPool, id: &str) -> Result<Option<(ApiKey, String)>> {
    let sql = format!("SELECT {KEY_COLS}, secret_sha256 FROM api_keys WHERE id = $1");
    let Some(r) = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(db_error)? else {
        return Ok(None);
    };
    let hash: String = r.try_get("secret_sha256").map_err(db_error)?;
    Ok(Some((key_row(&r)?, hash)))
}

pub(super) async fn list_api_keys(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at, id");
    let rows = sqlx::query(&sql).bind(tenant).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(key_row).collect()
}

pub(super) async fn revoke_api_key(pool: &PgPool, id: &str, at: Micros) -> Result<Option<ApiKey>> {
    let sql = format!("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING {KEY_COLS}");
    let row = sqlx::query(&sql).bind(id).bind(at.0).fetch_optional(pool).await.map_err(db_error)?;
    row.as_ref().map(key_row).transpose()
}

pub(super) async fn audit(pool: &PgPool, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
    // An absent filter is a NULL parameter, so the statement is one text whatever the query;
    // custom plans (see `connect_options`) drop the NULL branches before planning.
    let sql = format!(
        "SELECT {AUDIT_COLS} FROM audit WHERE id > $1 \
         AND ($2::text IS NULL OR tenant = $2) AND ($3::text IS NULL OR actor = $3) \
         AND ($4::text IS NULL OR action = $4) AND ($5::int8 IS NULL OR at >= $5) \
         AND ($6::int8 IS NULL OR at < $6) \
         ORDER BY id LIMIT $7"
    );
    let rows = sqlx::query(&sql)
        .bind(i64::try_from(q.after).unwrap_or(i64::MAX))
        .bind(&q.tenant)
        .bind(&q.actor)
        .bind(&q.action)
        .bind(q.since.map(|m| m.0))
        .bind(q.until.map(|m| m.0))
        .bind(audit_limit(q) as i64)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(audit_row).collect()
}

/// Index lookups only: `tasks_tenant_active` for each count (scheduled and parked tasks,
/// `tasks_tenant_waiting`, count as queued), `tasks_tenant_spent` for the sums, `tenant_output`'s
/// key for the bytes written from the day of `since` on, `usage_rollups`' key for what retention
/// rolled up from that day on.
pub(super) async fn tenant_load(pool: &PgPool, tenant: &str, since: Micros) -> Result<TenantLoad> {
    let row = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasks WHERE tenant = $1 AND status = 'queued') \
                    + (SELECT count(*) FROM tasks WHERE tenant = $1 AND status IN ('scheduled', 'parked')), \
                (SELECT count(*) FROM tasks WHERE tenant = $1 AND status = 'running'), \
                (SELECT coalesce(sum(bytes), 0)::int8 FROM tenant_output WHERE tenant = $1 AND day >= $3), \
                (coalesce(sum((usage->>'input_tokens')::int8 + (usage->>'output_tokens')::int8), 0) \
                    + (SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM usage_rollups \
                        WHERE tenant = $1 AND day >= $3))::int8, \
                coalesce(sum((usage->>'cost_usd')::float8), 0) \
                    + (SELECT coalesce(sum(cost_usd), 0) FROM usage_rollups WHERE tenant = $1 AND day >= $3) \
         FROM tasks WHERE tenant = $1 AND usage IS NOT NULL AND spent_at >= $2",
    )
    .bind(tenant)
    .bind(since.0)
    .bind(crate::output_day(since))
    .fetch_one(pool)
    .await
    .map_err(db_error)?;
    Ok(TenantLoad::from_row(row))
}

//! The SQL of API keys, the audit log and tenant load in the SQLite store. Writes run in the
//! writer's batch transaction, reads on a reader, like everything in `ops.rs`.

use super::ops::Filters;
use crate::access::{audit_limit, parse_scopes, scopes_text};
use crate::{Result, TenantLoad};
use rusqlite::{params, Connection, OptionalExtension, Row};
use smith_core::{ApiKey, AuditQuery, AuditRecord, Micros, NewApiKey, NewAuditRecord};

const KEY_COLS: &str = "id, tenant, scopes, name, created_at, revoked_at";
const AUDIT_COLS: &str = "id, at, actor, tenant, action, target, source, status";

/// A key row before its scopes are parsed (which may fail with a store error, not a driver one).
struct KeyRow {
    id: String,
    tenant: String,
    scopes: String,
    name: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
}

fn key_row(r: &Row) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        scopes: r.get(2)?,
        name: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

impl KeyRow {
    fn key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            scopes: parse_scopes(&self.scopes)?,
            id: self.id,
            tenant: self.tenant,
            name: self.name,
            created_at: Micros(self.created_at),
            revoked_at: self.revoked_at.map(Micros),
        })
    }
}

fn audit_row(r: &Row) -> rusqlite::Result<AuditRecord> {
    let entry = NewAuditRecord {
        at: Micros(r.get(1)?),
        actor: r.get(2)?,
        tenant: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        source: r.get(6)?,
        status: r.get(7)?,
    };
    Ok(entry.numbered(r.get::<_, i64>(0)? as u64))
}

pub(super) fn create_api_key(c: &Connection, k: &NewApiKey, now: Micros) -> Result<ApiKey> {
    let n = c
        .prepare_cached(
            "INSERT INTO api_keys (id, tenant, scopes, name, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![k.id, k.tenant, scopes_text(&k.scopes), k.name, k.secret_sha256, now.0])?;
    if n == 0 {
        return Err(k.conflict().into());
    }
    Ok(k.created(now))
}

pub(super) fn api_key(c: &Connection, id: &str) -> Result<Option<(ApiKey, String)>> {
    let sql = format!("SELECT {KEY_COLS}, secret_sha256 FROM api_keys WHERE id = ?1");
    let row = c.prepare_cached(&sql)?.query_row([id], |r| Ok((key_row(r)?, r.get::<_, String>(6)?))).optional()?;
    match row {
        None => Ok(None),
        Some((key, hash)) => Ok(Some((key.key()?, hash))),
    }
}

pub(super) fn list_api_keys(c: &Connection, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, rowid");
    let rows: Vec<KeyRow> = c.prepare_cached(&sql)?.query_map([tenant], key_row)?.collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(KeyRow::key).collect()
}

pub(super) fn revoke_api_key(c: &Connection, id: &str, at: Micros) -> Result<Option<ApiKey>> {
    let sql = format!("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1 RETURNING {KEY_COLS}");
    let row = c.prepare_cached(&sql)?.query_row(params![id, at.0], key_row).optional()?;
    row.map(KeyRow::key).transpose()
}

pub(super) fn append_audit(c: &Connection, r: &NewAuditRecord) -> Result<AuditRecord> {
    c.prepare_cached(
        "INSERT INTO audit (at, actor, tenant, action, target, source, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![r.at.0, r.actor, r.tenant, r.action, r.target, r.source, r.status])?;
    Ok(r.numbered(c.last_insert_rowid() as u64))
}

pub(super) fn audit(c: &Connection, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let after = i64::try_from(q.after).unwrap_or(i64::MAX);
    let mut f = Filters::new(format!("SELECT {AUDIT_COLS} FROM audit WHERE id > ?1"), after);
    f.and("tenant =", q.tenant.clone());
    f.and("actor =", q.actor.clone());
    f.and("action =", q.action.clone());
    f.and("at >=", q.since.map(|s| s.0));
    f.and("at <", q.until.map(|u| u.0));
    let (sql, args) = f.finish("ORDER BY id LIMIT", audit_limit(q) as i64);
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), audit_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A tenant's queued and running tasks, what it spent since `?2`, and the bytes its tasks wrote
/// from day `?3` on (scheduled and parked tasks count as queued). Index lookups only:
/// `tasks_tenant_active` for each count, `tasks_tenant_waiting` for the waiting ones,
/// `tasks_tenant_spent` for the sums, `tenant_output`'s key for the bytes and `usage_rollups`'
/// key for what retention rolled up from day `?3` on (see the test).
pub(super) const TENANT_LOAD: &str = "SELECT \
        (SELECT count(*) FROM tasks WHERE tenant = ?1 AND status = 'queued') \
            + (SELECT count(*) FROM tasks WHERE tenant = ?1 AND status IN ('scheduled', 'parked')), \
        (SELECT count(*) FROM tasks WHERE tenant = ?1 AND status = 'running'), \
        (SELECT coalesce(sum(bytes), 0) FROM tenant_output WHERE tenant = ?1 AND day >= ?3), \
        coalesce(sum(json_extract(usage, '$.input_tokens') + json_extract(usage, '$.output_tokens')), 0) \
            + (SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM usage_rollups WHERE tenant = ?1 AND day >= ?3), \
        coalesce(sum(json_extract(usage, '$.cost_usd')), 0.0) \
            + (SELECT coalesce(sum(cost_usd), 0.0) FROM usage_rollups WHERE tenant = ?1 AND day >= ?3) \
    FROM tasks WHERE tenant = ?1 AND usage IS NOT NULL AND spent_at >= ?2";

pub(super) fn tenant_load(c: &Connection, tenant: &str, since: Micros) -> Result<TenantLoad> {
    let row = c.prepare_cached(TENANT_LOAD)?.query_row(params![tenant, since.0, crate::output_day(since)], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(TenantLoad::from_row(row))
}

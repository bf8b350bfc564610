//! Webhooks in the PostgreSQL store, straight on the pool like sessions and keys: the cursor is
//! moved (compare-and-set on its row) in the same short transaction that inserts the deliveries
//! it found; due deliveries are claimed with `SKIP LOCKED`, so two senders never take one.

use super::db_error;
use crate::webhooks::{kinds_of, kinds_text, payload_of, state_of, CURSOR, DELIVERY_COLS};
use crate::{Error, Result};
use smith_core::{AttemptOutcome, Code, Delivery, DeliveryState, Micros, NewDelivery, Webhook};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::time::Duration;

const HOOK_COLS: &str = "id, tenant, url, kinds, description, secret, created_at";
/// The delivery columns with the task id as text.
fn delivery_cols() -> String {
    DELIVERY_COLS.replace("task_id", "task_id::text AS task_id")
}

fn conflict(m: String) -> Error {
    smith_core::Error::new(Code::Conflict, m).into()
}

fn hook_row(r: &PgRow) -> Result<Webhook> {
    Ok(Webhook {
        id: r.try_get("id").map_err(db_error)?,
        tenant: r.try_get("tenant").map_err(db_error)?,
        url: r.try_get("url").map_err(db_error)?,
        kinds: kinds_of(r.try_get("kinds").map_err(db_error)?)?,
        description: r.try_get("description").map_err(db_error)?,
        secret: r.try_get("secret").map_err(db_error)?,
        created_at: Micros(r.try_get("created_at").map_err(db_error)?),
    })
}

pub(super) async fn create(pool: &PgPool, h: &Webhook) -> Result<()> {
    let sql =
        format!("INSERT INTO webhooks ({HOOK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING");
    let done = sqlx::query(&sql)
        .bind(&h.id)
        .bind(&h.tenant)
        .bind(&h.url)
        .bind(kinds_text(&h.kinds))
        .bind(&h.description)
        .bind(&h.secret)
        .bind(h.created_at.0)
        .execute(pool)
        .await
        .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(conflict(format!("webhook {} already exists", h.id)));
    }
    Ok(())
}

pub(super) async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<Webhook>> {
    let sql = format!(
        "SELECT {HOOK_COLS} FROM webhooks WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at, id COLLATE \"C\""
    );
    let rows = sqlx::query(&sql).bind(tenant).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(hook_row).collect()
}

pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<Webhook>> {
    let sql = format!("SELECT {HOOK_COLS} FROM webhooks WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(db_error)?;
    row.as_ref().map(hook_row).transpose()
}

pub(super) async fn delete(pool: &PgPool, id: &str) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let n = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(db_error)?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(n.rows_affected() > 0)
}

pub(super) async fn cursor(pool: &PgPool) -> Result<u64> {
    let pos: Option<i64> = sqlx::query_scalar("SELECT pos FROM webhook_cursor WHERE name = $1")
        .bind(CURSOR)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    Ok(pos.unwrap_or(0) as u64)
}

pub(super) async fn enqueue(pool: &PgPool, from: u64, to: u64, ds: &[NewDelivery]) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let moved = sqlx::query("UPDATE webhook_cursor SET pos = $3 WHERE name = $1 AND pos = $2")
        .bind(CURSOR)
        .bind(from as i64)
        .bind(to as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    if moved.rows_affected() == 0 {
        return Err(conflict(format!("the webhook cursor is no longer at {from}")));
    }
    if !ds.is_empty() {
        let col = |f: fn(&NewDelivery) -> Option<String>| ds.iter().map(f).collect::<Vec<_>>();
        let ids = col(|d| Some(d.id.clone()));
        let hooks = col(|d| d.webhook_id.clone());
        let tenants = col(|d| Some(d.tenant.clone()));
        let tasks = col(|d| d.task_id.map(|t| t.to_string()));
        let types = col(|d| Some(d.event_type.clone()));
        let urls = col(|d| Some(d.url.clone()));
        let secrets = col(|d| d.secret.clone());
        let payloads = col(|d| Some(d.payload.to_string()));
        let pos: Vec<i64> = ds.iter().map(|d| d.event_pos as i64).collect();
        let at: Vec<i64> = ds.iter().map(|d| d.created_at.0).collect();
        let sql = format!(
            "INSERT INTO webhook_deliveries ({DELIVERY_COLS}) \
             SELECT i, h, te, ta::uuid, p, ty, u, s, pl, 'pending', 0, NULL, NULL, a, a, a \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], \
                         $8::text[], $9::text[], $10::int8[]) AS d(i, h, te, ta, p, ty, u, s, pl, a) \
             ON CONFLICT (id) DO NOTHING"
        );
        sqlx::query(&sql)
            .bind(&ids)
            .bind(&hooks)
            .bind(&tenants)
            .bind(&tasks)
            .bind(&pos)
            .bind(&types)
            .bind(&urls)
            .bind(&secrets)
            .bind(&payloads)
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}

fn delivery_row(r: &PgRow, payload: bool) -> Result<Delivery> {
    let get_i64 = |c: &str| r.try_get::<i64, _>(c).map_err(db_error);
    let state = state_of(r.try_get("state").map_err(db_error)?)?;
    let task: Option<String> = r.try_get("task_id").map_err(db_error)?;
    let next_at: Option<i64> = r.try_get("next_at").map_err(db_error)?;
    Ok(Delivery {
        id: r.try_get("id").map_err(db_error)?,
        webhook_id: r.try_get("webhook_id").map_err(db_error)?,
        tenant: r.try_get("tenant").map_err(db_error)?,
        task_id: task.map(|t| t.parse()).transpose()?,
        event_pos: get_i64("event_pos")? as u64,
        event_type: r.try_get("event_type").map_err(db_error)?,
        state,
        attempts: r.try_get::<i32, _>("attempts").map_err(db_error)? as u32,
        last_status: r.try_get::<Option<i32>, _>("last_status").map_err(db_error)?.map(|s| s as u16),
        last_error: r.try_get("last_error").map_err(db_error)?,
        next_at: next_at.filter(|_| state == DeliveryState::Pending).map(Micros),
        created_at: Micros(get_i64("created_at")?),
        updated_at: Micros(get_i64("updated_at")?),
        url: r.try_get("url").map_err(db_error)?,
        secret: r.try_get("secret").map_err(db_error)?,
        payload: if payload { payload_of(r.try_get("payload").map_err(db_error)?)? } else { serde_json::Value::Null },
    })
}

pub(super) async fn claim(pool: &PgPool, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>> {
    let sql = format!(
        "UPDATE webhook_deliveries SET next_at = $2 WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at LIMIT $3 \
          FOR UPDATE SKIP LOCKED) \
         RETURNING {}",
        delivery_cols()
    );
    let rows = sqlx::query(&sql)
        .bind(now.0)
        .bind(now.plus(hold).0)
        .bind(limit as i64)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let mut out: Vec<Delivery> = rows.iter().map(|r| delivery_row(r, true)).collect::<Result<_>>()?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

pub(super) async fn record(pool: &PgPool, id: &str, o: &AttemptOutcome) -> Result<()> {
    let next_at = if o.state == DeliveryState::Pending { o.next_at.map(|t| t.0) } else { None };
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, last_status = $3, last_error = $4, \
         next_at = $5, updated_at = $6 WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(o.state.as_str())
    .bind(o.status.map(i32::from))
    .bind(&o.error)
    .bind(next_at)
    .bind(o.at.0)
    .execute(pool)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub(super) async fn list_deliveries(
    pool: &PgPool,
    hook: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let sql = format!(
        "SELECT {} FROM webhook_deliveries WHERE webhook_id = $1 AND ($2::text IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
        delivery_cols()
    );
    let rows = sqlx::query(&sql).bind(hook).bind(before).bind(limit as i64).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(|r| delivery_row(r, false)).collect()
}

pub(super) async fn replay(pool: &PgPool, hook: &str, id: &str, now: Micros) -> Result<Option<Delivery>> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let sql =
        format!("SELECT {} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2 FOR UPDATE", delivery_cols());
    let Some(row) = sqlx::query(&sql).bind(id).bind(hook).fetch_optional(&mut *tx).await.map_err(db_error)? else {
        return Ok(None);
    };
    let mut d = delivery_row(&row, false)?;
    if d.state != DeliveryState::Failed {
        return Err(conflict(format!("delivery {id} is {}: only a failed delivery is replayed", d.state)));
    }
    sqlx::query("UPDATE webhook_deliveries SET state = 'pending', next_at = $2, updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    d.state = DeliveryState::Pending;
    d.next_at = Some(now);
    d.updated_at = now;
    Ok(Some(d))
}

pub(super) async fn pending(pool: &PgPool) -> Result<Vec<(String, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant, count(*)::int8 FROM webhook_deliveries WHERE state = 'pending' GROUP BY tenant ORDER BY tenant",
    )
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    Ok(rows.into_iter().map(|(t, n)| (t, n.max(0) as u64)).collect())
}

pub(super) async fn task_webhooks(
    pool: &PgPool,
    ids: &[smith_core::TaskId],
) -> Result<Vec<(smith_core::TaskId, smith_core::TaskWebhook)>> {
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, options::text FROM tasks WHERE id = ANY($1::uuid[]) AND options IS NOT NULL")
            .bind(&ids)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
    let mut out = Vec::new();
    for (id, options) in rows {
        if let Some(w) = crate::webhooks::webhook_of(&options)? {
            out.push((id.parse()?, w));
        }
    }
    Ok(out)
}

pub(super) async fn task_webhooks_live(pool: &PgPool, since: Micros) -> Result<bool> {
    // the same predicate as the partial index `tasks_webhook`, so the probe reads only it
    sqlx::query_scalar(
        "SELECT EXISTS(SELECT 1 FROM tasks WHERE options::text LIKE '%\"webhook\":%' \
         AND (finished_at IS NULL OR finished_at >= $1))",
    )
    .bind(since.0)
    .fetch_one(pool)
    .await
    .map_err(db_error)
}

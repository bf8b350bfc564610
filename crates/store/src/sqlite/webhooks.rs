//! The SQL of webhooks in the SQLite store: subscriptions, the dispatcher's cursor moved in the
//! same write as the deliveries it records (the single writer makes that one transaction), the
//! claim of due deliveries, and attempts' outcomes.

use super::Tx;
use crate::webhooks::{kinds_of, kinds_text, payload_of, state_of, CURSOR, DELIVERY_COLS};
use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use smith_core::{AttemptOutcome, Code, Delivery, DeliveryState, Micros, NewDelivery, Webhook};
use std::time::Duration;

const HOOK_COLS: &str = "id, tenant, url, kinds, description, secret, created_at";

fn conflict(m: String) -> Error {
    smith_core::Error::new(Code::Conflict, m).into()
}

fn hook_row(r: &Row) -> rusqlite::Result<(Webhook, String)> {
    let hook = Webhook {
        id: r.get(0)?,
        tenant: r.get(1)?,
        url: r.get(2)?,
        kinds: Vec::new(),
        description: r.get(4)?,
        secret: r.get(5)?,
        created_at: Micros(r.get(6)?),
    };
    Ok((hook, r.get(3)?))
}

fn hooks(rows: Vec<(Webhook, String)>) -> Result<Vec<Webhook>> {
    let mut out = Vec::with_capacity(rows.len());
    for (mut hook, kinds) in rows {
        hook.kinds = kinds_of(&kinds)?;
        out.push(hook);
    }
    Ok(out)
}

pub(super) fn create(c: &Tx, h: &Webhook) -> Result<()> {
    let n = c
        .prepare_cached(&format!(
            "INSERT INTO webhooks ({HOOK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING"
        ))?
        .execute(params![h.id, h.tenant, h.url, kinds_text(&h.kinds), h.description, h.secret, h.created_at.0])?;
    if n == 0 {
        return Err(conflict(format!("webhook {} already exists", h.id)));
    }
    Ok(())
}

pub(super) fn list(c: &Connection, tenant: Option<&str>) -> Result<Vec<Webhook>> {
    let sql = format!("SELECT {HOOK_COLS} FROM webhooks WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([tenant], hook_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    hooks(rows)
}

pub(super) fn get(c: &Connection, id: &str) -> Result<Option<Webhook>> {
    let sql = format!("SELECT {HOOK_COLS} FROM webhooks WHERE id = ?1");
    let row = c.prepare_cached(&sql)?.query_row([id], hook_row).optional()?;
    Ok(hooks(row.into_iter().collect())?.pop())
}

pub(super) fn delete(c: &Tx, id: &str) -> Result<bool> {
    let n = c.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?.execute([id])?;
    c.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?1")?.execute([id])?;
    Ok(n > 0)
}

pub(super) fn cursor(c: &Connection) -> Result<u64> {
    let pos: Option<i64> = c
        .prepare_cached("SELECT pos FROM webhook_cursor WHERE name = ?1")?
        .query_row([CURSOR], |r| r.get(0))
        .optional()?;
    Ok(pos.unwrap_or(0) as u64)
}

pub(super) fn enqueue(c: &Tx, from: u64, to: u64, deliveries: &[NewDelivery]) -> Result<()> {
    let n = c.prepare_cached("UPDATE webhook_cursor SET pos = ?3 WHERE name = ?1 AND pos = ?2")?.execute(params![
        CURSOR,
        from as i64,
        to as i64
    ])?;
    if n == 0 {
        return Err(conflict(format!("the webhook cursor is no longer at {from}")));
    }
    let mut stmt = c.prepare_cached(&format!(
        "INSERT INTO webhook_deliveries ({DELIVERY_COLS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', 0, NULL, NULL, ?10, ?10, ?10) \
         ON CONFLICT (id) DO NOTHING"
    ))?;
    for d in deliveries {
        stmt.execute(params![
            d.id,
            d.webhook_id,
            d.tenant,
            d.task_id.map(|t| t.to_string()),
            d.event_pos as i64,
            d.event_type,
            d.url,
            d.secret,
            d.payload.to_string(),
            d.created_at.0,
        ])?;
    }
    Ok(())
}

fn delivery_row(r: &Row) -> rusqlite::Result<(Delivery, String, String, Option<String>)> {
    let d = Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        tenant: r.get(2)?,
        task_id: None,
        event_pos: r.get::<_, i64>(4)? as u64,
        event_type: r.get(5)?,
        url: r.get(6)?,
        secret: r.get(7)?,
        payload: serde_json::Value::Null,
        state: DeliveryState::Pending,
        attempts: r.get::<_, i64>(10)? as u32,
        last_status: r.get::<_, Option<i64>>(11)?.map(|s| s as u16),
        last_error: r.get(12)?,
        next_at: r.get::<_, Option<i64>>(13)?.map(Micros),
        created_at: Micros(r.get(14)?),
        updated_at: Micros(r.get(15)?),
    };
    Ok((d, r.get(8)?, r.get(9)?, r.get(3)?))
}

fn deliveries_of(rows: Vec<(Delivery, String, String, Option<String>)>, payloads: bool) -> Result<Vec<Delivery>> {
    let mut out = Vec::with_capacity(rows.len());
    for (mut d, payload, state, task) in rows {
        d.state = state_of(&state)?;
        d.task_id = task.map(|t| t.parse()).transpose()?;
        if d.state != DeliveryState::Pending {
            d.next_at = None;
        }
        if payloads {
            d.payload = payload_of(&payload)?;
        }
        out.push(d);
    }
    Ok(out)
}

pub(super) fn claim(c: &Tx, now: Micros, hold: Duration, limit: usize) -> Result<Vec<Delivery>> {
    let sql = format!(
        "UPDATE webhook_deliveries SET next_at = ?2 WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at LIMIT ?3) \
         RETURNING {DELIVERY_COLS}"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params![now.0, now.plus(hold).0, limit as i64], delivery_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    deliveries_of(rows, true)
}

pub(super) fn record(c: &Tx, id: &str, o: &AttemptOutcome) -> Result<()> {
    let next_at = if o.state == DeliveryState::Pending { o.next_at.map(|t| t.0) } else { None };
    c.prepare_cached(
        "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1, last_status = ?3, last_error = ?4, \
         next_at = ?5, updated_at = ?6 WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, o.state.as_str(), o.status.map(i64::from), o.error, next_at, o.at.0])?;
    Ok(())
}

pub(super) fn list_deliveries(c: &Connection, hook: &str, before: Option<&str>, limit: usize) -> Result<Vec<Delivery>> {
    let sql = format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook_id = ?1 AND (?2 IS NULL OR id < ?2) \
         ORDER BY id DESC LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows =
        stmt.query_map(params![hook, before, limit as i64], delivery_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    deliveries_of(rows, false)
}

pub(super) fn replay(c: &Tx, hook: &str, id: &str, now: Micros) -> Result<Option<Delivery>> {
    let sql = format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE id = ?1 AND webhook_id = ?2");
    let Some(row) = c.prepare_cached(&sql)?.query_row([id, hook], delivery_row).optional()? else {
        return Ok(None);
    };
    let mut d = deliveries_of(vec![row], false)?.remove(0);
    if d.state != DeliveryState::Failed {
        return Err(conflict(format!("delivery {id} is {}: only a failed delivery is replayed", d.state)));
    }
    c.prepare_cached("UPDATE webhook_deliveries SET state = 'pending', next_at = ?2, updated_at = ?2 WHERE id = ?1")?
        .execute(params![id, now.0])?;
    d.state = DeliveryState::Pending;
    d.next_at = Some(now);
    d.updated_at = now;
    Ok(Some(d))
}

pub(super) fn pending(c: &Connection) -> Result<Vec<(String, u64)>> {
    let mut stmt = c.prepare_cached(
        "SELECT tenant, count(*) FROM webhook_deliveries WHERE state = 'pending' GROUP BY tenant ORDER BY tenant",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn task_webhooks(
    c: &Connection,
    ids: &[smith_core::TaskId],
) -> Result<Vec<(smith_core::TaskId, smith_core::TaskWebhook)>> {
    let list = serde_json::to_string(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()).expect("ids serialize");
    let mut stmt = c.prepare_cached(
        "SELECT id, options FROM tasks WHERE id IN (SELECT value FROM json_each(?1)) AND options IS NOT NULL",
    )?;
    let rows = stmt.query_map([list], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, options) = row?;
        if let Some(w) = crate::webhooks::webhook_of(&options)? {
            out.push((id.parse()?, w));
        }
    }
    Ok(out)
}

pub(super) fn task_webhooks_live(c: &Connection, since: smith_core::Micros) -> Result<bool> {
    // the same predicate as the partial index `tasks_webhook`, so the probe reads only it
    let sql = "SELECT EXISTS(SELECT 1 FROM tasks WHERE options LIKE '%\"webhook\":%' \
               AND (finished_at IS NULL OR finished_at >= ?1))";
    Ok(c.prepare_cached(sql)?.query_row([since.0], |r| r.get(0))?)
}

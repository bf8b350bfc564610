//! The reads of the PostgreSQL store: straight to the pool, one statement each (one snapshot).

use super::db_error;
use super::rows::{event_row, node_row, task_row, EVENT_COLS, NODE_COLS, TASK_COLS};
use crate::{
    AgentSummary, FeedFilter, FeedPage, GlobalEventQuery, Omitted, QueueStats, Result, Session, TaskPage, TaskQuery,
    UsageBy,
};
use smith_core::{AgentDef, BreakerState, Event, Micros, Node, Task, TaskId, Usage};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::time::Duration;

/// `usize` limits as SQL wants them.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn get_task(pool: &PgPool, id: TaskId) -> Result<Option<Task>> {
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1::uuid");
    let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(pool).await.map_err(db_error)?;
    Ok(match row {
        None => None,
        Some(r) => Some(task_row(&r)?.task),
    })
}

pub(super) async fn list_tasks(pool: &PgPool, q: &TaskQuery) -> Result<TaskPage> {
    let before = crate::list_before(q)?;
    let page = q.limit.clamp(1, 1000);
    // a value over the limit is not sent into the page at all
    let mut cols = TASK_COLS.to_string();
    if let Some(n) = q.value_limit {
        cols = cols
            .replace(
                "input::text AS input",
                &format!("CASE WHEN octet_length(input::text) > {n} THEN 'null' ELSE input::text END AS input"),
            )
            .replace(
                "result::text AS result",
                &format!("CASE WHEN octet_length(result::text) > {n} THEN NULL ELSE result::text END AS result"),
            );
    }
    let mut sql = format!(
        "SELECT {cols}, octet_length(input::text) AS input_bytes, octet_length(result::text) AS result_bytes \
         FROM tasks WHERE seq < $1"
    );
    let mut args: Vec<String> = Vec::new();
    let mut filter = |column: &str, value: String| {
        args.push(value);
        sql.push_str(&format!(" AND {column} = ${}", args.len() + 1));
    };
    if let Some(s) = q.status {
        filter("status", s.as_str().to_string());
    }
    if let Some(a) = &q.agent {
        filter("agent", a.clone());
    }
    if let Some(t) = &q.tenant {
        filter("tenant", t.clone());
    }
    if let Some(sid) = &q.session_id {
        filter("session_id", sid.clone());
    }
    if let Some(p) = &q.parent_id {
        filter("parent_id::text", p.to_string());
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", args.len() + 2));
    let mut query = sqlx::query(&sql).bind(before);
    for a in args {
        query = query.bind(a);
    }
    // one row more than the page: it proves another page follows
    let rows = query.bind(limit(page + 1)).fetch_all(pool).await.map_err(db_error)?;
    let mut more = rows.len() > page;
    let mut items = Vec::with_capacity(page);
    let mut omitted = Vec::new();
    let mut bytes = 0u64;
    let mut last = None;
    for r in rows.iter().take(page) {
        let input_bytes = r.try_get::<i32, _>("input_bytes").map_err(db_error)? as u64;
        let result_bytes = r.try_get::<Option<i32>, _>("result_bytes").map_err(db_error)?.map(|n| n as u64);
        let left_out = Omitted::of(input_bytes, result_bytes, q.value_limit);
        let size = left_out.kept(input_bytes, result_bytes);
        if !items.is_empty() && q.max_bytes.is_some_and(|m| bytes + size > m as u64) {
            more = true;
            break;
        }
        bytes += size;
        let row = task_row(r)?;
        last = Some(r.try_get::<i64, _>("seq").map_err(db_error)?);
        items.push(row.task);
        omitted.push(left_out);
    }
    let next_cursor = if more { last.map(|v| v.to_string()) } else { None };
    Ok(TaskPage { items, next_cursor, omitted })
}

pub(super) async fn events(pool: &PgPool, id: TaskId, after: u64, n: usize) -> Result<Vec<Event>> {
    let sql = format!("SELECT {EVENT_COLS} FROM events WHERE task_id = $1::uuid AND seq > $2 ORDER BY seq LIMIT $3");
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows =
        sqlx::query(&sql).bind(id.to_string()).bind(after).bind(limit(n)).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(event_row).collect()
}

/// The feed after `cursor`. One statement, so the high-water mark and the page come from one
/// snapshot: positions are handed out in commit order without gaps (see `writer.rs`), so every
/// position up to the mark is committed and visible in it.
pub(super) async fn feed(pool: &PgPool, cursor: u64, filter: &FeedFilter, n: usize) -> Result<FeedPage> {
    let mut sql = format!(
        "WITH head AS (SELECT coalesce(max(pos), 0) AS pos FROM events), \
         hz AS (SELECT coalesce(max(pos), 0)::int8 AS pos FROM retention_horizons WHERE $3::text IS NULL OR tenant = $3) \
         SELECT head.pos AS head, hz.pos AS horizon, e.* FROM head CROSS JOIN hz LEFT JOIN LATERAL ( \
             SELECT {EVENT_COLS} FROM events WHERE pos > $1 AND pos <= head.pos"
    );
    let mut next = 4;
    if !filter.kinds.is_empty() {
        sql.push_str(&format!(" AND kind = ANY(${next}::text[])"));
        next += 1;
    }
    if filter.agent.is_some() {
        sql.push_str(&format!(" AND agent = ${next}"));
    }
    if filter.tenant.is_some() {
        // the reader's tenant is $3, bound for the horizon too
        sql.push_str(&format!(" AND {}", crate::visible_sql("$3")));
    }
    sql.push_str(" ORDER BY pos LIMIT $2) e ON true ORDER BY e.pos");
    let from = i64::try_from(cursor).unwrap_or(i64::MAX);
    let mut query = sqlx::query(&sql).bind(from).bind(limit(n)).bind(&filter.tenant);
    if !filter.kinds.is_empty() {
        query = query.bind(filter.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>());
    }
    if let Some(a) = &filter.agent {
        query = query.bind(a);
    }
    let rows = query.fetch_all(pool).await.map_err(db_error)?;
    let mut high = 0u64;
    let mut horizon = 0u64;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        high = r.try_get::<i64, _>("head").map_err(db_error)? as u64;
        horizon = r.try_get::<i64, _>("horizon").map_err(db_error)? as u64;
        if r.try_get::<Option<i64>, _>("pos").map_err(db_error)?.is_some() {
            events.push(event_row(r)?);
        }
    }
    if events.len() == n {
        let last = events.last().map(|e| e.pos).unwrap_or(cursor);
        return Ok(FeedPage { events, cursor: last, more: true, horizon });
    }
    Ok(FeedPage { events, cursor: cursor.max(high), more: false, horizon })
}

pub(super) async fn feed_head(pool: &PgPool) -> Result<u64> {
    let head: i64 =
        sqlx::query_scalar("SELECT coalesce(max(pos), 0) FROM events").fetch_one(pool).await.map_err(db_error)?;
    Ok(head as u64)
}

/// Every agent with its counts and usage: every tenant's, or one tenant's only.
pub(super) async fn agents(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<AgentSummary>> {
    // One branch per partial index, so neither scans the whole table.
    let counted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT 'queued', agent, count(*) FROM tasks WHERE status = 'queued' \
             AND ($1::text IS NULL OR tenant = $1) GROUP BY agent \
         UNION ALL SELECT 'running', agent, count(*) FROM tasks WHERE status = 'running' \
             AND ($1::text IS NULL OR tenant = $1) GROUP BY agent",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let counts: HashMap<(String, String), u64> = counted.into_iter().map(|(s, a, n)| ((a, s), n as u64)).collect();
    let defs: Vec<String> = sqlx::query_scalar("SELECT definition::text FROM agents ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let usage: HashMap<String, Usage> = match tenant {
        None => usage_totals(pool, UsageBy::Agent).await?.into_iter().collect(),
        Some(t) => tenant_usage_by_agent(pool, t).await?.into_iter().collect(),
    };
    let mut out = Vec::with_capacity(defs.len());
    for raw in defs {
        let def: AgentDef = serde_json::from_str(&raw)?;
        let queued = counts.get(&(def.name.clone(), "queued".into())).copied().unwrap_or(0);
        let running = counts.get(&(def.name.clone(), "running".into())).copied().unwrap_or(0);
        let usage = usage.get(&def.name).copied().unwrap_or_default();
        out.push(AgentSummary { def, queued, running, usage, breaker: BreakerState::Closed });
    }
    Ok(out)
}

pub(super) async fn usage_totals(pool: &PgPool, by: UsageBy) -> Result<Vec<(String, Usage)>> {
    let col = match by {
        UsageBy::Agent => "agent",
        UsageBy::Tenant => "tenant",
    };
    let sql = format!(
        "SELECT k, sum(i)::int8, sum(o)::int8, sum(c)::float8 FROM ( \
             SELECT {col} AS k, coalesce(sum((usage->>'input_tokens')::int8), 0) AS i, \
                 coalesce(sum((usage->>'output_tokens')::int8), 0) AS o, coalesce(sum((usage->>'cost_usd')::float8), 0) AS c \
             FROM tasks WHERE usage IS NOT NULL GROUP BY {col} \
             UNION ALL SELECT {col}, sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM usage_rollups GROUP BY {col}) u \
         GROUP BY k ORDER BY k"
    );
    let rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|(k, i, o, c)| (k, Usage { input_tokens: i as u64, output_tokens: o as u64, cost_usd: c }))
        .filter(|(_, u)| !u.is_zero())
        .collect())
}

/// One tenant's token and cost totals by agent.
async fn tenant_usage_by_agent(pool: &PgPool, tenant: &str) -> Result<Vec<(String, Usage)>> {
    let rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(
        "SELECT k, sum(i)::int8, sum(o)::int8, sum(c)::float8 FROM ( \
             SELECT agent AS k, coalesce(sum((usage->>'input_tokens')::int8), 0) AS i, \
                 coalesce(sum((usage->>'output_tokens')::int8), 0) AS o, coalesce(sum((usage->>'cost_usd')::float8), 0) AS c \
             FROM tasks WHERE usage IS NOT NULL AND tenant = $1 GROUP BY agent \
             UNION ALL SELECT agent, sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM usage_rollups \
                 WHERE tenant = $1 GROUP BY agent) u \
         GROUP BY k",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|(k, i, o, c)| (k, Usage { input_tokens: i as u64, output_tokens: o as u64, cost_usd: c }))
        .collect())
}

pub(super) async fn count_session_tasks(pool: &PgPool, session_id: &str, tenant: &str) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE session_id = $1 AND tenant = $2")
        .bind(session_id)
        .bind(tenant)
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    Ok(n as u64)
}

pub(super) async fn global_events(pool: &PgPool, q: &GlobalEventQuery) -> Result<Vec<Event>> {
    let kinds: Vec<&str> = q.kinds.iter().map(|k| k.as_str()).collect();
    let sql = format!(
        "SELECT {EVENT_COLS} FROM events WHERE task_id IS NULL AND kind = ANY($1::text[]) AND pos > $2 \
         AND ($4::text IS NULL OR {}) ORDER BY pos LIMIT $3",
        crate::visible_sql("$4")
    );
    let after = i64::try_from(q.after).unwrap_or(i64::MAX);
    let rows = sqlx::query(&sql)
        .bind(kinds)
        .bind(after)
        .bind(limit(q.limit))
        .bind(q.tenant.as_deref())
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(event_row).collect()
}

pub(super) async fn get_session(pool: &PgPool, id: &str) -> Result<Option<Session>> {
    let row: Option<(String, String, String, String, i64)> =
        sqlx::query_as("SELECT id, tenant, agent, metadata::text, created_at FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
    match row {
        None => Ok(None),
        Some((id, tenant, agent, metadata, created_at)) => Ok(Some(Session {
            id,
            tenant,
            agent,
            metadata: serde_json::from_str(&metadata)?,
            created_at: Micros(created_at),
        })),
    }
}

pub(super) async fn create_session(pool: &PgPool, s: &Session) -> Result<()> {
    let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM agents WHERE name = $1")
        .bind(&s.agent)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    if known.is_none() {
        return Err(smith_core::Error::unprocessable(format!("unknown agent {:?}", s.agent)).into());
    }
    let done = sqlx::query(
        "INSERT INTO sessions (id, tenant, agent, metadata, created_at) VALUES ($1, $2, $3, $4::json, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&s.id)
    .bind(&s.tenant)
    .bind(&s.agent)
    .bind(s.metadata.to_string())
    .bind(s.created_at.0)
    .execute(pool)
    .await
    .map_err(db_error)?;
    if done.rows_affected() == 0 {
        return Err(
            smith_core::Error::new(smith_core::Code::Conflict, format!("session {} already exists", s.id)).into()
        );
    }
    Ok(())
}

pub(super) async fn nodes(pool: &PgPool) -> Result<Vec<Node>> {
    let sql = format!("SELECT {NODE_COLS} FROM nodes ORDER BY role, started_at, id");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(node_row).collect()
}

pub(super) async fn queue_stats(pool: &PgPool, now: Micros) -> Result<QueueStats> {
    type Counts = (i64, i64, i64, i64, i64, Option<i64>);
    let (queued, running, waiting, scheduled, parked, oldest): Counts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasks WHERE status = 'queued'), \
                (SELECT count(*) FROM tasks WHERE status = 'running'), \
                (SELECT count(*) FROM tasks WHERE status = 'waiting_input'), \
                (SELECT count(*) FROM tasks WHERE status = 'scheduled'), \
                (SELECT count(*) FROM tasks WHERE status = 'parked'), \
                (SELECT min(created_at) FROM tasks WHERE status = 'queued' AND run_at <= $1)",
    )
    .bind(now.0)
    .fetch_one(pool)
    .await
    .map_err(db_error)?;
    Ok(QueueStats {
        queued: queued as u64,
        running: running as u64,
        waiting: waiting as u64,
        scheduled: scheduled as u64,
        parked: parked as u64,
        oldest_queued_age: oldest.map(|t| Duration::from_micros(now.since(Micros(t)) as u64)),
    })
}

/// Running attempts whose lease ended before `now`, or whose worker is not alive or draining.
pub(super) async fn reap_candidates(pool: &PgPool, now: Micros) -> Result<Vec<(TaskId, u32)>> {
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT id::text, attempt FROM tasks \
         WHERE status = 'running' AND (lease_until < $1 OR worker IS NULL OR worker NOT IN \
               (SELECT id FROM nodes WHERE status IN ('alive', 'draining')))",
    )
    .bind(now.0)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, attempt) in rows {
        out.push((id.parse::<TaskId>()?, attempt as u32));
    }
    Ok(out)
}

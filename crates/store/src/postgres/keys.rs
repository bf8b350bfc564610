//! Keyed claims on PostgreSQL (`crate::keys`): which queued tasks of a capped agent a batch's
//! claims take, key by key in turn from the agent's cursor. Claims run under the feed lock,
//! one batch at a time in every process, and running tasks only come from claims: the running
//! counts read here stay true (or fall, as tasks end) until the batch commits, so `max_per_key`
//! is exact across processes, exactly like the tenants' running caps (`claims.rs`).
//!
//! A walk is one statement: a recursive index probe for each next key with queued tasks after
//! a position (up to a bound once wrapped), at most a given number of keys, each key's best
//! runnable tasks up to its room. The probes say `(agent, tenant, key) > ($1, …) AND agent <=
//! $1` so that only `tasks_claim_key` can start the scan (see `capped_sql` in `claims.rs`).

use super::db_error;
use crate::caps::Room;
use crate::keys::{KeyOf, Offer, Turns};
use crate::Result;
use smith_core::Micros;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;

/// A task's concurrency key, as the indexes of migration 0011 spell it.
const KEY: &str = "(t.options->>'concurrency_key')";

/// Keys of agent `$1` with queued tasks after (`$2`, `$3`) — `bounded`: up to (`$4`, `$5`);
/// else both are null — at most `$6` of them, each offering its best runnable tasks (due by
/// `$12`) up to its room: `$7` (`max_per_key`) less its running tasks (`$11[i]` for key
/// (`$9[i]`, `$10[i]`)), at most `$8`. Rows come by walk order, then rank. Both ends of a probe
/// are bounds of the index scan, never a filter: a filter would read on past the bound.
fn walk_sql(runnable: &str, bounded: bool) -> String {
    let runnable = runnable.replace(":now", "$12");
    let end = if bounded {
        format!("(t.agent, t.tenant, {KEY}) <= ($1, $4::text, $5::text)")
    } else {
        "t.agent <= $1 AND $4::text IS NULL AND $5::text IS NULL".to_string()
    };
    let next = format!(
        "SELECT t.tenant, {KEY} AS ckey FROM tasks t \
         WHERE t.status = 'queued' AND {KEY} IS NOT NULL AND {end} \
         AND (t.agent, t.tenant, {KEY}) > ($1, AFTER_TENANT, AFTER_KEY) \
         ORDER BY t.agent, t.tenant, {KEY} LIMIT 1"
    );
    let first = next.replace("AFTER_TENANT", "$2::text").replace("AFTER_KEY", "$3::text");
    let step = next.replace("AFTER_TENANT", "walk.tenant").replace("AFTER_KEY", "walk.ckey");
    format!(
        "WITH RECURSIVE walk(tenant, ckey, d) AS ( \
             SELECT f.tenant, f.ckey, 1 FROM ({first}) AS f \
             UNION ALL \
             SELECT s.tenant, s.ckey, walk.d + 1 FROM walk CROSS JOIN LATERAL ({step}) AS s \
             WHERE walk.d < $6), \
         room AS ( \
             SELECT walk.d, walk.tenant, walk.ckey, \
                 least($7::int8 - coalesce(r.running, 0), $8::int8) AS free \
             FROM walk LEFT JOIN UNNEST($9::text[], $10::text[], $11::int8[]) AS r(tenant, ckey, running) \
                 ON r.tenant = walk.tenant AND r.ckey = walk.ckey) \
         SELECT room.d, room.tenant, room.ckey, o.id::text AS id FROM room CROSS JOIN LATERAL ( \
             SELECT t.id, t.priority, t.seq FROM tasks t \
             WHERE t.status = 'queued' AND t.agent = $1 AND t.tenant = room.tenant AND {KEY} = room.ckey \
             AND t.run_at <= $12 AND {runnable} \
             ORDER BY t.priority DESC, t.seq LIMIT greatest(room.free, 0)) AS o \
         ORDER BY room.d, o.priority DESC, o.seq"
    )
}

/// The best runnable tasks of agent `$1` (due by `$2`) without a key, at most `$4`, among the
/// head of its queue (`$3` tasks by priority, then age) only: such tasks were queued before the
/// agent had `max_per_key`, so they are older than any keyed one and reach the head unless a
/// higher priority holds them back; an index of unkeyed tasks would cost every task.
fn keyless_sql(runnable: &str) -> String {
    let runnable = runnable.replace(":now", "$2");
    format!(
        "SELECT id::text AS id, tenant FROM ( \
             SELECT t.id, t.tenant, {KEY} AS k, t.priority, t.seq FROM tasks t \
             WHERE t.status = 'queued' AND t.agent = $1 AND t.run_at <= $2 AND {runnable} \
             ORDER BY t.priority DESC, t.seq LIMIT $3) AS head \
         WHERE k IS NULL ORDER BY priority DESC, seq LIMIT $4"
    )
}

/// The ids of the tasks up to `n` claims of `agent` take under `max_per_key = cap`, in the
/// order the rounds took them, counted into `room` (tenants' caps); moves the agent's cursor.
/// `runnable`: the predicate over `t` every claim adds for a queued task.
pub(super) async fn picks(
    conn: &mut PgConnection,
    agent: &str,
    n: u32,
    cap: u32,
    now: Micros,
    room: Option<&mut Room<'_>>,
    runnable: &str,
) -> Result<Vec<String>> {
    let mut turns: Turns<String> = Turns::new(cap, running_by_key(conn, agent).await?);
    let cursor: Option<KeyOf> = sqlx::query_as("SELECT tenant, concurrency_key FROM key_cursors WHERE agent = $1")
        .bind(agent)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    // a walk looks past the keys at their cap (one probe each) and a few without runnable work
    let reach = i64::from(n) + turns.full_keys() as i64 + 8;
    let (tenants, keys, running) = turns.running_lists();
    let walks = [walk_sql(runnable, false), walk_sql(runnable, true)];
    let parts: [(KeyOf, Option<&KeyOf>); 2] =
        [(cursor.clone().unwrap_or_default(), None), (KeyOf::default(), cursor.as_ref())];
    for (i, (after, upto)) in parts.into_iter().enumerate() {
        if i == 1 {
            // the tasks without a key take their turn between the last key and the first
            if turns.members() < n as usize {
                turns.offer_keyless(keyless(conn, agent, n, now, runnable).await?);
            }
            if upto.is_none() {
                break;
            }
        }
        if turns.members() >= n as usize {
            break;
        }
        let rows = sqlx::query(&walks[usize::from(upto.is_some())])
            .bind(agent)
            .bind(&after.0)
            .bind(&after.1)
            .bind(upto.map(|k| &k.0))
            .bind(upto.map(|k| &k.1))
            .bind(reach)
            .bind(i64::from(cap))
            .bind(i64::from(n))
            .bind(&tenants)
            .bind(&keys)
            .bind(&running)
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        let mut key: Option<KeyOf> = None;
        let mut offers = Vec::new();
        for r in rows {
            let this: KeyOf = (r.try_get("tenant").map_err(db_error)?, r.try_get("ckey").map_err(db_error)?);
            if key.as_ref() != Some(&this) {
                if let Some(done) = key.take() {
                    turns.offer(done, std::mem::take(&mut offers));
                }
                key = Some(this.clone());
            }
            offers.push(Offer { id: r.try_get("id").map_err(db_error)?, tenant: this.0 });
        }
        if let Some(done) = key {
            turns.offer(done, offers);
        }
    }
    let (ids, moved) = turns.take(n, room);
    match moved {
        Some(Some((tenant, key))) => {
            sqlx::query(
                "INSERT INTO key_cursors (agent, tenant, concurrency_key) VALUES ($1, $2, $3) \
                 ON CONFLICT (agent) DO UPDATE SET tenant = excluded.tenant, concurrency_key = excluded.concurrency_key",
            )
            .bind(agent)
            .bind(tenant)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
        Some(None) if cursor.is_some() => {
            sqlx::query("DELETE FROM key_cursors WHERE agent = $1")
                .bind(agent)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        _ => {}
    }
    Ok(ids)
}

/// Running tasks of `agent` by key.
async fn running_by_key(conn: &mut PgConnection, agent: &str) -> Result<HashMap<KeyOf, u64>> {
    let sql = format!(
        "SELECT t.tenant, {KEY} AS ckey, count(*) AS n FROM tasks t \
         WHERE t.status = 'running' AND t.agent = $1 AND {KEY} IS NOT NULL GROUP BY t.tenant, {KEY}"
    );
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as(&sql).bind(agent).fetch_all(&mut *conn).await.map_err(db_error)?;
    Ok(rows.into_iter().map(|(t, k, n)| ((t, k), n as u64)).collect())
}

async fn keyless(
    conn: &mut PgConnection,
    agent: &str,
    n: u32,
    now: Micros,
    runnable: &str,
) -> Result<Vec<Offer<String>>> {
    let rows: Vec<(String, String)> = sqlx::query_as(&keyless_sql(runnable))
        .bind(agent)
        .bind(now.0)
        .bind(4 * i64::from(n) + 64)
        .bind(i64::from(n))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(|(id, tenant)| Offer { id, tenant }).collect())
}

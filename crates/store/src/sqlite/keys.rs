//! Keyed claims on SQLite (`crate::keys`): which queued tasks of a capped agent one claim takes,
//! key by key in turn from the agent's cursor. The writer thread is the only writer, so the
//! running counts read here stay true until the claim commits: `max_per_key` is exact.

use crate::caps::Room;
use crate::keys::{KeyOf, Offer, Turns};
use crate::Result;
use rusqlite::{params, Connection, OptionalExtension};
use smith_core::Micros;
use std::collections::HashMap;

/// The rowids of the tasks a claim of up to `n` tasks of `agent` takes under `max_per_key =
/// cap`, in the order the rounds took them, counting them into `room` (tenants' caps); moves the
/// agent's cursor. `runnable`: the predicate over `t` that every claim adds for a queued task
/// (no earlier turn of its session waiting).
pub(super) fn picks(
    c: &Connection,
    agent: &str,
    n: u32,
    cap: u32,
    now: Micros,
    room: Option<&mut Room>,
    runnable: &str,
) -> Result<Vec<i64>> {
    let mut turns = Turns::new(cap, running_by_key(c, agent)?);
    let cursor: Option<KeyOf> = c
        .prepare_cached("SELECT tenant, concurrency_key FROM key_cursors WHERE agent = ?1")?
        .query_row([agent], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // the next key with queued tasks after (?2, ?3); once the walk has wrapped, up to (?4, ?5)
    // (both ends bounds of the index scan, never a filter that would read on past the end)
    let next = "SELECT tenant, concurrency_key FROM tasks WHERE status = 'queued' AND agent = ?1 \
         AND concurrency_key IS NOT NULL AND (tenant, concurrency_key) > (?2, ?3) END \
         ORDER BY tenant, concurrency_key LIMIT 1";
    let mut after = c.prepare_cached(&next.replace("END", ""))?;
    let mut until = c.prepare_cached(&next.replace("END", "AND (tenant, concurrency_key) <= (?4, ?5)"))?;
    let mut best = c.prepare_cached(&format!(
        "SELECT rowid FROM tasks t WHERE status = 'queued' AND agent = ?1 AND tenant = ?2 AND concurrency_key = ?3 \
         AND run_at <= ?4 AND {} ORDER BY priority DESC, rowid LIMIT ?5",
        runnable.replace(":now", "?4")
    ))?;
    let left_of = |room: &Option<&mut Room>, tenant: &str| room.as_ref().and_then(|r| r.left(tenant));
    let mut visit = |turns: &mut Turns<i64>, key: KeyOf, room: &Option<&mut Room>| -> Result<()> {
        let free = turns.free(&key, n);
        if free == 0 || left_of(room, &key.0) == Some(0) {
            return Ok(());
        }
        let rows = best.query_map(params![agent, key.0, key.1, now.0, free], |r| r.get::<_, i64>(0))?;
        let mut offers = Vec::new();
        for id in rows {
            offers.push(Offer { id: id?, tenant: key.0.clone() });
        }
        turns.offer(key, offers);
        Ok(())
    };
    // keys after the cursor (every key when there is none) ...
    let mut pos: KeyOf = cursor.clone().unwrap_or_default();
    while turns.members() < n as usize {
        let next: Option<KeyOf> =
            after.query_row(params![agent, pos.0, pos.1], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let Some(key) = next else { break };
        pos = key.clone();
        visit(&mut turns, key, &room)?;
    }
    // ... then the tasks without a key ...
    if turns.members() < n as usize {
        turns.offer_keyless(keyless(c, agent, n, now, runnable)?);
    }
    // ... then, wrapped around, the keys up to the cursor
    if let Some(stop) = cursor.clone() {
        let mut pos: KeyOf = Default::default();
        while turns.members() < n as usize {
            let next: Option<KeyOf> = until
                .query_row(params![agent, pos.0, pos.1, stop.0, stop.1], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some(key) = next else { break };
            pos = key.clone();
            visit(&mut turns, key, &room)?;
        }
    }
    let (ids, moved) = turns.take(n, room);
    match moved {
        Some(Some((tenant, key))) => {
            c.prepare_cached(
                "INSERT INTO key_cursors (agent, tenant, concurrency_key) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (agent) DO UPDATE SET tenant = excluded.tenant, concurrency_key = excluded.concurrency_key",
            )?
            .execute(params![agent, tenant, key])?;
        }
        Some(None) if cursor.is_some() => {
            c.prepare_cached("DELETE FROM key_cursors WHERE agent = ?1")?.execute([agent])?;
        }
        _ => {}
    }
    Ok(ids)
}

/// Running tasks of `agent` by key.
fn running_by_key(c: &Connection, agent: &str) -> Result<HashMap<KeyOf, u64>> {
    let mut stmt = c.prepare_cached(
        "SELECT tenant, concurrency_key, count(*) FROM tasks \
         WHERE status = 'running' AND agent = ?1 AND concurrency_key IS NOT NULL GROUP BY tenant, concurrency_key",
    )?;
    let rows = stmt.query_map([agent], |r| Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The best runnable tasks of `agent` without a key, found among the head of its queue (by
/// priority, then age) only: such tasks were queued before the agent had `max_per_key`, so they
/// are older than any keyed one and reach the head unless a higher priority holds them back,
/// and no index of unkeyed tasks is kept for them (it would cost every task).
fn keyless(c: &Connection, agent: &str, n: u32, now: Micros, runnable: &str) -> Result<Vec<Offer<i64>>> {
    let window = 4 * i64::from(n) + 64;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT id, tenant FROM (SELECT rowid AS id, tenant, concurrency_key AS k FROM tasks t \
             WHERE status = 'queued' AND agent = ?1 AND run_at <= ?2 AND {} \
             ORDER BY priority DESC, rowid LIMIT ?3) \
         WHERE k IS NULL LIMIT ?4",
        runnable.replace(":now", "?2")
    ))?;
    let rows = stmt.query_map(params![agent, now.0, window, n], |r| Ok(Offer { id: r.get(0)?, tenant: r.get(1)? }))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

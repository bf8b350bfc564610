//! The SQL of fleet-wide rate buckets in the SQLite store: declared and taken in the writer's
//! batches (one process owns the file, so its clock is the store's), the arithmetic in
//! [`crate::rates`].

use super::Tx;
use crate::rates::{refill, take};
use crate::{Error, RateBucket, RateGrant, RateKind, RateSpec, RateTake, Result};
use rusqlite::{params, Connection, OptionalExtension};
use smith_core::Micros;

pub(super) fn declare(c: &Tx, specs: &[RateSpec], now: Micros) -> Result<()> {
    for s in specs {
        let old: Option<(f64, f64, i64)> = c
            .prepare_cached("SELECT level, per_second, updated_at FROM rate_buckets WHERE account = ?1 AND kind = ?2")?
            .query_row(params![s.account, s.kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let (level, at) = match old {
            Some((level, rate, at)) => (refill(level, s.capacity, rate, now.0 - at), now.0.max(at)),
            None => (s.capacity, now.0),
        };
        c.prepare_cached(
            "INSERT INTO rate_buckets (account, kind, capacity, per_second, level, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (account, kind) DO UPDATE SET capacity = excluded.capacity, \
                 per_second = excluded.per_second, level = excluded.level, updated_at = excluded.updated_at",
        )?
        .execute(params![s.account, s.kind.as_str(), s.capacity, s.per_second, level, at])?;
    }
    Ok(())
}

pub(super) fn take_one(c: &Tx, t: &RateTake, now: Micros) -> Result<Option<RateGrant>> {
    let row: Option<(f64, f64, f64, i64)> = c
        .prepare_cached(
            "SELECT capacity, per_second, level, updated_at FROM rate_buckets WHERE account = ?1 AND kind = ?2",
        )?
        .query_row(params![t.account, t.kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((capacity, rate, level, at)) = row else { return Ok(None) };
    let grant = take(refill(level, capacity, rate, now.0 - at), capacity, t);
    // the clock never runs back for a bucket: a later take counts from the later instant
    let at = now.0.max(at);
    c.prepare_cached("UPDATE rate_buckets SET level = ?3, updated_at = ?4 WHERE account = ?1 AND kind = ?2")?
        .execute(params![t.account, t.kind.as_str(), grant.level, at])?;
    Ok(Some(grant))
}

pub(super) fn list(c: &Connection, now: Micros) -> Result<Vec<RateBucket>> {
    let mut stmt = c.prepare_cached(
        "SELECT account, kind, capacity, per_second, level, updated_at FROM rate_buckets ORDER BY account, kind",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, i64>(5)?))
        })?
        .collect::<rusqlite::Result<Vec<(String, String, f64, f64, f64, i64)>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (account, kind, capacity, per_second, level, at) in rows {
        let kind =
            RateKind::parse(&kind).ok_or_else(|| Error::Backend(format!("unknown rate bucket kind {kind:?}")))?;
        let level = refill(level, capacity, per_second, now.0 - at);
        out.push(RateBucket { account, kind, capacity, per_second, level, at: now });
    }
    Ok(out)
}

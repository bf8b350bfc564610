//! Fleet-wide rate buckets in the PostgreSQL store: each call one short statement on the pool,
//! never queued behind the writer's batches, dated on the database's clock. A take is
//! `smith_rate_take` (migration 0012), which locks the bucket's row, so concurrent takers
//! from every process are serialized on it and never grant more than it held.

use super::db_error;
use super::liveness::STORE_NOW;
use crate::{Error, RateBucket, RateGrant, RateKind, RateSpec, RateTake, Result};
use smith_core::Micros;
use sqlx::PgPool;

pub(super) async fn declare(pool: &PgPool, specs: &[RateSpec]) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = specs.iter().map(|s| s.account.as_str()).collect();
    let kinds: Vec<&str> = specs.iter().map(|s| s.kind.as_str()).collect();
    let capacities: Vec<f64> = specs.iter().map(|s| s.capacity).collect();
    let rates: Vec<f64> = specs.iter().map(|s| s.per_second).collect();
    let sql = format!(
        "INSERT INTO rate_buckets (account, kind, capacity, per_second, level, updated_at) \
         SELECT a, k, c, r, c, {STORE_NOW} FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::float8[]) AS u(a, k, c, r) \
         ON CONFLICT (account, kind) DO UPDATE SET capacity = excluded.capacity, per_second = excluded.per_second, \
             level = least(excluded.capacity, rate_buckets.level \
                 + greatest(0, excluded.updated_at - rate_buckets.updated_at)::float8 / 1e6 * rate_buckets.per_second), \
             updated_at = greatest(excluded.updated_at, rate_buckets.updated_at)"
    );
    sqlx::query(&sql).bind(accounts).bind(kinds).bind(capacities).bind(rates).execute(pool).await.map_err(db_error)?;
    Ok(())
}

pub(super) async fn take(pool: &PgPool, t: &RateTake) -> Result<Option<RateGrant>> {
    let (granted, level): (Option<i64>, Option<f64>) =
        sqlx::query_as("SELECT o_granted, o_level FROM smith_rate_take($1, $2, $3, $4, $5)")
            .bind(&t.account)
            .bind(t.kind.as_str())
            .bind(t.want as i64)
            .bind(t.min as i64)
            .bind(t.adjust)
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
    Ok(match (granted, level) {
        (Some(g), Some(level)) => Some(RateGrant { granted: g.max(0) as u64, level }),
        _ => None,
    })
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<RateBucket>> {
    let sql = format!(
        "SELECT account, kind, capacity, per_second, \
             least(capacity, level + greatest(0, {STORE_NOW} - updated_at)::float8 / 1e6 * per_second), {STORE_NOW} \
         FROM rate_buckets ORDER BY account, kind"
    );
    let rows: Vec<(String, String, f64, f64, f64, i64)> =
        sqlx::query_as(&sql).fetch_all(pool).await.map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for (account, kind, capacity, per_second, level, at) in rows {
        let kind =
            RateKind::parse(&kind).ok_or_else(|| Error::Backend(format!("unknown rate bucket kind {kind:?}")))?;
        out.push(RateBucket { account, kind, capacity, per_second, level, at: Micros(at) });
    }
    Ok(out)
}

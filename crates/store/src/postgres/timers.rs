//! The SQL of the timer pass and of account holds, in the PostgreSQL store: candidates are found
//! on the pool (the common answer is "none"), then judged again under lock in a writer's batch
//! (`Op::Timers`); a park's hold is upserted in the batch that parks its task (`Op::Park`).

use super::db_error;
use crate::lifecycle::Park;
use crate::timers::AccountHold;
use crate::Result;
use smith_core::{Micros, TaskId};
use sqlx::{PgConnection, PgPool};

/// Tasks the timer pass may move at `now`: scheduled or parked ones due, and unstarted ones
/// past their time to live; at most `limit` of each, the earliest first.
pub(super) async fn candidates(pool: &PgPool, now: Micros, limit: usize) -> Result<Vec<TaskId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "(SELECT id::text FROM tasks WHERE status IN ('scheduled', 'parked') AND run_at <= $1 \
          ORDER BY run_at LIMIT $2) \
         UNION \
         (SELECT id::text FROM tasks WHERE expires_at IS NOT NULL AND attempt = 0 \
          AND status IN ('scheduled', 'queued') AND expires_at <= $1 ORDER BY expires_at LIMIT $2)",
    )
    .bind(now.0)
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    ids.iter().map(|id| id.parse::<TaskId>().map_err(Into::into)).collect()
}

/// Holds each parked account until the later of its current hold and the park's `until`.
pub(super) async fn hold(conn: &mut PgConnection, parks: &[Park], now: Micros) -> Result<()> {
    if parks.is_empty() {
        return Ok(());
    }
    // one row per account, the latest `until` of the batch's parks
    let mut latest: std::collections::BTreeMap<&str, &Park> = Default::default();
    for p in parks {
        let e = latest.entry(p.account.as_str()).or_insert(p);
        if p.until > e.until {
            *e = p;
        }
    }
    let accounts: Vec<&str> = latest.keys().copied().collect();
    let until: Vec<i64> = latest.values().map(|p| p.until.0).collect();
    let reason: Vec<&str> = latest.values().map(|p| p.reason.as_str()).collect();
    sqlx::query(
        "INSERT INTO account_holds (account, until, reason, at) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[]) AS u(account, until, reason) \
             CROSS JOIN (SELECT $4::int8) AS at \
         ON CONFLICT (account) DO UPDATE SET until = greatest(account_holds.until, excluded.until), \
             reason = excluded.reason, at = excluded.at",
    )
    .bind(accounts)
    .bind(until)
    .bind(reason)
    .bind(now.0)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub(super) async fn holds(pool: &PgPool, now: Micros) -> Result<Vec<AccountHold>> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT account, until, reason FROM account_holds WHERE until > $1 ORDER BY account")
            .bind(now.0)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
    Ok(rows.into_iter().map(|(account, until, reason)| AccountHold { account, until: Micros(until), reason }).collect())
}

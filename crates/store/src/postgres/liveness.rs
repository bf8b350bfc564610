//! Liveness writes — node heartbeats and lease renewals — on their own small pool, each one
//! statement in its own transaction: never queued in the writer's batches, and so never behind
//! the feed lock that a batch with events waits for. A healthy node must not be quarantined
//! because event writes were slow (a heartbeat once waited 1.8 s on `pg_advisory_xact_lock`).
//!
//! Heartbeats are dated on the store's clock: the node's own timestamp is used only for its
//! age at the call (≈ 0 for a live heartbeat), so skew between machines does not decide who is
//! alive; `mark_dead_nodes` compares on the same clock.

use super::db_error;
use crate::{Error, Held, Result};
use smith_core::{Micros, Node, NodeStatus, TaskId};
use sqlx::PgPool;

/// The store's clock, in microseconds since the epoch.
pub(super) const STORE_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000000)::int8";

/// How long before now (on the caller's clock) `at` is; the store subtracts it from its own now.
pub(super) fn age(at: Micros) -> i64 {
    Micros::now().0.saturating_sub(at.0)
}

/// Upserts the node, dated on the store's clock; a quarantined node stays quarantined unless it
/// stops. Returns the stored status.
pub(super) async fn heartbeat(pool: &PgPool, n: &Node) -> Result<NodeStatus> {
    let sql = format!(
        "INSERT INTO nodes (id, role, version, address, status, started_at, heartbeat_at, load) \
         VALUES ($1, $2, $3, $4, $5, $6, {STORE_NOW} - $7, $8::json) \
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, address = excluded.address, \
             status = CASE WHEN nodes.status = 'quarantined' AND excluded.status IN ('alive', 'draining') \
                           THEN 'quarantined' ELSE excluded.status END, \
             heartbeat_at = excluded.heartbeat_at, load = excluded.load \
         RETURNING status"
    );
    let status: String = sqlx::query_scalar(&sql)
        .bind(&n.id)
        .bind(n.role.as_str())
        .bind(&n.version)
        .bind(&n.address)
        .bind(n.status.as_str())
        .bind(n.started_at.0)
        .bind(age(n.heartbeat_at))
        .bind(n.load.to_string())
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    NodeStatus::parse(&status).ok_or_else(|| Error::Backend(format!("unknown node status {status:?}")))
}

/// Extends the lease of every task `worker` runs to `until`. Rows are locked in id order, as
/// the writers lock them, so a renewal and a batch never wait on each other in a cycle.
pub(super) async fn renew(pool: &PgPool, worker: &str, until: Micros) -> Result<Vec<Held>> {
    let rows: Vec<(String, i32, bool)> = sqlx::query_as(
        "WITH held AS ( \
             SELECT id FROM tasks WHERE worker = $1 AND status = 'running' ORDER BY id FOR UPDATE) \
         UPDATE tasks AS t SET lease_until = $2 FROM held \
         WHERE t.id = held.id AND t.worker = $1 AND t.status = 'running' \
         RETURNING t.id::text, t.attempt, t.cancel_requested",
    )
    .bind(worker)
    .bind(until.0)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.into_iter()
        .map(|(id, attempt, cancel_requested)| {
            let id = id.parse::<TaskId>().map_err(|e| Error::Backend(format!("corrupt task id {id:?}: {e}")))?;
            Ok(Held { id, attempt: attempt as u32, cancel_requested })
        })
        .collect()
}

//! Versioned schema migrations of the PostgreSQL store, embedded in the binary.
//!
//! Applied versions are recorded in `schema_migrations`. Pending ones run in order in one
//! transaction that first takes a transaction-level advisory lock, so processes starting at once
//! against one database apply each migration exactly once: the others wait, then find nothing
//! left to do. A failed migration leaves the schema as it was.

use super::db_error;
use crate::{Error, Result};
use sqlx::{Connection, PgConnection, Row};

/// Every migration, in order; a version is its position, from 1.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "collaboration", include_str!("../../migrations/postgres/0002_collaboration.sql")),
    (3, "access", include_str!("../../migrations/postgres/0003_access.sql")),
    (4, "running_caps", include_str!("../../migrations/postgres/0004_running_caps.sql")),
    (5, "output_bytes", include_str!("../../migrations/postgres/0005_output_bytes.sql")),
    (6, "task_options", include_str!("../../migrations/postgres/0006_task_options.sql")),
    (7, "artifacts", include_str!("../../migrations/postgres/0007_artifacts.sql")),
    (8, "approvals", include_str!("../../migrations/postgres/0008_approvals.sql")),
    (9, "webhooks", include_str!("../../migrations/postgres/0009_webhooks.sql")),
    (10, "timers", include_str!("../../migrations/postgres/0010_timers.sql")),
    (11, "concurrency_keys", include_str!("../../migrations/postgres/0011_concurrency_keys.sql")),
    (12, "rate_limits", include_str!("../../migrations/postgres/0012_rate_limits.sql")),
    (13, "schedules", include_str!("../../migrations/postgres/0013_schedules.sql")),
    (14, "retention", include_str!("../../migrations/postgres/0014_retention.sql")),
];

/// Serialises migrations across every process sharing the database (`"smithmig"`).
const MIGRATION_LOCK: i64 = 0x736d_6974_686d_6967;

/// The newest schema version this binary knows.
pub(crate) fn latest() -> u32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Applies every pending migration; returns the versions applied now (empty: up to date).
pub(super) async fn run(conn: &mut PgConnection) -> Result<Vec<u32>> {
    let mut tx = conn.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(db_error)?;
    let schema: Option<String> =
        sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut *tx).await.map_err(db_error)?;
    if schema.is_none() {
        return Err(Error::Config(
            "no schema to create the store's tables in: the search_path names no existing schema".into(),
        ));
    }
    let create = "CREATE TABLE IF NOT EXISTS schema_migrations (\
        version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";
    // plain strings go by the simple query protocol, which runs a file of many statements
    sqlx::Executor::execute(&mut *tx, create).await.map_err(db_error)?;
    let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    let mut applied = Vec::with_capacity(rows.len());
    for r in rows {
        applied.push(r.try_get::<i32, _>(0).map_err(db_error)? as u32);
    }
    if let Some(&newest) = applied.iter().max() {
        if newest > latest() {
            return Err(Error::Config(format!(
                "database schema version {newest} is newer than this binary knows ({}); upgrade smith",
                latest()
            )));
        }
    }
    let mut now_applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        sqlx::Executor::execute(&mut *tx, sql)
            .await
            .map_err(|e| Error::Backend(format!("migration {version} ({name}) failed: {}", db_error(e))))?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(version as i32)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        now_applied.push(version);
    }
    tx.commit().await.map_err(db_error)?;
    for &version in &now_applied {
        tracing::info!(version, "applied store migration");
    }
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1, "{name}");
            assert!(!sql.trim().is_empty(), "{name}");
        }
    }
}

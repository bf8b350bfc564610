-- Cron schedules of tenants (docs/schedules.md). `next_fire_at` is the firing cursor: the next
-- fire not yet handled, moved only in the write that submits (or passes over) that fire; NULL
-- while paused. The fired task carries the idempotency key `schedule:{id}:{fire time}`.
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    name            TEXT NOT NULL,
    agent           TEXT NOT NULL,
    input           TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    timeout_ms      INTEGER,
    max_attempts    INTEGER,
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    overlap         TEXT NOT NULL,
    catchup_ms      INTEGER NOT NULL,
    paused          INTEGER NOT NULL,
    next_fire_at    INTEGER,
    last_fire_at    INTEGER,
    last_task_id    TEXT,
    skipped         INTEGER NOT NULL DEFAULT 0,
    last_skipped_at INTEGER,
    missed          INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX schedules_tenant ON schedules (tenant, created_at);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

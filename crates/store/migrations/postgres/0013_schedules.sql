-- Cron schedules of tenants (docs/schedules.md). `next_fire_at` is the firing cursor: the next
-- fire not yet handled, moved only in the write that submits (or passes over) that fire; NULL
-- while paused. The fired task carries the idempotency key `schedule:{id}:{fire time}`.
CREATE TABLE schedules (
    id              text PRIMARY KEY,
    tenant          text NOT NULL,
    name            text NOT NULL,
    agent           text NOT NULL,
    input           text NOT NULL,
    metadata        text NOT NULL,
    priority        smallint NOT NULL,
    timeout_ms      bigint,
    max_attempts    integer,
    cron            text NOT NULL,
    timezone        text NOT NULL,
    overlap         text NOT NULL,
    catchup_ms      bigint NOT NULL,
    paused          boolean NOT NULL,
    next_fire_at    bigint,
    last_fire_at    bigint,
    last_task_id    uuid,
    skipped         bigint NOT NULL DEFAULT 0,
    last_skipped_at bigint,
    missed          bigint NOT NULL DEFAULT 0,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL
);
CREATE INDEX schedules_tenant ON schedules (tenant, created_at);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

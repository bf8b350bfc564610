-- Retention (docs/retention.md): usage rollups of deleted tasks, the feed's horizon per tenant,
-- the index the purge walks, and an audit log that only the purge may delete from.

-- Usage of tasks retention deleted, summed by tenant, agent and UTC day (the day of the task's
-- `spent_at`): every usage read adds these to the live tasks' usage, in one statement.
CREATE TABLE usage_rollups (
    tenant        text NOT NULL,
    agent         text NOT NULL,
    day           bigint NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd      float8 NOT NULL,
    tasks         bigint NOT NULL,
    PRIMARY KEY (tenant, agent, day)
);

-- The highest feed position retention deleted, by the tenant of the deleted task: a feed reader
-- of that tenant (or the platform, which reads every row's maximum) whose cursor is below it is
-- told, and continues from it. Positions are never handed out again (the feed's newest event
-- is never deleted).
CREATE TABLE retention_horizons (
    tenant text PRIMARY KEY,
    pos    bigint NOT NULL
);

-- Finished tasks by when they finished: the purge's walk, oldest first.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- A deleted task's deliveries.
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id) WHERE task_id IS NOT NULL;
-- Deleted events leave dead rows: vacuum them as the tasks table is (after 1% changed), so the
-- space is reused by new events instead of the table growing.
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
ALTER TABLE audit SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

-- Deleting audit records: only inside the retention purge's transaction, which sets
-- `smith.retention_delete` to 'on' with SET LOCAL (it ends with the transaction). UPDATE and
-- TRUNCATE stay refused, and so does any DELETE outside it.
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('smith.retention_delete', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;

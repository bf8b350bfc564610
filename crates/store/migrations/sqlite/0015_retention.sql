-- Retention (docs/retention.md): usage rollups of deleted tasks, the feed's horizon per tenant,
-- the index the purge walks, and an audit log that only the purge may delete from.

-- Usage of tasks retention deleted, summed by tenant, agent and UTC day (the day of the task's
-- `spent_at`): every usage read adds these to the live tasks' usage, in one statement.
CREATE TABLE usage_rollups (
    tenant        TEXT NOT NULL,
    agent         TEXT NOT NULL,
    day           INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      REAL NOT NULL,
    tasks         INTEGER NOT NULL,
    PRIMARY KEY (tenant, agent, day)
) WITHOUT ROWID;

-- The highest feed position retention deleted, by the tenant of the deleted task: a feed reader
-- of that tenant (or the platform, which reads every row's maximum) whose cursor is below it is
-- told, and continues from it. Positions are never handed out again (the feed's newest event
-- is never deleted).
CREATE TABLE retention_horizons (
    tenant TEXT PRIMARY KEY,
    pos    INTEGER NOT NULL
) WITHOUT ROWID;

-- Finished tasks by when they finished: the purge's walk, oldest first.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- A deleted task's deliveries.
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id) WHERE task_id IS NOT NULL;

-- Deleting audit records: only while the store's writer runs the retention purge, which sets the
-- flag `smith_retention_delete()` reads. The function exists on the store's writer connection
-- alone, so a DELETE through any other connection fails (no such function) and one through the
-- writer outside the purge is refused; UPDATE stays refused for everyone.
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN smith_retention_delete() IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

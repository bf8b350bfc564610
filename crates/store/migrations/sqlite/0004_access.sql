-- API keys, the audit log, and the figures tenant quotas read on every submission.

-- A key's secret is never stored, only its SHA-256 (lowercase hex). Scopes are their names,
-- comma-separated.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    name          TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);

-- Append-only. `id` is the rowid, assigned by the single writer, so ids increase in commit order.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    source TEXT NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX audit_tenant ON audit (tenant, id);
CREATE INDEX audit_at ON audit (at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- When a task's usage last grew: the end of its last attempt that spent. Tenant quotas sum the
-- usage recorded since a time by it. Tasks that spent before this column existed are dated by
-- their end (or start, while in flight).
ALTER TABLE tasks ADD COLUMN spent_at INTEGER;
UPDATE tasks SET spent_at = coalesce(finished_at, started_at, created_at) WHERE usage IS NOT NULL;
CREATE INDEX tasks_tenant_spent ON tasks (tenant, spent_at) WHERE usage IS NOT NULL;
-- A tenant's queued and running tasks, counted on every submission when quotas are set. Written
-- as an OR so SQLite uses it for `status = 'queued'` and `status = 'running'` alike.
CREATE INDEX tasks_tenant_active ON tasks (tenant, status) WHERE status = 'queued' OR status = 'running';

-- API keys, the audit log, and the figures tenant quotas read on every submission.

-- A key's secret is never stored, only its SHA-256 (lowercase hex). Scopes are their names,
-- comma-separated.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    tenant        text NOT NULL,
    scopes        text NOT NULL,
    name          text,
    secret_sha256 text NOT NULL,
    created_at    bigint NOT NULL,
    revoked_at    bigint
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);

-- Append-only. `id` is assigned as the previous maximum plus one under the feed's advisory lock,
-- held to the commit (see the store's writer), so ids increase in commit order across every
-- process and a reader paging by id misses nothing.
CREATE TABLE audit (
    id     bigint PRIMARY KEY,
    at     bigint NOT NULL,
    actor  text NOT NULL,
    tenant text NOT NULL,
    action text NOT NULL,
    target text,
    source text NOT NULL,
    status integer NOT NULL
) WITH (
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE INDEX audit_tenant ON audit (tenant, id);
CREATE INDEX audit_at ON audit (at);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- When a task's usage last grew: the end of its last attempt that spent. Tenant quotas sum the
-- usage recorded since a time by it. Tasks that spent before this column existed are dated by
-- their end (or start, while in flight).
ALTER TABLE tasks ADD COLUMN spent_at bigint;
UPDATE tasks SET spent_at = coalesce(finished_at, started_at, created_at) WHERE usage IS NOT NULL;
CREATE INDEX tasks_tenant_spent ON tasks (tenant, spent_at) WHERE usage IS NOT NULL;
-- A tenant's queued and running tasks, counted on every submission when quotas are set.
CREATE INDEX tasks_tenant_active ON tasks (tenant, status) WHERE status IN ('queued', 'running');

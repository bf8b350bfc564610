-- Durable bytes each task wrote (its events' data and its result), dated by its last write:
-- the tenant's daily output quota (`[quotas] daily_output_bytes`) sums them since 00:00 UTC.
ALTER TABLE tasks ADD COLUMN output_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_at bigint;
CREATE INDEX tasks_tenant_output ON tasks (tenant, output_at) WHERE output_bytes > 0;

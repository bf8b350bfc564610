-- Durable bytes each task wrote (its events' data and its result), and when it last wrote.
ALTER TABLE tasks ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_at INTEGER;
-- The same bytes by tenant and UTC day (micros / 86,400,000,000), added in the write that stores
-- them: the tenant's daily output quota (`[quotas] daily_output_bytes`) reads one row. (An index
-- on the tasks' own columns would be rewritten by every event write.)
CREATE TABLE tenant_output (
    tenant TEXT NOT NULL,
    day    INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (tenant, day)
) WITHOUT ROWID;

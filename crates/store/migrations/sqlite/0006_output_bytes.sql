-- Durable bytes (event data and results, as stored) by tenant and UTC day (micros /
-- 86,400,000,000), added in the write that stores them: the tenant's daily output quota
-- (`[quotas] daily_output_bytes`) reads one row. (A per-task column under an index would be
-- rewritten with every event.)
CREATE TABLE tenant_output (
    tenant TEXT NOT NULL,
    day    INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (tenant, day)
) WITHOUT ROWID;

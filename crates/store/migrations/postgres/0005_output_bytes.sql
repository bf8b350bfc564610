-- Durable bytes each task wrote (its events' data and its result), and when it last wrote.
ALTER TABLE tasks ADD COLUMN output_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_at bigint;
-- The same bytes by tenant and UTC day (micros / 86,400,000,000), added under the feed lock in
-- the transaction that stores them: the tenant's daily output quota reads one row. (An index on
-- the tasks' own columns would be rewritten by every event write, and cost tasks their HOT
-- updates.)
CREATE TABLE tenant_output (
    tenant text NOT NULL,
    day    bigint NOT NULL,
    bytes  bigint NOT NULL,
    PRIMARY KEY (tenant, day)
);

-- Durable bytes (event data and results, as stored) by tenant and UTC day (micros /
-- 86,400,000,000), added under the feed lock in the transaction that stores them: the tenant's
-- daily output quota reads one row. (A per-task column under an index would be rewritten with
-- every event and cost tasks their HOT updates.)
CREATE TABLE tenant_output (
    tenant text NOT NULL,
    day    bigint NOT NULL,
    bytes  bigint NOT NULL,
    PRIMARY KEY (tenant, day)
);

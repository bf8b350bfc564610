-- Keyed concurrency (docs/concurrency.md). A task's key lives in its `options` (JSON); this
-- column reads it out, computed, never stored, so writing a task is unchanged.
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT GENERATED ALWAYS AS (json_extract(options, '$.concurrency_key')) VIRTUAL;
-- Each key's queued tasks of an agent, best first: a claim walks the keys one probe each and
-- takes each key's best tasks up to its room. Tasks without a key are not in it, so unkeyed
-- work pays nothing for it.
CREATE INDEX tasks_claim_key ON tasks (agent, tenant, concurrency_key, priority DESC, rowid)
    WHERE status = 'queued' AND concurrency_key IS NOT NULL;
-- Each key's running tasks of an agent: what a claim counts against `max_per_key`.
CREATE INDEX tasks_running_key ON tasks (agent, tenant, concurrency_key)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
-- Where each capped agent's turn among its keys stands: the last key a claim served (none: the
-- turn is at the start).
CREATE TABLE key_cursors (
    agent TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    concurrency_key TEXT NOT NULL
) WITHOUT ROWID;

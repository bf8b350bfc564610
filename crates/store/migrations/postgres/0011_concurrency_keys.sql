-- Keyed concurrency (docs/concurrency.md). A task's key lives in its `options` (JSON), read
-- by expression indexes (no column, so adding this rewrites no table and writing a task is
-- unchanged). The claims spell the expression exactly as here: `(options->>'concurrency_key')`.
--
-- Each key's queued tasks of an agent, best first: a claim walks the keys one probe each and
-- takes each key's best tasks up to its room. Tasks without a key are not in it, so unkeyed
-- work pays nothing for it.
CREATE INDEX tasks_claim_key ON tasks (agent, tenant, (options->>'concurrency_key'), priority DESC, seq)
    WHERE status = 'queued' AND (options->>'concurrency_key') IS NOT NULL;
-- Each key's running tasks of an agent: what a claim counts against `max_per_key`.
CREATE INDEX tasks_running_key ON tasks (agent, tenant, (options->>'concurrency_key'))
    WHERE status = 'running' AND (options->>'concurrency_key') IS NOT NULL;
-- Where each capped agent's turn among its keys stands: the last key a claim served (none: the
-- turn is at the start).
CREATE TABLE key_cursors (
    agent text PRIMARY KEY,
    tenant text NOT NULL,
    concurrency_key text NOT NULL
);

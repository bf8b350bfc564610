-- Tasks that start later and tasks that wait out a provider's limit (store::lifecycle: `scheduled`,
-- `parked`, `expired`). `run_at` already says when a queued task may be claimed; a scheduled or
-- parked task is queued by the leader's timer pass once its `run_at` passes, found by this index.
ALTER TABLE tasks ADD COLUMN expires_at bigint;
CREATE INDEX tasks_deferred ON tasks (run_at) WHERE status IN ('scheduled', 'parked');
-- A tenant's tasks waiting to be queued count as queued for its quotas (`max_queued`).
CREATE INDEX tasks_tenant_waiting ON tasks (tenant) WHERE status IN ('scheduled', 'parked');
-- Tasks that never started and have a time to live: the timer pass expires them.
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE expires_at IS NOT NULL AND attempt = 0
    AND status IN ('scheduled', 'queued');
-- A provider account at its usage limit until `until`: workers claim none of its agents' tasks
-- before then (every task of the account waits, not only the one that hit the limit).
CREATE TABLE account_holds (
    account text PRIMARY KEY,
    until   bigint NOT NULL,
    reason  text NOT NULL,
    at      bigint NOT NULL
);

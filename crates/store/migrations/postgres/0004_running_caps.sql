-- Each tenant's queued tasks of an agent, best first. Under per-tenant running caps a claim
-- walks the tenants with queued work (one index probe each) and takes each one's best tasks up
-- to its free slots, so a capped tenant's backlog is never scanned to reach the tasks behind it.
CREATE INDEX tasks_claim_tenant ON tasks (agent, tenant, priority DESC, seq) WHERE status = 'queued';

-- MisterSmith PostgreSQL store, version 1.
--
-- Timestamps are microseconds since the Unix epoch (bigint), as in the embedded store, so every
-- API value round-trips exactly. Payloads are `json`: validated, but kept byte for byte (jsonb
-- would reorder keys and reject \u0000), and compressed with lz4 once they are large enough to be
-- TOASTed.

-- The queue. Every task is updated at least twice (claim, completion), so leave room on each
-- page for HOT updates (renewals and appends touch no indexed column and stay on their page),
-- and vacuum after 1% of the table changed rather than the default 20%: a queue of millions of
-- finished tasks must not wait for millions of dead tuples before it is cleaned.
CREATE TABLE tasks (
    -- insertion order: the tie-break of claims (oldest first) and the list cursor
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL,
    agent            text NOT NULL,
    input            json COMPRESSION lz4 NOT NULL,
    status           text NOT NULL,
    priority         smallint NOT NULL,
    timeout_ms       bigint,
    max_attempts     integer NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    -- attempts handed back by a draining worker; they do not count against max_attempts
    released         integer NOT NULL DEFAULT 0,
    backoff_ms       bigint NOT NULL,
    backoff_max_ms   bigint NOT NULL,
    idempotency_key  text,
    session_id       text,
    metadata         json COMPRESSION lz4 NOT NULL,
    result           json COMPRESSION lz4,
    error            json,
    usage            json,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       bigint NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    worker           text,
    lease_until      bigint,
    run_at           bigint NOT NULL,
    -- the last event seq used by this task
    last_seq         bigint NOT NULL DEFAULT 0
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
CREATE UNIQUE INDEX tasks_seq ON tasks (seq);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Claims walk this one: runnable work of an agent, by priority then age.
CREATE INDEX tasks_claim ON tasks (agent, priority DESC, seq) WHERE status = 'queued';
-- Renewals and the reaper look at running tasks only. No index on lease_until: it would make
-- every renewal a non-HOT update, and the running set is small enough to scan.
CREATE INDEX tasks_running ON tasks (worker) WHERE status = 'running';
CREATE INDEX tasks_status ON tasks (status, seq);
CREATE INDEX tasks_agent ON tasks (agent, seq);

-- Every event of every task, and fleet events (no task, seq 0). `pos` is the feed position:
-- assigned under a transaction-level advisory lock held to commit, so pos order is commit order
-- (see the store's writer).
CREATE TABLE events (
    pos      bigint PRIMARY KEY,
    task_id  uuid,
    seq      bigint NOT NULL,
    kind     text NOT NULL,
    agent    text,
    tenant   text,
    attempt  integer NOT NULL,
    at       bigint NOT NULL,
    data     json COMPRESSION lz4 NOT NULL
) WITH (
    -- append-only: vacuum for the visibility map (index-only scans), not for dead tuples
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE UNIQUE INDEX events_task_seq ON events (task_id, seq) WHERE task_id IS NOT NULL;

CREATE TABLE agents (
    name       text PRIMARY KEY,
    definition json NOT NULL,
    updated_at bigint NOT NULL
);

CREATE TABLE nodes (
    id           text PRIMARY KEY,
    role         text NOT NULL,
    version      text NOT NULL,
    address      text,
    status       text NOT NULL,
    started_at   bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    load         json NOT NULL
);

-- Named leases with one holder at a time: the supervisors' leader election.
CREATE TABLE leader_leases (
    name   text PRIMARY KEY,
    holder text NOT NULL,
    until  bigint NOT NULL
);

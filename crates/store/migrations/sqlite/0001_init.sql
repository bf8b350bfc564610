-- MisterSmith embedded store, version 1.
CREATE TABLE tasks (
    rowid            INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL,
    agent            TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    timeout_ms       INTEGER,
    max_attempts     INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    -- attempts handed back by a draining worker; they do not count against max_attempts
    released         INTEGER NOT NULL DEFAULT 0,
    backoff_ms       INTEGER NOT NULL,
    backoff_max_ms   INTEGER NOT NULL,
    idempotency_key  TEXT,
    session_id       TEXT,
    metadata         TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    usage            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    worker           TEXT,
    lease_until      INTEGER,
    run_at           INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_claim ON tasks (agent, priority DESC, rowid) WHERE status = 'queued';
CREATE INDEX tasks_running_worker ON tasks (worker) WHERE status = 'running';
CREATE INDEX tasks_running_lease ON tasks (lease_until) WHERE status = 'running';
CREATE INDEX tasks_status ON tasks (status, rowid);
CREATE INDEX tasks_agent ON tasks (agent, rowid);

CREATE TABLE events (
    pos      INTEGER PRIMARY KEY,
    task_id  TEXT,
    seq      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    agent    TEXT,
    tenant   TEXT,
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    data     TEXT NOT NULL
);
CREATE UNIQUE INDEX events_task_seq ON events (task_id, seq) WHERE task_id IS NOT NULL;

CREATE TABLE agents (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    version      TEXT NOT NULL,
    address      TEXT,
    status       TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    load         TEXT NOT NULL
);

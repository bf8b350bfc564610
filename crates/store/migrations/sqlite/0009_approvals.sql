-- Requests a person answers (smith_core::approval): an approval of a tool call or a question,
-- written with the task's move to waiting_input, answered once. `tenant` and `agent` are the
-- task's, copied so that listings by tenant read one index. `state` is the asking executor's own
-- (an LLM executor's conversation), handed to the attempt that resumes and never served. `tool` and `answer` are JSON.
CREATE TABLE approvals (
    id         TEXT PRIMARY KEY,
    task_id    TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    agent      TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL,
    tool       TEXT,
    text       TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    on_timeout TEXT NOT NULL,
    answer     TEXT,
    state      TEXT,
    used       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX approvals_task ON approvals (task_id);
CREATE INDEX approvals_tenant ON approvals (tenant, status, id);
CREATE INDEX approvals_expiring ON approvals (expires_at) WHERE status = 'pending';

-- Requests a person answers (smith_core::approval): an approval of a tool call or a question,
-- written with the task's move to waiting_input, answered once. `tenant` and `agent` are the
-- task's, copied so that listings by tenant read one index. `state` is the asking executor's own
-- (an LLM executor's conversation), handed to the attempt that resumes and never served.
CREATE TABLE approvals (
    id         TEXT PRIMARY KEY,
    task_id    UUID NOT NULL,
    tenant     TEXT NOT NULL,
    agent      TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL,
    tool       JSON,
    text       TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    on_timeout TEXT NOT NULL,
    answer     JSON,
    state      JSON,
    used       BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX approvals_task ON approvals (task_id);
CREATE INDEX approvals_tenant ON approvals (tenant, status, id);
CREATE INDEX approvals_expiring ON approvals (expires_at) WHERE status = 'pending';

-- Sub-tasks, budgets, sessions, and events outside task logs (discoveries, messages).
ALTER TABLE tasks ADD COLUMN parent_id uuid, ADD COLUMN budget json;
CREATE INDEX tasks_parent ON tasks (parent_id, seq) WHERE parent_id IS NOT NULL;
-- Claims check for an earlier unfinished turn of the same session through this one.
CREATE INDEX tasks_session ON tasks (session_id, seq) WHERE session_id IS NOT NULL;
CREATE INDEX events_global ON events (kind, pos) WHERE task_id IS NULL;
CREATE TABLE sessions (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    agent      text NOT NULL,
    metadata   json NOT NULL,
    created_at bigint NOT NULL
);
-- Usage totals read only tasks that spent something (usage is NULL otherwise).
CREATE INDEX tasks_usage ON tasks (agent) WHERE usage IS NOT NULL;

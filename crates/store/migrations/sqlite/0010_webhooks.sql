-- Webhook subscriptions of tenants, the deliveries the dispatcher records from the feed, and
-- its durable place in the feed. The secret signs deliveries and is never served.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    url         TEXT NOT NULL,
    kinds       TEXT NOT NULL,  -- JSON array of kinds and patterns
    description TEXT,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhooks_tenant ON webhooks (tenant, created_at);

-- One event to one URL. `id` is the `webhook-id` header, the same on every attempt; the URL and
-- secret are copied from the subscription (or the task's own webhook) when it is recorded.
CREATE TABLE webhook_deliveries (
    id          TEXT PRIMARY KEY,
    webhook_id  TEXT,
    tenant      TEXT NOT NULL,
    task_id     TEXT,
    event_pos   INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    url         TEXT NOT NULL,
    secret      TEXT,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error  TEXT,
    next_at     INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);

-- The dispatcher's position in the feed: every event at or below it has had its deliveries
-- recorded. It starts at the feed's end: no earlier event can match a subscription.
CREATE TABLE webhook_cursor (
    name TEXT PRIMARY KEY,
    pos  INTEGER NOT NULL
);
INSERT INTO webhook_cursor (name, pos) SELECT 'webhooks', coalesce(max(pos), 0) FROM events;

-- Tasks with a webhook of their own, by when they finished: the dispatcher's probe of whether
-- any could still have events to deliver (`Store::task_webhooks_live`).
CREATE INDEX tasks_webhook ON tasks (finished_at) WHERE options LIKE '%"webhook":%';

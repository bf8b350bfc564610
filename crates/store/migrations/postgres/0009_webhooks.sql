-- Webhook subscriptions of tenants, the deliveries the dispatcher records from the feed, and
-- its durable place in the feed. The secret signs deliveries and is never served.
CREATE TABLE webhooks (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    url         text NOT NULL,
    kinds       text NOT NULL,  -- JSON array of kinds and patterns
    description text,
    secret      text NOT NULL,
    created_at  bigint NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant, created_at);

-- One event to one URL. `id` is the `webhook-id` header, the same on every attempt; the URL and
-- secret are copied from the subscription (or the task's own webhook) when it is recorded.
CREATE TABLE webhook_deliveries (
    id          text PRIMARY KEY,
    webhook_id  text,
    tenant      text NOT NULL,
    task_id     uuid,
    event_pos   bigint NOT NULL,
    event_type  text NOT NULL,
    url         text NOT NULL,
    secret      text,
    payload     text NOT NULL,
    state       text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_status integer,
    last_error  text,
    next_at     bigint,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);

-- The dispatcher's position in the feed: every event at or below it has had its deliveries
-- recorded. It starts at the feed's end: no earlier event can match a subscription.
CREATE TABLE webhook_cursor (
    name text PRIMARY KEY,
    pos  bigint NOT NULL
);
INSERT INTO webhook_cursor (name, pos) SELECT 'webhooks', coalesce(max(pos), 0) FROM events;

-- Tasks with a webhook of their own, by when they finished: the dispatcher's probe of whether
-- any could still have events to deliver (`Store::task_webhooks_live`).
CREATE INDEX tasks_webhook ON tasks (finished_at) WHERE options::text LIKE '%"webhook":%';

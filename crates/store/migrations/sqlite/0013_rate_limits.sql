-- Fleet-wide token buckets of provider rate limits (docs/rate-limits.md): one per provider
-- account and kind ('requests', 'tokens'). The level refills at per_second up to capacity from
-- updated_at (microseconds); a correction may leave it negative (a debt).
CREATE TABLE rate_buckets (
    account    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    capacity   REAL NOT NULL,
    per_second REAL NOT NULL,
    level      REAL NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account, kind)
) WITHOUT ROWID;

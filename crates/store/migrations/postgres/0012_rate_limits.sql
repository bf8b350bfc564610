-- Fleet-wide token buckets of provider rate limits (docs/rate-limits.md): one per provider
-- account and kind ('requests', 'tokens'). The level refills at per_second up to capacity from
-- updated_at (microseconds on the database's clock); a correction may leave it negative (a debt).
CREATE TABLE rate_buckets (
    account    text NOT NULL,
    kind       text NOT NULL,
    capacity   double precision NOT NULL,
    per_second double precision NOT NULL,
    level      double precision NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (account, kind)
);

-- One take, in one short statement: the row locked, refilled to now on the database's clock
-- (never backwards), corrected by p_adjust (held to the capacity), then up to p_want whole units
-- granted if at least p_min are there. The same arithmetic as the store's `rates::take`. No row:
-- both outputs NULL.
CREATE FUNCTION smith_rate_take(p_account text, p_kind text, p_want bigint, p_min bigint, p_adjust bigint,
                                OUT o_granted bigint, OUT o_level double precision) AS $$
DECLARE
    b rate_buckets%ROWTYPE;
    now_us bigint;
    lvl double precision;
BEGIN
    SELECT * INTO b FROM rate_buckets WHERE account = p_account AND kind = p_kind FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    now_us := (extract(epoch from clock_timestamp()) * 1000000)::int8;
    lvl := least(b.capacity, b.level + greatest(0, now_us - b.updated_at)::double precision / 1e6 * b.per_second);
    lvl := least(b.capacity, lvl + p_adjust);
    o_granted := 0;
    IF p_want > 0 AND lvl >= p_min THEN
        o_granted := least(p_want, floor(lvl)::bigint);
    END IF;
    o_level := lvl - o_granted;
    UPDATE rate_buckets SET level = o_level, updated_at = greatest(now_us, b.updated_at)
     WHERE account = p_account AND kind = p_kind;
END
$$ LANGUAGE plpgsql;

-- Traded volume per symbol and minute, so the ticker's 24-hour volume reads at most 1,440 rows
-- instead of summing every trade of the symbol. The sum over `trades` grew with the symbol's
-- whole history (no index narrows it by time) and ran for every ticker request — a public,
-- unauthenticated read — and, until this release, for every market order's reference price:
-- at the load generator's 2,000 actions a second it was 6 ms a call and the largest single
-- cost of the database (docs/performance.md, "The mix measured again, and the ticker's volume by the minute").
--
-- Kept by a trigger on `trades`, once per statement with the statement's new rows (the
-- matching batch inserts its trades with one statement, so this is one upsert per batch), so
-- that every insert counts whoever makes it: during a rolling upgrade, replicas still running
-- the previous release keep it too. One matching task writes a symbol's trades at a time
-- (ADR 0014), so its current minute's row has one writer.
CREATE TABLE volume_by_minute (
    symbol   text        NOT NULL,
    -- The minute the trades were executed in (`date_trunc('minute', executed_at)`).
    minute   timestamptz NOT NULL,
    -- Base-asset minor units traded in that minute.
    quantity bigint      NOT NULL CHECK (quantity > 0),
    CONSTRAINT volume_by_minute_pkey PRIMARY KEY (symbol, minute)
);

CREATE FUNCTION trades_count_volume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO volume_by_minute AS v (symbol, minute, quantity)
    SELECT symbol, date_trunc('minute', executed_at), sum(quantity)::bigint
      FROM inserted
     GROUP BY 1, 2
    ON CONFLICT ON CONSTRAINT volume_by_minute_pkey
    DO UPDATE SET quantity = v.quantity + EXCLUDED.quantity;
    RETURN NULL;
END $$;

-- Creating the trigger locks `trades` against inserts until this migration commits, so the
-- backfill below reads every trade committed before it, and every later one goes through the
-- trigger: none counted twice, none missed. Only the window the ticker reads is backfilled.
CREATE TRIGGER trades_count_volume AFTER INSERT ON trades
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION trades_count_volume();

INSERT INTO volume_by_minute (symbol, minute, quantity)
SELECT symbol, date_trunc('minute', executed_at), sum(quantity)::bigint
  FROM trades
 WHERE executed_at > now() - interval '25 hours'
 GROUP BY 1, 2;

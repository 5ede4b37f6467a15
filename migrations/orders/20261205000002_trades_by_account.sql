-- A trader's own trades (`GET /v1/trades`, `store::own_trades`), newest first: the trades it
-- made as maker and those it made as taker, each read in order down its index and merged, so a
-- page reads about a page of rows. Without these indexes that read scanned every trade of the
-- exchange for every request — a cost that grows with everyone's trading, on a route any
-- trader can call. Found by the query-plan test (`crates/tools/loadgen/tests/query_plans.rs`)
-- once the load generator read its traders' trades too.
--
-- On a large live table, build them first by hand with CREATE INDEX CONCURRENTLY under the same
-- names; this migration then finds them and does nothing.
CREATE INDEX IF NOT EXISTS trades_maker_account_idx ON trades (maker_account, executed_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS trades_taker_account_idx ON trades (taker_account, executed_at DESC, id DESC);

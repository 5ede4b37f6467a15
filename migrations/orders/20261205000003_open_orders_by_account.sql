-- A trader's resting orders: what a cancel-all looks for (`store::symbols_with_resting_orders`)
-- and what `GET /v1/orders?status=open` (or `partially_filled`) lists, newest first. Without
-- this index both went down `orders_account_created_idx`, which holds every order the account
-- ever placed, and threw away the finished ones: the cost of a cancel-all grew with the
-- account's history rather than with what it has resting. Found by the query-plan test
-- (`crates/tools/loadgen/tests/query_plans.rs`) once it looked for index scans with a filter.
--
-- Partial, like `orders_resting_idx`: an order enters it when it rests and leaves it when it
-- ends, so its size is what rests on the books.
--
-- On a large live table, build it first by hand with CREATE INDEX CONCURRENTLY under the same
-- name; this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS orders_open_by_account_idx ON orders (account_id, created_at DESC, id DESC)
    WHERE status IN ('open', 'partially_filled');

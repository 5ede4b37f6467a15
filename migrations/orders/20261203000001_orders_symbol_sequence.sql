-- The highest book sequence of a symbol (`store::last_sequence`), read when a matching task
-- rebuilds its book — at start and on every takeover of a symbol from another replica. Without
-- this index that read scans every order ever placed, so a takeover would slow down as the table
-- grows (REL-16 asks for one within 10 s); with it, it is one step down the index. Found by the
-- query-plan test (`crates/tools/loadgen/tests/query_plans.rs`).
--
-- On a large live table, build it first by hand with CREATE INDEX CONCURRENTLY under the same
-- name; this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS orders_symbol_sequence_idx ON orders (symbol, book_sequence);

-- The alert list (`GET /v1/admin/alerts`, `store::alerts`), newest first: without a status it
-- sorted every alert ever raised to return a page, a cost that grows with the history. With a
-- status it goes down `alerts_by_status`. Found by the query-plan test
-- (`crates/tools/loadgen/tests/query_plans.rs`) once it read the operator's views too.
--
-- On a large live table, build it first by hand with CREATE INDEX CONCURRENTLY under the same
-- name; this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS alerts_recent_idx ON alerts (last_seen DESC, id DESC);

-- Indexes that hold only what is live, for the two statements that look for it:
--
-- - Revoking a refresh-token family (a reused token, a logout) looks for the family's tokens
--   not yet revoked. `refresh_tokens_family_idx` held every token the family ever had, and the
--   query planner, given it and `refresh_tokens_user_live_idx`, could as well walk every live
--   token of every user and keep the family's. One index by family over the live tokens serves
--   the statement exactly; the old one served nothing else and goes.
-- - Creating an API key counts the owner's live keys (at most 10): down `api_keys_user_idx` it
--   read every key the user ever created, revoked ones included.
--
-- Found by the query-plan test (`crates/tools/loadgen/tests/query_plans.rs`) once it made the
-- changes a trader and an operator make beside trading. On a large live table, build the new
-- indexes first by hand with CREATE INDEX CONCURRENTLY under the same names; this migration then
-- finds them.
CREATE INDEX IF NOT EXISTS refresh_tokens_family_live_idx ON refresh_tokens (family_id)
    WHERE revoked_at IS NULL;
DROP INDEX IF EXISTS refresh_tokens_family_idx;
CREATE INDEX IF NOT EXISTS api_keys_user_live_idx ON api_keys (user_id) WHERE revoked_at IS NULL;

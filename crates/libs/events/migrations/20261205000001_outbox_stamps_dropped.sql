-- The contract half of ADR 0024: the per-row stamps of the outbox go.
--
-- Since 20261203000001_outbox_append_only the relay keeps its progress in two watermarks
-- (`outbox_relay`, `outbox_streams`) and never writes a row after its insert. The release that
-- added them kept the stamps' columns and indexes, unwritten, so the release before it could
-- still run against the schema during the rollout or after a rollback (expand, then contract
-- a release later: docs/runbooks/deploy.md). That release is now the previous one, and neither
-- it nor this one reads them.
--
-- What they cost until now: `outbox_unpublished_idx` (`WHERE published_at IS NULL`) took an
-- entry for every row, since no row is stamped any more, and the three indexes were half of
-- the outbox's six — every event paid them (docs/performance.md).
--
-- After this migration a rollback can go back only to a release that has the watermarks
-- (2026-12-03 or later); `tools/rollback/stamp-outbox-rows.sql` is for a database this
-- migration has not reached (docs/runbooks/rollback.md).
DROP INDEX IF EXISTS outbox_unpublished_idx;
DROP INDEX IF EXISTS outbox_published_at_idx;
DROP INDEX IF EXISTS outbox_unconfirmed_idx;

ALTER TABLE outbox
    DROP COLUMN IF EXISTS published_at,
    DROP COLUMN IF EXISTS entry_ms,
    DROP COLUMN IF EXISTS entry_seq,
    DROP COLUMN IF EXISTS confirmed_at;

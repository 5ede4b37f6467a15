-- Redis is transport, PostgreSQL the record: an outbox row is done only when every consumer
-- group of its stream has acknowledged it, not when it was handed to Redis. A broker that
-- forgets (a restart without persistence, a failover to a replica that lagged) loses only
-- entries the relay can publish again from here; consumers are idempotent, so the copies are
-- harmless.
--
-- `entry_ms`/`entry_seq`: the stream entry id Redis gave the row (`<ms>-<seq>`), compared with
-- the groups' progress. `confirmed_at`: when every group had acknowledged it.
ALTER TABLE outbox
    ADD COLUMN entry_ms     bigint,
    ADD COLUMN entry_seq    bigint,
    ADD COLUMN confirmed_at timestamptz;

-- What confirmation and republishing scan: published rows not yet confirmed, per stream, in
-- entry order.
CREATE INDEX outbox_unconfirmed_idx ON outbox (stream, entry_ms, entry_seq)
    WHERE published_at IS NOT NULL AND confirmed_at IS NULL;

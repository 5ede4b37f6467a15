-- The outbox becomes append-only: a row is inserted with its state change and deleted after
-- retention, never updated (ADR 0024).
--
-- Before: the relay updated every row twice — `published_at` and the Redis entry id once
-- `XADD` took it, `confirmed_at` once every group of its stream had acknowledged it. Each of
-- those updates wrote a whole new row version and an entry in every index (the partial
-- indexes' predicates named the columns, so no update could be HOT): about a tenth of the
-- order path's statement time, and dead tuples for autovacuum at the rate of events.
--
-- Now the relay's progress is two watermarks, written once per batch and once per
-- confirmation round, not once per row:
-- - `outbox_relay.published_position`: every row at or below it has gone to Redis (as far as
--   this outbox knows; the broker's marker key says whether the broker still holds it). Rows
--   commit in position order (the writers' lock), so "unpublished" is a range of the primary key.
-- - `outbox_streams`: per stream, the last position published to it and the last position
--   every consumer group has acknowledged (read from the position each entry carries).
--   A row is confirmed when its position is at or below its stream's `confirmed_position`:
--   a stream's entries are added in position order and groups acknowledge a prefix, so the
--   confirmed rows of a stream are always the ones below a position.

CREATE TABLE outbox_relay (
    -- One row: the relay of this schema's outbox.
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    published_position bigint  NOT NULL DEFAULT 0
);

CREATE TABLE outbox_streams (
    stream             text   PRIMARY KEY,
    published_position bigint NOT NULL DEFAULT 0,
    confirmed_position bigint NOT NULL DEFAULT 0,
    -- Confirmed never passes published: a broker that lost entries rewinds what is published
    -- to what is confirmed, never further.
    CONSTRAINT outbox_streams_confirmed_published CHECK (confirmed_position <= published_position)
);

-- The watermarks an outbox already had, from its rows' stamps.
INSERT INTO outbox_relay (published_position)
SELECT coalesce(max(position), 0) FROM outbox WHERE published_at IS NOT NULL;

INSERT INTO outbox_streams (stream, published_position, confirmed_position)
SELECT stream,
       max(position) FILTER (WHERE published_at IS NOT NULL),
       coalesce(max(position) FILTER (WHERE confirmed_at IS NOT NULL), 0)
  FROM outbox
 WHERE published_at IS NOT NULL
 GROUP BY stream;

-- Expand, not contract (docs/runbooks/deploy.md): the stamps' columns and indexes stay for one
-- release, so the previous image still runs against this schema — during the rollout, or after a
-- rollback (docs/runbooks/rollback.md says how to stamp what the watermarks cover first). This
-- release never writes them. The contract migration of a later release drops them (the SQL is in
-- ADR 0024).

-- A stream's rows in order: what confirmation counts and a lost broker's rewind starts from
-- (the rows above a stream's confirmed position).
CREATE INDEX outbox_stream_position_idx ON outbox (stream, position);

-- The rule for "not yet published", written once: above the relay's published position and,
-- after a lost broker's rewind, above what the row's stream had confirmed (rows of other
-- streams confirmed meanwhile are not sent again). The relay publishes from it and counts its
-- lag over it. Both bounds are ranges of the primary key.
CREATE VIEW outbox_unpublished AS
SELECT o.position, o.event_id, o.stream, o.event_type, o.envelope, o.created_at
  FROM outbox o
  LEFT JOIN outbox_streams s ON s.stream = o.stream
 WHERE o.position > (SELECT published_position FROM outbox_relay)
   AND o.position > coalesce(s.confirmed_position, 0);

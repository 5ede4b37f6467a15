-- The transactional outbox (REL-08), created in the schema of every service that produces
-- events. A state change and the events it causes are inserted in one transaction; the relay
-- publishes rows to Redis Streams in `position` order and stamps `published_at`.
--
-- Writers serialize on an advisory lock for the rest of their transaction (see
-- `events::outbox::append`), so positions commit in the order they were assigned and the relay
-- can never skip past a row that is still invisible to it.
CREATE TABLE outbox (
    position     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL,
    stream       text        NOT NULL,
    event_type   text        NOT NULL,
    envelope     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    CONSTRAINT outbox_event_id_key UNIQUE (event_id)
);

-- What the relay reads: the unpublished tail, in order.
CREATE INDEX outbox_unpublished_idx ON outbox (position) WHERE published_at IS NULL;
-- What retention deletes: published rows by age.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

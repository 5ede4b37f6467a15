-- The inbox (REL-09): one row per event a consumer of this schema has applied, written in the
-- same transaction as the event's effect. A redelivered event finds its row and has no second
-- effect; a crash before commit leaves neither effect nor row, and the event is applied on
-- redelivery. Keyed by (consumer, event id): two consumers in one service each apply it once.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    stream       text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbox_pkey PRIMARY KEY (consumer, event_id)
);

-- Retention deletes by age.
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);

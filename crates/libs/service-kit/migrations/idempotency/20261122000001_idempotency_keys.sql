-- Idempotency keys (REL-07), created in the schema of every service whose POSTs honour
-- `Idempotency-Key`. A key is claimed by inserting its row before the work starts (the primary
-- key lets exactly one concurrent duplicate through); the response is stored in the work's own
-- transaction so a retry replays exactly the first answer. IF NOT EXISTS: the orders schema
-- created this table in its own first migration before it moved here.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    principal_id    uuid        NOT NULL,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    bytea       NOT NULL,
    response_status smallint,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (principal_id, key)
);

-- The purge job deletes by age.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);

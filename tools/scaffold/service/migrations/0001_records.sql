-- {{Name}}'s first table: one row per record a user owns. Owners are auth's user ids; there is
-- no foreign key across schemas (each service owns its schema and nothing else).
CREATE TABLE records (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    note text NOT NULL CHECK (length(note) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A user's records, newest first: the one query the service makes.
CREATE INDEX records_owner_created_idx ON records (owner_id, created_at DESC);

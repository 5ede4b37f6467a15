-- API keys for programs (SEC-19). A key has a public id (sent as X-Bourse-Key) and a secret
-- shown once at creation. Requests are signed with HMAC-SHA256 under that secret, so the
-- verifier needs the secret itself, not a hash of it: it is stored sealed with the
-- field-encryption envelope (master keys, ADR 0011), like the signing keys. Revoked keys stay,
-- with the time they were revoked, for the audit trail.
CREATE TABLE api_keys (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_id        text        NOT NULL CONSTRAINT api_keys_key_id_unique UNIQUE,
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    -- What the key may do: read (GET), trade (orders), withdraw (withdrawals).
    scopes        text[]      NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 3
                                              AND scopes <@ ARRAY['read', 'trade', 'withdraw']),
    -- Source networks allowed to use the key; NULL: any.
    allowed_ips   cidr[],
    secret_sealed text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- A user's keys, listed and counted (at most a few active ones each).
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

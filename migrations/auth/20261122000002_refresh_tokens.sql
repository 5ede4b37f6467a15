-- Refresh tokens (SEC-04, SEC-05). The client holds an opaque random token; only its SHA-256
-- is stored, so a database leak yields nothing usable. Tokens of one login form a family:
-- each refresh marks the presented token rotated and issues its successor in the same family.
-- Presenting a rotated token again means it was stolen (or replayed), and the whole family is
-- revoked.
CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY,
    family_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL REFERENCES users (id),
    token_hash bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz,
    revoked_at timestamptz,
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);

-- Family-wide revocation on reuse.
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
-- "Revoke all sessions" touches only the user's live tokens.
CREATE INDEX refresh_tokens_user_live_idx ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

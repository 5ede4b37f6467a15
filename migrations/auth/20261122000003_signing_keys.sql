-- Ed25519 signing keys for access tokens (SEC-03). The newest key that is not retired signs;
-- a retired key stays published in the JWKS until every token it signed has expired, which is
-- the overlap window that makes rotation invisible to clients.
-- The private key is PKCS#8 DER. It is sealed at rest (SEC-12; a later migration and `secrets::envelope`).
CREATE TABLE signing_keys (
    kid         text        PRIMARY KEY,
    private_key bytea       NOT NULL,
    public_key  bytea       NOT NULL CHECK (length(public_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

-- At most one key signs at a time.
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys ((true)) WHERE retired_at IS NULL;

-- Users of the platform. Emails are stored lower-cased so uniqueness is case-insensitive
-- without an extension; the password column holds a PHC string, so the argon2 parameters
-- that produced it travel with it (and a parameter change can be detected at login).
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    roles         text[]      NOT NULL DEFAULT ARRAY['trader'],
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_lowercase CHECK (email = lower(email)),
    CONSTRAINT users_roles_known
        CHECK (roles <@ ARRAY['trader', 'risk_officer', 'admin', 'auditor']::text[])
);

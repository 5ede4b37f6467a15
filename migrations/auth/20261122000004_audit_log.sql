-- The audit log (SEC-16): append-only and tamper-evident. Each row stores the SHA-256 of the
-- previous row's hash and its own content, so changing, removing or reordering any row breaks
-- the chain from that row on. Rows are appended under an advisory lock, which keeps `seq`
-- gapless and the chain linear. `details` is text, not jsonb, so the bytes that were hashed
-- are the bytes that are stored.
CREATE TABLE audit_log (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    occurred_at timestamptz NOT NULL,
    event_type  text        NOT NULL,
    actor_id    uuid,
    subject_id  uuid,
    source_ip   text,
    details     text        NOT NULL,
    prev_hash   bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea       NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX audit_log_subject_idx ON audit_log (subject_id, seq);

-- Append-only even for the service's own role: updates, deletes and truncation are refused.
-- (A superuser can disable triggers; the hash chain is what detects that.)
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

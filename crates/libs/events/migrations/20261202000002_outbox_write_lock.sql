-- The outbox serializes its writers and wakes the relay by itself, for any insert however it
-- is written (ADR 0005, ADR 0015).
--
-- Before: `events::outbox::append` took the writers' advisory lock and sent the relay's
-- notification with two statements of its own around every insert — two more round trips for
-- every transaction that writes events (every matching batch, every consumer batch). Now the
-- table does both: a BEFORE statement trigger takes the lock before the first row is given its
-- position, so positions still commit in the order they were assigned; an AFTER statement
-- trigger sends the notification, delivered at commit as before. The lock's key is unchanged:
-- (736812502, hashtext(<the outbox's schema>)), held to the end of the transaction.
CREATE FUNCTION outbox_serialize_writers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(736812502, hashtext(TG_TABLE_SCHEMA));
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_serialize_writers BEFORE INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_serialize_writers();

CREATE FUNCTION outbox_wake_relay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_wake_relay AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake_relay();

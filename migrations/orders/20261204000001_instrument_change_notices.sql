-- Every change to an instrument is announced to the orders replicas, which cache instruments
-- in memory (`catalog.rs`, ADR 0025): reading the row for every order was a database round trip
-- per request for data that changes only when trading is halted or reopened.
--
-- A trigger rather than a statement in the code that halts, so that any change is announced
-- however it is made — the API, a migration, an operator in psql. `pg_notify` is transactional:
-- the notice goes out when the change commits, and not at all if it rolls back. The payload
-- is the symbol; a replica that was not listening when it went out forgets its whole cache
-- when it listens again.
CREATE FUNCTION instruments_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_instruments', OLD.symbol);
    RETURN NULL;
END $$;

CREATE TRIGGER instruments_announce_change AFTER UPDATE OR DELETE ON instruments
    FOR EACH ROW EXECUTE FUNCTION instruments_announce_change();

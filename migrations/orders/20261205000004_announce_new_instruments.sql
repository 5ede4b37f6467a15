-- A new instrument is announced too, not only a change to one: the orders replicas now keep
-- the whole list in memory for the public `GET /v1/instruments` (`catalog.rs`, ADR 0025), and
-- a list cached before a creation would hide the new symbol until something else was
-- announced. A replica of the previous release that receives the notice forgets the symbol it
-- names — one it had not cached — so the two releases can run side by side.
CREATE OR REPLACE FUNCTION instruments_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('orders_instruments', NEW.symbol);
    ELSE
        PERFORM pg_notify('orders_instruments', OLD.symbol);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER instruments_announce_change ON instruments;
CREATE TRIGGER instruments_announce_change AFTER INSERT OR UPDATE OR DELETE ON instruments
    FOR EACH ROW EXECUTE FUNCTION instruments_announce_change();

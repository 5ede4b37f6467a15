-- Each start of risk takes the number after the last one's (ADR 0023, "A fence instead of the
-- wait"). Its verdicts carry it; orders carries it with the order to the book, and shuts out
-- of every matching batch the checks of starts before the newest fence a start has raised.
-- With that fence, a start after a crash no longer waits out the bound on checks: nothing the
-- dead process passed can be booked once the next start's mark is written.
--
-- 0 for the row a release before the numbers left: the next start is 1. Verdicts of such a
-- release carry no number and count as 0, which the first numbered fence shuts out.
ALTER TABLE starts
    ADD COLUMN number bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT starts_number_non_negative CHECK (number >= 0);

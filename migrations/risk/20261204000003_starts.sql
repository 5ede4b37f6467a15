-- When risk last started (ADR 0023, "Catching up before deciding"). A start that finds an
-- earlier one waits out the bound on risk checks (BOURSE_RISK_CHECK_VALID_FOR_MS, twice over)
-- before it asks orders for its mark: an order the previous process checked can still be on
-- its way to the book until then. The very first start on a database has nothing to wait for.
-- One row; risk runs as one replica (ADR 0018).
CREATE TABLE starts (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    started_at timestamptz NOT NULL
);

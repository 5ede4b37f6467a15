-- The last of ADR 0023 slice 3b's contract: `accounts.held` goes.
--
-- 20261205000001_holds_dropped left the column one release longer because the release before it
-- still read it. That release is now two back: the one before this migration reads only
-- `available`, and the table has refused anything held since (`accounts_nothing_held`), so
-- nothing is lost by dropping the column — `available` is already the whole balance.
--
-- PostgreSQL drops a CHECK that names a dropped column together with it, and
-- `accounts_non_negative` named both (`available >= 0 AND held >= 0`). Dropping it by name first
-- and adding it back on `available` alone, in this one transaction, means no customer balance can
-- go negative in between — or ever, if the migration fails halfway.
ALTER TABLE accounts
    DROP CONSTRAINT accounts_nothing_held,
    DROP CONSTRAINT accounts_non_negative;

ALTER TABLE accounts DROP COLUMN held;

-- The external account (the all-zero owner) is where deposits come from and withdrawals go: it
-- is the only one that goes below zero.
ALTER TABLE accounts ADD CONSTRAINT accounts_non_negative CHECK (
    owner_id = '00000000-0000-0000-0000-000000000000' OR available >= 0);

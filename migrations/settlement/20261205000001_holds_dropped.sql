-- The contract half of ADR 0023 slice 3b: the holds go.
--
-- Since 20261204000001_holds_released_to_available the ledger holds nothing for open orders
-- (risk reserves them), and the release that made the switch kept `holds`, `released_orders`,
-- `held` and `transfers.hold_id`, unwritten, so the release before it could still run (expand,
-- then contract a release later: docs/runbooks/deploy.md). That release is now the previous
-- one: it neither reads nor writes the two tables or `hold_id`, so they go now.
--
-- `held` is still read by the previous release (its reconciliation sums `available + held` and
-- checks that nothing is held), so the column stays one more release. Instead of a check in
-- code, the table now refuses anything held: `accounts_nothing_held`. This release reads only
-- `available`, which the constraint makes the whole balance, and the next one drops the column.
--
-- Nothing may be lost on the way: if any account still holds something, or any hold is still
-- pending (the upgrade's migration has not run, or something wrote a hold since), this
-- migration stops before changing anything and says so. Give the amount back first
-- (docs/runbooks/reconciliation-failure.md, "Something held").
DO $$
DECLARE
    held_accounts bigint;
    pending_holds bigint;
BEGIN
    SELECT count(*) INTO held_accounts FROM accounts WHERE held <> 0;
    SELECT count(*) INTO pending_holds FROM holds WHERE status = 'pending';
    IF held_accounts > 0 OR pending_holds > 0 THEN
        RAISE EXCEPTION 'the ledger still holds funds: % accounts with something held, % pending holds',
            held_accounts, pending_holds
            USING HINT = 'give them back to available first (docs/runbooks/reconciliation-failure.md)';
    END IF;
END $$;

-- The foreign key to `holds` goes with the column.
ALTER TABLE transfers DROP COLUMN hold_id;
DROP TABLE holds;
DROP TABLE released_orders;

ALTER TABLE accounts ADD CONSTRAINT accounts_nothing_held CHECK (held = 0);

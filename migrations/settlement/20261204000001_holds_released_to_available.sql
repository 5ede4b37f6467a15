-- ADR 0023 slice 3b: the ledger no longer holds funds for open orders. Risk reserves them in
-- memory (and in risk.open_orders since slice 2c) before an order may match, and settlement
-- posts a trade's transfers from `available`. This migration gives back what pending holds
-- still reserve, once, as releasing each hold did: its rest moves from `held` to `available`
-- and the hold resolves (`posted` if something traded out of it, else `voided`).
--
-- Run while orders is stopped and settlement's consumer has read the orders stream up to its
-- end (the deploy runbook, "Upgrading to ledger without holds"): a trade of an order placed
-- before the switch then posts from `available`, where its hold's rest now is. Risk has
-- reserved the same orders since slice 2c, so nothing is left unreserved.
--
-- Expand/contract (ADR 0024): `holds`, `released_orders`, `held` and `transfers.hold_id` stay
-- for one release and are dropped by the next one. On a new database this changes nothing.
WITH pending AS (
    UPDATE holds
       SET released = amount - posted,
           status = CASE WHEN posted > 0 THEN 'posted' ELSE 'voided' END,
           resolved_at = now()
     WHERE status = 'pending'
    RETURNING owner_id, asset, released),
per_account AS (
    SELECT owner_id, asset, sum(released)::bigint AS rest FROM pending GROUP BY owner_id, asset)
UPDATE accounts a
   SET available = a.available + p.rest, held = a.held - p.rest, updated_at = now()
  FROM per_account p
 WHERE a.owner_id = p.owner_id AND a.asset = p.asset;

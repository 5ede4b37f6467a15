-- The contract half of 20261206000001_symbol_owners_last_sequence (ADR 0014, "A book's
-- sequence across a rebuild"): a rebuilt book now reads its sequence from `symbol_owners`
-- alone, and `orders_symbol_sequence_idx` — which existed only for the orders' maximum, and took
-- an index entry for every order written — goes.
--
-- Roll this out only once every orders replica runs the release before it (2026-12-06's,
-- docs/runbooks/deploy.md): from that release on every matching batch stores its sequence with
-- the symbol's owner. A replica older still writes batches that store no sequence, and a book
-- rebuilt after them would hand their numbers out again.
--
-- Before the index goes, the stored sequence takes in whatever the rows hold beyond it, so
-- nothing an older replica wrote during the previous rollout is forgotten: for each symbol that
-- has an owner row, and for a symbol whose rows are older than ownership itself (it has trades
-- or sequenced orders but was never owned since), a released owner row at epoch 1 — the next
-- replica to ask takes it as it takes any released symbol.
INSERT INTO symbol_owners AS o (symbol, epoch, replica, last_sequence)
SELECT i.symbol, 1, NULL, s.last
  FROM instruments i
 CROSS JOIN LATERAL (
       SELECT GREATEST(
              (SELECT COALESCE(max(t.sequence), 0) FROM trades t WHERE t.symbol = i.symbol),
              (SELECT COALESCE(max(r.book_sequence), 0) FROM orders r WHERE r.symbol = i.symbol))
              AS last) s
 WHERE s.last > 0
    ON CONFLICT ON CONSTRAINT symbol_owners_pkey
    DO UPDATE SET last_sequence = GREATEST(o.last_sequence, EXCLUDED.last_sequence)
 WHERE o.last_sequence < EXCLUDED.last_sequence;

DROP INDEX IF EXISTS orders_symbol_sequence_idx;

-- Keys claimed when their answer is stored (`idempotency::record_all`, the orders service's
-- matching batch) have no claim row while their work runs. When such work fails without
-- knowing whether its answer was stored, `idempotency::fence` writes the work's claim token
-- here: from then on that work can never store its answer (a batch still queued somewhere
-- fails on the key), while a retry — a new token — may. An array, because a key can be fenced
-- more than once (a retry that fails the same way). Rows claimed the old way leave it NULL.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS fenced uuid[];

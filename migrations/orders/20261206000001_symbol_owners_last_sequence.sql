-- Each symbol's book sequence as its last committed batch left it, kept with the symbol's owner.
--
-- A book numbers every event it emits (accepted, rested, traded, completed, cancelled,
-- rejected), and a rebuilt book — at start, on a takeover, after a failed batch — must go on
-- after the last number given out. Until now it was read back as the highest sequence in
-- `trades` and in `orders.book_sequence`, but only a trade and a resting order store theirs:
-- when a batch ended with a cancel, an acceptance or a rejection, the rebuilt book handed those
-- numbers out again, and the public book's sequence went back across a restart
-- (`api::orders::a_books_sequence_never_goes_back_across_a_restart`).
--
-- Every matching batch now writes the book's sequence here, in the statement that checks the
-- fence (`store::write_matched`): the fence's `FOR SHARE` read becomes this row's update, a HOT
-- update once per batch (no index names the column) that locks the row just as the share lock
-- did, so a takeover still waits for the batch and then fences it off.
--
-- Expand, not contract (docs/runbooks/deploy.md): a replica of the previous release still
-- writes batches without this column during the rollout, so a rebuilt book reads the greatest
-- of this column and the two stored maxima (`store::last_sequence`). The release after this one
-- reads the column alone and drops `orders_symbol_sequence_idx`, which exists only for the
-- orders' maximum — an index entry for every order written.
ALTER TABLE symbol_owners
    ADD COLUMN last_sequence bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT symbol_owners_last_sequence_non_negative CHECK (last_sequence >= 0);

UPDATE symbol_owners o
   SET last_sequence = GREATEST(
       (SELECT coalesce(max(t.sequence), 0) FROM trades t WHERE t.symbol = o.symbol),
       (SELECT coalesce(max(r.book_sequence), 0) FROM orders r WHERE r.symbol = o.symbol));

-- A fence against the checks of risk's earlier starts (ADR 0023, "A fence instead of the
-- wait").
--
-- Risk keeps the funds its checks reserved in its process's memory. When that process
-- crashes, an order it checked may still be on its way to a book, and the next start, which
-- counts reservations from the orders stream, would not count it. Until now the next start
-- waited out the bound on checks (twice over) before deciding on funds, refusing every order
-- meanwhile.
--
-- Now every start of risk has a number, which its verdicts carry and orders carries with the
-- order into its matching batch. A start asks orders to raise the fence: `risk_start` on every
-- symbol's row goes up to its number, in the transaction that then writes its mark. The update
-- waits for each batch in flight (a batch holds its symbol's row until it commits), so those
-- batches' events come before the mark. Every later batch updates its symbol's row only while
-- `risk_start` is at most the lowest number among its checks (`store::write_matched`), so a
-- batch carrying an earlier start's check commits nothing. The new start then decides as soon
-- as it has read its mark.
--
-- Rows exist for every instrument once a fence has been raised (a symbol never owned gets a
-- released row, epoch 1), so a symbol first taken afterwards inherits the fence.
ALTER TABLE symbol_owners
    ADD COLUMN risk_start bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT symbol_owners_risk_start_non_negative CHECK (risk_start >= 0);

-- Whether a replica's batches check the fence. A replica of an earlier release registers
-- without it (false): while one is live, or still names a symbol as its owner, orders answers
-- a fence request `409 fence_unsupported` and risk waits out the bound as before.
ALTER TABLE replicas
    ADD COLUMN fences_risk_starts boolean NOT NULL DEFAULT false;

-- What the pre-trade stage has committed out of each balance (ADR 0023, slice 2c), kept so a
-- restarted risk starts with it instead of nothing: before this, free was too high after a
-- restart until every open order had ended. Balances themselves are not stored here: they are
-- loaded from settlement's snapshot on every start.

-- What each open order still has reserved, in its hold asset (quote for a buy, base for a
-- sell): the hold amount at its price (a market order's protection price) when it is
-- accepted, less what each of its fills will debit. A function of the orders stream, written
-- by its consumer with the order's other columns. An order accepted before this column
-- existed reserves nothing (NULL asset, 0).
ALTER TABLE open_orders
    ADD COLUMN hold_asset text,
    ADD COLUMN reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    ADD CONSTRAINT open_orders_reserved_has_asset CHECK (reserved = 0 OR hold_asset IS NOT NULL);

-- Trades seen on one of the two streams and not yet on the other. Risk reads the orders stream
-- (a trade executed: its debits stay committed) and settlement's (the trade settled: the
-- balances paid them) with two consumers, so either can come first.
--   * The orders consumer writes the debits; settlement's consumer sets `settled`.
--   * Both write with INSERT … ON CONFLICT (trade_id) DO UPDATE, so whichever commits second
--     waits for the first's row and sees it; it then deletes the row, which has both halves.
-- So a row is either debits not yet paid (committed on restart) or a trade settled before
-- its execution was seen (its execution will only shrink reservations).
CREATE TABLE unsettled_trades (
    trade_id        uuid    PRIMARY KEY,
    -- The buyer pays the notional and their fee in the quote asset…
    buy_order_id    uuid,
    buyer_id        uuid,
    quote_asset     text,
    buyer_pays      bigint  CHECK (buyer_pays >= 0),
    -- …the seller delivers the quantity in the base asset.
    sell_order_id   uuid,
    seller_id       uuid,
    base_asset      text,
    seller_delivers bigint  CHECK (seller_delivers >= 0),
    settled         boolean NOT NULL DEFAULT false,
    -- Both sides' debits or neither.
    CONSTRAINT unsettled_trades_debits_whole CHECK (
        num_nulls(buy_order_id, buyer_id, quote_asset, buyer_pays,
                  sell_order_id, seller_id, base_asset, seller_delivers) IN (0, 8))
);

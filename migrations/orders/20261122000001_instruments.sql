-- Tradable instruments (TRD-01). Sizes are stored in minor units of their asset: tick_size in
-- the quote asset's units (USD cents), lot_size and the quantity bounds in the base asset's
-- units (satoshis). The asset scales are stored with the instrument, so a price or quantity can
-- be converted exactly without asking anyone.
CREATE TABLE instruments (
    symbol       text        NOT NULL,
    base_asset   text        NOT NULL,
    quote_asset  text        NOT NULL,
    base_scale   integer     NOT NULL CHECK (base_scale BETWEEN 0 AND 18),
    quote_scale  integer     NOT NULL CHECK (quote_scale BETWEEN 0 AND 18),
    tick_size    bigint      NOT NULL CHECK (tick_size > 0),
    lot_size     bigint      NOT NULL CHECK (lot_size > 0),
    min_quantity bigint      NOT NULL,
    max_quantity bigint      NOT NULL,
    status       text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'halted')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instruments_pkey PRIMARY KEY (symbol),
    CONSTRAINT instruments_symbol_format CHECK (symbol = base_asset || '-' || quote_asset),
    CONSTRAINT instruments_distinct_assets CHECK (base_asset <> quote_asset),
    CONSTRAINT instruments_quantity_bounds
        CHECK (min_quantity >= lot_size AND max_quantity >= min_quantity
               AND min_quantity % lot_size = 0 AND max_quantity % lot_size = 0)
);

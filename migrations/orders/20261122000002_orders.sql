-- Orders, their fills, and idempotency records (TRD-02, REL-07, REL-13).
-- Prices are stored in minor units of the quote asset per whole base unit (USD cents per BTC);
-- quantities in minor units of the base asset (satoshis). The matching engine works in ticks
-- and lots, which are these divided by the instrument's tick and lot sizes.
CREATE TABLE orders (
    id               uuid        PRIMARY KEY,
    account_id       uuid        NOT NULL,
    client_order_id  text,
    symbol           text        NOT NULL REFERENCES instruments (symbol),
    side             text        NOT NULL CHECK (side IN ('buy', 'sell')),
    type             text        NOT NULL CHECK (type IN ('limit', 'market')),
    price            bigint      CHECK (price > 0),
    quantity         bigint      NOT NULL CHECK (quantity > 0),
    filled_quantity  bigint      NOT NULL DEFAULT 0 CHECK (filled_quantity BETWEEN 0 AND quantity),
    -- Σ price × quantity of the fills, for the average fill price; exceeds i64, hence numeric.
    filled_notional  numeric(40, 0) NOT NULL DEFAULT 0,
    status           text        NOT NULL
        CHECK (status IN ('open', 'partially_filled', 'filled', 'cancelled', 'rejected')),
    time_in_force    text        NOT NULL CHECK (time_in_force IN ('gtc', 'ioc', 'fok')),
    post_only        boolean     NOT NULL,
    -- The book sequence at which the order started resting: its time priority on recovery.
    book_sequence    bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_client_order_id_key UNIQUE (account_id, client_order_id),
    CONSTRAINT orders_limit_has_price CHECK ((type = 'limit') = (price IS NOT NULL))
);

-- "My orders, newest first" with cursor pagination.
CREATE INDEX orders_account_created_idx ON orders (account_id, created_at DESC, id DESC);
-- Recovery: the resting orders of a symbol in time priority.
CREATE INDEX orders_resting_idx ON orders (symbol, book_sequence)
    WHERE status IN ('open', 'partially_filled');

CREATE TABLE trades (
    id             uuid        PRIMARY KEY,
    symbol         text        NOT NULL REFERENCES instruments (symbol),
    price          bigint      NOT NULL CHECK (price > 0),
    quantity       bigint      NOT NULL CHECK (quantity > 0),
    maker_order_id uuid        NOT NULL REFERENCES orders (id),
    taker_order_id uuid        NOT NULL REFERENCES orders (id),
    maker_account  uuid        NOT NULL,
    taker_account  uuid        NOT NULL,
    taker_side     text        NOT NULL CHECK (taker_side IN ('buy', 'sell')),
    -- The book sequence of the trade event: a total order of trades per symbol.
    sequence       bigint      NOT NULL,
    executed_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT trades_symbol_sequence_key UNIQUE (symbol, sequence)
);

CREATE INDEX trades_maker_order_idx ON trades (maker_order_id);
CREATE INDEX trades_taker_order_idx ON trades (taker_order_id);
-- Public recent trades per symbol.
CREATE INDEX trades_symbol_executed_idx ON trades (symbol, sequence DESC);

-- Idempotency (REL-07, Stripe semantics): the key is claimed before the work starts (one
-- winner among concurrent duplicates, by the primary key), and the first response is stored
-- with the work's own transaction, so a replay returns exactly what the first call returned.
CREATE TABLE idempotency_keys (
    principal_id    uuid        NOT NULL,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    bytea       NOT NULL,
    response_status smallint,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (principal_id, key)
);

-- The purge job deletes by age.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

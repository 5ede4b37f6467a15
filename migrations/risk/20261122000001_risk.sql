-- The risk service's state (TRD-10..12). Checks answer from memory; these tables are what
-- memory is rebuilt from on start, written by the admin API and by the orders-stream consumer
-- in the same transactions as its inbox rows.

-- Per-account overrides of the configured default limits; a NULL column takes the default.
-- Quantities are decimal strings in the instrument's base asset, notionals in its quote asset.
CREATE TABLE limits (
    account_id            uuid        PRIMARY KEY,
    max_order_quantity    text,
    max_order_notional    text,
    max_open_orders       integer     CHECK (max_open_orders >= 0),
    max_orders_per_second integer     CHECK (max_orders_per_second >= 0),
    max_position          text,
    price_collar_bps      integer     CHECK (price_collar_bps BETWEEN 1 AND 10000),
    updated_by            uuid        NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Who changed whose limits, from what to what (SEC-16). Append-only.
CREATE TABLE limit_changes (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id uuid        NOT NULL,
    changed_by uuid        NOT NULL,
    before     jsonb       NOT NULL,
    after      jsonb       NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION limit_changes_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the limit change log is append-only'
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER limit_changes_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON limit_changes
    FOR EACH STATEMENT EXECUTE FUNCTION limit_changes_are_immutable();

-- Kill switches (TRD-11): active until released; a released one is kept as history.
CREATE TABLE kill_switches (
    id           uuid        PRIMARY KEY,
    scope        text        NOT NULL CHECK (scope IN ('global', 'account', 'symbol')),
    target       text,
    reason       text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    activated_by uuid        NOT NULL,
    activated_at timestamptz NOT NULL DEFAULT now(),
    released_by  uuid,
    released_at  timestamptz,
    CONSTRAINT kill_switches_target CHECK ((scope = 'global') = (target IS NULL))
);

-- Orders known to be open (from OrderAccepted until they end), with what is left of them:
-- open-order counts and position limits include them.
CREATE TABLE open_orders (
    order_id   uuid   PRIMARY KEY,
    account_id uuid   NOT NULL,
    symbol     text   NOT NULL,
    side       text   NOT NULL CHECK (side IN ('buy', 'sell')),
    remaining  bigint NOT NULL CHECK (remaining >= 0)
);

-- Positions and realized PnL (TRD-12), projected from trades. Quantities in base minor
-- units (signed: short is negative), prices and PnL in quote minor units.
CREATE TABLE positions (
    account_id     uuid   NOT NULL,
    symbol         text   NOT NULL,
    net_quantity   bigint NOT NULL DEFAULT 0,
    average_price  bigint NOT NULL DEFAULT 0,
    realized_pnl   bigint NOT NULL DEFAULT 0,
    base_asset     text   NOT NULL,
    quote_asset    text   NOT NULL,
    CONSTRAINT positions_pkey PRIMARY KEY (account_id, symbol)
);

-- The last trade price per symbol: the collar's reference.
CREATE TABLE last_prices (
    symbol text   PRIMARY KEY,
    price  bigint NOT NULL CHECK (price > 0)
);

-- The settlement ledger (TRD-05..08): double-entry, after the rules TigerBeetle and Modern
-- Treasury publish. Amounts are integers in the asset's minor unit (its scale), never floats.

-- The assets the ledger knows, with their scale; synced from BOURSE_ASSETS at start. A scale
-- never changes once money exists in it (start-up refuses a different one).
CREATE TABLE assets (
    code  text     PRIMARY KEY CHECK (code ~ '^[A-Z0-9]{2,10}$'),
    scale smallint NOT NULL CHECK (scale BETWEEN 0 AND 18)
);

-- One account per (owner, asset). Owners are users (a trader's user id is their account id),
-- plus two system owners per asset: the external world (the nil UUID: deposits come from it,
-- withdrawals go to it, so its balance is minus everything customers hold) and the fee income
-- account (UUID 1). Per asset, all balances sum to zero.
--
-- `available` can be spent; `held` is reserved by pending holds for open orders. Neither can go
-- negative for anyone but the external account: the database refuses it, not only the code, so
-- no bug and no race can overdraw an account.
CREATE TABLE accounts (
    owner_id   uuid   NOT NULL,
    asset      text   NOT NULL REFERENCES assets (code),
    available  bigint NOT NULL DEFAULT 0,
    held       bigint NOT NULL DEFAULT 0,
    kind       text   NOT NULL GENERATED ALWAYS AS (
        CASE owner_id
            WHEN '00000000-0000-0000-0000-000000000000' THEN 'external'
            WHEN '00000000-0000-0000-0000-000000000001' THEN 'fees'
            ELSE 'customer'
        END) STORED,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (owner_id, asset),
    CONSTRAINT accounts_non_negative CHECK (
        owner_id = '00000000-0000-0000-0000-000000000000' OR (available >= 0 AND held >= 0))
);

-- Holds: pending transfers reserving funds for one order (the hold id is the order id).
-- Trades post out of a hold (`posted`); when the order ends, whatever is left is released to
-- `available` (`released`) and the hold resolves — exactly once — as `posted` (fully or partly)
-- or `voided` (nothing posted). `quantity`/`filled` (base minor units) let settlement know when
-- every trade of the order has settled before it releases the rest.
CREATE TABLE holds (
    id          uuid        PRIMARY KEY,
    owner_id    uuid        NOT NULL,
    asset       text        NOT NULL,
    side        text        NOT NULL CHECK (side IN ('buy', 'sell')),
    symbol      text        NOT NULL,
    price       bigint      NOT NULL CHECK (price > 0),
    quantity    bigint      NOT NULL CHECK (quantity > 0),
    amount      bigint      NOT NULL CHECK (amount > 0),
    posted      bigint      NOT NULL DEFAULT 0 CHECK (posted >= 0),
    released    bigint      NOT NULL DEFAULT 0 CHECK (released >= 0),
    filled      bigint      NOT NULL DEFAULT 0 CHECK (filled >= 0),
    status      text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'posted', 'voided')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CONSTRAINT holds_account_fkey FOREIGN KEY (owner_id, asset) REFERENCES accounts (owner_id, asset),
    CONSTRAINT holds_within_amount CHECK (posted + released <= amount),
    CONSTRAINT holds_filled_within_quantity CHECK (filled <= quantity),
    -- A resolved hold has nothing left; a pending one has released nothing yet.
    CONSTRAINT holds_resolution CHECK (
        (status = 'pending' AND released = 0 AND resolved_at IS NULL)
        OR (status <> 'pending' AND posted + released = amount AND resolved_at IS NOT NULL))
);

-- What reconciliation sums per account.
CREATE INDEX holds_pending_idx ON holds (owner_id, asset) WHERE status = 'pending';

-- Transfers: immutable double-entry rows. Money leaves the debit account and arrives at the
-- credit account, same asset (the composite foreign keys make a cross-asset transfer
-- impossible), same amount. A transfer out of a hold (`hold_id`) takes from the debit
-- account's `held`, any other from its `available`.
CREATE TABLE transfers (
    id                uuid        PRIMARY KEY,
    asset             text        NOT NULL,
    debit_owner_id    uuid        NOT NULL,
    credit_owner_id   uuid        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0),
    kind              text        NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'trade', 'fee')),
    hold_id           uuid        REFERENCES holds (id),
    trade_id          uuid,
    -- The admin behind a deposit or withdrawal (SEC-16: who moved money, and when).
    created_by        uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transfers_debit_fkey FOREIGN KEY (debit_owner_id, asset) REFERENCES accounts (owner_id, asset),
    CONSTRAINT transfers_credit_fkey FOREIGN KEY (credit_owner_id, asset) REFERENCES accounts (owner_id, asset),
    CONSTRAINT transfers_two_accounts CHECK (debit_owner_id <> credit_owner_id)
);

CREATE INDEX transfers_debit_idx ON transfers (debit_owner_id, asset);
CREATE INDEX transfers_credit_idx ON transfers (credit_owner_id, asset);
CREATE INDEX transfers_trade_idx ON transfers (trade_id) WHERE trade_id IS NOT NULL;

-- Immutability is a property of the table, not a promise of the code: corrections are new
-- transfers, never edits.
CREATE FUNCTION transfers_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transfers are immutable; post a correcting transfer instead'
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER transfers_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION transfers_are_immutable();

-- One row per settled trade: the primary key makes settling a trade twice impossible, and
-- reconciliation checks each row against its transfers.
CREATE TABLE settled_trades (
    trade_id        uuid        PRIMARY KEY,
    symbol          text        NOT NULL,
    buy_order_id    uuid        NOT NULL,
    sell_order_id   uuid        NOT NULL,
    buyer_id        uuid        NOT NULL,
    seller_id       uuid        NOT NULL,
    price           bigint      NOT NULL,
    quantity        bigint      NOT NULL,
    notional        bigint      NOT NULL,
    buyer_fee       bigint      NOT NULL,
    seller_fee      bigint      NOT NULL,
    executed_at     timestamptz NOT NULL,
    settled_at      timestamptz NOT NULL DEFAULT now()
);

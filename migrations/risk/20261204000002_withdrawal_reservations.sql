-- What withdrawals have reserved (ADR 0023 slice 4). Settlement asks risk before it books a
-- withdrawal, so money that open orders have reserved cannot leave. A row lives from risk's
-- answer until settlement's `FundsWithdrawn` for it is consumed, or settlement gives the
-- withdrawal up; a start takes the rows back into memory. One that neither happens to lapses
-- (settlement crashed between the two): the sweeper deletes it after a while, by `reserved_at`.
CREATE TABLE withdrawal_reservations (
    -- The transfer settlement books the withdrawal as (`FundsWithdrawn.transfer_id`).
    withdrawal_id uuid        PRIMARY KEY,
    account_id    uuid        NOT NULL,
    asset         text        NOT NULL,
    amount        bigint      NOT NULL CHECK (amount > 0),
    reserved_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX withdrawal_reservations_reserved_at_idx ON withdrawal_reservations (reserved_at);

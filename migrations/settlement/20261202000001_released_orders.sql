-- Orders released before any hold existed for them. Orders gives up on an order whose hold call
-- got no answer in time and says so through its outbox (`OrderRejected`, reason `not_placed`);
-- under load that release can reach settlement before the late hold request does. The hold
-- writer never places a hold for an order listed here (checked in the inserting statement), so
-- a late hold cannot stay held with no order behind it.
CREATE TABLE released_orders (
    order_id    uuid        PRIMARY KEY,
    released_at timestamptz NOT NULL DEFAULT now()
);

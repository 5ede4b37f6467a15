-- Orders whose end (OrderCompleted, OrderCancelled, OrderRejected) risk has applied. An event of
-- an order can reach risk after that order's end: a delivery whose answer was lost while Redis
-- stalled is claimed again seconds later (events::Consumer, XAUTOCLAIM), a dead letter may be
-- replayed while the inbox remembers. An OrderAccepted for an order named here opens nothing;
-- before this table it opened the order again, and its funds stayed committed until risk
-- restarted (docs/performance.md, "Stalls rather than crashes").
-- Kept as long as the inbox (a week, ADR 0028) and purged by risk hourly through the primary
-- key: order ids are UUIDv7, so "made before the cutoff" is a range of it; `ended_at` keeps an
-- order that rested longer than the retention.
CREATE TABLE ended_orders (
    order_id uuid        PRIMARY KEY,
    ended_at timestamptz NOT NULL DEFAULT now()
);

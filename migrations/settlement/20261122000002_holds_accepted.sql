-- When the order behind a hold reached the book (its `OrderAccepted` was consumed). A hold
-- still pending long after it was placed, for an order that never reached the book, was
-- orphaned — orders stopped between the hold and its commit — and reconciliation reports it.
ALTER TABLE holds ADD COLUMN accepted_at timestamptz;

CREATE INDEX holds_unaccepted_idx ON holds (created_at) WHERE status = 'pending' AND accepted_at IS NULL;

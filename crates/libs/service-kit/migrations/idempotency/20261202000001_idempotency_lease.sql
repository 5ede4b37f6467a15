-- A claim is a lease, not a lock held for a day. A request cut off mid-work (a timeout, a
-- panic, a process killed) never stores an answer and, before this, left its key answering
-- 409 "in flight" until the purge. Now a retry with the same request takes the claim over once
-- `locked_at` is older than the lease (longer than any request may run), and the completion is
-- fenced by `claim`: work whose claim was taken over cannot store its answer, so its
-- transaction rolls back and the key has exactly one outcome.
ALTER TABLE idempotency_keys
    ADD COLUMN IF NOT EXISTS claim     uuid,
    ADD COLUMN IF NOT EXISTS locked_at timestamptz NOT NULL DEFAULT now();

-- One book per symbol across orders replicas (TRD-08, ADR 0014).
--
-- Every orders replica keeps a lease on its row in `replicas`, renewed every second. Each
-- symbol has at most one owner, the replica whose matching task keeps its book; a replica
-- whose lease ran out (it died, or it is paused) loses its symbols to whoever takes them over
-- next. Every takeover bumps the symbol's epoch, and every matching batch commits only while
-- its epoch is still the current one (checked with FOR SHARE inside the batch's transaction):
-- an old owner that wakes up after losing its symbol cannot commit anything.

-- The running orders replicas: a random id per process, the address the others forward a
-- symbol's requests to, and how long its claim to be alive holds.
CREATE TABLE replicas (
    id          uuid        NOT NULL,
    address     text        NOT NULL,
    lease_until timestamptz NOT NULL,
    CONSTRAINT replicas_pkey PRIMARY KEY (id)
);

-- Who keeps each symbol's book. No foreign key to `replicas`: a dead replica's row is purged
-- while its symbols still name it (they are taken over by epoch, not by deletion).
CREATE TABLE symbol_owners (
    symbol  text   NOT NULL REFERENCES instruments (symbol),
    -- 1 for the first owner, +1 for every takeover or handover since.
    epoch   bigint NOT NULL CHECK (epoch > 0),
    -- NULL once released (its owner shut down): the next replica to ask takes it.
    replica uuid,
    CONSTRAINT symbol_owners_pkey PRIMARY KEY (symbol)
);

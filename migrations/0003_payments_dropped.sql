-- Transactions the payment watcher saw listed for the receiving address
-- that never finalized: their block was on a fork the cluster dropped, or
-- the RPC node pruned them from its history. One is recorded once the
-- cluster's finalized slot is `finality_timeout_slots` past its slot, and
-- the watcher's cursor moves past it; the admins are told, since a pruned
-- one may have paid (an admin can check it on chain and grant the plan).
CREATE TABLE payments_dropped (
    signature      TEXT PRIMARY KEY,
    -- Where it was listed, and the finalized slot that timed it out.
    slot           BIGINT      NOT NULL,
    finalized_slot BIGINT      NOT NULL CHECK (finalized_slot >= slot),
    block_time     TIMESTAMPTZ,
    dropped_at     TIMESTAMPTZ NOT NULL
);

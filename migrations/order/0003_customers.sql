-- The order service's read model of the customer directory, followed from the compacted
-- `customers` topic: each listed customer's newest standing. A customer not listed is in good
-- standing; PlaceOrder refuses a blocked one, without calling anyone. An entry is kept only if
-- it is newer, by (occurred_at, event_id), than the one kept: a redriven dead letter or an
-- entry that arrived late never brings back an older standing.
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    blocked     BOOLEAN     NOT NULL,
    reason      TEXT,
    occurred_at TIMESTAMPTZ NOT NULL,
    event_id    UUID        NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (blocked = (reason IS NOT NULL))
);

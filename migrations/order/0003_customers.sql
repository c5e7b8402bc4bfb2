-- The order service's read model of the customer directory, followed from the compacted
-- `customers` topic: each listed customer's newest standing. A customer not listed is in good
-- standing; PlaceOrder refuses a blocked one, without calling anyone.
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    blocked     BOOLEAN     NOT NULL,
    reason      TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

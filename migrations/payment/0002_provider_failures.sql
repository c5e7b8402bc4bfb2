-- Failed calls to the payment provider per order and operation: the provider's retry budget.
-- A row is written on its own, outside the consumer's transaction, as soon as a call fails,
-- so a transaction rolled back afterwards (a database or commit error) or a restart of the
-- service does not reset it, and a database error never counts against it.

CREATE TABLE provider_failures (
    order_id   UUID        NOT NULL,
    operation  TEXT        NOT NULL CHECK (operation IN ('charge', 'refund')),
    failures   INT         NOT NULL CHECK (failures > 0),
    last_error TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, operation)
);

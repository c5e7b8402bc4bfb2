-- The inventory service's state: stock per SKU (never negative) and what was done for each
-- paid order. The platform's tables (outbox, processed_events) come from
-- migrations/platform/, applied with these.

CREATE TABLE stock (
    sku        TEXT PRIMARY KEY,
    available  INT         NOT NULL CHECK (available >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per paid order: CONFIRMED (every line deducted) or OUT_OF_STOCK (none).
CREATE TABLE reservations (
    order_id   UUID PRIMARY KEY,
    status     TEXT        NOT NULL CHECK (status IN ('CONFIRMED', 'OUT_OF_STOCK')),
    items      JSONB       NOT NULL,
    missing    JSONB       NOT NULL DEFAULT '[]',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

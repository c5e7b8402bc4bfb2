-- The order service's state: orders and their status history. The platform's tables (outbox,
-- processed_events) come from migrations/platform/, applied with these.

CREATE TABLE orders (
    order_id        UUID PRIMARY KEY,
    customer_id     TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    -- Fingerprint of the request, to tell a retry from a different order reusing a key.
    request_hash    TEXT        NOT NULL,
    items           JSONB       NOT NULL,
    total_minor     BIGINT      NOT NULL CHECK (total_minor >= 0),
    currency        TEXT        NOT NULL,
    payment_method  TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version >= 1),
    status_reason   TEXT,
    missing_items   JSONB       NOT NULL DEFAULT '[]',
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (customer_id, idempotency_key)
);

CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, order_id DESC);

-- One row per status change; version is gap-free per order.
CREATE TABLE order_status_history (
    order_id    UUID        NOT NULL REFERENCES orders (order_id),
    version     BIGINT      NOT NULL,
    status      TEXT        NOT NULL,
    reason      TEXT,
    occurred_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, version)
);

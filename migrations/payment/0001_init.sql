-- The payment service's state: one charge row per order (PAID or FAILED) and at most one
-- refund per order. The platform's tables (outbox, processed_events) come from
-- migrations/platform/, applied with these.

CREATE TABLE charges (
    order_id           UUID PRIMARY KEY,
    payment_id         UUID        NOT NULL UNIQUE,
    amount_minor       BIGINT      NOT NULL CHECK (amount_minor >= 0),
    currency           TEXT        NOT NULL,
    status             TEXT        NOT NULL CHECK (status IN ('PAID', 'FAILED')),
    failure_reason     TEXT,
    provider_reference TEXT,
    attempts           INT         NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE refunds (
    order_id     UUID PRIMARY KEY REFERENCES charges (order_id),
    refund_id    UUID        NOT NULL UNIQUE,
    amount_minor BIGINT      NOT NULL,
    currency     TEXT        NOT NULL,
    reason       TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

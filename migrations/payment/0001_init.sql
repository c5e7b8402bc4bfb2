-- The payment service's state: one charge row per order (PAID or FAILED), at most one refund
-- per order, and the platform tables (outbox, processed_events).

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

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    topic        TEXT        NOT NULL,
    event_key    TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    traceparent  TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    consumer     TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- The analytics service's projection of the events: figures over every order. Each event
-- counts once (the platform's processed_events, from migrations/platform/), and everything
-- here can be rebuilt from the topics (`orderflow replay analytics --from-beginning`).

-- Each order's latest status; a change with an older version than the row's is ignored.
CREATE TABLE order_status (
    order_id   UUID        PRIMARY KEY,
    status     TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX order_status_by_status ON order_status (status);

-- Money charged and refunded per minute (of the event's time) and currency.
CREATE TABLE revenue_per_minute (
    minute         TIMESTAMPTZ NOT NULL,
    currency       TEXT        NOT NULL,
    captured_minor BIGINT      NOT NULL DEFAULT 0,
    refunded_minor BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, currency)
);

-- Payment outcomes: 'paid' and 'declined'.
CREATE TABLE payment_outcomes (
    outcome  TEXT   PRIMARY KEY,
    payments BIGINT NOT NULL
);

-- SKUs that left a paid order short.
CREATE TABLE stock_outs (
    sku         TEXT   PRIMARY KEY,
    orders      BIGINT NOT NULL,
    units_short BIGINT NOT NULL
);

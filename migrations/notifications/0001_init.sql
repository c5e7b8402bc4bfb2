-- The notifications service's state: one notification per order status, and where its
-- delivery stands. The key (order_id, status) is what makes a status notified once however
-- often its event is delivered; the deliverer works through the pending rows in each order's
-- version order.
CREATE TABLE notifications (
    order_id         UUID        NOT NULL,
    status           TEXT        NOT NULL,
    -- The status change's event id: the delivery id a receiver dedupes by.
    notification_id  UUID        NOT NULL UNIQUE,
    customer_id      TEXT        NOT NULL,
    version          BIGINT      NOT NULL,
    -- The status change as the event carried it (JSON), to publish it again as a dead letter.
    event            JSONB       NOT NULL,
    -- What the sink is given.
    body             JSONB       NOT NULL,
    -- Where the event was read, for the dead letter's headers.
    origin_topic     TEXT        NOT NULL,
    origin_partition INT         NOT NULL,
    origin_offset    BIGINT      NOT NULL,
    traceparent      TEXT        NOT NULL,
    -- 'pending' (to deliver at next_attempt_at), 'delivered', 'undeliverable' (given up on:
    -- to publish as a dead letter at next_attempt_at, the sink no longer tried), or 'dead'
    -- (dead-lettered).
    state            TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'undeliverable', 'dead')),
    attempts         INT         NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    first_failure    TIMESTAMPTZ,
    last_attempt_at  TIMESTAMPTZ,
    last_error       TEXT,
    -- Why it was given up on: 'delivery_refused' or 'delivery_budget_exhausted'.
    dead_letter_class TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    PRIMARY KEY (order_id, status)
);

-- The deliverer's work list: only rows it still has work for, soonest first.
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE state IN ('pending', 'undeliverable');
-- The retention purge's list: finished rows, oldest first.
CREATE INDEX notifications_finished ON notifications (created_at)
    WHERE state IN ('delivered', 'dead');

-- The history service's state: every message about an order that reached the log, one row
-- per place in the log, so a redelivered message writes nothing and a redriven copy (same
-- event, new offset) is a row of its own. The platform's tables come from
-- migrations/platform/, applied with these.

CREATE TABLE order_timeline (
    topic         TEXT        NOT NULL,
    "partition"   INTEGER     NOT NULL,
    "offset"      BIGINT      NOT NULL,
    order_id      UUID        NOT NULL,
    -- OrderCreated, PaymentProcessed, ...; DeadLettered for a dead-letter topic's message.
    event_type    TEXT        NOT NULL,
    -- NULL for a dead letter whose bytes are not an event.
    event_id      TEXT,
    -- The writing service (order, payment, inventory), or the dead-lettering consumer group.
    producer      TEXT        NOT NULL,
    summary       TEXT        NOT NULL,
    -- The event's own time; for a dead letter, when the broker appended it.
    occurred_at   TIMESTAMPTZ NOT NULL,
    -- When the broker appended the message, if it said.
    logged_at     TIMESTAMPTZ,
    trace_id      TEXT,
    -- For a redriven message: "<dlq topic>/<partition>/<offset>" it came from.
    redriven_from TEXT,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", "offset")
);

CREATE INDEX order_timeline_by_order ON order_timeline (order_id, occurred_at);

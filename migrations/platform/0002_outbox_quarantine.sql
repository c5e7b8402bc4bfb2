-- Outbox rows the relay can never publish (a payload that is not an event, or an event whose
-- encoding the registry refuses for good), set aside with the reason, so they stop no other
-- order's events (platform::outbox). The row itself stays in the outbox, in its place: the
-- relay passes over it and over every later row of the same order (event_key), which wait
-- behind it so that the order's events are never published out of order. To release an
-- order, repair the row's payload (or mark it published to drop it) and delete its record
-- here; the relay then publishes it and the rows that waited, in id order.

CREATE TABLE outbox_quarantine (
    outbox_id      BIGINT      PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
    event_key      TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    reason         TEXT        NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The relay's test of each unpublished row: does an earlier row of its order wait here?
CREATE INDEX outbox_quarantine_key ON outbox_quarantine (event_key, outbox_id);

-- The platform's tables, in every event-driven service's database (platform/runtime applies
-- this set with the service's own migrations, see `migrations::with_platform`): the
-- transactional outbox the relay publishes from, and the dedup records that make each
-- consumed event apply once.

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    topic        TEXT        NOT NULL,
    event_key    TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    traceparent  TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
-- The relay's next batch, and the backlog count.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    consumer     TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- For the retention purge (platform::purge), which deletes published outbox rows and dedup
-- records by age in bounded batches: without them every batch would scan the table.
-- Unpublished outbox rows are left out of the index; they are never purged.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);

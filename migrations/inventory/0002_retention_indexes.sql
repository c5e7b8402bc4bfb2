-- Indexes for the retention purge (platform::purge), which deletes published outbox rows and
-- dedup records by age in bounded batches: without them every batch would scan the table.
-- Unpublished outbox rows are left out of the index; they are never purged.

CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);

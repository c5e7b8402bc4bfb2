-- The catalogue the inventory service publishes (topic `catalogue`, compacted, keyed by
-- SKU): every change of a SKU's stock counts one revision and adds its CatalogueItemChanged
-- to the outbox in the same transaction. Revision 0 marks a SKU stocked before this
-- migration and never published: the service announces those at start.
ALTER TABLE stock ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

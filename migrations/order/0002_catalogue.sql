-- The order service's read model of the catalogue, followed from the compacted `catalogue`
-- topic the inventory service publishes: the newest entry (highest revision) of every SKU.
-- PlaceOrder refuses a SKU that is not here, without calling the inventory service.
CREATE TABLE catalogue (
    sku        TEXT PRIMARY KEY,
    available  INT         NOT NULL,
    revision   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the rest of Confluent's API needs: metadata and rule sets stored with a schema, a guid
-- per schema, the `normalize` setting beside the compatibility level, and modes.

ALTER TABLE schemas
    ADD COLUMN metadata jsonb,
    ADD COLUMN rule_set jsonb,
    -- A stable UUID derived from the fingerprint: equal schemas, equal guid.
    ADD COLUMN guid uuid GENERATED ALWAYS AS (substr(fingerprint, 1, 32)::uuid) STORED;
CREATE UNIQUE INDEX schemas_guid ON schemas (guid);

-- A config row may now set only `normalize`, leaving the level to the global one.
ALTER TABLE compatibility_config
    ALTER COLUMN level DROP NOT NULL,
    ADD COLUMN normalize boolean;

-- Modes; the empty subject holds the global mode (READWRITE when absent).
CREATE TABLE registry_modes (
    subject text PRIMARY KEY,
    mode    text NOT NULL CHECK (mode IN ('READWRITE', 'READONLY', 'READONLY_OVERRIDE', 'IMPORT'))
);

-- Finding the schemas that reference a subject's version (referencedby, delete checks).
CREATE INDEX schemas_refs ON schemas USING gin (refs jsonb_path_ops);

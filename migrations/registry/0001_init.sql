-- Schema registry state: schemas under their global ids, the versions of each subject, and
-- compatibility levels. Ids and versions are assigned under an advisory lock (see registry.rs).

CREATE TABLE schemas (
    id          integer PRIMARY KEY,
    -- sha256 of the normalized schema and its references: equal fingerprints, same schema.
    fingerprint text NOT NULL UNIQUE,
    schema_type text NOT NULL DEFAULT 'AVRO',
    -- The text as first registered; returned verbatim by GET /schemas/ids/{id}.
    schema_text text NOT NULL,
    refs        jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subject_versions (
    subject    text NOT NULL,
    version    integer NOT NULL CHECK (version > 0),
    schema_id  integer NOT NULL REFERENCES schemas (id),
    deleted    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);

-- A schema appears at most once among a subject's live versions.
CREATE UNIQUE INDEX subject_versions_live_schema ON subject_versions (subject, schema_id) WHERE NOT deleted;
CREATE INDEX subject_versions_schema_id ON subject_versions (schema_id);

-- Compatibility levels; the empty subject holds the global level.
CREATE TABLE compatibility_config (
    subject text PRIMARY KEY,
    level   text NOT NULL CHECK (level IN ('NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD',
                                           'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'))
);

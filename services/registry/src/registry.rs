//! The registry's behaviour over PostgreSQL: registration, lookup, deletion, compatibility and
//! configuration, with Confluent Schema Registry's semantics.

use orderflow_avro_compat::{AvroSchema, CompatibilityLevel, Direction, check_level};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use tracing::instrument;

use crate::error::RegistryError;

/// The level used when no global level was ever set, as in Confluent Schema Registry.
pub const DEFAULT_LEVEL: CompatibilityLevel = CompatibilityLevel::Backward;

/// Every mutation of subjects and ids holds this transaction-scoped advisory lock, so ids and
/// versions are assigned one registration at a time and a concurrent duplicate sees the first.
const REGISTRY_LOCK: i64 = 0x6f72_6466_7265_6769;

/// How deep references may nest before the registry gives up (and calls it a cycle).
const MAX_REFERENCE_DEPTH: usize = 32;

/// A reference to a named type defined by another subject's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema as a client submits it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    pub schema: String,
    #[serde(default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<SchemaReference>,
}

/// One version of a subject.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub id: i32,
    pub version: i32,
    pub schema: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
}

/// A stored schema.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    pub text: String,
    pub references: Vec<SchemaReference>,
}

/// A version selector: a number or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Number(i32),
}

impl VersionSelector {
    /// Parses `latest`, `-1` or a number in `[1, 2^31-1]`.
    pub fn parse(raw: &str) -> Result<VersionSelector, RegistryError> {
        match raw {
            "latest" | "-1" => Ok(VersionSelector::Latest),
            _ => match raw.parse::<i32>() {
                Ok(n) if n >= 1 => Ok(VersionSelector::Number(n)),
                _ => Err(RegistryError::InvalidVersion(raw.to_owned())),
            },
        }
    }
}

/// A validated submission: its model, its identity and what gets stored.
struct Candidate {
    schema: AvroSchema,
    fingerprint: String,
    request: SchemaRequest,
}

/// The registry over its database.
#[derive(Clone)]
pub struct Registry {
    pool: PgPool,
}

impl Registry {
    pub fn new(pool: PgPool) -> Self {
        Registry { pool }
    }

    /// True when the database answers.
    pub async fn healthy(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Registers `request` under `subject`, returning its global id. A schema already live
    /// under the subject returns its id and creates no version; a schema known under another
    /// subject keeps its id.
    #[instrument(skip_all, fields(subject = %subject))]
    pub async fn register(
        &self,
        subject: &str,
        request: SchemaRequest,
    ) -> Result<i32, RegistryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(REGISTRY_LOCK)
            .execute(&mut *tx)
            .await?;
        let candidate = candidate(&mut tx, request).await?;
        if let Some(existing) =
            live_version_of(&mut tx, subject, &candidate.fingerprint, false).await?
        {
            tx.commit().await?;
            return Ok(existing.id);
        }
        let level = effective_level(&mut tx, subject).await?;
        let earlier = live_schemas(&mut tx, subject).await?;
        let earlier_refs: Vec<(u32, &AvroSchema)> =
            earlier.iter().map(|(v, s)| (*v as u32, s)).collect();
        let violations = check_level(level, &candidate.schema, &earlier_refs);
        if !violations.is_empty() {
            let details: Vec<String> = violations.iter().map(ToString::to_string).collect();
            tracing::info!(%level, violations = details.len(), "refused incompatible schema");
            return Err(RegistryError::Incompatible(format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" at level {level}: {}",
                details.join("; ")
            )));
        }
        let id = schema_id_for(&mut tx, &candidate).await?;
        let version: i32 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM subject_versions WHERE subject = $1",
        )
        .bind(subject)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subject_versions (subject, version, schema_id) VALUES ($1, $2, $3)",
        )
        .bind(subject)
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(id, version, "registered schema");
        Ok(id)
    }

    /// The version of `subject` whose schema equals `request`.
    #[instrument(skip_all, fields(subject = %subject))]
    pub async fn lookup(
        &self,
        subject: &str,
        request: SchemaRequest,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let candidate = candidate(&mut conn, request).await?;
        ensure_subject(&mut conn, subject, deleted).await?;
        live_version_of(&mut conn, subject, &candidate.fingerprint, deleted)
            .await?
            .ok_or(RegistryError::SchemaNotFound)
    }

    /// The schema with global id `id`. Without `deleted`, a schema whose every version was
    /// soft-deleted is not found; a schema whose versions were all permanently deleted never is.
    pub async fn schema_by_id(
        &self,
        id: i32,
        deleted: bool,
    ) -> Result<StoredSchema, RegistryError> {
        let row = sqlx::query(
            "SELECT s.schema_text, s.refs FROM schemas s WHERE s.id = $1 AND EXISTS (
                 SELECT 1 FROM subject_versions v WHERE v.schema_id = s.id AND ($2 OR NOT v.deleted))",
        )
        .bind(id)
        .bind(deleted)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(RegistryError::SchemaNotFound)?;
        Ok(StoredSchema {
            text: row.get(0),
            references: refs_from_json(row.get(1)),
        })
    }

    /// The `(subject, version)` pairs that use schema `id`.
    pub async fn versions_of_schema(
        &self,
        id: i32,
        deleted: bool,
    ) -> Result<Vec<(String, i32)>, RegistryError> {
        self.schema_by_id(id, true).await?;
        let rows = sqlx::query(
            "SELECT subject, version FROM subject_versions WHERE schema_id = $1 AND ($2 OR NOT deleted)
             ORDER BY subject, version",
        )
        .bind(id)
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every subject with a live version (or any version, with `deleted`).
    pub async fn subjects(&self, deleted: bool) -> Result<Vec<String>, RegistryError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT subject FROM subject_versions WHERE $1 OR NOT deleted ORDER BY subject",
        )
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The version numbers of `subject`.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>, RegistryError> {
        let versions: Vec<i32> = sqlx::query_scalar(
            "SELECT version FROM subject_versions WHERE subject = $1 AND ($2 OR NOT deleted) ORDER BY version",
        )
        .bind(subject)
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    /// One version of `subject`.
    pub async fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        version(&mut conn, subject, selector, deleted).await
    }

    /// Soft-deletes (or, with `permanent`, removes a soft-deleted) subject; returns the
    /// versions deleted.
    #[instrument(skip(self))]
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(REGISTRY_LOCK)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT version, deleted FROM subject_versions WHERE subject = $1 ORDER BY version",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let live: Vec<i32> = rows
            .iter()
            .filter(|r| !r.get::<bool, _>(1))
            .map(|r| r.get(0))
            .collect();
        let versions = if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            sqlx::query("DELETE FROM subject_versions WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM compatibility_config WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            rows.iter().map(|r| r.get(0)).collect()
        } else {
            if live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
            }
            sqlx::query(
                "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND NOT deleted",
            )
            .bind(subject)
            .execute(&mut *tx)
            .await?;
            live
        };
        tx.commit().await?;
        tracing::info!(?versions, permanent, "deleted subject");
        Ok(versions)
    }

    /// Soft-deletes (or, with `permanent`, removes a soft-deleted) version; returns its number.
    #[instrument(skip(self))]
    pub async fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<i32, RegistryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(REGISTRY_LOCK)
            .execute(&mut *tx)
            .await?;
        ensure_subject(&mut tx, subject, permanent).await?;
        let found = version(&mut tx, subject, selector, permanent).await;
        let version = match (found, selector) {
            (Ok(v), _) => v.version,
            (Err(RegistryError::VersionNotFound { .. }), VersionSelector::Number(n))
                if !permanent =>
            {
                // Distinguish a version that was soft-deleted already from one that never was.
                let deleted: Option<bool> = sqlx::query_scalar(
                    "SELECT deleted FROM subject_versions WHERE subject = $1 AND version = $2",
                )
                .bind(subject)
                .bind(n)
                .fetch_optional(&mut *tx)
                .await?;
                return Err(match deleted {
                    Some(true) => RegistryError::VersionSoftDeleted {
                        subject: subject.to_owned(),
                        version: n,
                    },
                    _ => RegistryError::VersionNotFound {
                        subject: subject.to_owned(),
                        version: n.to_string(),
                    },
                });
            }
            (Err(e), _) => return Err(e),
        };
        if permanent {
            let deleted: bool = sqlx::query_scalar(
                "SELECT deleted FROM subject_versions WHERE subject = $1 AND version = $2",
            )
            .bind(subject)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            if !deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            sqlx::query("DELETE FROM subject_versions WHERE subject = $1 AND version = $2")
                .bind(subject)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND version = $2",
            )
            .bind(subject)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(version, permanent, "deleted version");
        Ok(version)
    }

    /// Checks `request` against one version of `subject` (in the directions of the subject's
    /// level) or, with no selector, against the versions the level names (as registration
    /// would). Returns the violations as sentences; empty means compatible.
    #[instrument(skip_all, fields(subject = %subject))]
    pub async fn check_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        request: SchemaRequest,
    ) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let candidate = candidate(&mut conn, request).await?;
        let level = effective_level(&mut conn, subject).await?;
        let earlier = match selector {
            None => live_schemas(&mut conn, subject).await?,
            Some(selector) => {
                let v = version(&mut conn, subject, selector, false).await?;
                let stored = StoredSchema {
                    text: v.schema,
                    references: v.references,
                };
                vec![(v.version, parse_stored(&mut conn, &stored).await?)]
            }
        };
        let earlier_refs: Vec<(u32, &AvroSchema)> =
            earlier.iter().map(|(v, s)| (*v as u32, s)).collect();
        let violations = check_level(level, &candidate.schema, &earlier_refs);
        Ok(violations
            .iter()
            .map(|v| {
                let kind = match v.direction {
                    Direction::Backward => "backward",
                    Direction::Forward => "forward",
                };
                format!("{v} ({kind} check at level {level})")
            })
            .collect())
    }

    /// The global level.
    pub async fn global_level(&self) -> Result<CompatibilityLevel, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        Ok(configured_level(&mut conn, "")
            .await?
            .unwrap_or(DEFAULT_LEVEL))
    }

    /// The level set for `subject`, if any.
    pub async fn subject_level(
        &self,
        subject: &str,
    ) -> Result<Option<CompatibilityLevel>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        configured_level(&mut conn, subject).await
    }

    /// Sets the level of `subject` (or the global level, for `None`).
    #[instrument(skip(self))]
    pub async fn set_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO compatibility_config (subject, level) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET level = EXCLUDED.level",
        )
        .bind(subject.unwrap_or(""))
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        tracing::info!(%level, "set compatibility level");
        Ok(())
    }

    /// Removes the level of `subject`, returning it.
    pub async fn delete_subject_level(
        &self,
        subject: &str,
    ) -> Result<CompatibilityLevel, RegistryError> {
        let level: Option<String> = sqlx::query_scalar(
            "DELETE FROM compatibility_config WHERE subject = $1 RETURNING level",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        level
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| RegistryError::SubjectConfigNotFound(subject.to_owned()))
    }

    /// The ids of schemas that reference `subject`'s version.
    pub async fn referenced_by(
        &self,
        subject: &str,
        selector: VersionSelector,
    ) -> Result<Vec<i32>, RegistryError> {
        let v = self.version(subject, selector, false).await?;
        Ok(sqlx::query_scalar(
            "SELECT id FROM schemas WHERE refs @> jsonb_build_array(jsonb_build_object('subject', $1::text, 'version', $2::int))
             ORDER BY id",
        )
        .bind(subject)
        .bind(v.version)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Validates a submission: AVRO only, references resolvable, schema valid.
async fn candidate(
    conn: &mut PgConnection,
    request: SchemaRequest,
) -> Result<Candidate, RegistryError> {
    if let Some(kind) = &request.schema_type
        && !kind.eq_ignore_ascii_case("AVRO")
    {
        return Err(RegistryError::InvalidSchema(format!(
            "schema type '{kind}' is not supported: this registry stores AVRO schemas only"
        )));
    }
    if request.schema.trim().is_empty() {
        return Err(RegistryError::InvalidSchema(
            "the schema is empty".to_owned(),
        ));
    }
    let stored = StoredSchema {
        text: request.schema.clone(),
        references: request.references.clone(),
    };
    let schema = parse_stored(conn, &stored).await?;
    let refs = serde_json::to_string(&request.references).unwrap_or_default();
    let fingerprint = hex::encode(Sha256::digest(format!("{}\n{refs}", schema.normalized())));
    Ok(Candidate {
        schema,
        fingerprint,
        request,
    })
}

/// Parses a schema with its references resolved from the registry.
async fn parse_stored(
    conn: &mut PgConnection,
    stored: &StoredSchema,
) -> Result<AvroSchema, RegistryError> {
    let mut texts = Vec::new();
    let mut seen = Vec::new();
    resolve_references(conn, &stored.references, 0, &mut texts, &mut seen).await?;
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    AvroSchema::parse_with_references(&stored.text, &texts)
        .map_err(|e| RegistryError::InvalidSchema(e.0))
}

/// Appends the texts of `references` and of what they reference, dependencies first.
async fn resolve_references(
    conn: &mut PgConnection,
    references: &[SchemaReference],
    depth: usize,
    texts: &mut Vec<String>,
    seen: &mut Vec<i32>,
) -> Result<(), RegistryError> {
    if depth > MAX_REFERENCE_DEPTH {
        return Err(RegistryError::InvalidSchema(
            "references nest too deeply (a cycle?)".to_owned(),
        ));
    }
    for reference in references {
        let selector = if reference.version == -1 {
            VersionSelector::Latest
        } else {
            VersionSelector::Number(reference.version)
        };
        let target = match version(conn, &reference.subject, selector, true).await {
            Ok(v) => v,
            Err(RegistryError::Store(e)) => return Err(RegistryError::Store(e)),
            Err(_) => {
                return Err(RegistryError::InvalidSchema(format!(
                    "reference '{}' cannot be resolved: subject '{}' has no version {}",
                    reference.name, reference.subject, reference.version
                )));
            }
        };
        if seen.contains(&target.id) {
            continue;
        }
        Box::pin(resolve_references(
            conn,
            &target.references,
            depth + 1,
            texts,
            seen,
        ))
        .await?;
        seen.push(target.id);
        texts.push(target.schema);
    }
    Ok(())
}

fn refs_from_json(value: serde_json::Value) -> Vec<SchemaReference> {
    serde_json::from_value(value).unwrap_or_default()
}

/// Fails with 40401 when `subject` has no live version (or no version at all, with `deleted`).
async fn ensure_subject(
    conn: &mut PgConnection,
    subject: &str,
    deleted: bool,
) -> Result<(), RegistryError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM subject_versions WHERE subject = $1 AND ($2 OR NOT deleted))",
    )
    .bind(subject)
    .bind(deleted)
    .fetch_one(&mut *conn)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(RegistryError::SubjectNotFound(subject.to_owned()))
    }
}

const VERSION_COLUMNS: &str = "SELECT v.subject, s.id, v.version, s.schema_text, s.refs
     FROM subject_versions v JOIN schemas s ON s.id = v.schema_id";

fn subject_version(row: sqlx::postgres::PgRow) -> SubjectVersion {
    SubjectVersion {
        subject: row.get(0),
        id: row.get(1),
        version: row.get(2),
        schema: row.get(3),
        references: refs_from_json(row.get(4)),
    }
}

async fn version(
    conn: &mut PgConnection,
    subject: &str,
    selector: VersionSelector,
    deleted: bool,
) -> Result<SubjectVersion, RegistryError> {
    ensure_subject(conn, subject, deleted).await?;
    let row = match selector {
        VersionSelector::Latest => {
            sqlx::query(&format!(
                "{VERSION_COLUMNS} WHERE v.subject = $1 AND ($2 OR NOT v.deleted) ORDER BY v.version DESC LIMIT 1"
            ))
            .bind(subject)
            .bind(deleted)
            .fetch_optional(&mut *conn)
            .await?
        }
        VersionSelector::Number(n) => {
            sqlx::query(&format!(
                "{VERSION_COLUMNS} WHERE v.subject = $1 AND ($2 OR NOT v.deleted) AND v.version = $3"
            ))
            .bind(subject)
            .bind(deleted)
            .bind(n)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    row.map(subject_version)
        .ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: match selector {
                VersionSelector::Latest => "latest".to_owned(),
                VersionSelector::Number(n) => n.to_string(),
            },
        })
}

/// The version of `subject` whose schema has `fingerprint`.
async fn live_version_of(
    conn: &mut PgConnection,
    subject: &str,
    fingerprint: &str,
    deleted: bool,
) -> Result<Option<SubjectVersion>, RegistryError> {
    let row = sqlx::query(&format!(
        "{VERSION_COLUMNS} WHERE v.subject = $1 AND s.fingerprint = $2 AND ($3 OR NOT v.deleted)
         ORDER BY v.deleted, v.version DESC LIMIT 1"
    ))
    .bind(subject)
    .bind(fingerprint)
    .bind(deleted)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(subject_version))
}

/// The live versions of `subject`, oldest first, parsed.
async fn live_schemas(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<Vec<(i32, AvroSchema)>, RegistryError> {
    let rows = sqlx::query(&format!(
        "{VERSION_COLUMNS} WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version"
    ))
    .bind(subject)
    .fetch_all(&mut *conn)
    .await?;
    let mut schemas = Vec::with_capacity(rows.len());
    for row in rows {
        let v = subject_version(row);
        let stored = StoredSchema {
            text: v.schema,
            references: v.references,
        };
        schemas.push((v.version, parse_stored(conn, &stored).await?));
    }
    Ok(schemas)
}

/// The id of `candidate`'s schema, stored now if it is new.
async fn schema_id_for(
    conn: &mut PgConnection,
    candidate: &Candidate,
) -> Result<i32, RegistryError> {
    let existing: Option<i32> = sqlx::query_scalar("SELECT id FROM schemas WHERE fingerprint = $1")
        .bind(&candidate.fingerprint)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let refs = serde_json::to_value(&candidate.request.references).unwrap_or_default();
    Ok(sqlx::query_scalar(
        "INSERT INTO schemas (id, fingerprint, schema_type, schema_text, refs)
         SELECT COALESCE(MAX(id), 0) + 1, $1, 'AVRO', $2, $3 FROM schemas
         RETURNING id",
    )
    .bind(&candidate.fingerprint)
    .bind(&candidate.request.schema)
    .bind(refs)
    .fetch_one(&mut *conn)
    .await?)
}

async fn configured_level(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<Option<CompatibilityLevel>, RegistryError> {
    let level: Option<String> =
        sqlx::query_scalar("SELECT level FROM compatibility_config WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(level.and_then(|l| l.parse().ok()))
}

/// The subject's level, else the global level, else the default.
async fn effective_level(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<CompatibilityLevel, RegistryError> {
    if let Some(level) = configured_level(conn, subject).await? {
        return Ok(level);
    }
    Ok(configured_level(conn, "").await?.unwrap_or(DEFAULT_LEVEL))
}

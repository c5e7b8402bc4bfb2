//! The registry's behaviour over PostgreSQL: registration, lookup, listing, deletion,
//! compatibility, configuration and modes, with Confluent Schema Registry's semantics.

use std::fmt;
use std::str::FromStr;

use orderflow_avro_compat::{AvroSchema, CompatibilityLevel, Direction, check_level};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use tracing::instrument;

use crate::error::RegistryError;

/// The level used when no global level was ever set, as in Confluent Schema Registry.
pub const DEFAULT_LEVEL: CompatibilityLevel = CompatibilityLevel::Backward;

/// Every mutation of subjects, ids and modes holds this transaction-scoped advisory lock, so
/// ids and versions are assigned one registration at a time and a concurrent duplicate sees
/// the first.
const REGISTRY_LOCK: i64 = 0x6f72_6466_7265_6769;

/// How deep references may nest before the registry gives up (and calls it a cycle).
const MAX_REFERENCE_DEPTH: usize = 32;

/// The default context as Confluent names it in messages.
const CONTEXT: &str = ":.:";

/// A reference to a named type defined by another subject's version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema as a client submits it (register, lookup, compatibility). Unknown fields are
/// ignored, as Confluent's `RegisterSchemaRequest` ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Option<Vec<SchemaReference>>,
    /// Confluent's `Metadata` (`tags`, `properties`, `sensitive`), kept as given.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Confluent's `RuleSet` (`migrationRules`, `domainRules`, `encodingRules`), kept as given.
    #[serde(default)]
    pub rule_set: Option<Value>,
    /// The id to register under (IMPORT mode only).
    #[serde(default)]
    pub id: Option<i32>,
    /// The version to register as (IMPORT mode; otherwise it must be the next one).
    #[serde(default)]
    pub version: Option<i32>,
}

/// One version of a subject, as Confluent's `Schema` entity serializes it (AVRO's
/// `schemaType` is left out, as Confluent leaves it out).
#[derive(Debug, Clone, Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub guid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(rename = "ruleSet", skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<Value>,
    pub schema: String,
    /// Whether the version is soft-deleted; not serialized.
    #[serde(skip)]
    pub deleted: bool,
}

/// A stored schema.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    pub id: i32,
    pub guid: String,
    pub text: String,
    pub references: Vec<SchemaReference>,
    pub metadata: Option<Value>,
    pub rule_set: Option<Value>,
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

    fn describe(self) -> String {
        match self {
            VersionSelector::Latest => "latest".to_owned(),
            VersionSelector::Number(n) => n.to_string(),
        }
    }
}

/// Which versions a listing includes (Confluent's `LookupFilter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Live versions only.
    Exclude,
    /// Live and soft-deleted.
    Include,
    /// Soft-deleted only.
    Only,
    /// Every version, soft-deleted ones as negative numbers.
    AsNegative,
}

/// A registry or subject mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    /// Read-only too: Confluent's open-source registry treats it exactly as READONLY.
    ReadOnlyOverride,
    /// Registration only with a given id (and optionally version), without compatibility
    /// checks: what migrating from another registry needs.
    Import,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::ReadOnlyOverride => "READONLY_OVERRIDE",
            Mode::Import => "IMPORT",
        }
    }

    fn is_read_only(self) -> bool {
        matches!(self, Mode::ReadOnly | Mode::ReadOnlyOverride)
    }
}

impl FromStr for Mode {
    type Err = RegistryError;

    /// Case-insensitive, as Confluent upper-cases the requested mode.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Mode::ReadWrite,
            Mode::ReadOnly,
            Mode::ReadOnlyOverride,
            Mode::Import,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
        .ok_or(RegistryError::InvalidMode)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subject's (or the global) configuration: what Confluent's `Config` carries that this
/// registry acts on. `None` fields fall back to the global configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub level: Option<CompatibilityLevel>,
    pub normalize: Option<bool>,
}

/// A validated submission: its model, its identity and what gets stored.
struct Candidate {
    schema: AvroSchema,
    fingerprint: String,
    text: String,
    references: Vec<SchemaReference>,
    metadata: Option<Value>,
    rule_set: Option<Value>,
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
    /// subject keeps its id. `force` skips the compatibility check; in IMPORT mode the request
    /// carries the id (and optionally the version) and nothing is checked.
    #[instrument(skip_all, fields(subject = %subject))]
    pub async fn register(
        &self,
        subject: &str,
        request: SchemaRequest,
        normalize: bool,
        force: bool,
    ) -> Result<i32, RegistryError> {
        let given_id = request.id.filter(|id| *id >= 0);
        let requested_version = request.version.filter(|v| *v > 0);
        // Validation, and the answer for a schema the subject has already (what every
        // serializer asks at start), need no lock: only creating a version takes it.
        let mut conn = self.pool.acquire().await?;
        check_register_mode(mode_in_scope(&mut conn, subject).await?, subject, given_id)?;
        let normalize =
            normalize || config_in_scope(&mut conn, subject).await?.normalize == Some(true);
        let candidate = candidate(&mut conn, request, normalize).await?;
        if given_id.is_none()
            && let Some(existing) =
                live_version_of(&mut conn, subject, &candidate.fingerprint, false).await?
        {
            return Ok(existing.id);
        }
        drop(conn);

        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        // The mode may have changed while unlocked.
        check_register_mode(mode_in_scope(&mut tx, subject).await?, subject, given_id)?;
        let next_version: i32 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM subject_versions WHERE subject = $1",
        )
        .bind(subject)
        .fetch_one(&mut *tx)
        .await?;
        let existing = live_version_of(&mut tx, subject, &candidate.fingerprint, false).await?;

        let (id, version) = match given_id {
            None => {
                if let Some(existing) = existing {
                    tx.commit().await?;
                    return Ok(existing.id);
                }
                if !force {
                    let level = effective_level(&mut tx, subject).await?;
                    let earlier = live_schemas(&mut tx, subject).await?;
                    let earlier_refs: Vec<(u32, &AvroSchema)> =
                        earlier.iter().map(|(v, s)| (*v as u32, s)).collect();
                    let violations = check_level(level, &candidate.schema, &earlier_refs);
                    if !violations.is_empty() {
                        let details: Vec<String> =
                            violations.iter().map(ToString::to_string).collect();
                        tracing::info!(%level, violations = details.len(), "refused incompatible schema");
                        return Err(RegistryError::Incompatible(format!(
                            "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" at level {level}: {}",
                            details.join("; ")
                        )));
                    }
                }
                if requested_version.is_some_and(|v| v != next_version) {
                    return Err(RegistryError::InvalidSchema(
                        "Version is not one more than previous version".to_owned(),
                    ));
                }
                (schema_id_for(&mut tx, &candidate).await?, next_version)
            }
            Some(id) => {
                let version = requested_version.unwrap_or(next_version);
                if let Some(existing) = &existing {
                    if existing.id == id && existing.version == version {
                        tx.commit().await?;
                        return Ok(id);
                    }
                    if existing.id == id {
                        return Err(RegistryError::OperationNotPermitted(format!(
                            "schema id {id} is already version {} of subject {subject}",
                            existing.version
                        )));
                    }
                }
                import_schema(&mut tx, id, &candidate).await?;
                (id, version)
            }
        };
        sqlx::query(
            "INSERT INTO subject_versions (subject, version, schema_id) VALUES ($1, $2, $3)
             ON CONFLICT (subject, version)
             DO UPDATE SET schema_id = EXCLUDED.schema_id, deleted = false, created_at = now()",
        )
        .bind(subject)
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            id,
            version,
            imported = given_id.is_some(),
            "registered schema"
        );
        Ok(id)
    }

    /// The version of `subject` whose schema equals `request`.
    #[instrument(skip_all, fields(subject = %subject))]
    pub async fn lookup(
        &self,
        subject: &str,
        request: SchemaRequest,
        normalize: bool,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let normalize =
            normalize || config_in_scope(&mut conn, subject).await?.normalize == Some(true);
        let candidate = candidate(&mut conn, request, normalize).await?;
        match live_version_of(&mut conn, subject, &candidate.fingerprint, deleted).await? {
            Some(found) => Ok(found),
            None => {
                ensure_subject(&mut conn, subject, deleted).await?;
                Err(RegistryError::SchemaNotFound)
            }
        }
    }

    /// The schema with global id `id`, soft-deleted or not (consumers of old data need it); a
    /// schema whose versions were all permanently deleted is not found.
    pub async fn schema_by_id(&self, id: i32) -> Result<StoredSchema, RegistryError> {
        let row = sqlx::query(&format!(
            "{SCHEMA_COLUMNS} WHERE s.id = $1 AND EXISTS (
                 SELECT 1 FROM subject_versions v WHERE v.schema_id = s.id)"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| RegistryError::SchemaIdNotFound(id.to_string()))?;
        Ok(stored_schema(&row))
    }

    /// The highest id assigned (`fetchMaxId`).
    pub async fn max_id(&self) -> Result<i32, RegistryError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM schemas")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The schema with `guid`.
    pub async fn schema_by_guid(&self, guid: &str) -> Result<StoredSchema, RegistryError> {
        let not_found = || RegistryError::SchemaIdNotFound(guid.to_owned());
        let row = sqlx::query(&format!(
            "{SCHEMA_COLUMNS} WHERE s.guid::text = lower($1) AND EXISTS (
                 SELECT 1 FROM subject_versions v WHERE v.schema_id = s.id)"
        ))
        .bind(guid)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(not_found)?;
        Ok(stored_schema(&row))
    }

    /// The `(subject, version)` pairs that use schema `id`, of `subject` only when given.
    pub async fn versions_of_schema(
        &self,
        id: i32,
        subject: Option<&str>,
        deleted: bool,
    ) -> Result<Vec<(String, i32)>, RegistryError> {
        self.schema_by_id(id).await?;
        let rows = sqlx::query(
            "SELECT subject, version FROM subject_versions
             WHERE schema_id = $1 AND ($2 OR NOT deleted) AND ($3::text IS NULL OR subject = $3)
             ORDER BY subject, version",
        )
        .bind(id)
        .bind(deleted)
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The subjects that use schema `id`, of `subject` only when given.
    pub async fn subjects_of_schema(
        &self,
        id: i32,
        subject: Option<&str>,
        deleted: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let mut subjects: Vec<String> = self
            .versions_of_schema(id, subject, deleted)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        subjects.dedup();
        Ok(subjects)
    }

    /// Subjects starting with `prefix`: with a live version (`Exclude`), any (`Include`), or
    /// whose every version is soft-deleted (`Only`).
    pub async fn subjects(
        &self,
        prefix: &str,
        filter: Deleted,
    ) -> Result<Vec<String>, RegistryError> {
        let having = match filter {
            Deleted::Exclude => "bool_or(NOT deleted)",
            Deleted::Include | Deleted::AsNegative => "true",
            Deleted::Only => "bool_and(deleted)",
        };
        Ok(sqlx::query_scalar(&format!(
            "SELECT subject FROM subject_versions WHERE starts_with(subject, $1)
             GROUP BY subject HAVING {having} ORDER BY subject"
        ))
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The version numbers of `subject`.
    pub async fn versions(
        &self,
        subject: &str,
        filter: Deleted,
    ) -> Result<Vec<i32>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        ensure_subject(
            &mut conn,
            subject,
            filter == Deleted::Only || filter == Deleted::Include,
        )
        .await?;
        let rows = sqlx::query(
            "SELECT version, deleted FROM subject_versions WHERE subject = $1 ORDER BY version",
        )
        .bind(subject)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let (version, deleted): (i32, bool) = (r.get(0), r.get(1));
                match filter {
                    Deleted::Exclude => (!deleted).then_some(version),
                    Deleted::Include => Some(version),
                    Deleted::Only => deleted.then_some(version),
                    Deleted::AsNegative => Some(if deleted { -version } else { version }),
                }
            })
            .collect())
    }

    /// Every version of every subject starting with `prefix`, by subject then version; only
    /// each subject's latest with `latest_only`.
    pub async fn schemas(
        &self,
        prefix: &str,
        deleted: bool,
        latest_only: bool,
    ) -> Result<Vec<SubjectVersion>, RegistryError> {
        let rows = sqlx::query(&format!(
            "{VERSION_COLUMNS} WHERE starts_with(v.subject, $1) AND ($2 OR NOT v.deleted)
             ORDER BY v.subject, v.version"
        ))
        .bind(prefix)
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?;
        let mut versions: Vec<SubjectVersion> = rows.iter().map(subject_version).collect();
        if latest_only {
            // Sorted by subject then version: a version is the latest when the next row is of
            // another subject.
            let mut latest: Vec<SubjectVersion> = Vec::new();
            for v in versions {
                match latest.last_mut() {
                    Some(last) if last.subject == v.subject => *last = v,
                    _ => latest.push(v),
                }
            }
            versions = latest;
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

    /// The latest version of `subject` whose metadata properties hold every `(key, value)`.
    pub async fn latest_with_metadata(
        &self,
        subject: &str,
        properties: &[(String, String)],
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(&format!(
            "{VERSION_COLUMNS} WHERE v.subject = $1 AND ($2 OR NOT v.deleted) ORDER BY v.version DESC"
        ))
        .bind(subject)
        .bind(deleted)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        rows.iter()
            .map(subject_version)
            .find(|v| {
                let props = v
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("properties"))
                    .and_then(Value::as_object);
                properties.iter().all(|(key, value)| {
                    props
                        .and_then(|p| p.get(key))
                        .and_then(Value::as_str)
                        .is_some_and(|v| v == value)
                })
            })
            .ok_or(RegistryError::SchemaNotFound)
    }

    /// Soft-deletes (or, with `permanent`, removes a soft-deleted) subject; returns the
    /// versions deleted. Refused while another subject's schema references one of them.
    #[instrument(skip(self))]
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
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
        let all: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        if permanent && !live.is_empty() {
            return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
        }
        if !permanent && live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
        }
        refuse_if_read_only(mode_in_scope(&mut tx, subject).await?, subject)?;
        let versions = if permanent { all } else { live };
        for &version in &versions {
            let others: Vec<String> = referencing_subjects(&mut tx, subject, version, permanent)
                .await?
                .into_iter()
                .filter(|s| s != subject)
                .collect();
            if !others.is_empty() {
                return Err(RegistryError::ReferenceExists(schema_key(subject, version)));
            }
        }
        if permanent {
            for sql in [
                "DELETE FROM subject_versions WHERE subject = $1",
                "DELETE FROM compatibility_config WHERE subject = $1",
                "DELETE FROM registry_modes WHERE subject = $1",
            ] {
                sqlx::query(sql).bind(subject).execute(&mut *tx).await?;
            }
        } else {
            sqlx::query(
                "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND NOT deleted",
            )
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(?versions, permanent, "deleted subject");
        Ok(versions)
    }

    /// Soft-deletes (or, with `permanent`, removes a soft-deleted) version; returns its
    /// number. Refused while a schema references it.
    #[instrument(skip(self))]
    pub async fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<i32, RegistryError> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
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
        }
        refuse_if_read_only(mode_in_scope(&mut tx, subject).await?, subject)?;
        if !referencing_ids(&mut tx, subject, version, permanent)
            .await?
            .is_empty()
        {
            return Err(RegistryError::ReferenceExists(schema_key(subject, version)));
        }
        let sql = if permanent {
            "DELETE FROM subject_versions WHERE subject = $1 AND version = $2"
        } else {
            "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND version = $2"
        };
        sqlx::query(sql)
            .bind(subject)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, permanent, "deleted version");
        Ok(version)
    }

    /// Checks `request` against one version of `subject` (in the directions of the subject's
    /// level) or, with no selector, against the versions the level names (as registration
    /// would). Returns the violations as sentences; empty means compatible. As in Confluent,
    /// a subject without versions is compatible with anything when asked about `latest`.
    #[instrument(skip_all, fields(subject = %subject))]
    pub async fn check_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        request: SchemaRequest,
        normalize: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let earlier =
            match selector {
                None => live_schemas(&mut conn, subject).await?,
                Some(selector) => match version(&mut conn, subject, selector, false).await {
                    Ok(v) => {
                        let stored = StoredSchema {
                            id: v.id,
                            guid: v.guid,
                            text: v.schema,
                            references: v.references,
                            metadata: None,
                            rule_set: None,
                        };
                        vec![(v.version, parse_stored(&mut conn, &stored).await?)]
                    }
                    Err(
                        RegistryError::SubjectNotFound(_) | RegistryError::VersionNotFound { .. },
                    ) if selector == VersionSelector::Latest => Vec::new(),
                    Err(RegistryError::SubjectNotFound(_)) => {
                        return Err(RegistryError::VersionNotFound {
                            subject: subject.to_owned(),
                            version: selector.describe(),
                        });
                    }
                    Err(e) => return Err(e),
                },
            };
        let normalize =
            normalize || config_in_scope(&mut conn, subject).await?.normalize == Some(true);
        let candidate = candidate(&mut conn, request, normalize).await?;
        let level = effective_level(&mut conn, subject).await?;
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

    /// The configuration set for `subject` (or the global one, for `None`); the global one
    /// always exists, with the default level when never set.
    pub async fn config(&self, subject: Option<&str>) -> Result<Option<Config>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let found = configured(&mut conn, subject.unwrap_or("")).await?;
        Ok(match subject {
            Some(_) => found,
            None => Some(with_default_level(found.unwrap_or_default())),
        })
    }

    /// The configuration that applies to `subject`: its own, else the global one.
    pub async fn config_in_scope(&self, subject: &str) -> Result<Config, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        match configured(&mut conn, subject).await? {
            Some(config) => Ok(config),
            None => Ok(with_default_level(
                configured(&mut conn, "").await?.unwrap_or_default(),
            )),
        }
    }

    /// Merges `update`'s set fields into the configuration of `subject` (global for `None`);
    /// returns the result.
    #[instrument(skip(self))]
    pub async fn set_config(
        &self,
        subject: Option<&str>,
        update: Config,
    ) -> Result<Config, RegistryError> {
        let mut tx = self.pool.begin().await?;
        let key = subject.unwrap_or("");
        refuse_if_read_only(mode_in_scope(&mut tx, key).await?, key)?;
        let row = sqlx::query(
            "INSERT INTO compatibility_config (subject, level, normalize) VALUES ($1, $2, $3)
             ON CONFLICT (subject) DO UPDATE SET
                 level = COALESCE(EXCLUDED.level, compatibility_config.level),
                 normalize = COALESCE(EXCLUDED.normalize, compatibility_config.normalize)
             RETURNING level, normalize",
        )
        .bind(key)
        .bind(update.level.map(CompatibilityLevel::as_str))
        .bind(update.normalize)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(level = ?update.level, normalize = ?update.normalize, "set config");
        Ok(config_row(&row))
    }

    /// Removes the configuration of `subject` (global for `None`), returning what it was.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<Config, RegistryError> {
        let mut tx = self.pool.begin().await?;
        let key = subject.unwrap_or("");
        let old = configured(&mut tx, key).await?;
        let old = match (subject, old) {
            (Some(s), None) => return Err(RegistryError::SubjectNotFound(s.to_owned())),
            (None, old) => with_default_level(old.unwrap_or_default()),
            (Some(_), Some(old)) => old,
        };
        refuse_if_read_only(mode_in_scope(&mut tx, key).await?, key)?;
        sqlx::query("DELETE FROM compatibility_config WHERE subject = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(old)
    }

    /// The mode set for `subject`, or the global mode for `None` (READWRITE when never set).
    pub async fn mode(&self, subject: Option<&str>) -> Result<Option<Mode>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let found = configured_mode(&mut conn, subject.unwrap_or("")).await?;
        Ok(match subject {
            Some(_) => found,
            None => Some(found.unwrap_or(Mode::ReadWrite)),
        })
    }

    /// The mode that applies to `subject`.
    pub async fn mode_in_scope(&self, subject: &str) -> Result<Mode, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        mode_in_scope(&mut conn, subject).await
    }

    /// Sets the mode of `subject` (global for `None`). Entering IMPORT requires that no live
    /// subject is in scope (unless `force`), and then removes the soft-deleted versions there,
    /// as Confluent does, so imported ids and versions cannot collide with them.
    #[instrument(skip(self))]
    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: Mode,
        force: bool,
    ) -> Result<(), RegistryError> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        let key = subject.unwrap_or("");
        if mode == Mode::Import && mode_in_scope(&mut tx, key).await? != Mode::Import && !force {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM subject_versions
                                WHERE NOT deleted AND ($1::text IS NULL OR subject = $1))",
            )
            .bind(subject)
            .fetch_one(&mut *tx)
            .await?;
            if live {
                return Err(RegistryError::OperationNotPermitted(
                    "Cannot import since found existing subjects".to_owned(),
                ));
            }
            let remaining = sqlx::query(
                "SELECT subject, version FROM subject_versions WHERE $1::text IS NULL OR subject = $1",
            )
            .bind(subject)
            .fetch_all(&mut *tx)
            .await?;
            for row in &remaining {
                let (s, v): (String, i32) = (row.get(0), row.get(1));
                if !referencing_ids(&mut tx, &s, v, true).await?.is_empty() {
                    return Err(RegistryError::ReferenceExists(schema_key(&s, v)));
                }
            }
            sqlx::query("DELETE FROM subject_versions WHERE $1::text IS NULL OR subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO registry_modes (subject, mode) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET mode = EXCLUDED.mode",
        )
        .bind(key)
        .bind(mode.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(%mode, "set mode");
        Ok(())
    }

    /// Removes the mode of `subject` (global for `None`), returning what it was.
    pub async fn delete_mode(&self, subject: Option<&str>) -> Result<Mode, RegistryError> {
        let mut tx = self.pool.begin().await?;
        let key = subject.unwrap_or("");
        let old = configured_mode(&mut tx, key).await?;
        let old = match (subject, old) {
            (Some(s), None) => return Err(RegistryError::SubjectNotFound(s.to_owned())),
            (_, old) => old.unwrap_or(Mode::ReadWrite),
        };
        sqlx::query("DELETE FROM registry_modes WHERE subject = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(old)
    }

    /// The ids of schemas that reference `subject`'s version; only those still used by a live
    /// version unless `deleted`.
    pub async fn referenced_by(
        &self,
        subject: &str,
        selector: VersionSelector,
        deleted: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        let v = version(&mut conn, subject, selector, true).await?;
        referencing_ids(&mut conn, subject, v.version, deleted).await
    }
}

async fn lock(conn: &mut PgConnection) -> Result<(), RegistryError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(REGISTRY_LOCK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Confluent's rule for registering: never in a read-only mode; with an id only in IMPORT,
/// without one only in READWRITE.
fn check_register_mode(
    mode: Mode,
    subject: &str,
    given_id: Option<i32>,
) -> Result<(), RegistryError> {
    refuse_if_read_only(mode, subject)?;
    match (given_id, mode) {
        (Some(_), Mode::Import) | (None, Mode::ReadWrite) => Ok(()),
        (Some(_), _) => Err(RegistryError::OperationNotPermitted(format!(
            "Subject {subject} in context {CONTEXT} is not in import mode"
        ))),
        (None, _) => Err(RegistryError::OperationNotPermitted(format!(
            "Subject {subject} in context {CONTEXT} is not in read-write mode"
        ))),
    }
}

fn refuse_if_read_only(mode: Mode, subject: &str) -> Result<(), RegistryError> {
    if mode.is_read_only() {
        let subject = if subject.is_empty() {
            "(global)"
        } else {
            subject
        };
        return Err(RegistryError::OperationNotPermitted(format!(
            "Subject {subject} in context {CONTEXT} is in read-only mode"
        )));
    }
    Ok(())
}

/// Confluent's rendering of a subject version's key, as its 42206 message shows it.
fn schema_key(subject: &str, version: i32) -> String {
    format!("{{magic=1,keytype=SCHEMA,subject={subject},version={version}}}")
}

/// JSON with object keys sorted: metadata and rule sets compare by content, not key order.
fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(list) => {
            let parts: Vec<String> = list.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Checks a rule set's shape the way Confluent's `RuleSet.validate` does in essence: each
/// rule list is an array of rules, each rule named, names unique within the set.
fn validate_rule_set(rule_set: &Value) -> Result<(), RegistryError> {
    let invalid = |m: String| Err(RegistryError::InvalidRuleSet(m));
    let Some(object) = rule_set.as_object() else {
        return invalid("ruleSet must be an object".to_owned());
    };
    let mut names = Vec::new();
    for kind in ["migrationRules", "domainRules", "encodingRules"] {
        let rules = match object.get(kind) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(rules)) => rules,
            Some(_) => return invalid(format!("{kind} must be an array")),
        };
        for rule in rules {
            let name = rule.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                return invalid(format!("a rule of {kind} has no name"));
            }
            if names.contains(&name) {
                return invalid(format!("Found rule with duplicate name '{name}'"));
            }
            names.push(name);
        }
    }
    Ok(())
}

/// Validates a submission: AVRO only, references resolvable, schema valid. With
/// `normalize`, references are sorted and deduplicated first (Confluent's normalization);
/// the schema's own normalized form is what identity uses either way.
async fn candidate(
    conn: &mut PgConnection,
    request: SchemaRequest,
    normalize: bool,
) -> Result<Candidate, RegistryError> {
    if let Some(kind) = &request.schema_type
        && !kind.eq_ignore_ascii_case("AVRO")
    {
        return Err(RegistryError::InvalidSchema(format!(
            "schema type '{kind}' is not supported: this registry stores AVRO schemas only"
        )));
    }
    let text = request.schema.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(RegistryError::InvalidSchema(
            "the schema is empty".to_owned(),
        ));
    }
    let mut references = request.references.unwrap_or_default();
    if normalize {
        references.sort();
        references.dedup();
    }
    let metadata = request.metadata.filter(|m| !m.is_null());
    let rule_set = request.rule_set.filter(|r| !r.is_null());
    if let Some(rule_set) = &rule_set {
        validate_rule_set(rule_set)?;
    }
    let stored = StoredSchema {
        id: 0,
        guid: String::new(),
        text: text.clone(),
        references: references.clone(),
        metadata: None,
        rule_set: None,
    };
    let schema = parse_stored(conn, &stored).await?;
    let refs = serde_json::to_string(&references).unwrap_or_default();
    let mut identity = format!("{}\n{refs}", schema.normalized());
    // Metadata and rule sets are part of what a version is (Confluent gives a schema with
    // other metadata a new id); schemas without them keep the fingerprints they always had.
    if metadata.is_some() || rule_set.is_some() {
        for part in [&metadata, &rule_set] {
            identity.push('\n');
            identity.push_str(&part.as_ref().map(canonical_json).unwrap_or_default());
        }
    }
    let fingerprint = hex::encode(Sha256::digest(identity));
    Ok(Candidate {
        schema,
        fingerprint,
        text,
        references,
        metadata,
        rule_set,
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

fn refs_from_json(value: Value) -> Vec<SchemaReference> {
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

const SCHEMA_COLUMNS: &str =
    "SELECT s.id, s.guid::text, s.schema_text, s.refs, s.metadata, s.rule_set FROM schemas s";

fn stored_schema(row: &sqlx::postgres::PgRow) -> StoredSchema {
    StoredSchema {
        id: row.get(0),
        guid: row.get(1),
        text: row.get(2),
        references: refs_from_json(row.get(3)),
        metadata: row.get(4),
        rule_set: row.get(5),
    }
}

const VERSION_COLUMNS: &str = "SELECT v.subject, s.id, v.version, s.schema_text, s.refs,
            s.guid::text, s.metadata, s.rule_set, v.deleted
     FROM subject_versions v JOIN schemas s ON s.id = v.schema_id";

fn subject_version(row: &sqlx::postgres::PgRow) -> SubjectVersion {
    SubjectVersion {
        subject: row.get(0),
        id: row.get(1),
        version: row.get(2),
        schema: row.get(3),
        references: refs_from_json(row.get(4)),
        guid: row.get(5),
        metadata: row.get(6),
        rule_set: row.get(7),
        deleted: row.get(8),
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
    row.as_ref()
        .map(subject_version)
        .ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: selector.describe(),
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
    Ok(row.as_ref().map(subject_version))
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
        let v = subject_version(&row);
        let stored = StoredSchema {
            id: v.id,
            guid: v.guid,
            text: v.schema,
            references: v.references,
            metadata: None,
            rule_set: None,
        };
        schemas.push((v.version, parse_stored(conn, &stored).await?));
    }
    Ok(schemas)
}

/// The ids of schemas referencing `subject`'s `version` and still used by some version (a
/// live one, unless `deleted`).
async fn referencing_ids(
    conn: &mut PgConnection,
    subject: &str,
    version: i32,
    deleted: bool,
) -> Result<Vec<i32>, RegistryError> {
    Ok(sqlx::query_scalar(
        "SELECT s.id FROM schemas s
         WHERE s.refs @> jsonb_build_array(jsonb_build_object('subject', $1::text, 'version', $2::int))
           AND EXISTS (SELECT 1 FROM subject_versions v
                       WHERE v.schema_id = s.id AND ($3 OR NOT v.deleted))
         ORDER BY s.id",
    )
    .bind(subject)
    .bind(version)
    .bind(deleted)
    .fetch_all(&mut *conn)
    .await?)
}

/// The subjects whose versions use a schema referencing `subject`'s `version`.
async fn referencing_subjects(
    conn: &mut PgConnection,
    subject: &str,
    version: i32,
    deleted: bool,
) -> Result<Vec<String>, RegistryError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT v.subject FROM schemas s JOIN subject_versions v ON v.schema_id = s.id
         WHERE s.refs @> jsonb_build_array(jsonb_build_object('subject', $1::text, 'version', $2::int))
           AND ($3 OR NOT v.deleted)",
    )
    .bind(subject)
    .bind(version)
    .bind(deleted)
    .fetch_all(&mut *conn)
    .await?)
}

/// Inserts `candidate` under the imported `id` unless it is there already. An id that holds
/// another schema, or a schema that already has another id, is refused.
async fn import_schema(
    conn: &mut PgConnection,
    id: i32,
    candidate: &Candidate,
) -> Result<(), RegistryError> {
    let at_id: Option<String> = sqlx::query_scalar("SELECT fingerprint FROM schemas WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match at_id {
        Some(fingerprint) if fingerprint == candidate.fingerprint => return Ok(()),
        Some(_) => {
            return Err(RegistryError::OperationNotPermitted(format!(
                "Overwrite new schema with id {id} in context {CONTEXT} is not permitted."
            )));
        }
        None => {}
    }
    let other: Option<i32> = sqlx::query_scalar("SELECT id FROM schemas WHERE fingerprint = $1")
        .bind(&candidate.fingerprint)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(other) = other {
        return Err(RegistryError::IdDoesNotMatch(format!(
            "The schema is registered with id {other} already; this registry gives a schema one id, so it cannot be imported with id {id}"
        )));
    }
    insert_schema(conn, Some(id), candidate).await?;
    Ok(())
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
    match existing {
        Some(id) => Ok(id),
        None => insert_schema(conn, None, candidate).await,
    }
}

/// Stores a new schema under `id`, or under `max + 1`.
async fn insert_schema(
    conn: &mut PgConnection,
    id: Option<i32>,
    candidate: &Candidate,
) -> Result<i32, RegistryError> {
    let refs = serde_json::to_value(&candidate.references).unwrap_or_default();
    Ok(sqlx::query_scalar(
        "INSERT INTO schemas (id, fingerprint, schema_type, schema_text, refs, metadata, rule_set)
         SELECT COALESCE($1, COALESCE(MAX(id), 0) + 1), $2, 'AVRO', $3, $4, $5, $6 FROM schemas
         RETURNING id",
    )
    .bind(id)
    .bind(&candidate.fingerprint)
    .bind(&candidate.text)
    .bind(refs)
    .bind(&candidate.metadata)
    .bind(&candidate.rule_set)
    .fetch_one(&mut *conn)
    .await?)
}

fn config_row(row: &sqlx::postgres::PgRow) -> Config {
    let level: Option<String> = row.get(0);
    Config {
        level: level.and_then(|l| l.parse().ok()),
        normalize: row.get(1),
    }
}

async fn configured(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<Option<Config>, RegistryError> {
    let row = sqlx::query("SELECT level, normalize FROM compatibility_config WHERE subject = $1")
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.as_ref().map(config_row))
}

fn with_default_level(config: Config) -> Config {
    Config {
        level: Some(config.level.unwrap_or(DEFAULT_LEVEL)),
        ..config
    }
}

/// The subject's settings, each falling back to the global one.
async fn config_in_scope(conn: &mut PgConnection, subject: &str) -> Result<Config, RegistryError> {
    let own = configured(conn, subject).await?.unwrap_or_default();
    let global = configured(conn, "").await?.unwrap_or_default();
    Ok(Config {
        level: own.level.or(global.level),
        normalize: own.normalize.or(global.normalize),
    })
}

/// The subject's level, else the global level, else the default.
async fn effective_level(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<CompatibilityLevel, RegistryError> {
    Ok(config_in_scope(conn, subject)
        .await?
        .level
        .unwrap_or(DEFAULT_LEVEL))
}

async fn configured_mode(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<Option<Mode>, RegistryError> {
    let mode: Option<String> =
        sqlx::query_scalar("SELECT mode FROM registry_modes WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(mode.and_then(|m| m.parse().ok()))
}

/// The subject's mode, else the global mode, else READWRITE.
async fn mode_in_scope(conn: &mut PgConnection, subject: &str) -> Result<Mode, RegistryError> {
    if let Some(mode) = configured_mode(conn, subject).await? {
        return Ok(mode);
    }
    Ok(configured_mode(conn, "").await?.unwrap_or(Mode::ReadWrite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_case_insensitively_and_refuse_unknown_ones() {
        assert_eq!(
            "readonly_override".parse::<Mode>().unwrap(),
            Mode::ReadOnlyOverride
        );
        assert_eq!("IMPORT".parse::<Mode>().unwrap(), Mode::Import);
        assert!(matches!(
            "FORWARD".parse::<Mode>(),
            Err(RegistryError::InvalidMode)
        ));
        assert!(Mode::ReadOnlyOverride.is_read_only() && !Mode::Import.is_read_only());
    }

    #[test]
    fn metadata_compares_by_content_not_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"properties":{"b":"2","a":"1"},"tags":{}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"tags":{},"properties":{"a":"1","b":"2"}}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn rule_sets_need_named_unique_rules() {
        let ok = serde_json::json!({"domainRules": [{"name": "a", "kind": "CONDITION"}]});
        assert!(validate_rule_set(&ok).is_ok());
        let unnamed = serde_json::json!({"domainRules": [{"kind": "CONDITION"}]});
        assert!(validate_rule_set(&unnamed).is_err());
        let twice =
            serde_json::json!({"domainRules": [{"name": "a"}], "migrationRules": [{"name": "a"}]});
        assert!(validate_rule_set(&twice).is_err());
    }
}

//! The schema-evolution gate behind `orderflow schema check` and `orderflow schema lock`:
//! every version of every subject must be compatible with the earlier ones at the subject's
//! level, published version files never change, and (online) a registry accepts them all.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use orderflow_avro_compat::{
    AvroSchema, CompatibilityLevel, Direction, Incompatibility, check_level,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The lock file, relative to the schemas directory.
pub const LOCK_FILE: &str = "published.lock";
/// The comment a new lock file starts with.
const LOCK_HEADER: &str = "# Published schema versions and their sha256. A listed file never changes: add a new\n\
     # version instead. Entries are added by `orderflow schema lock`, never rewritten.\n";
/// The subjects file, relative to the schemas directory.
pub const SUBJECTS_FILE: &str = "schemas.toml";

/// Why the gate could not run at all (as opposed to finding problems, which go in a [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is invalid: {message}")]
    Config { path: PathBuf, message: String },
    /// The registry client cannot be made (say, an unreadable CA file).
    #[error("{0}")]
    Settings(#[from] orderflow_events::CodecError),
    #[error("registry at {url} is unreachable: {source}")]
    Registry {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// One thing the gate rejects.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A version breaks the subject's level against an earlier version.
    Incompatible {
        subject: String,
        level: CompatibilityLevel,
        version: u32,
        earlier: u32,
        direction: Direction,
        incompatibility: Incompatibility,
    },
    /// A version file is not a valid Avro schema, or not the subject's record.
    InvalidSchema {
        subject: String,
        file: String,
        message: String,
    },
    /// Version files are not numbered 1, 2, 3...
    VersionGap { subject: String, message: String },
    /// A published file's content no longer matches the lock.
    PublishedFileChanged {
        file: String,
        locked: String,
        actual: String,
    },
    /// A locked file no longer exists.
    PublishedFileMissing { file: String },
    /// A version file not yet in the lock.
    Unlocked { file: String },
    /// The registry refused a version.
    Refused {
        subject: String,
        version: u32,
        status: u16,
        message: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Incompatible {
                subject,
                level,
                version,
                earlier,
                direction,
                incompatibility: i,
            } => {
                let flow = match direction {
                    Direction::Backward => {
                        format!("v{version} cannot read data written with v{earlier}")
                    }
                    Direction::Forward => {
                        format!("v{earlier} cannot read data written with v{version}")
                    }
                };
                write!(
                    f,
                    "{subject}: v{version} is incompatible with v{earlier} at level {level}: {flow}: field {} breaks {}: {} (reader: {}, writer: {})",
                    i.path, i.rule, i.message, i.reader, i.writer
                )
            }
            Problem::InvalidSchema {
                subject,
                file,
                message,
            } => write!(f, "{subject}: {file}: {message}"),
            Problem::VersionGap { subject, message } => write!(f, "{subject}: {message}"),
            Problem::PublishedFileChanged {
                file,
                locked,
                actual,
            } => write!(
                f,
                "{file} is published and was edited (locked sha256 {locked}, now {actual}); add a new version instead"
            ),
            Problem::PublishedFileMissing { file } => {
                write!(
                    f,
                    "{file} is published (in {LOCK_FILE}) but no longer exists"
                )
            }
            Problem::Unlocked { file } => write!(
                f,
                "{file} is not in {LOCK_FILE}; once it is final, run `orderflow schema lock`"
            ),
            Problem::Refused {
                subject,
                version,
                status,
                message,
            } => write!(
                f,
                "{subject}: the registry refused v{version} (HTTP {status}): {message}"
            ),
        }
    }
}

/// What a subject looks like on disk.
#[derive(Debug, Clone)]
pub struct SubjectSummary {
    pub subject: String,
    pub level: CompatibilityLevel,
    pub versions: u32,
}

/// The gate's findings; the check passes when there are no problems.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub subjects: Vec<SubjectSummary>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.subjects {
            writeln!(f, "{}: {} version(s) at {}", s.subject, s.versions, s.level)?;
        }
        if self.problems.is_empty() {
            write!(f, "ok: {} subject(s), no problems", self.subjects.len())
        } else {
            writeln!(f, "{} problem(s):", self.problems.len())?;
            for (i, p) in self.problems.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectsFile {
    default_compatibility: String,
    #[serde(default)]
    subject: Vec<SubjectEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectEntry {
    topic: String,
    record: String,
    dir: String,
    compatibility: Option<String>,
    reason: Option<String>,
}

/// One version file.
#[derive(Debug, Clone)]
pub struct VersionFile {
    pub number: u32,
    /// Relative to the schemas directory, with `/` separators (the lock's key).
    pub file: String,
    pub text: String,
}

/// A subject as declared in `schemas.toml`, with its version files.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `<topic>-<record full name>` (TopicRecordNameStrategy).
    pub name: String,
    pub record: String,
    pub level: CompatibilityLevel,
    pub versions: Vec<VersionFile>,
}

/// Loads `schemas.toml` and every subject's `v<N>.avsc`; structural problems (gaps) are
/// pushed onto `problems`.
pub fn load_subjects(
    schemas_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Result<Vec<Subject>, GateError> {
    let path = schemas_dir.join(SUBJECTS_FILE);
    let text = read(&path)?;
    let config_error = |message: String| GateError::Config {
        path: path.clone(),
        message,
    };
    let file: SubjectsFile = toml::from_str(&text).map_err(|e| config_error(e.to_string()))?;
    let default_level: CompatibilityLevel = file
        .default_compatibility
        .parse()
        .map_err(|e: orderflow_avro_compat::InvalidLevel| config_error(e.to_string()))?;
    let mut subjects = Vec::new();
    for entry in file.subject {
        let name = format!("{}-{}", entry.topic, entry.record);
        let level = match &entry.compatibility {
            None => default_level,
            Some(raw) => {
                let level: CompatibilityLevel =
                    raw.parse()
                        .map_err(|e: orderflow_avro_compat::InvalidLevel| {
                            config_error(format!("{name}: {e}"))
                        })?;
                if level != default_level
                    && entry.reason.as_deref().is_none_or(|r| r.trim().is_empty())
                {
                    return Err(config_error(format!(
                        "{name} chooses {level} instead of {default_level} and must give a `reason`"
                    )));
                }
                level
            }
        };
        let dir = schemas_dir.join(&entry.dir);
        let mut numbered = BTreeMap::new();
        let listing = std::fs::read_dir(&dir).map_err(|source| GateError::Io {
            path: dir.clone(),
            source,
        })?;
        for item in listing {
            let item = item.map_err(|source| GateError::Io {
                path: dir.clone(),
                source,
            })?;
            let file_name = item.file_name().to_string_lossy().into_owned();
            let number = file_name
                .strip_prefix('v')
                .and_then(|rest| rest.strip_suffix(".avsc"))
                .and_then(|n| n.parse::<u32>().ok());
            match number {
                Some(n) => {
                    numbered.insert(n, file_name);
                }
                None if file_name.ends_with(".avsc") => problems.push(Problem::VersionGap {
                    subject: name.clone(),
                    message: format!("{file_name} is not named v<N>.avsc"),
                }),
                None => {}
            }
        }
        let mut versions = Vec::new();
        for (expected, (number, file_name)) in (1u32..).zip(numbered) {
            if number != expected {
                problems.push(Problem::VersionGap {
                    subject: name.clone(),
                    message: format!("versions must be numbered from 1 without gaps: found v{number} where v{expected} was expected"),
                });
                break;
            }
            let file = format!("{}/{file_name}", entry.dir.trim_end_matches('/'));
            let text = read(&schemas_dir.join(&file))?;
            versions.push(VersionFile { number, file, text });
        }
        if versions.is_empty() {
            problems.push(Problem::VersionGap {
                subject: name.clone(),
                message: format!("{} has no v1.avsc", entry.dir),
            });
        }
        subjects.push(Subject {
            name,
            record: entry.record,
            level,
            versions,
        });
    }
    Ok(subjects)
}

/// The offline check: every version against every earlier one at its subject's level, and
/// the published files against the lock.
pub fn check_offline(schemas_dir: &Path) -> Result<Report, GateError> {
    let mut report = Report::default();
    let subjects = load_subjects(schemas_dir, &mut report.problems)?;
    for subject in &subjects {
        check_subject(subject, &mut report.problems);
        report.subjects.push(SubjectSummary {
            subject: subject.name.clone(),
            level: subject.level,
            versions: subject.versions.len() as u32,
        });
    }
    check_lock(schemas_dir, &subjects, &mut report.problems)?;
    Ok(report)
}

fn check_subject(subject: &Subject, problems: &mut Vec<Problem>) {
    let mut parsed: Vec<(u32, AvroSchema)> = Vec::new();
    for v in &subject.versions {
        let schema = match AvroSchema::parse(&v.text) {
            Ok(s) => s,
            Err(e) => {
                problems.push(Problem::InvalidSchema {
                    subject: subject.name.clone(),
                    file: v.file.clone(),
                    message: e.to_string(),
                });
                return;
            }
        };
        if schema.full_name().as_deref() != Some(subject.record.as_str()) {
            problems.push(Problem::InvalidSchema {
                subject: subject.name.clone(),
                file: v.file.clone(),
                message: format!(
                    "the schema's record is {}, but schemas.toml says {}",
                    schema
                        .full_name()
                        .unwrap_or_else(|| "not a named type".to_owned()),
                    subject.record
                ),
            });
            return;
        }
        let earlier: Vec<(u32, &AvroSchema)> = parsed.iter().map(|(n, s)| (*n, s)).collect();
        for violation in check_level(subject.level, &schema, &earlier) {
            problems.push(Problem::Incompatible {
                subject: subject.name.clone(),
                level: subject.level,
                version: v.number,
                earlier: violation.version,
                direction: violation.direction,
                incompatibility: violation.incompatibility,
            });
        }
        parsed.push((v.number, schema));
    }
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The lock's entries: file → sha256.
fn read_lock(schemas_dir: &Path) -> Result<BTreeMap<String, String>, GateError> {
    let path = schemas_dir.join(LOCK_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(GateError::Io { path, source }),
    };
    let mut entries = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hash, file) =
            line.split_once(char::is_whitespace)
                .ok_or_else(|| GateError::Config {
                    path: path.clone(),
                    message: format!("line {} is not `<sha256>  <file>`", n + 1),
                })?;
        entries.insert(file.trim().to_owned(), hash.to_owned());
    }
    Ok(entries)
}

fn check_lock(
    schemas_dir: &Path,
    subjects: &[Subject],
    problems: &mut Vec<Problem>,
) -> Result<(), GateError> {
    let lock = read_lock(schemas_dir)?;
    let mut on_disk = BTreeMap::new();
    for v in subjects.iter().flat_map(|s| &s.versions) {
        on_disk.insert(v.file.clone(), sha256(&v.text));
    }
    for (file, locked) in &lock {
        match on_disk.get(file) {
            None if schemas_dir.join(file).exists() => {
                let actual = sha256(&read(&schemas_dir.join(file))?);
                if &actual != locked {
                    problems.push(Problem::PublishedFileChanged {
                        file: file.clone(),
                        locked: locked.clone(),
                        actual,
                    });
                }
            }
            None => problems.push(Problem::PublishedFileMissing { file: file.clone() }),
            Some(actual) if actual != locked => problems.push(Problem::PublishedFileChanged {
                file: file.clone(),
                locked: locked.clone(),
                actual: actual.clone(),
            }),
            Some(_) => {}
        }
    }
    for file in on_disk.keys().filter(|f| !lock.contains_key(*f)) {
        problems.push(Problem::Unlocked { file: file.clone() });
    }
    Ok(())
}

/// Adds every version file missing from the lock, never rewriting an existing entry; returns
/// the files added.
pub fn update_lock(schemas_dir: &Path) -> Result<Vec<String>, GateError> {
    let mut problems = Vec::new();
    let subjects = load_subjects(schemas_dir, &mut problems)?;
    let lock = read_lock(schemas_dir)?;
    let path = schemas_dir.join(LOCK_FILE);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LOCK_HEADER.to_owned(),
        Err(source) => return Err(GateError::Io { path, source }),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let mut added = Vec::new();
    for v in subjects.iter().flat_map(|s| &s.versions) {
        if !lock.contains_key(&v.file) {
            text.push_str(&format!("{}  {}\n", sha256(&v.text), v.file));
            added.push(v.file.clone());
        }
    }
    if !added.is_empty() {
        std::fs::write(&path, text).map_err(|source| GateError::Io { path, source })?;
    }
    Ok(added)
}

/// The online check: sets each subject's level on the registry at `registry_url`, then
/// registers every version in order, stopping at the first refusal. With `user_info`
/// (`user:password`, an admin of the registry) every request authenticates with it; with a
/// CA file, an `https://` registry's certificate is checked against that CA (PEM).
pub async fn check_online(
    schemas_dir: &Path,
    registry: &orderflow_events::RegistryAccess<'_>,
) -> Result<Report, GateError> {
    let (registry_url, user_info) = (registry.url, registry.user_info);
    let mut report = Report::default();
    let subjects = load_subjects(schemas_dir, &mut report.problems)?;
    if !report.is_ok() {
        return Ok(report);
    }
    let base = registry_url.trim_end_matches('/');
    let unreachable = |source| GateError::Registry {
        url: base.to_owned(),
        source,
    };
    let client = registry.http_client()?.build().map_err(unreachable)?;
    let credentials = user_info.map(|u| u.split_once(':').unwrap_or((u, "")));
    let authenticated = |request: reqwest::RequestBuilder| match credentials {
        Some((user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    };
    for subject in &subjects {
        report.subjects.push(SubjectSummary {
            subject: subject.name.clone(),
            level: subject.level,
            versions: subject.versions.len() as u32,
        });
        let path_subject = subject.name.replace('/', "%2F");
        let response = authenticated(client.put(format!("{base}/config/{path_subject}")))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": subject.level.as_str() }))
            .send()
            .await
            .map_err(unreachable)?;
        if let Some(problem) = refusal(subject, 0, response).await {
            report.problems.push(problem);
            return Ok(report);
        }
        for v in &subject.versions {
            let response =
                authenticated(client.post(format!("{base}/subjects/{path_subject}/versions")))
                    .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                    .json(&serde_json::json!({ "schema": v.text, "schemaType": "AVRO" }))
                    .send()
                    .await
                    .map_err(unreachable)?;
            if let Some(problem) = refusal(subject, v.number, response).await {
                report.problems.push(problem);
                return Ok(report);
            }
            tracing::info!(subject = %subject.name, version = v.number, "registered");
        }
    }
    Ok(report)
}

/// The problem a non-success response describes (version 0 stands for the level update).
async fn refusal(subject: &Subject, version: u32, response: reqwest::Response) -> Option<Problem> {
    let status = response.status();
    if status.is_success() {
        return None;
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or(body);
    let message = if version == 0 {
        format!("setting compatibility {} failed: {message}", subject.level)
    } else {
        message
    };
    Some(Problem::Refused {
        subject: subject.name.clone(),
        version,
        status: status.as_u16(),
        message,
    })
}

fn read(path: &Path) -> Result<String, GateError> {
    std::fs::read_to_string(path).map_err(|source| GateError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The schemas directory a command uses by default: `ORDERFLOW_SCHEMAS_DIR`, else `schemas`
/// under the current directory (the repository's root).
pub fn schemas_dir() -> std::path::PathBuf {
    std::env::var_os("ORDERFLOW_SCHEMAS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("schemas"))
}

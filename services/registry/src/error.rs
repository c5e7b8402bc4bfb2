//! The registry's errors and their one mapping to Confluent's HTTP status and error codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything a registry request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound { subject: String, version: String },
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Schema {0} not found")]
    SchemaIdNotFound(String),
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error(
        "Version {version} of subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted { subject: String, version: i32 },
    #[error(
        "Version {version} of subject '{subject}' was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted { subject: String, version: i32 },
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotFound(String),
    #[error("{0}")]
    Incompatible(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error("{0}")]
    InvalidCompatibilityLevel(String),
    #[error("Invalid mode. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT.")]
    InvalidMode,
    /// A write the subject's (or the registry's) mode forbids, or an overwrite IMPORT refuses.
    #[error("{0}")]
    OperationNotPermitted(String),
    /// Deleting a version another schema references; the key names subject and version.
    #[error("One or more references exist to the schema {0}.")]
    ReferenceExists(String),
    #[error("{0}")]
    IdDoesNotMatch(String),
    #[error("The specified subject '{0}' is not a valid.")]
    InvalidSubject(String),
    #[error(
        "Subject '{0}' names a context other than the default context ':.:'; this registry has only the default context"
    )]
    UnsupportedContext(String),
    #[error(
        "Register operation failed because schema is too large: the request body is over \
         {limit} bytes"
    )]
    SchemaTooLarge { limit: usize },
    #[error("{0}")]
    InvalidRuleSet(String),
    /// A body that is not JSON, or JSON of the wrong shape (Confluent: Jackson's exceptions).
    #[error("{0}")]
    BadRequest(String),
    /// A body that is missing, or a value the endpoint cannot take (Confluent: a constraint
    /// violation).
    #[error("{0}")]
    UnprocessableEntity(String),
    /// What the HTTP layer answers by itself: an unknown route, a method the route does not
    /// take, a path or query parameter that does not convert (JAX-RS answers those with 404).
    #[error("HTTP {} {}", .0.as_u16(), .0.canonical_reason().unwrap_or(""))]
    Http(StatusCode),
    /// The database failed; the cause is logged, never sent.
    #[error("Error in the backend data store")]
    Store(#[from] sqlx::Error),
}

impl RegistryError {
    /// The HTTP status and Confluent error code.
    pub fn codes(&self) -> (StatusCode, u32) {
        use RegistryError::*;
        match self {
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            SchemaNotFound | SchemaIdNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            SubjectModeNotFound(_) => (StatusCode::NOT_FOUND, 40409),
            Incompatible(_) => (StatusCode::CONFLICT, 409),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            InvalidMode => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
            OperationNotPermitted(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42205),
            ReferenceExists(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42206),
            IdDoesNotMatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42207),
            InvalidSubject(_) | UnsupportedContext(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            SchemaTooLarge { .. } => (StatusCode::UNPROCESSABLE_ENTITY, 42209),
            InvalidRuleSet(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42210),
            BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            UnprocessableEntity(_) => (StatusCode::UNPROCESSABLE_ENTITY, 422),
            Http(status) => (*status, u32::from(status.as_u16())),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        if let RegistryError::Store(source) = &self {
            tracing::error!(error = %source, "store error");
        }
        error_body(status, code, &self.to_string())
    }
}

/// Confluent's error body, `{"error_code": N, "message": "..."}`, with its status.
pub(crate) fn error_body(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({ "error_code": code, "message": message });
    (status, Json(body)).into_response()
}

//! The analytics service's errors for its API, and the one place each becomes a gRPC status.

use orderflow_domain::ValidationError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A request field is invalid; the error names it.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed: transient (retry) or not, decided where the error is mapped.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<AnalyticsError> for Status {
    fn from(e: AnalyticsError) -> Status {
        match &e {
            AnalyticsError::Invalid(v) => Status::invalid_argument(v.to_string()),
            // Internal details go to the log, never to the client.
            AnalyticsError::Database(source) if orderflow_db::is_transient(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("analytics storage is temporarily unavailable, retry")
            }
            AnalyticsError::Database(source) => {
                tracing::error!(error = %source, "database error");
                Status::internal("internal error")
            }
        }
    }
}

//! The history service's errors for its API, and the one place each becomes a gRPC status.
//! (Its consumer's failures are the platform's: a database error keeps its transient-or-not
//! class, an event about no valid order is dead-lettered.)

use orderflow_domain::ValidationError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A request field is invalid; the error names it.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed: transient (retry) or not, decided where the error is mapped.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<HistoryError> for Status {
    fn from(e: HistoryError) -> Status {
        match &e {
            HistoryError::Invalid(v) => Status::invalid_argument(v.to_string()),
            // Internal details go to the log, never to the client.
            HistoryError::Database(source) if orderflow_db::is_transient(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("history storage is temporarily unavailable, retry")
            }
            HistoryError::Database(source) => {
                tracing::error!(error = %source, "database error");
                Status::internal("internal error")
            }
        }
    }
}

//! The inventory service's errors, and the one place each becomes a gRPC status or a
//! consumer outcome.

use orderflow_domain::ValidationError;
use orderflow_platform::HandleError;
use tonic::Status;

/// Everything that can go wrong in the inventory service, for a call or for an event.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A request or event field is invalid (or a change would leave the allowed range); the
    /// error names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The database failed: transient (retry) or not, decided where the error is mapped.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<InventoryError> for Status {
    fn from(e: InventoryError) -> Status {
        match e {
            InventoryError::Invalid(v) => Status::invalid_argument(v.to_string()),
            // Internal details go to the log, never to the client.
            InventoryError::Database(source) if orderflow_db::is_transient(&source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("stock storage is temporarily unavailable, retry")
            }
            InventoryError::Database(source) => {
                tracing::error!(error = %source, "stock storage error");
                Status::internal("internal error")
            }
        }
    }
}

/// For events: a database failure keeps its transient-or-not class; invalid content is
/// dead-lettered with the message that names the field.
impl From<InventoryError> for HandleError {
    fn from(e: InventoryError) -> HandleError {
        match e {
            InventoryError::Invalid(v) => HandleError::invalid(v.to_string()),
            InventoryError::Database(source) => HandleError::from(source),
        }
    }
}

//! The order service's errors, and the one place they become gRPC statuses.

use orderflow_domain::{OrderId, ValidationError};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("idempotency_key {0:?} was already used for a different order")]
    IdempotencyConflict(String),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for OrderError {
    fn from(e: sqlx::Error) -> Self {
        if orderflow_db::is_transient(&e) {
            OrderError::Unavailable(e)
        } else {
            OrderError::Internal(e.into())
        }
    }
}

impl From<OrderError> for Status {
    fn from(e: OrderError) -> Status {
        match &e {
            OrderError::Invalid(v) => Status::invalid_argument(v.to_string()),
            OrderError::NotFound(_) => Status::not_found(e.to_string()),
            OrderError::IdempotencyConflict(_) => Status::already_exists(e.to_string()),
            // Internal details go to the log, never to the client.
            OrderError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("order storage is temporarily unavailable, retry")
            }
            OrderError::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

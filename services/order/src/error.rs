//! The order service's errors, and the one place each becomes a gRPC status or a consumer
//! outcome.

use orderflow_domain::{Blocked, OrderId, TransitionError, ValidationError};
use orderflow_platform::HandleError;
use tonic::Status;

/// Everything that can go wrong in the order service, for a call or for an event.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// A request or event field is invalid; the error names it.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("order {0} not found")]
    NotFound(OrderId),
    /// The customer directory lists the customer as blocked.
    #[error(transparent)]
    Blocked(#[from] Blocked),
    #[error("idempotency_key {0:?} was already used for a different order")]
    IdempotencyConflict(String),
    /// An outcome this order's history rules out.
    #[error("order {order_id}: {source}")]
    Impossible {
        order_id: OrderId,
        #[source]
        source: TransitionError,
    },
    /// The database failed: transient (retry) or not, decided where the error is mapped.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data this build cannot read; the details stay in the log.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<OrderError> for Status {
    fn from(e: OrderError) -> Status {
        match &e {
            OrderError::Invalid(v) => Status::invalid_argument(v.to_string()),
            OrderError::NotFound(_) => Status::not_found(e.to_string()),
            OrderError::Blocked(_) => Status::permission_denied(e.to_string()),
            OrderError::IdempotencyConflict(_) => Status::already_exists(e.to_string()),
            OrderError::Impossible { .. } => Status::failed_precondition(e.to_string()),
            // Internal details go to the log, never to the client.
            OrderError::Database(source) if orderflow_db::is_transient(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("order storage is temporarily unavailable, retry")
            }
            OrderError::Database(source) => {
                tracing::error!(error = %source, "database error");
                Status::internal("internal error")
            }
            OrderError::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// For events: a database failure keeps its transient-or-not class; anything else is content
/// this service can never apply, dead-lettered with a message that says why.
impl From<OrderError> for HandleError {
    fn from(e: OrderError) -> HandleError {
        match e {
            OrderError::Database(source) => HandleError::from(source),
            OrderError::NotFound(order_id) => {
                HandleError::invalid(format!("unknown order {order_id}"))
            }
            OrderError::Internal(source) => HandleError::invalid(source.to_string()),
            other => HandleError::invalid(other.to_string()),
        }
    }
}

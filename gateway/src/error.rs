//! The gateway's errors and their one mapping to gRPC statuses.

use orderflow_domain::ValidationError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is invalid: rejected before anything is stored.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An owning service answered with an error; its status is already client-safe.
    #[error("{}", .0.message())]
    Downstream(#[from] Status),
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        match e {
            GatewayError::Invalid(v) => Status::invalid_argument(v.to_string()),
            GatewayError::Downstream(status) => {
                Status::new(status.code(), status.message().to_owned())
            }
        }
    }
}

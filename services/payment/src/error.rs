//! The payment service's errors, and the one place each becomes a consumer outcome (the
//! service serves no gRPC, so nothing here becomes a status).

use orderflow_domain::{OrderId, ValidationError};
use orderflow_platform::HandleError;

use crate::provider::ProviderUnavailable;

/// Everything that can go wrong while charging or refunding an order.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// An event field is invalid; the error names it.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An out-of-stock order this service never charged.
    #[error("no charge for order {0}, nothing to refund")]
    NoCharge(OrderId),
    /// An out-of-stock order whose charge did not go through.
    #[error("order {order_id} is out of stock but its payment is {status}")]
    NotPaid { order_id: OrderId, status: String },
    /// The provider cannot answer now; asking again later may work.
    #[error(transparent)]
    ProviderUnavailable(#[from] ProviderUnavailable),
    /// The provider stayed unavailable for every attempt at a refund.
    #[error("refund failed after {attempts} attempts: {source}")]
    RefundFailed {
        attempts: u32,
        #[source]
        source: ProviderUnavailable,
    },
    /// The database failed: transient (retry) or not, decided where the error is mapped.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A database failure keeps its transient-or-not class and an unavailable provider is retried;
/// a refund that never went through is dead-lettered for a redrive; the rest is content this
/// service can never apply.
impl From<PaymentError> for HandleError {
    fn from(e: PaymentError) -> HandleError {
        match e {
            PaymentError::Database(source) => HandleError::from(source),
            PaymentError::ProviderUnavailable(source) => HandleError::Transient(source.to_string()),
            e @ PaymentError::RefundFailed { .. } => HandleError::Permanent {
                class: "refund_failed",
                message: e.to_string(),
            },
            e @ (PaymentError::Invalid(_)
            | PaymentError::NoCharge(_)
            | PaymentError::NotPaid { .. }) => HandleError::invalid(e.to_string()),
        }
    }
}

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
    /// The `order-status` feed is not positioned yet: a watch served now could miss a change.
    #[error("the order status feed is not ready yet; retry shortly")]
    FeedNotReady,
    /// A bound on open WatchOrder streams is reached.
    #[error("too many open WatchOrder streams {scope} (limit {limit})")]
    TooManyStreams { scope: &'static str, limit: usize },
    /// WatchOrder resumes after a version the order has not reached.
    #[error("after_version {after_version} is beyond the order's current version {current}")]
    AheadOfOrder { after_version: i64, current: i64 },
    /// No valid bearer token; the message says which check failed.
    #[error(transparent)]
    Unauthenticated(#[from] orderflow_auth::AuthError),
    /// A request field names a customer other than the authenticated one.
    #[error("customer_id {requested:?} is not the authenticated caller ({caller:?})")]
    NotTheCaller { requested: String, caller: String },
    /// A call that needs the operator role.
    #[error("{0} needs the operator role")]
    OperatorOnly(&'static str),
    /// Another customer's order: worded exactly as an unknown order, so ids leak nothing.
    #[error("order {0} not found")]
    NotFound(String),
    /// The caller's request rate limit is reached.
    #[error("request rate limit of {per_second}/s reached; retry in {retry_after_ms} ms")]
    RateLimited {
        per_second: f64,
        retry_after_ms: u128,
    },
    /// The customer directory's entry was not acknowledged (the broker or the registry is
    /// away): it may or may not be published; asking again is safe.
    #[error("the customer directory cannot be written now: {0}")]
    DirectoryUnavailable(String),
    /// The broker or the registry refused the entry for good (a missing grant, say).
    #[error("the customer directory refused the entry: {0}")]
    DirectoryRefused(String),
    /// A handler ran without the authentication interceptor: a wiring defect.
    #[error("internal error")]
    NoAccessDecision,
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        match &e {
            GatewayError::Invalid(v) => Status::invalid_argument(v.to_string()),
            GatewayError::Downstream(status) => {
                Status::new(status.code(), status.message().to_owned())
            }
            GatewayError::FeedNotReady => Status::unavailable(e.to_string()),
            GatewayError::DirectoryUnavailable(reason) => {
                tracing::warn!(%reason, "customer directory unavailable");
                Status::unavailable(
                    "the customer directory cannot be written now; the entry may or may not \
                     be published, and asking again is safe",
                )
            }
            GatewayError::DirectoryRefused(reason) => {
                tracing::error!(%reason, "customer directory refused the entry");
                Status::internal("internal error")
            }
            GatewayError::TooManyStreams { .. } => Status::resource_exhausted(e.to_string()),
            GatewayError::AheadOfOrder { .. } => Status::out_of_range(e.to_string()),
            GatewayError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
            GatewayError::NotTheCaller { .. } | GatewayError::OperatorOnly(_) => {
                Status::permission_denied(e.to_string())
            }
            GatewayError::NotFound(_) => Status::not_found(e.to_string()),
            GatewayError::RateLimited { .. } => Status::resource_exhausted(e.to_string()),
            GatewayError::NoAccessDecision => {
                tracing::error!("a public call reached its handler without an access decision");
                Status::internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn watch_refusals_map_to_their_codes_and_say_why() {
        let cases = [
            (GatewayError::FeedNotReady, Code::Unavailable, "status feed"),
            (
                GatewayError::TooManyStreams {
                    scope: "on this connection",
                    limit: 2,
                },
                Code::ResourceExhausted,
                "on this connection (limit 2)",
            ),
            (
                GatewayError::AheadOfOrder {
                    after_version: 9,
                    current: 2,
                },
                Code::OutOfRange,
                "after_version 9 is beyond the order's current version 2",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(message), "{}", status.message());
        }
    }
}

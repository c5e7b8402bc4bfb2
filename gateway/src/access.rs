//! Who may do what. Every call to the public services passes [`Authenticate`] first: it
//! verifies the bearer token, applies the caller's rate limit and leaves an [`Access`] in the
//! request for the handlers, which ask it the three questions of the policy:
//! - a customer acts only as itself (the token's subject, whatever a request field says);
//! - a customer reads only its own orders: another's is NOT_FOUND, exactly as an unknown id,
//!   so order ids leak nothing;
//! - stock administration needs the operator role.
//!
//! Health and reflection are not behind it: they reveal nothing about orders.

use std::sync::Arc;
use std::time::Instant;

use orderflow_auth::{Caller, Verifier};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::GatewayError;
use crate::rate::RateLimiter;

/// What the caller of one request may do.
#[derive(Debug, Clone)]
pub enum Access {
    /// A verified caller.
    Caller(Caller),
    /// Authentication is off (`--insecure-no-auth`): anything goes.
    Unchecked,
}

impl Access {
    /// The access `Authenticate` left in `request`.
    pub fn of<T>(request: &Request<T>) -> Result<Access, GatewayError> {
        request
            .extensions()
            .get::<Access>()
            .cloned()
            .ok_or(GatewayError::NoAccessDecision)
    }

    /// The customer a request acts for: the caller. A request field naming another customer
    /// is refused; an empty one means the caller.
    pub fn customer_for(&self, requested: &str) -> Result<String, GatewayError> {
        match self {
            Access::Unchecked => Ok(requested.to_owned()),
            Access::Caller(caller)
                if requested.is_empty() || requested == caller.customer.as_str() =>
            {
                Ok(caller.customer.to_string())
            }
            Access::Caller(caller) => Err(GatewayError::NotTheCaller {
                requested: requested.to_owned(),
                caller: caller.customer.to_string(),
            }),
        }
    }

    /// Whether the caller may read an order of `customer`.
    pub fn may_read(&self, customer: &str) -> bool {
        match self {
            Access::Unchecked => true,
            Access::Caller(caller) => caller.customer.as_str() == customer,
        }
    }

    /// Refuses a caller without the operator role.
    pub fn require_operator(&self, what: &'static str) -> Result<(), GatewayError> {
        match self {
            Access::Caller(caller) if !caller.operator => Err(GatewayError::OperatorOnly(what)),
            _ => Ok(()),
        }
    }

    /// The identity limits are kept per: the customer, or nothing when unchecked.
    pub fn identity(&self) -> Option<&str> {
        match self {
            Access::Caller(caller) => Some(caller.customer.as_str()),
            Access::Unchecked => None,
        }
    }
}

/// Verifies each call's token and applies its caller's rate limit.
#[derive(Clone)]
pub struct Authenticate {
    /// None when authentication is off.
    pub verifier: Option<Arc<Verifier>>,
    pub rate: Arc<RateLimiter>,
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let access = match &self.verifier {
            None => Access::Unchecked,
            Some(verifier) => {
                let header = match request.metadata().get("authorization") {
                    None => None,
                    Some(value) => Some(value.to_str().map_err(|_| {
                        GatewayError::Unauthenticated(orderflow_auth::AuthError::NotBearer)
                    })?),
                };
                Access::Caller(
                    verifier
                        .verify(header)
                        .map_err(GatewayError::Unauthenticated)?,
                )
            }
        };
        // Unauthenticated callers are limited per client address.
        let identity = match access.identity() {
            Some(customer) => format!("customer:{customer}"),
            None => match request.remote_addr() {
                Some(addr) => format!("address:{}", addr.ip()),
                None => "address:unknown".to_owned(),
            },
        };
        if let Err(retry_after) = self.rate.check(&identity, Instant::now()) {
            return Err(GatewayError::RateLimited {
                per_second: self.rate.per_second(),
                retry_after_ms: retry_after.as_millis(),
            }
            .into());
        }
        request.extensions_mut().insert(access);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_domain::CustomerId;

    fn caller(customer: &str, operator: bool) -> Access {
        Access::Caller(Caller {
            customer: CustomerId::parse("sub", customer).unwrap(),
            operator,
        })
    }

    #[test]
    fn a_customer_acts_and_reads_only_as_itself() {
        let alice = caller("alice", false);
        assert_eq!(alice.customer_for("").unwrap(), "alice");
        assert_eq!(alice.customer_for("alice").unwrap(), "alice");
        let refused = alice.customer_for("bob").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "customer_id \"bob\" is not the authenticated caller (\"alice\")"
        );
        assert!(alice.may_read("alice"));
        assert!(!alice.may_read("bob"));
    }

    #[test]
    fn stock_administration_needs_the_operator_role() {
        assert!(caller("alice", false).require_operator("SetStock").is_err());
        assert!(caller("ops", true).require_operator("SetStock").is_ok());
        assert!(Access::Unchecked.require_operator("SetStock").is_ok());
        assert_eq!(Access::Unchecked.customer_for("bob").unwrap(), "bob");
    }
}

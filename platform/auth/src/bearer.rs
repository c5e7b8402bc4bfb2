//! The client side: a tonic interceptor that sends a bearer token with every call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A channel whose calls carry a bearer token.
pub type BearerChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to each call (nothing, for a gateway run without
/// authentication).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// A signed token is base64url text and dots, always a valid header value.
    pub fn new(token: &str) -> Bearer {
        Bearer(Some(
            format!("Bearer {token}")
                .parse()
                .expect("a JWT is a valid header value"),
        ))
    }

    /// Sends no token.
    pub fn none() -> Bearer {
        Bearer(None)
    }

    /// `channel` with this token on every call.
    pub fn on(self, channel: Channel) -> BearerChannel {
        InterceptedService::new(channel, self)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

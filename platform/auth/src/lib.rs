//! Who is calling. A client proves who it is with a bearer token: a JWT signed by a key the
//! operator trusts, published as a JWKS (a file, or the `jwks_uri` of an OIDC provider). The
//! [`Verifier`] checks the signature, the issuer, the audience and the expiry (with a small
//! clock skew) and yields a [`Caller`]: the customer is the token's subject, never a request
//! field. A token verified once is remembered until it expires (`verified`), so a client
//! that sends the same token with every call has its signature checked once. For local runs,
//! [`SigningKey`] is the development key `./orderflow up` makes and `orderflow token` signs
//! with; it is an ordinary ES256 key published in an ordinary JWKS, so the gateway verifies
//! its tokens exactly as it verifies a real provider's.
//!
//! No cryptography is written here: signatures are jsonwebtoken's, on ring.

mod args;
mod bearer;
mod issuer;
mod keys;
mod signing;
mod verified;
mod verify;

pub use args::{AuthArgs, DEV_AUDIENCE, DEV_ISSUER, OPERATOR_ROLE};
pub use bearer::{Bearer, BearerChannel};
pub use issuer::LocalIssuer;

/// Where `./orderflow up` keeps the development signing key, under its home (`.orderflow`).
pub const DEV_SIGNING_KEY_FILE: &str = "auth/dev-signing-key.pem";
/// Where `./orderflow up` publishes the development key's JWKS, under its home.
pub const DEV_JWKS_FILE: &str = "auth/jwks.json";
pub use keys::{KeySet, KeySource};
pub use signing::{Claims, SigningKey};
pub use verify::{AuthError, Caller, TokenChecks, Verifier};

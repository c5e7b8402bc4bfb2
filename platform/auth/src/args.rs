//! The authentication settings of a component that serves clients (the gateway).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::keys::KeySource;

/// The issuer of the development tokens `orderflow token` signs (and the default expected).
pub const DEV_ISSUER: &str = "orderflow-local";
/// The audience of the development tokens (and the default expected).
pub const DEV_AUDIENCE: &str = "orderflow";
/// The role (in `roles`) or scope (in `scope`) that grants stock administration.
pub const OPERATOR_ROLE: &str = "orderflow:operator";

/// How callers are authenticated.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The keys tokens are verified against: a JWKS file, re-read every
    /// `--jwks-refresh-secs` (so keys rotate without a restart).
    #[arg(long = "jwks-file", env = "ORDERFLOW_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Or a JWKS URL, as an OIDC provider publishes (its `jwks_uri`), fetched at start and
    /// every `--jwks-refresh-secs`.
    #[arg(
        long = "jwks-url",
        env = "ORDERFLOW_JWKS_URL",
        conflicts_with = "jwks_file"
    )]
    pub jwks_url: Option<String>,
    /// The issuer (`iss`) every token must name.
    #[arg(long = "jwt-issuer", env = "ORDERFLOW_JWT_ISSUER", default_value = DEV_ISSUER)]
    pub issuer: String,
    /// The audience (`aud`) every token must include.
    #[arg(long = "jwt-audience", env = "ORDERFLOW_JWT_AUDIENCE", default_value = DEV_AUDIENCE)]
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(
        long = "jwt-leeway-secs",
        env = "ORDERFLOW_JWT_LEEWAY_SECS",
        default_value_t = 30
    )]
    pub leeway_secs: u64,
    /// The role (a `roles` entry) or scope (a `scope` word) that grants stock administration.
    #[arg(long = "operator-role", env = "ORDERFLOW_OPERATOR_ROLE", default_value = OPERATOR_ROLE)]
    pub operator_role: String,
    /// Seconds between re-reads of the JWKS.
    #[arg(
        long = "jwks-refresh-secs",
        env = "ORDERFLOW_JWKS_REFRESH_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub refresh_secs: u64,
    /// Serve WITHOUT authentication: any caller may act for any customer and administer
    /// stock. For experiments on a closed machine only; logged as a warning at start.
    #[arg(long = "insecure-no-auth", env = "ORDERFLOW_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl AuthArgs {
    /// Where the keys come from; an error when authentication is on and none is named.
    pub fn key_source(&self) -> anyhow::Result<KeySource> {
        match (&self.jwks_file, &self.jwks_url) {
            (Some(path), _) => Ok(KeySource::File(path.clone())),
            (None, Some(url)) => Ok(KeySource::Url(url.clone())),
            (None, None) => anyhow::bail!(
                "authentication needs the token signing keys: set --jwks-file or --jwks-url \
                 (or, on a closed machine only, --insecure-no-auth)"
            ),
        }
    }

    pub fn refresh(&self) -> Duration {
        Duration::from_secs(self.refresh_secs)
    }

    /// Settings for tests and tools: the development issuer and audience, keys from `jwks`.
    pub fn with_jwks_file(jwks: PathBuf) -> AuthArgs {
        AuthArgs {
            jwks_file: Some(jwks),
            jwks_url: None,
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            leeway_secs: 30,
            operator_role: OPERATOR_ROLE.into(),
            refresh_secs: 300,
            insecure_no_auth: false,
        }
    }
}

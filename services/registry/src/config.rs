//! The schema registry's settings: what `orderflow serve registry` reads (flags, environment,
//! `--config` file; see `orderflow_platform::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use orderflow_db::Secret;

/// How to run the registry; every flag can also come from the environment or a file.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Address the HTTP API listens on.
    #[arg(
        long = "listen",
        env = "ORDERFLOW_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the registry's own database (created and migrated on start).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_REGISTRY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_registry",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// The users who may call the registry: one per line, `name:password:role`, the role
    /// `read`, `write` (register versions) or `admin` (levels, modes, deletions).
    #[arg(long = "users-file", env = "ORDERFLOW_REGISTRY_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// Serve WITHOUT authentication: anyone who reaches the registry may change it. For a
    /// closed machine only; logged as a warning at start.
    #[arg(long = "insecure-no-auth", env = "ORDERFLOW_REGISTRY_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// The PEM certificate chain to serve HTTPS with; without one the registry serves plain
    /// HTTP (its users' passwords then cross the network in the clear).
    #[arg(
        long = "tls-cert-file",
        env = "ORDERFLOW_TLS_CERT_FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert-file`.
    #[arg(
        long = "tls-key-file",
        env = "ORDERFLOW_TLS_KEY_FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

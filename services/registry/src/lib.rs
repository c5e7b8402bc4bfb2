//! A Confluent-compatible Avro schema registry backed by PostgreSQL: the library behind
//! `orderflow serve registry`, and what the integration tests start in-process.

mod access;
mod api;
mod config;
mod error;
mod extract;
mod registry;
mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use access::{Role, Users};
pub use api::router;
pub use config::RegistryArgs;
pub use error::RegistryError;
pub use registry::{
    Config, DEFAULT_LEVEL, Deleted, Mode, Registry, SchemaReference, SchemaRequest, SubjectVersion,
    VersionSelector,
};
pub use tls::TlsListener;

/// The registry's database migrations (`migrations/registry/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/registry");

/// Binds, connects to and migrates the database, and serves until `shutdown` completes.
pub async fn serve(
    args: RegistryArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let users = match (&args.users_file, args.insecure_no_auth) {
        (Some(path), _) => Some(Users::read(path)?),
        (None, true) => {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who reaches the registry \
                 may register, change and delete schemas"
            );
            None
        }
        (None, false) => anyhow::bail!(
            "the registry authenticates its clients: set --users-file \
             (or, on a closed machine only, --insecure-no-auth)"
        ),
    };
    let settings = orderflow_db::DbSettings::new(args.database_url.clone());
    let pool = orderflow_db::connect_and_migrate(&settings, &MIGRATOR)
        .await
        .context("registry database")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = orderflow_tls::rustls_server_config(cert, key)?;
            run(TlsListener::new(listener, config)?, pool, users, shutdown).await
        }
        _ => {
            if users.is_some() {
                tracing::warn!(
                    "serving plain HTTP: the users' passwords cross the network in the clear; \
                     set --tls-cert-file and --tls-key-file to serve HTTPS"
                );
            }
            run(listener, pool, users, shutdown).await
        }
    }
}

/// Serves the API on `listener` with a migrated `pool` until `shutdown` completes, then lets
/// requests in flight finish. Without `users` the registry is open to anyone.
pub async fn run<L>(
    listener: L,
    pool: PgPool,
    users: Option<Users>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let address = listener.local_addr()?;
    tracing::info!(%address, "schema registry listening");
    axum::serve(listener, router(Registry::new(pool), users.map(Arc::new)))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the registry")?;
    tracing::info!("schema registry stopped");
    Ok(())
}

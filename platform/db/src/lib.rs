//! PostgreSQL plumbing shared by every service: each service owns one database, created on
//! first start, migrated by sqlx, and reached through a pool that waits out a database that is
//! still starting. Database URLs may hold passwords, so they travel as [`Secret`]s.

use std::time::Duration;

use orderflow_retry::backoff;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// Why a service could not get its database ready.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database url: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("database unreachable after {attempts} attempts: {source}")]
    Unreachable {
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// How a service reaches its database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Full URL including the service's own database name (and perhaps a password).
    pub url: Secret,
    pub max_connections: u32,
    /// How long start-up keeps retrying an unreachable server before giving up.
    pub connect_timeout: Duration,
}

impl DbSettings {
    /// Settings for the database at `url`, with the services' pool size and start-up patience.
    pub fn new(url: impl Into<Secret>) -> Self {
        DbSettings {
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// Creates the database if absent, connects a pool and applies `migrator`.
pub async fn connect_and_migrate(
    settings: &DbSettings,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = settings.url.expose().parse().map_err(DbError::InvalidUrl)?;
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let mut attempt = 0u32;
    let pool = loop {
        attempt += 1;
        let result = async {
            ensure_database(&options).await?;
            PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
                .await
        }
        .await;
        match result {
            Ok(pool) => break pool,
            Err(source) if tokio::time::Instant::now() < deadline => {
                let delay = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
                tracing::warn!(attempt, error = %source, ?delay, "database not ready, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(source) => {
                return Err(DbError::Unreachable {
                    attempts: attempt,
                    source,
                });
            }
        }
    };
    migrator.run(&pool).await?;
    Ok(pool)
}

/// Creates the database named in `options` when it does not exist yet, connecting to the
/// server's `postgres` database to do so. Concurrent creators are harmless.
async fn ensure_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        match sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // 42P04 duplicate_database, 23505 unique_violation: another process won the race.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await
}

/// A setting that must not be shown: a database URL with a password, any credential.
/// `Debug` and `Display` print `[redacted]`; [`Secret::expose`] gives the value to the one
/// place that uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the code that connects with it (never for logs or messages).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::from(value))
    }
}

/// True for errors that go away by themselves (server down, connection lost, serialization
/// conflicts), as opposed to errors in the statement or the data.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => {
            // Class 08 connection exception, 40 transaction rollback (serialization, deadlock),
            // 53 insufficient resources, 57 operator intervention (admin shutdown, cannot connect now).
            e.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("40")
                    || c.starts_with("53")
                    || c.starts_with("57")
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let url = "postgres://orderflow:hunter2@db:5432/orderflow_order";
        let settings = DbSettings::new(url);
        for shown in [
            format!("{settings:?}"),
            format!("{}", settings.url),
            format!("{:?}", settings.url),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        assert_eq!(settings.url.expose(), url);
        assert_eq!("x".parse::<Secret>(), Ok(Secret::new("x")));
    }
}

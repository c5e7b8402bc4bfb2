//! PostgreSQL plumbing shared by every service: each service owns one database, created on
//! first start, migrated by sqlx, and reached through a pool that waits out a database that is
//! still starting. Database URLs may hold passwords, so they travel as [`Secret`]s.

mod owner;

use std::time::Duration;

use orderflow_retry::backoff;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

pub use owner::{Owner, drop_owned, provision};

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

/// One column of `rows`: what a multi-row statement binds as an array, a parameter per column,
/// and reads back as rows with `UNNEST`.
pub fn column<'a, R, T>(rows: &'a [R], field: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

/// True for errors a later retry of the same work can get past, as opposed to errors in the
/// statement or its data, which fail the same way every time.
///
/// The consumer loop retries a transient error without skipping the message and dead-letters
/// the rest, so the line is drawn by what a retry can fix: anything the server's state causes
/// (connection lost, a failover that left the database read-only, resources, I/O, an internal
/// error, an operator's intervention, a lock or serialization conflict, a missing grant an
/// operator can add) is transient, and so is a SQLSTATE class this function does not know. A
/// dead letter is for a message whose content can never be applied; sending in-flight messages
/// there because the server had a bad minute would lose orders that only needed to wait.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_none_or(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// Whether retrying can get past an error with this SQLSTATE (see [`is_transient`]).
fn is_transient_sqlstate(code: &str) -> bool {
    match code {
        // Class 25 is mostly a caller's mistake (25P02: a statement after a failed one), except
        // 25006, a read-only transaction (a failover, or a standby before promotion), and the
        // server ending an idle or overlong transaction (25P03, 25P04).
        "25006" | "25P03" | "25P04" => true,
        // Class 42 is the statement's fault, except a missing privilege an operator can grant.
        "42501" => true,
        // Class 55: an object in use or a lock not available now; the rest (a prerequisite
        // state, an unsafe enum value, a parameter that cannot change) stays as it is.
        "55006" | "55P03" => true,
        _ => !matches!(
            code.get(..2).unwrap_or(code),
            // 0A feature not supported, 20 case not found, 21 cardinality, 22 data exception,
            // 23 integrity constraint, 24 cursor state, 25 transaction state, 26 statement name,
            // 27 triggered data change, 2B/2D/2F transaction and routine rules, 34 cursor name,
            // 38/39 external routines, 3B savepoint, 3F schema name, 42 syntax or access rule,
            // 44 WITH CHECK OPTION, 54 program limit exceeded, 55 prerequisite state,
            // P0 PL/pgSQL raise.
            "0A" | "0B"
                | "0F"
                | "0L"
                | "0P"
                | "0Z"
                | "20"
                | "21"
                | "22"
                | "23"
                | "24"
                | "25"
                | "26"
                | "27"
                | "2B"
                | "2D"
                | "2F"
                | "34"
                | "38"
                | "39"
                | "3B"
                | "3F"
                | "42"
                | "44"
                | "54"
                | "55"
                | "P0"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server error carrying only a SQLSTATE, as PostgreSQL reports it.
    #[derive(Debug)]
    struct ServerError(&'static str);

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error with SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "server error"
        }

        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn with_code(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(ServerError(code)))
    }

    /// Each SQLSTATE is classified by whether retrying the same statement later can succeed:
    /// the server's state (failover, resources, I/O, an internal error, an operator) changes
    /// by itself or by an operator's hand, the statement and its data do not.
    #[test]
    fn sqlstates_are_transient_when_a_retry_can_succeed() {
        let transient = [
            ("08006", "connection failure"),
            ("08P01", "protocol violation"),
            ("25006", "read-only transaction: a failover or a standby"),
            (
                "25P03",
                "idle-in-transaction timeout: the session was ended",
            ),
            ("28P01", "authentication failed: credentials being rotated"),
            ("3D000", "database does not exist (yet): being restored"),
            ("40001", "serialization failure"),
            ("40P01", "deadlock detected"),
            (
                "42501",
                "insufficient privilege: a grant an operator can fix",
            ),
            ("53100", "disk full"),
            ("53200", "out of memory"),
            ("53300", "too many connections"),
            ("55006", "object in use"),
            ("55P03", "lock not available"),
            ("57014", "query canceled (statement timeout)"),
            ("57P01", "admin shutdown"),
            ("57P03", "cannot connect now"),
            ("58000", "system error"),
            ("58030", "I/O error"),
            ("72000", "snapshot too old"),
            ("F0000", "configuration file error"),
            ("XX000", "internal error"),
            (
                "XX001",
                "data corrupted: needs an operator, not a dead letter",
            ),
        ];
        let permanent = [
            ("0A000", "feature not supported"),
            ("21000", "cardinality violation"),
            ("22001", "string too long"),
            ("22P02", "invalid text representation"),
            ("23502", "not-null violation"),
            ("23505", "unique violation"),
            ("23514", "check violation"),
            ("25P02", "in failed transaction: a bug in the caller"),
            ("42601", "syntax error"),
            ("42703", "undefined column"),
            ("42P01", "undefined table"),
            ("54000", "program limit exceeded"),
            ("P0001", "raise exception"),
        ];
        for (code, what) in transient {
            assert!(
                is_transient(&with_code(code)),
                "{code} ({what}) must be retried"
            );
        }
        for (code, what) in permanent {
            assert!(
                !is_transient(&with_code(code)),
                "{code} ({what}) can never succeed"
            );
        }
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }

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

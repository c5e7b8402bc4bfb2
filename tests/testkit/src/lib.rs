//! Test helpers shared by the integration tests: each test gets its own PostgreSQL database
//! and random names, so tests run in parallel and leave nothing behind.

use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// The server the tests create their databases on; override with `ORDERFLOW_TEST_DATABASE_URL`.
pub fn admin_database_url() -> String {
    std::env::var("ORDERFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A short random suffix for database, topic and group names.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// `prefix` plus a random suffix, e.g. `orders-3f9c2a1b7d4e`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// A database created for one test and dropped (with its connections) when this value drops.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database named `<prefix>_<random>`.
    pub async fn create(prefix: &str) -> TestDatabase {
        let name = format!("t_{prefix}_{}", unique_suffix());
        let admin_url = admin_database_url();
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let options: PgConnectOptions = admin_url.parse().expect("admin database url");
        let url = options.database(&name).to_url_lossy().to_string();
        TestDatabase { name, url }
    }

    /// The connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small pool for assertions made by the test itself.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime, which must not block on another: use a thread.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database");
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_database_url()).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Polls `check` until it yields `Some`, or panics naming `what` after `timeout`.
/// Tests wait on observable state with this instead of sleeping.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deadlocks PostgreSQL has counted in the current database of `pool`, once the backends
/// have reported their statistics (at most once a second).
pub async fn deadlocks(pool: &sqlx::PgPool) -> i64 {
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .expect("read pg_stat_database")
}

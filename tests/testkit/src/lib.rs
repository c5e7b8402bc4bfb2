//! Test helpers shared by the integration tests: each test gets its own PostgreSQL database
//! and random names, so tests run in parallel and leave nothing behind.

use std::future::Future;
use std::time::{Duration, Instant};

use orderflow_db::Owner;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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

/// A database created for one test, owned by a role of the same name that is not a
/// superuser (as each service's is), and dropped with the role (and its connections) when this
/// value drops.
pub struct TestDatabase {
    owner: Owner,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database named `t_<prefix>_<random>` and its owner role.
    pub async fn create(prefix: &str) -> TestDatabase {
        let name = format!("t_{prefix}_{}", unique_suffix());
        let owner = Owner {
            database: name.clone(),
            role: name,
            password: unique_suffix(),
        };
        let admin: PgConnectOptions = admin_database_url().parse().expect("admin database url");
        orderflow_db::provision(&admin, &owner)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {}: {e}", owner.database));
        let url = owner.url(&admin);
        TestDatabase { owner, url }
    }

    /// The connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name (also the name of its owner role).
    pub fn name(&self) -> &str {
        &self.owner.database
    }

    /// A fresh database `t_<prefix>_<random>` with `migrator` applied, as a service connects to
    /// its own (`orderflow_db::connect_and_migrate`), and a pool on it.
    pub async fn migrated(
        prefix: &str,
        migrator: &sqlx::migrate::Migrator,
    ) -> (TestDatabase, PgPool) {
        let db = TestDatabase::create(prefix).await;
        let pool =
            orderflow_db::connect_and_migrate(&orderflow_db::DbSettings::new(db.url()), migrator)
                .await
                .unwrap_or_else(|e| panic!("cannot migrate the test database {}: {e}", db.name()));
        (db, pool)
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
        let owner = self.owner.clone();
        // Drop may run inside a runtime, which must not block on another: use a thread.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database");
            rt.block_on(async move {
                if let Ok(admin) = admin_database_url().parse::<PgConnectOptions>() {
                    let _ = orderflow_db::drop_owned(&admin, &owner).await;
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

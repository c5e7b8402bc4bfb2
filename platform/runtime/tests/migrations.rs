//! Each event-driven service's migrations applied with the platform's against real PostgreSQL:
//! the platform's tables and indexes exist beside the service's, and a restart migrates nothing.

use orderflow_platform::migrations::{PLATFORM_VERSION_BASE, with_platform};
use orderflow_testkit::TestDatabase;

#[tokio::test]
async fn every_service_database_gets_the_platform_tables_once() {
    for (service, migrator, own_table) in [
        (
            "order",
            with_platform(sqlx::migrate!("../../migrations/order")),
            "orders",
        ),
        (
            "payment",
            with_platform(sqlx::migrate!("../../migrations/payment")),
            "charges",
        ),
        (
            "inventory",
            with_platform(sqlx::migrate!("../../migrations/inventory")),
            "stock",
        ),
    ] {
        let db = TestDatabase::create(service).await;
        let settings = orderflow_db::DbSettings::new(db.url());
        let pool = orderflow_db::connect_and_migrate(&settings, &migrator)
            .await
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for table in ["outbox", "processed_events", "outbox_quarantine", own_table] {
            assert!(
                tables.iter().any(|t| t == table),
                "{service}: no {table} in {tables:?}"
            );
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for index in [
            "outbox_unpublished",
            "outbox_published_at",
            "processed_events_processed_at",
        ] {
            assert!(indexes.iter().any(|i| i == index), "{service}: no {index}");
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        let expected: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert_eq!(applied, expected, "{service}");
        for platform in [PLATFORM_VERSION_BASE + 1, PLATFORM_VERSION_BASE + 2] {
            assert!(applied.contains(&platform), "{service}: {applied:?}");
        }
        pool.close().await;

        // A restart finds everything applied, with unchanged checksums.
        let again = orderflow_db::connect_and_migrate(&settings, &migrator)
            .await
            .unwrap_or_else(|e| panic!("{service} again: {e}"));
        again.close().await;
    }
}

//! The PostgreSQL limit on a real server: its replay runs the services' own code and fails
//! unless every replayed order ends COMPLETED having published what the limit divides by.

use std::time::Duration;

use orderflow_dev::bench::limits::postgres_limit;
use orderflow_platform::Published;

/// With each way the relay can treat acknowledged outbox rows.
#[tokio::test]
async fn the_postgres_limit_replays_orders_that_complete_through_the_services_code() {
    let url = orderflow_testkit::admin_database_url();
    let batch = 4;
    for published in [Published::Deleted, Published::Kept] {
        let limit = postgres_limit(&url, 2, Duration::from_millis(500), batch, published)
            .await
            .expect("the replay completes its orders");
        // Seven transactions, each shared by a batch: PlaceOrder's statement places `batch`
        // orders, as the order service's placer does, and each consumer transaction applies
        // `batch` messages.
        assert_eq!(limit.per_order, 7.0 / batch as f64);
        assert!(limit.orders_per_sec > 0.0, "{limit:?}");
        assert_eq!(limit.name, "postgres, batches of 4");
    }
}

//! The retention purge against real PostgreSQL and the order service's real tables: it
//! deletes exactly the published outbox rows and dedup records past their retention.

use std::sync::LazyLock;
use std::time::Duration;

use orderflow_platform::RetentionArgs;
use orderflow_platform::metrics::{Metrics, PipelineMetrics};
use orderflow_platform::migrations::with_platform;
use orderflow_platform::purge::{Purged, purge_once};
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

/// The order service's database: its own migrations and the platform's (the purged tables).
static ORDER_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| with_platform(sqlx::migrate!("../../migrations/order")));

/// An outbox row named `key`, created `created_hours` ago and published `published_hours`
/// ago (never, when `None`).
async fn outbox_row(pool: &PgPool, key: &str, created_hours: i64, published_hours: Option<i64>) {
    sqlx::query(
        "INSERT INTO outbox (topic, event_key, payload, created_at, published_at)
         VALUES ('orders', $1, '{}', now() - $2 * interval '1 hour',
                 now() - $3 * interval '1 hour')",
    )
    .bind(key)
    .bind(created_hours)
    .bind(published_hours)
    .execute(pool)
    .await
    .expect("insert outbox row");
}

async fn processed_event(pool: &PgPool, event_id: &str, hours: i64) {
    sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at)
         VALUES ('order', $1, now() - $2 * interval '1 hour')",
    )
    .bind(event_id)
    .bind(hours)
    .execute(pool)
    .await
    .expect("insert processed event");
}

async fn remaining(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .expect("read what remains")
}

#[tokio::test]
async fn purge_deletes_only_published_rows_and_dedup_records_past_retention() {
    let db = TestDatabase::create("purge").await;
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(db.url()),
        &ORDER_MIGRATIONS,
    )
    .await
    .expect("order database");

    // Outbox retention 24 h.
    for key in ["published-2d-a", "published-2d-b", "published-2d-c"] {
        outbox_row(&pool, key, 48, Some(48)).await;
    }
    outbox_row(&pool, "published-25h", 26, Some(25)).await;
    // Created long ago but published recently (it waited for the broker): kept.
    outbox_row(&pool, "created-30d-published-1h", 720, Some(1)).await;
    outbox_row(&pool, "published-23h", 23, Some(23)).await;
    // Never published, whatever their age: kept.
    outbox_row(&pool, "unpublished-30d", 720, None).await;
    outbox_row(&pool, "unpublished-now", 0, None).await;

    // Dedup retention 7 days (168 h).
    for id in ["dedup-8d-a", "dedup-8d-b", "dedup-8d-c", "dedup-169h"] {
        processed_event(&pool, id, if id == "dedup-169h" { 169 } else { 192 }).await;
    }
    processed_event(&pool, "dedup-167h", 167).await;
    processed_event(&pool, "dedup-now", 0).await;

    let settings = RetentionArgs {
        outbox: Duration::from_secs(24 * 3600),
        dedup: Duration::from_secs(7 * 86_400),
        broker: Duration::from_secs(7 * 86_400),
        purge_interval: Duration::from_secs(300),
        // Smaller than what is due, so the pass needs several statements.
        purge_batch: 2,
    };
    let metrics = Metrics::new();
    let purge = PipelineMetrics::register(&metrics).purge();
    let shutdown = CancellationToken::new();

    let purged = purge_once(&pool, &settings, &purge, &shutdown)
        .await
        .expect("purge");
    assert_eq!(
        purged,
        Purged {
            outbox: 4,
            processed_events: 4
        }
    );
    assert_eq!(
        remaining(&pool, "SELECT event_key FROM outbox ORDER BY event_key").await,
        [
            "created-30d-published-1h",
            "published-23h",
            "unpublished-30d",
            "unpublished-now"
        ]
    );
    assert_eq!(
        remaining(
            &pool,
            "SELECT event_id FROM processed_events ORDER BY event_id"
        )
        .await,
        ["dedup-167h", "dedup-now"]
    );

    let text = metrics.render();
    for expected in [
        r#"orderflow_retention_purged_rows_total{table="outbox"} 4"#,
        r#"orderflow_retention_purged_rows_total{table="processed_events"} 4"#,
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "missing {expected} in\n{text}"
        );
    }

    // Nothing left to purge: a second pass deletes nothing.
    let again = purge_once(&pool, &settings, &purge, &shutdown)
        .await
        .expect("purge");
    assert_eq!(again, Purged::default());
    pool.close().await;
}

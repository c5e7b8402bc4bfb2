//! The projection's orders per status against real PostgreSQL: kept by each status change's
//! own write, it must always equal a count of the orders' current statuses, whatever order
//! the changes of one order arrive in and however often one arrives again.

use chrono::Utc;
use orderflow_analytics::store::{self, Changes};
use orderflow_testkit::TestDatabase;
use uuid::Uuid;

/// Records one status change alone, in a transaction of its own.
async fn change_status(pool: &sqlx::PgPool, order: Uuid, status: &'static str, version: i64) {
    let mut changes = Changes::default();
    changes.order_status(order, status, version, Utc::now());
    let mut tx = pool.begin().await.expect("a transaction");
    store::record(&mut tx, &changes)
        .await
        .expect("a status change");
    tx.commit().await.expect("the commit");
}

/// The orders per status as a count over every order's row: the truth the kept counts must
/// match.
async fn counted(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM order_status GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
        .expect("the count")
}

async fn kept(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    store::figures(pool, 0).await.expect("the figures").orders
}

#[tokio::test]
async fn orders_per_status_follow_every_change_once_in_whatever_order_it_arrives() {
    let (_db, pool) = TestDatabase::migrated("analytics", &orderflow_analytics::MIGRATOR).await;
    let change = |order: Uuid, status: &'static str, version: i64| {
        let pool = pool.clone();
        async move { change_status(&pool, order, status, version).await }
    };
    let path = [("PENDING", 1), ("PAID", 2), ("COMPLETED", 3)];
    let orders: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();

    // In order, each change twice (a redelivery).
    for &(status, version) in &path {
        change(orders[0], status, version).await;
        change(orders[0], status, version).await;
    }
    // Backwards: the newest first, the older ones change nothing.
    for &(status, version) in path.iter().rev() {
        change(orders[1], status, version).await;
    }
    // Skipping one, then the skipped one late.
    change(orders[2], "PENDING", 1).await;
    change(orders[2], "COMPLETED", 3).await;
    change(orders[2], "PAID", 2).await;
    // Some still on the way.
    change(orders[3], "PENDING", 1).await;
    change(orders[4], "PENDING", 1).await;
    change(orders[4], "FAILED", 2).await;
    change(orders[5], "PAID", 2).await;

    let expected: Vec<(String, i64)> =
        [("COMPLETED", 3), ("FAILED", 1), ("PAID", 1), ("PENDING", 1)]
            .map(|(s, n)| (s.to_owned(), n))
            .to_vec();
    assert_eq!(counted(&pool).await, expected);
    assert_eq!(kept(&pool).await, expected);
}

#[tokio::test]
async fn concurrent_changes_of_the_same_orders_keep_the_counts_exact() {
    let (_db, pool) = TestDatabase::migrated("analytics", &orderflow_analytics::MIGRATOR).await;
    let orders: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    // Four writers race through every order's changes in different orders, each in its own
    // transactions, as instances overlapping in a rebalance would.
    let mut writers = Vec::new();
    for writer in 0..4usize {
        let (pool, orders) = (pool.clone(), orders.clone());
        writers.push(tokio::spawn(async move {
            let mut path = vec![("PENDING", 1), ("PAID", 2), ("COMPLETED", 3)];
            path.rotate_left(writer % 3);
            for order in &orders {
                for &(status, version) in &path {
                    change_status(&pool, *order, status, version).await;
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("a writer");
    }
    assert_eq!(counted(&pool).await, [("COMPLETED".to_owned(), 50)]);
    assert_eq!(kept(&pool).await, counted(&pool).await);
}

#[tokio::test]
async fn concurrent_batches_over_the_same_orders_neither_deadlock_nor_miscount() {
    let (_db, pool) = TestDatabase::migrated("analytics", &orderflow_analytics::MIGRATOR).await;
    let orders: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    // Four instances record batches that each hold one step of every order (and its money),
    // the steps in different orders, all at once: their statements lock the same rows of
    // each table, which must be in one order for none of them to fail with a deadlock.
    let mut writers = Vec::new();
    for writer in 0..4usize {
        let (pool, orders) = (pool.clone(), orders.clone());
        writers.push(tokio::spawn(async move {
            let mut path = vec![("PENDING", 1), ("PAID", 2), ("COMPLETED", 3)];
            path.rotate_left(writer % 3);
            for &(status, version) in &path {
                let mut changes = Changes::default();
                for order in orders.iter().rev().skip(writer).chain(&orders[..]) {
                    changes.order_status(*order, status, version, Utc::now());
                }
                changes.revenue(Utc::now(), "EUR", 100, 0);
                changes.payment(store::PAID);
                changes.stock_out("sku-a", 1);
                let mut tx = pool.begin().await.expect("a transaction");
                store::record(&mut tx, &changes).await.expect("a batch");
                tx.commit().await.expect("the commit");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("a writer");
    }
    assert_eq!(counted(&pool).await, [("COMPLETED".to_owned(), 50)]);
    assert_eq!(kept(&pool).await, counted(&pool).await);
    let figures = store::figures(&pool, 10).await.expect("the figures");
    assert_eq!(figures.paid, 12);
    assert_eq!(figures.stock_outs, [("sku-a".to_owned(), 12, 12)]);
    let captured: i64 = figures.revenue.iter().map(|(_, _, c, _)| c).sum();
    assert_eq!(captured, 1_200);
}

#[tokio::test]
async fn the_migration_counts_the_orders_already_projected() {
    let (_db, pool) = TestDatabase::migrated("analytics", &orderflow_analytics::MIGRATOR).await;
    // As a database migrated before the counts existed would hold them: rows only.
    for (status, orders) in [("COMPLETED", 3), ("FAILED", 2)] {
        sqlx::query(
            "INSERT INTO order_status (order_id, status, version, changed_at)
             SELECT gen_random_uuid(), $1, 3, now() FROM generate_series(1, $2)",
        )
        .bind(status)
        .bind(orders)
        .execute(&pool)
        .await
        .expect("projected rows");
    }
    sqlx::query("TRUNCATE orders_per_status")
        .execute(&pool)
        .await
        .expect("no counts");
    let backfill = include_str!("../../../migrations/analytics/0002_orders_per_status.sql");
    let insert = &backfill[backfill
        .find("INSERT INTO orders_per_status")
        .expect("the backfill")..];
    let insert = &insert[..=insert.find(';').expect("its end")];
    sqlx::query(insert)
        .execute(&pool)
        .await
        .expect("the backfill");
    assert_eq!(kept(&pool).await, counted(&pool).await);
}

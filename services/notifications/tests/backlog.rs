//! The deliverer's two backlog queries against real PostgreSQL with a large backlog and no
//! table statistics, as on a server whose autovacuum is off or behind (the machine this
//! project is developed on runs with `autovacuum = off`). Both ask, for each candidate, whether
//! its order has an earlier status still pending; that question must be answered from the
//! order's own entries, not from a pass over the whole backlog per candidate, or delivery
//! slows as the backlog grows until it stops (docs/performance.md section 19).

use orderflow_notifications::store::{BACKLOG, CLAIM};
use orderflow_testkit::TestDatabase;
use serde_json::Value;

/// Orders in the backlog, each with three statuses pending.
const ORDERS: i64 = 10_000;

/// A notifications database whose table holds `ORDERS` × 3 pending notifications and has
/// never been analysed (autovacuum is kept off for it, whatever the server's setting).
async fn backlog() -> (TestDatabase, sqlx::PgPool) {
    let (db, pool) =
        TestDatabase::migrated("notifications", &orderflow_notifications::MIGRATOR).await;
    sqlx::query("ALTER TABLE notifications SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .expect("autovacuum off for the table");
    // Statuses of one order are due in version order; orders one millisecond apart.
    sqlx::query(
        "INSERT INTO notifications (order_id, status, notification_id, customer_id, version,
                                    event, body, origin_topic, origin_partition,
                                    origin_offset, traceparent, next_attempt_at)
         SELECT o.id, s.status, gen_random_uuid(), 'alice', s.version, '{}', '{}',
                'order-status', 0, 0, '',
                now() - interval '1 hour' + o.n * interval '1 ms' + s.version * interval '1 us'
         FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, $1) AS n) AS o,
              (VALUES ('PENDING', 1), ('PAID', 2), ('COMPLETED', 3)) AS s(status, version)",
    )
    .bind(ORDERS)
    .execute(&pool)
    .await
    .expect("the backlog");
    (db, pool)
}

/// The plan of `sql` (`EXPLAIN (FORMAT JSON …)`, with `options`), its top node.
async fn plan(pool: &sqlx::PgPool, options: &str, sql: &str) -> Value {
    let explained: Value = sqlx::query_scalar(&format!("EXPLAIN ({options}, FORMAT JSON) {sql}"))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    explained[0]["Plan"].clone()
}

/// Every node below a `SubPlan` (the per-candidate lookup), as (node type, index, rows read
/// per loop when analysed).
fn per_candidate_nodes(node: &Value, in_subplan: bool, found: &mut Vec<(String, String, f64)>) {
    let in_subplan = in_subplan || node["Parent Relationship"] == "SubPlan";
    if in_subplan {
        found.push((
            node["Node Type"].as_str().unwrap_or("?").to_owned(),
            node["Index Name"].as_str().unwrap_or("").to_owned(),
            node["Actual Rows"].as_f64().unwrap_or(0.0),
        ));
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        per_candidate_nodes(child, in_subplan, found);
    }
}

#[tokio::test]
async fn each_claimed_candidate_reads_only_its_own_orders_entries_in_a_large_unanalysed_backlog() {
    let (_db, pool) = backlog().await;
    // Run for its plan: the rows it locks are released when the statement's own transaction ends.
    let top = plan(&pool, "ANALYZE", &CLAIM.replace("$1", "32")).await;
    assert_eq!(top["Actual Rows"], 32, "a full claim: {top:#}");

    let mut lookup = Vec::new();
    per_candidate_nodes(&top, false, &mut lookup);
    assert!(!lookup.is_empty(), "no per-candidate lookup in {top:#}");
    // An order has three entries; a lookup that reads more reads other orders' (before the
    // `notifications_pending_by_order` index: a bitmap of all 30,000 pending, per candidate).
    for (node, index, rows) in &lookup {
        assert!(
            *rows <= 3.0,
            "a per-candidate {node} on {index:?} read {rows} rows: {lookup:?}"
        );
    }
}

#[tokio::test]
async fn the_backlog_read_looks_each_pending_notification_up_by_its_order() {
    let (_db, pool) = backlog().await;
    // Not analysed: with a pass over the backlog per pending row it would not end in a test's
    // time (30,000 × 30,000 index entries).
    let top = plan(&pool, "ANALYZE false", BACKLOG).await;
    let mut lookup = Vec::new();
    per_candidate_nodes(&top, false, &mut lookup);
    assert!(!lookup.is_empty(), "no per-row lookup in {top:#}");
    assert!(
        lookup
            .iter()
            .all(|(_, index, _)| index != "notifications_due"),
        "a per-row lookup scans the whole due index: {lookup:?}"
    );
    assert!(
        lookup
            .iter()
            .any(|(_, index, _)| index == "notifications_pending_by_order"),
        "the per-row lookup does not use the order's pending entries: {lookup:?}"
    );
    // And it answers: every order's first status is due, the others wait behind it.
    let (pending,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM notifications WHERE state = 'pending'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(pending, 3 * ORDERS);
    let backlog = orderflow_notifications::store::backlog(&pool)
        .await
        .expect("the backlog read");
    assert_eq!(backlog.pending, 3 * ORDERS);
    assert_eq!(backlog.retrying, 0);
    assert!(backlog.next_due.is_some_and(|due| due <= backlog.now));
}

//! The deliverer's backlog queries against real PostgreSQL with a large backlog and no table
//! statistics, as on a server whose autovacuum is off or behind (the machine this project is
//! developed on runs with `autovacuum = off`). The claim and the next-due question ask, for
//! each candidate, whether its order has an earlier status still pending; that question must
//! be answered from the order's own entries, not from a pass over the whole backlog per
//! candidate, or delivery slows as the backlog grows until it stops (docs/performance.md
//! section 19). The figures for the gauge and health are one pass with no per-row lookup.
//!
//! Statistics and kept plans can also be out of date the other way: gathered while most rows
//! were pending, or made while the table was small. The figures and the record of a round's
//! deliveries must still cost what they touch, not a pass over the table (section 48).

use orderflow_notifications::store::{CLAIM, NEXT_DUE};
use orderflow_testkit::TestDatabase;
use serde_json::Value;

/// Orders in the backlog, each with three statuses pending.
const ORDERS: i64 = 10_000;

/// [`with_pending`] `ORDERS` orders: the large backlog most tests here read.
async fn backlog() -> (TestDatabase, sqlx::PgPool) {
    with_pending(ORDERS).await
}

/// A notifications database whose table holds `orders` × 3 pending notifications and has
/// never been analysed (autovacuum is kept off for it, whatever the server's setting).
async fn with_pending(orders: i64) -> (TestDatabase, sqlx::PgPool) {
    let (db, pool) =
        TestDatabase::migrated("notifications", &orderflow_notifications::MIGRATOR).await;
    sqlx::query("ALTER TABLE notifications SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .expect("autovacuum off for the table");
    add_pending(&pool, orders).await;
    (db, pool)
}

/// Adds `orders` orders with three statuses pending each: statuses of one order due in
/// version order, orders one millisecond apart.
async fn add_pending(pool: &sqlx::PgPool, orders: i64) {
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
    .bind(orders)
    .execute(pool)
    .await
    .expect("the backlog");
}

/// The plan of `sql` (`EXPLAIN (FORMAT JSON …)`, with `options`) on `db`, its top node.
async fn plan(db: impl sqlx::PgExecutor<'_>, options: &str, sql: &str) -> Value {
    let explained: Value = sqlx::query_scalar(&format!("EXPLAIN ({options}, FORMAT JSON) {sql}"))
        .fetch_one(db)
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
async fn the_next_due_notification_is_found_by_its_order_without_a_pass_over_the_backlog() {
    let (_db, pool) = backlog().await;
    // Not analysed: with a pass over the backlog per row it would not end in a test's time
    // (30,000 × 30,000 index entries).
    let top = plan(&pool, "ANALYZE", NEXT_DUE).await;
    let mut lookup = Vec::new();
    per_candidate_nodes(&top, false, &mut lookup);
    assert!(!lookup.is_empty(), "no per-row lookup in {top:#}");
    for (node, index, rows) in &lookup {
        assert!(
            index != "notifications_due" || *rows <= 1.0,
            "the next-due question scanned the due index with {node}, {rows} rows: {lookup:?}"
        );
    }
    assert!(
        lookup
            .iter()
            .any(|(_, index, _)| index == "notifications_pending_by_order"),
        "the per-row lookup does not use the order's pending entries: {lookup:?}"
    );
}

/// Runs `sql` (with `$1` bound to `order`, if given); `what` names it if it fails.
async fn update(pool: &sqlx::PgPool, what: &str, sql: &str, order: Option<uuid::Uuid>) {
    let mut query = sqlx::query(sql);
    if let Some(order) = order {
        query = query.bind(order);
    }
    query
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// When the next claimable notification is due, and the database's time.
async fn next_due(
    pool: &sqlx::PgPool,
) -> (
    Option<chrono::DateTime<chrono::Utc>>,
    chrono::DateTime<chrono::Utc>,
) {
    orderflow_notifications::store::next_due(pool)
        .await
        .expect("the next-due read")
}

#[tokio::test]
async fn the_next_due_notification_skips_those_waiting_behind_an_earlier_status() {
    let (_db, pool) = backlog().await;
    let first: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT order_id, next_attempt_at FROM notifications WHERE status = 'PENDING'
         ORDER BY next_attempt_at LIMIT 2",
    )
    .fetch_all(&pool)
    .await
    .expect("the first two orders");
    let (next, now) = next_due(&pool).await;
    assert_eq!(next, Some(first[0].1), "the oldest order's first status");
    assert!(next.is_some_and(|at| at <= now));

    // The first order's PENDING failed and is retried in an hour: its PAID and COMPLETED,
    // due long ago, wait behind it, and the second order's PENDING is the next due.
    update(
        &pool,
        "a retry",
        "UPDATE notifications SET attempts = 1, next_attempt_at = now() + interval '1 hour'
         WHERE order_id = $1 AND status = 'PENDING'",
        Some(first[0].0),
    )
    .await;
    assert_eq!(next_due(&pool).await.0, Some(first[1].1));

    // With every order's first status retried in an hour, nothing is due before then.
    update(
        &pool,
        "retries",
        "UPDATE notifications SET attempts = 1, next_attempt_at = now() + interval '1 hour'
         WHERE status = 'PENDING'",
        None,
    )
    .await;
    let (next, now) = next_due(&pool).await;
    assert!(
        next.is_some_and(|at| at > now + chrono::Duration::minutes(59)),
        "{next:?} at {now}"
    );

    // A notification given up on is due to be dead-lettered whatever waits before it.
    update(
        &pool,
        "an undeliverable one",
        "UPDATE notifications SET state = 'undeliverable', next_attempt_at = now()
         WHERE order_id = $1 AND status = 'COMPLETED'",
        Some(first[1].0),
    )
    .await;
    let (next, now) = next_due(&pool).await;
    assert!(next.is_some_and(|at| at <= now), "{next:?} at {now}");

    // And once nothing is pending or undeliverable, nothing is due.
    update(
        &pool,
        "all delivered",
        "UPDATE notifications SET state = 'delivered'",
        None,
    )
    .await;
    assert_eq!(next_due(&pool).await.0, None);
}

#[tokio::test]
async fn the_backlog_figures_count_pending_retrying_and_undeliverable_notifications() {
    let (_db, pool) = backlog().await;
    let backlog = orderflow_notifications::store::backlog(&pool)
        .await
        .expect("the backlog read");
    assert_eq!(backlog.pending, 3 * ORDERS);
    assert_eq!((backlog.retrying, backlog.undeliverable), (0, 0));
    assert_eq!(backlog.last_error, None);

    update(
        &pool,
        "three retried",
        "UPDATE notifications SET attempts = 1, last_error = 'older', last_attempt_at = now() - interval '1 minute'
         WHERE order_id IN (SELECT order_id FROM notifications WHERE status = 'PENDING' LIMIT 3)
           AND status = 'PENDING'",
        None,
    )
    .await;
    update(
        &pool,
        "one retried again",
        "UPDATE notifications SET attempts = 2, last_error = 'latest', last_attempt_at = now()
         WHERE order_id IN (SELECT order_id FROM notifications WHERE status = 'PAID' LIMIT 1)
           AND status = 'PAID'",
        None,
    )
    .await;
    update(
        &pool,
        "two given up on",
        "UPDATE notifications SET state = 'undeliverable'
         WHERE order_id IN (SELECT order_id FROM notifications WHERE status = 'COMPLETED' LIMIT 2)
           AND status = 'COMPLETED'",
        None,
    )
    .await;
    let backlog = orderflow_notifications::store::backlog(&pool)
        .await
        .expect("the backlog read");
    assert_eq!(backlog.pending, 3 * ORDERS - 2);
    assert_eq!((backlog.retrying, backlog.undeliverable), (4, 2));
    assert_eq!(backlog.last_error.as_deref(), Some("latest"));
}

/// The type of every node of the plan under `node`, itself first.
fn node_types(node: &Value) -> Vec<String> {
    let mut found = vec![node["Node Type"].as_str().unwrap_or("?").to_owned()];
    for child in node["Plans"].as_array().into_iter().flatten() {
        found.extend(node_types(child));
    }
    found
}

/// Shared buffers a plan's top node read or found in memory (its children's included).
fn buffers(node: &Value) -> i64 {
    node["Shared Hit Blocks"].as_i64().unwrap_or(0)
        + node["Shared Read Blocks"].as_i64().unwrap_or(0)
}

/// After a burst: the table was analysed while everything was pending, then all but three
/// were delivered and the table vacuumed (which the service does, and which leaves the
/// statistics as they were). Planned by those statistics the figures are a pass over every
/// row; read as the service reads them, they cost what is still pending.
#[tokio::test]
async fn the_backlog_figures_cost_what_is_pending_when_the_statistics_say_everything_is() {
    use orderflow_notifications::store::{BACKLOG, BACKLOG_PLAN};
    let (_db, pool) = backlog().await;
    update(
        &pool,
        "analysed while all pending",
        "ANALYZE notifications",
        None,
    )
    .await;
    update(
        &pool,
        "all but three delivered",
        "UPDATE notifications SET state = 'delivered', delivered_at = now()
         WHERE status <> 'PENDING'
            OR order_id NOT IN (SELECT order_id FROM notifications
                                 WHERE status = 'PENDING' ORDER BY order_id LIMIT 3)",
        None,
    )
    .await;
    update(&pool, "vacuumed", "VACUUM notifications", None).await;

    let by_statistics = plan(&pool, "ANALYZE, BUFFERS", BACKLOG).await;
    let types = node_types(&by_statistics);
    assert!(
        types.iter().any(|t| t.contains("Seq Scan")),
        "the statistics alone should plan a pass over the table, so this test shows the hazard: {types:?}"
    );

    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query(BACKLOG_PLAN)
        .execute(&mut *tx)
        .await
        .expect("the backlog's plan settings");
    let as_read = plan(&mut *tx, "ANALYZE, BUFFERS", BACKLOG).await;
    tx.rollback().await.expect("rolled back");
    let types = node_types(&as_read);
    assert!(
        !types
            .iter()
            .any(|t| t.contains("Seq Scan") || t == "Gather"),
        "the backlog read must go through the due index, with no workers: {types:?}"
    );
    assert!(
        buffers(&as_read) * 20 < buffers(&by_statistics),
        "the backlog read touched {} buffers, a pass over the table {}",
        buffers(&as_read),
        buffers(&by_statistics)
    );

    let backlog = orderflow_notifications::store::backlog(&pool)
        .await
        .expect("the backlog read");
    assert_eq!(backlog.pending, 3);
    assert_eq!((backlog.retrying, backlog.undeliverable), (0, 0));
}

/// One delivery round on `conn` as the deliverer makes it: claims up to `limit` and records
/// them delivered. Returns how many passes over the table recording them made.
async fn deliver_round(conn: &mut sqlx::PgConnection, limit: i64) -> i64 {
    use orderflow_notifications::store::{claim, delivered};
    use sqlx::Connection;
    let mut tx = conn.begin().await.expect("a transaction");
    let due = claim(&mut tx, limit).await.expect("a claim");
    assert!(!due.is_empty(), "something to deliver");
    let passes = "SELECT coalesce(sum(seq_scan), 0)::int8 FROM pg_stat_xact_user_tables
                  WHERE relname = 'notifications'";
    let before: i64 = sqlx::query_scalar(passes)
        .fetch_one(&mut *tx)
        .await
        .expect("passes");
    delivered(&mut *tx, &due.iter().collect::<Vec<_>>())
        .await
        .expect("deliveries recorded");
    let after: i64 = sqlx::query_scalar(passes)
        .fetch_one(&mut *tx)
        .await
        .expect("passes");
    tx.commit().await.expect("committed");
    after - before
}

/// The deliverer's connection recorded its first rounds while the table was small, then the
/// table grew without a vacuum (the first minute of a freshly started system under load).
/// A plan kept from those first rounds passed over the whole table in every later round; the
/// deliveries must be looked up by their keys (docs/performance.md section 48).
#[tokio::test]
async fn recording_deliveries_looks_up_their_keys_after_the_table_grew() {
    use sqlx::Connection;
    let (db, pool) = with_pending(40).await;
    let mut conn = sqlx::PgConnection::connect(db.url())
        .await
        .expect("the deliverer's connection");
    // More rounds than PostgreSQL plans a prepared statement afresh before it may keep a plan.
    for _ in 0..8 {
        deliver_round(&mut conn, 4).await;
    }
    add_pending(&pool, ORDERS).await;
    assert_eq!(
        deliver_round(&mut conn, 32).await,
        0,
        "recording a round's deliveries passed over the whole table"
    );
}

/// Claims every claimable notification, in rounds of 1,000, and fails each with a retry in an
/// hour, as the deliverer does while its sink refuses everything; returns how many it failed.
async fn fail_everything_claimable(pool: &sqlx::PgPool) -> usize {
    use orderflow_notifications::store::{Undelivered, claim, not_delivered};
    let mut failed = 0;
    loop {
        let mut tx = pool.begin().await.expect("a transaction");
        let claimed = claim(&mut tx, 1_000).await.expect("a claim");
        if claimed.is_empty() {
            return failed;
        }
        for due in &claimed {
            let retry = Undelivered::RetryLater(std::time::Duration::from_secs(3600));
            not_delivered(&mut *tx, due, 1, "the sink refused", retry)
                .await
                .expect("a failed attempt recorded");
        }
        tx.commit().await.expect("the round committed");
        failed += claimed.len();
    }
}

/// Rows read (kept or filtered out) in `plan` by a walk over the backlog: a scan of the
/// `notifications_due` index or of the whole table, however the planner nests it.
fn rows_walked(node: &Value) -> f64 {
    let walks = node["Index Name"] == "notifications_due"
        || (node["Node Type"] == "Seq Scan" && node["Relation Name"] == "notifications");
    let own = if walks {
        let per_loop = node["Actual Rows"].as_f64().unwrap_or(0.0)
            + node["Rows Removed by Filter"].as_f64().unwrap_or(0.0);
        per_loop * node["Actual Loops"].as_f64().unwrap_or(1.0)
    } else {
        0.0
    };
    own + node["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(rows_walked)
        .sum::<f64>()
}

/// With the sink failing for every order, each order's later statuses wait on its first, to
/// be retried in an hour. A claim must not walk past those 20,000 waiting rows each round to
/// find nothing (it did: they were due since they were recorded, so every round of every
/// deliverer read them all, and the cost of a round grew with the orders waiting); a failed
/// attempt takes them to its retry time, and a status recorded after it starts there.
#[tokio::test]
async fn while_the_sink_fails_a_claim_does_not_walk_past_the_statuses_waiting_behind_it() {
    let (_db, pool) = backlog().await;
    let failed = fail_everything_claimable(&pool).await;
    assert_eq!(
        failed as i64, ORDERS,
        "each order's first status, tried once"
    );

    let top = plan(&pool, "ANALYZE", &CLAIM.replace("$1", "32")).await;
    assert_eq!(top["Actual Rows"], 0, "nothing is due: {top:#}");
    let read = rows_walked(&top);
    assert!(read <= 3.0, "the claim read {read} rows to claim nothing");

    let top = plan(&pool, "ANALYZE", NEXT_DUE).await;
    let read = rows_walked(&top);
    assert!(read <= 3.0, "the next-due question read {read} rows");
    let (next, now) = next_due(&pool).await;
    assert!(
        next.is_some_and(|at| at > now + chrono::Duration::minutes(59)),
        "{next:?} at {now}"
    );

    // Each order's statuses now wait together, due when its first is tried again.
    let apart: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications n JOIN notifications first
             ON first.order_id = n.order_id AND first.status = 'PENDING'
         WHERE n.next_attempt_at <> first.next_attempt_at",
    )
    .fetch_one(&pool)
    .await
    .expect("the schedule");
    assert_eq!(apart, 0, "statuses due apart from the first they wait on");
}

#[tokio::test]
async fn a_status_recorded_while_an_earlier_one_waits_to_be_retried_is_due_with_it() {
    use orderflow_notifications::notification::Notification;
    use orderflow_notifications::store::{Origin, ToRecord, record};
    let (_db, pool) =
        TestDatabase::migrated("notifications", &orderflow_notifications::MIGRATOR).await;
    let order = uuid::Uuid::new_v4();
    let status = |status: &'static str, version: i64| Notification {
        notification_id: uuid::Uuid::new_v4(),
        customer_id: "alice".into(),
        order_id: order,
        status,
        version,
        reason: None,
        occurred_at: chrono::Utc::now(),
        message: format!("order {order} is {status}"),
    };
    let origin = Origin {
        topic: "order-status",
        partition: 0,
        offset: 0,
        traceparent: String::new(),
    };
    // Records `notifications` in one call; how many were new.
    let record_together = |notifications: Vec<Notification>| {
        let (pool, origin) = (pool.clone(), origin.clone());
        async move {
            let records: Vec<ToRecord<'_>> = notifications
                .into_iter()
                .map(|notification| ToRecord {
                    notification,
                    event: serde_json::json!({}),
                    origin: origin.clone(),
                })
                .collect();
            let mut tx = pool.begin().await.expect("a transaction");
            let new = record(&mut tx, &records).await.unwrap();
            tx.commit().await.expect("recorded");
            new
        }
    };
    let recorded = |notification: Notification| {
        let record_together = &record_together;
        async move { assert_eq!(record_together(vec![notification]).await, 1) }
    };
    let due_at = |status: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT next_attempt_at FROM notifications WHERE order_id = $1 AND status = $2",
            )
            .bind(order)
            .bind(status)
            .fetch_one(&pool)
            .await
            .expect("a recorded status")
        }
    };

    recorded(status("PENDING", 1)).await;
    assert_eq!(fail_everything_claimable(&pool).await, 1);
    let retry_at = due_at("PENDING").await;
    // Two statuses in one call (one consumer batch), as two calls would have them.
    let (paid, completed) = (status("PAID", 2), status("COMPLETED", 3));
    assert_eq!(
        record_together(vec![paid.clone(), completed.clone()]).await,
        2
    );
    assert_eq!(
        due_at("PAID").await,
        retry_at,
        "PAID waits for PENDING's retry"
    );
    assert_eq!(due_at("COMPLETED").await, retry_at, "and so does COMPLETED");
    // Delivered again (a redelivered batch): nothing new.
    assert_eq!(record_together(vec![paid, completed]).await, 0);
    sqlx::query("DELETE FROM notifications WHERE order_id = $1 AND status = 'COMPLETED'")
        .bind(order)
        .execute(&pool)
        .await
        .expect("COMPLETED forgotten, to be recorded again below");

    // Delivered, PENDING holds nothing back: the next status is due as it is recorded.
    update(
        &pool,
        "PENDING and PAID delivered",
        "UPDATE notifications SET state = 'delivered' WHERE order_id = $1",
        Some(order),
    )
    .await;
    recorded(status("COMPLETED", 3)).await;
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(due_at("COMPLETED").await <= now);
}

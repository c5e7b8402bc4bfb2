//! New orders written together, against real PostgreSQL: `Store::place_all` places several
//! orders in one statement and answers each on its own (placed, a retry of an order placed
//! before, a key reused for a different order), and the `Placer` that PlaceOrder goes
//! through shares its statements among the orders that arrive while its writers are busy,
//! without one refused order (by its admission or by the database) failing the others.

use std::collections::HashSet;
use std::time::Duration;

use orderflow_domain::NewOrder;
use orderflow_events::Topics;
use orderflow_order::{BatchMetrics, OrderError, Placed, Placer, Store};
use orderflow_platform::OutboxSignal;
use orderflow_platform::trace::TraceParent;
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;

mod orders;
use orders::{order, place};

async fn database() -> (TestDatabase, PgPool) {
    let (db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    // The catalogue lists the SKU these orders buy, so the placer admits them.
    sqlx::query("INSERT INTO catalogue (sku, available, revision) VALUES ('sku-a', 10, 1)")
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

async fn count(pool: &PgPool, statement: &str) -> i64 {
    sqlx::query_scalar(statement).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn orders_placed_in_one_statement_each_get_their_own_answer() {
    let (_db, pool) = database().await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let topics = Topics::default();
    let trace = TraceParent::new_root();
    let before = place(&store, "before").await;
    let (a, b, a_again, reused, retried) = (
        order("ana", "a", 100),
        order("bob", "a", 100),
        order("ana", "a", 100),
        order("ana", "before", 999),
        order("ana", "before", 100),
    );
    let answers = store
        .place_all(
            &[
                (&a, &trace),
                (&b, &trace),
                (&a_again, &trace),
                (&reused, &trace),
                (&retried, &trace),
            ],
            &topics,
        )
        .await
        .unwrap();
    let [a, b, a_again, reused, retried] = <[_; 5]>::try_from(answers).unwrap();
    let (a, b, a_again, retried) = (a.unwrap(), b.unwrap(), a_again.unwrap(), retried.unwrap());
    // Two new orders (one key, two customers); the same request twice in one call is one
    // order and its retry.
    assert!(a.created && b.created);
    assert_ne!(a.record.order_id, b.record.order_id);
    assert!(!a_again.created);
    assert_eq!(a_again.record.order_id, a.record.order_id);
    // A key placed before: the same order is its retry, a different one a conflict.
    assert!(!retried.created);
    assert_eq!(retried.record.order_id, before.record.order_id);
    assert!(
        matches!(reused, Err(OrderError::IdempotencyConflict(ref key)) if key == "before"),
        "{reused:?}"
    );
    // Three orders, each with its first history row and its two events, once.
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await, 3);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM order_status_history").await,
        3
    );
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT event_key, topic FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let ids: HashSet<String> = [&before, &a, &b]
        .iter()
        .map(|p| p.record.order_id.to_string())
        .collect();
    assert_eq!(events.len(), 6, "{events:?}");
    for id in &ids {
        let topics: Vec<&str> = events
            .iter()
            .filter(|(key, _)| key == id)
            .map(|(_, topic)| topic.as_str())
            .collect();
        assert_eq!(topics, ["orders", "order-status"], "order {id}");
    }
}

/// Holds `orders` locked until dropped (the transaction rolls back), so that statements
/// placing orders wait.
async fn lock_orders(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until a statement waits for a lock in the database.
async fn until_waiting(pool: &PgPool) {
    for _ in 0..200 {
        let waiting = count(
            pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no statement waited for the lock");
}

/// Places `orders` through a [`Placer`], all sent while the table `orders` is locked; the answer
/// of each: a writer waits on the lock with what it took, and everything else queues
/// meanwhile.
async fn place_while_locked(
    pool: &PgPool,
    orders: Vec<NewOrder>,
) -> Vec<Result<Placed, OrderError>> {
    let placer = Placer::start(
        Store::new(pool.clone(), OutboxSignal::default()),
        Topics::default(),
        BatchMetrics::default(),
    );
    let lock = lock_orders(pool).await;
    let calls: Vec<_> = orders
        .into_iter()
        .map(|order| {
            let placer = placer.clone();
            tokio::spawn(async move { placer.place(order).await })
        })
        .collect();
    until_waiting(pool).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(lock);
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

/// Checks that of the orders answered by `answers` only the one at `refused` failed, with an
/// error that says `why`, and that every other was placed with its two events.
async fn only_one_refused(
    pool: &PgPool,
    answers: Vec<Result<Placed, OrderError>>,
    refused: usize,
    why: &str,
) {
    let placed = answers.len() as i64 - 1;
    for (n, answer) in answers.into_iter().enumerate() {
        if n == refused {
            let error = answer.unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        } else {
            assert!(answer.unwrap_or_else(|e| panic!("order {n}: {e}")).created);
        }
    }
    assert_eq!(count(pool, "SELECT count(*) FROM orders").await, placed);
    assert_eq!(count(pool, "SELECT count(*) FROM outbox").await, 2 * placed);
}

#[tokio::test]
async fn orders_that_arrive_while_the_writers_are_busy_share_one_statement() {
    let (_db, pool) = database().await;
    let orders = (0..40)
        .map(|n| order("ana", &format!("k{n}"), 100))
        .collect();
    let mut placed = HashSet::new();
    for answer in place_while_locked(&pool, orders).await {
        let answer = answer.unwrap();
        assert!(answer.created);
        placed.insert(answer.record.order_id);
    }
    assert_eq!(placed.len(), 40);
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await, 40);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 80);
    // The orders of one statement share its time: at most one statement for each writer
    // that waited, and one for the rest.
    let statements = count(&pool, "SELECT count(DISTINCT created_at) FROM orders").await;
    assert!(statements <= 3, "{statements} statements for 40 orders");
}

#[tokio::test]
async fn an_order_the_database_refuses_fails_alone() {
    let (_db, pool) = database().await;
    // A fault in the database: it refuses every order of one customer.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_mallory() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.customer_id = 'mallory' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_mallory BEFORE INSERT ON orders
             FOR EACH ROW EXECUTE FUNCTION refuse_mallory();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let orders = (0..20)
        .map(|n| {
            let customer = if n == 10 { "mallory" } else { "ana" };
            order(customer, &format!("k{n}"), 100)
        })
        .collect();
    let answers = place_while_locked(&pool, orders).await;
    only_one_refused(&pool, answers, 10, "refused by a test trigger").await;
}

#[tokio::test]
async fn an_order_its_admission_refuses_fails_alone() {
    let (_db, pool) = database().await;
    let orders = (0..20)
        .map(|n| {
            let mut order = order("ana", &format!("k{n}"), 100);
            if n == 7 {
                order.items[0].sku = orderflow_domain::Sku::parse("sku", "sku-unlisted").unwrap();
            }
            order
        })
        .collect();
    let answers = place_while_locked(&pool, orders).await;
    only_one_refused(&pool, answers, 7, "unknown SKU \"sku-unlisted\"").await;
}

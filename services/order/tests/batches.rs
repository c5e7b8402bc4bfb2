//! Batches of the order consumer against real PostgreSQL, as the consumer loop applies them
//! (`apply_committed`, one transaction each): a batch's outcomes and catalogue entries applied
//! together leave every order, its history and the catalogue as one message at a time does,
//! and cause the same status changes; two instances applying batches that touch the same
//! orders at the same time (one consuming `payments`, the other `inventory`, as partition
//! assignments can fall) must not deadlock. Orders read together (`Store::with_history_all`,
//! the `HistoryReader` that WatchOrder's reads go through) each read as alone, and reads that
//! arrive while the readers are busy share statements.

use std::time::Duration;

use orderflow_domain::{NewOrder, OrderId};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_order::{BatchMetrics, HistoryReader, Store};
use orderflow_platform::consumer::Applied;
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{MessageContext, OutboxSignal};
use orderflow_proto::v1 as pb;
use orderflow_testkit::{TestDatabase, wait_for};
use sqlx::PgPool;

mod common;
use common::{apply, commit};
mod orders;
use orders::place;

fn ctx() -> MessageContext {
    MessageContext::replayed("t", 1)
}

fn paid(order_id: &str) -> Event {
    let money = ev::Money {
        amount_minor: 100,
        currency: "EUR".into(),
    };
    Event::PaymentProcessed(ev::PaymentProcessed {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        occurred_at: ev::now_millis(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        status: ev::PaymentStatus::Paid,
        amount: money.clone(),
        items: vec![ev::OrderLine {
            sku: "sku-a".into(),
            quantity: 1,
            unit_price: money,
        }],
        failure_reason: None,
        provider_reference: Some("ref".into()),
    })
}

fn confirmed(order_id: &str) -> Event {
    Event::InventoryUpdated(ev::InventoryUpdated {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        occurred_at: ev::now_millis(),
        status: ev::InventoryStatus::Confirmed,
        items: vec![ev::StockLine {
            sku: "sku-a".into(),
            quantity: 1,
        }],
        missing: Vec::new(),
    })
}

fn declined(order_id: &str) -> Event {
    let Event::PaymentProcessed(mut payment) = paid(order_id) else {
        unreachable!()
    };
    payment.status = ev::PaymentStatus::Failed;
    payment.failure_reason = Some("card declined".into());
    Event::PaymentProcessed(payment)
}

fn short(order_id: &str) -> Event {
    Event::InventoryUpdated(ev::InventoryUpdated {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        occurred_at: ev::now_millis(),
        status: ev::InventoryStatus::OutOfStock,
        items: Vec::new(),
        missing: vec![ev::MissingItem {
            sku: "sku-a".into(),
            requested: 1,
            available: 0,
        }],
    })
}

fn refunded(order_id: &str) -> Event {
    Event::PaymentRefunded(ev::PaymentRefunded {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        occurred_at: ev::now_millis(),
        payment_id: "pay".into(),
        refund_id: "ref".into(),
        amount: ev::Money {
            amount_minor: 100,
            currency: "EUR".into(),
        },
        reason: "out of stock".into(),
    })
}

fn catalogue(sku: &str, available: i32, revision: i64) -> Event {
    Event::CatalogueItemChanged(ev::CatalogueItemChanged {
        event_id: ev::new_event_id(),
        occurred_at: ev::now_millis(),
        sku: sku.into(),
        available,
        revision,
    })
}

/// Places ana's order keyed `key`; its id.
async fn place_id(store: &Store, key: &str) -> String {
    place(store, key).await.record.order_id.to_string()
}

/// Applies `batch` in one transaction and commits it; the (order, version, status) of each
/// status change it caused, in order.
async fn apply_caused(
    pool: &PgPool,
    batch: &[(Event, MessageContext)],
) -> Vec<(String, i64, String)> {
    commit(pool, batch)
        .await
        .expect("the batch applies")
        .into_iter()
        .filter_map(|a| match a {
            Applied::Processed(caused) => Some(caused),
            Applied::Duplicate => None,
        })
        .flatten()
        .map(|event| match event {
            Event::OrderStatusChanged(e) => (e.order_id, e.version, format!("{:?}", e.status)),
            other => panic!("the order service caused {other:?}"),
        })
        .collect()
}

/// Every order (by the place it was placed in: status, version, reason, missing items), its
/// history (version, status, reason), the catalogue, and the status changes caused.
#[derive(Debug, PartialEq)]
struct State {
    orders: Vec<(usize, String, i64, Option<String>, serde_json::Value)>,
    history: Vec<(usize, i64, String, Option<String>)>,
    catalogue: Vec<(String, i32, i64)>,
    caused: Vec<(usize, i64, String)>,
}

async fn state(pool: &PgPool, placed: &[String], caused: Vec<(String, i64, String)>) -> State {
    let index = |id: uuid::Uuid| placed.iter().position(|p| *p == id.to_string()).unwrap();
    let orders: Vec<(uuid::Uuid, String, i64, Option<String>, serde_json::Value)> = sqlx::query_as(
        "SELECT order_id, status, version, status_reason, missing_items FROM orders",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut orders: Vec<_> = orders
        .into_iter()
        .map(|(id, status, version, reason, missing)| (index(id), status, version, reason, missing))
        .collect();
    orders.sort_by_key(|o| o.0);
    let history: Vec<(uuid::Uuid, i64, String, Option<String>)> =
        sqlx::query_as("SELECT order_id, version, status, reason FROM order_status_history")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut history: Vec<_> = history
        .into_iter()
        .map(|(id, version, status, reason)| (index(id), version, status, reason))
        .collect();
    history.sort_by_key(|h| (h.0, h.1));
    let catalogue = sqlx::query_as("SELECT sku, available, revision FROM catalogue ORDER BY sku")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut caused: Vec<(usize, i64, String)> = caused
        .into_iter()
        .map(|(id, version, status)| (index(uuid::Uuid::parse_str(&id).unwrap()), version, status))
        .collect();
    caused.sort();
    State {
        orders,
        history,
        catalogue,
        caused,
    }
}

/// The outcomes of eight orders as the order service's inputs deliver them, with the
/// orders' ids: completed, declined, out of stock and refunded, the stock result before the
/// payment, an outcome delivered twice, one order on its way, and catalogue entries out of
/// revision order.
fn outcomes(placed: &[String]) -> Vec<Event> {
    let o = |i: usize| placed[i].as_str();
    let first = paid(o(4));
    vec![
        paid(o(0)),
        catalogue("sku-a", 10, 1),
        confirmed(o(0)),
        declined(o(1)),
        paid(o(2)),
        short(o(2)),
        catalogue("sku-b", 5, 3),
        refunded(o(2)),
        // The stock result read before the payment: it implies the payment.
        confirmed(o(3)),
        paid(o(3)),
        first.clone(),
        catalogue("sku-b", 4, 2),
        first,
        confirmed(o(4)),
        paid(o(5)),
        catalogue("sku-a", 9, 2),
        catalogue("sku-a", 8, 2),
        paid(o(6)),
        short(o(6)),
        declined(o(7)),
        refunded(o(6)),
    ]
}

#[tokio::test]
async fn batches_leave_the_orders_one_message_at_a_time_leaves() {
    let mut expected: Option<State> = None;
    for size in [1, 2, 3, 64] {
        let (_db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
        let store = Store::new(pool.clone(), OutboxSignal::default());
        let mut placed = Vec::new();
        for n in 0..8 {
            placed.push(place_id(&store, &format!("order-{n}")).await);
        }
        let batch: Vec<(Event, MessageContext)> =
            outcomes(&placed).into_iter().map(|e| (e, ctx())).collect();
        let mut caused = Vec::new();
        for chunk in batch.chunks(size) {
            caused.extend(apply_caused(&pool, chunk).await);
        }
        let now = state(&pool, &placed, caused).await;
        match &expected {
            None => {
                // One at a time: what the outcomes must make, checked by hand once.
                let statuses: Vec<(&str, i64)> =
                    now.orders.iter().map(|o| (o.1.as_str(), o.2)).collect();
                assert_eq!(
                    statuses,
                    [
                        ("COMPLETED", 3),
                        ("FAILED", 2),
                        ("REFUNDED", 4),
                        ("COMPLETED", 3),
                        ("COMPLETED", 3),
                        ("PAID", 2),
                        ("REFUNDED", 4),
                        ("FAILED", 2),
                    ]
                );
                assert_eq!(
                    now.catalogue,
                    [("sku-a".to_owned(), 9, 2), ("sku-b".to_owned(), 5, 3)]
                );
                // Every transition caused one status change: versions 2.. of each order.
                let changes: usize = statuses.iter().map(|(_, v)| (*v - 1) as usize).sum();
                assert_eq!(now.caused.len(), changes);
                assert_eq!(now.history.len(), changes + 8);
                let reasons: Vec<Option<&str>> =
                    now.orders.iter().map(|o| o.3.as_deref()).collect();
                let (declined, refunded) = (Some("card declined"), Some("out of stock"));
                assert_eq!(
                    reasons,
                    [
                        None, declined, refunded, None, None, None, refunded, declined
                    ]
                );
                let short: Vec<usize> = now
                    .orders
                    .iter()
                    .filter(|o| o.4.as_array().is_some_and(|missing| !missing.is_empty()))
                    .map(|o| o.0)
                    .collect();
                assert_eq!(short, [2, 6]);
                expected = Some(now);
            }
            Some(expected) => assert_eq!(&now, expected, "batches of {size}"),
        }
    }
}

/// Finding 9 of issue 11: one instance applies the payments of orders x and y, another the
/// stock results of y and x, each status change slowed inside its transaction so the two
/// batches overlap. Every batch commits as a whole, every order completes, and PostgreSQL
/// detected no deadlock.
#[tokio::test]
async fn batches_over_the_same_orders_in_opposite_orders_do_not_deadlock() {
    let (_db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let place = |n: usize| {
        let store = store.clone();
        async move {
            let request = pb::PlaceOrderRequest {
                customer_id: "ana".into(),
                items: vec![pb::OrderLine {
                    sku: "sku-a".into(),
                    quantity: 1,
                    unit_price: Some(pb::Money {
                        amount_minor: 100,
                        currency: "EUR".into(),
                    }),
                }],
                payment_method: "pm_card_visa".into(),
                idempotency_key: format!("order-{n}"),
                validate_only: false,
            };
            let order = NewOrder::try_from(&request).expect("valid order");
            store
                .place(&order, &TraceParent::new_root(), &Topics::default())
                .await
                .expect("place")
                .record
                .order_id
                .to_string()
        }
    };
    // Each status change takes a while once its order is locked.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
         CREATE TRIGGER slow_down AFTER INSERT ON order_status_history FOR EACH ROW EXECUTE FUNCTION slow_down();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = orderflow_testkit::deadlocks(&pool).await;

    let mut failures = Vec::new();
    let mut placed = Vec::new();
    for round in 0..3 {
        let (x, y) = (place(2 * round).await, place(2 * round + 1).await);
        let (one, other) = tokio::join!(
            apply(&pool, vec![paid(&x), paid(&y)]),
            apply(&pool, vec![confirmed(&y), confirmed(&x)]),
        );
        for (instance, result) in [(1, one), (2, other)] {
            if let Err(e) = result {
                failures.push(format!("round {round}, instance {instance}: {e}"));
            }
        }
        placed.extend([x, y]);
    }
    assert!(
        failures.is_empty(),
        "batches that fell back to one message at a time:\n{}",
        failures.join("\n")
    );
    for order_id in &placed {
        let (status, version): (String, i64) =
            sqlx::query_as("SELECT status, version FROM orders WHERE order_id = $1::uuid")
                .bind(order_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), version), ("COMPLETED", 3), "{order_id}");
    }
    assert_eq!(
        orderflow_testkit::deadlocks(&pool).await - before,
        0,
        "deadlocks detected"
    );
}

/// An answer of a history read, comparable: the order and its changes as they read, or the
/// error's message.
fn shown(answer: Result<orderflow_order::History, orderflow_order::OrderError>) -> String {
    match answer {
        Ok(history) => format!("{history:?}"),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test]
async fn orders_read_together_each_read_as_alone() {
    let (_db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let completed = place_id(&store, "k1").await;
    let failed = place_id(&store, "k2").await;
    let pending = place_id(&store, "k3").await;
    apply(
        &pool,
        vec![paid(&completed), confirmed(&completed), declined(&failed)],
    )
    .await
    .unwrap();
    let id = |s: &str| OrderId::parse("order_id", s).unwrap();
    let missing = OrderId::from(uuid::Uuid::now_v7());
    // The same order more than once, after different versions; one not there; one with no
    // change after the version asked for.
    let asked = [
        (id(&completed), 0),
        (missing, 0),
        (id(&failed), 0),
        (id(&completed), 2),
        (id(&pending), 0),
        (id(&completed), 9),
        (id(&failed), 1),
    ];
    let together = store.with_history_all(&asked).await.unwrap();
    assert_eq!(together.len(), asked.len());
    let mut changes = Vec::new();
    for ((order_id, after), answer) in asked.iter().zip(together) {
        if let Ok((record, history)) = &answer {
            assert_eq!(record.order_id, *order_id);
            changes.push(history.iter().map(|c| c.version).collect::<Vec<_>>());
        }
        let alone = store.with_history(*order_id, *after).await;
        assert_eq!(shown(answer), shown(alone), "{order_id} after {after}");
    }
    // What the answers hold, not only that they agree: PENDING, PAID, COMPLETED; PENDING,
    // FAILED; PENDING.
    let expected: Vec<Vec<i64>> =
        vec![vec![1, 2, 3], vec![1, 2], vec![3], vec![1], vec![], vec![2]];
    assert_eq!(changes, expected);
}

#[tokio::test]
async fn reads_that_arrive_while_the_readers_are_busy_share_statements() {
    let (db, pool) = TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let mut placed = Vec::new();
    for n in 0..30 {
        placed.push(place_id(&store, &format!("k{n}")).await);
    }
    let batches = BatchMetrics::default();
    let reader = HistoryReader::start(store, batches.clone());
    // The test's own connections: one holds the history locked, one watches who waits.
    let own = db.pool().await;
    let mut lock = own.begin().await.unwrap();
    sqlx::query("LOCK TABLE order_status_history IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let reads: Vec<_> = placed
        .iter()
        .map(|order_id| {
            let (reader, order_id) = (
                reader.clone(),
                OrderId::parse("order_id", order_id).unwrap(),
            );
            tokio::spawn(async move { reader.read(order_id, 0).await })
        })
        .collect();
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&own)
        .await
        .unwrap()
    };
    wait_for(
        "a read waiting for the lock",
        Duration::from_secs(10),
        || async { (waiting().await > 0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 30 reads in flight, and a pool of 10 connections: read each on its own, 10 would wait.
    let statements = waiting().await;
    assert!(
        statements <= orderflow_order::BATCH_WORKERS as i64,
        "{statements} statements waiting for 30 reads"
    );
    lock.rollback().await.unwrap();
    for (read, order_id) in reads.into_iter().zip(&placed) {
        let (record, changes) = read.await.unwrap().unwrap();
        assert_eq!(record.order_id.to_string(), *order_id);
        assert_eq!(changes.len(), 1, "{order_id}: PENDING");
    }
    // At most one batch for each reader that waited on the lock, and one for the rest: read
    // one at a time, it would be thirty.
    let (taken, calls) = batches.counts("history_reader");
    assert_eq!(calls, 30);
    assert!(taken <= 3, "{taken} batches for 30 reads");
}

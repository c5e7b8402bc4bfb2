//! The analytics service's batches against real PostgreSQL, applied as the consumer loop
//! applies them (`apply_committed`: one transaction each): a batch's events summed and written
//! together leave exactly the figures that the same events applied one at a time leave,
//! whatever the batches' sizes, with changes of one order out of order and events delivered
//! twice; a message the handler refuses fails its batch and writes nothing.

use orderflow_analytics::{AnalyticsHandler, MIGRATOR, store};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_platform::consumer::{BatchFailure, apply_committed};
use orderflow_platform::{MessageContext, OutboxSignal};
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

/// 12:00 on a day in 2026, in milliseconds; events fall in the minutes after it.
const NOON: i64 = 1_796_040_000_000;

fn money(amount_minor: i64, currency: &str) -> ev::Money {
    ev::Money {
        amount_minor,
        currency: currency.into(),
    }
}

fn status(order: Uuid, version: i64, status: ev::OrderStatus, at: i64) -> Event {
    Event::OrderStatusChanged(ev::OrderStatusChanged {
        event_id: ev::new_event_id(),
        order_id: order.to_string(),
        occurred_at: at,
        customer_id: "alice".into(),
        version,
        status,
        reason: None,
    })
}

fn payment(order: Uuid, status: ev::PaymentStatus, amount: ev::Money, at: i64) -> Event {
    Event::PaymentProcessed(ev::PaymentProcessed {
        event_id: ev::new_event_id(),
        order_id: order.to_string(),
        occurred_at: at,
        payment_id: format!("pay-{order}"),
        status,
        amount,
        items: Vec::new(),
        failure_reason: None,
        provider_reference: None,
    })
}

fn refund(order: Uuid, amount: ev::Money, at: i64) -> Event {
    Event::PaymentRefunded(ev::PaymentRefunded {
        event_id: ev::new_event_id(),
        order_id: order.to_string(),
        occurred_at: at,
        payment_id: format!("pay-{order}"),
        refund_id: format!("ref-{order}"),
        amount,
        reason: "out of stock".into(),
    })
}

fn out_of_stock(order: Uuid, sku: &str, requested: i32, available: i32, at: i64) -> Event {
    Event::InventoryUpdated(ev::InventoryUpdated {
        event_id: ev::new_event_id(),
        order_id: order.to_string(),
        occurred_at: at,
        status: ev::InventoryStatus::OutOfStock,
        items: Vec::new(),
        missing: vec![ev::MissingItem {
            sku: sku.into(),
            requested,
            available,
        }],
    })
}

/// The events of a day's trade, as the input topics deliver them: orders completed, declined
/// and out of stock over three minutes and two currencies, one order's changes arriving
/// newest first, another's twice, and an event of no interest to the figures.
fn a_days_events() -> Vec<Event> {
    use ev::OrderStatus::*;
    let minute = 60_000;
    let mut events = Vec::new();
    for k in 0..12i64 {
        let order = Uuid::now_v7();
        let at = NOON + (k % 3) * minute + k;
        let currency = if k % 4 == 0 { "USD" } else { "EUR" };
        let amount = money(1_000 + k, currency);
        events.push(status(order, 1, Pending, at));
        match k % 6 {
            // Declined.
            1 => {
                events.push(payment(order, ev::PaymentStatus::Failed, amount, at));
                events.push(status(order, 2, Failed, at));
            }
            // Paid, then too little stock: refunded.
            2 => {
                events.push(payment(order, ev::PaymentStatus::Paid, amount.clone(), at));
                events.push(status(order, 2, Paid, at));
                events.push(out_of_stock(order, &format!("sku-{}", k % 4), 3, 1, at));
                events.push(refund(order, amount, at + minute));
                events.push(status(order, 3, OutOfStock, at));
            }
            // Its changes newest first (a redelivery put the older ones back behind it).
            3 => {
                events.push(payment(order, ev::PaymentStatus::Paid, amount, at));
                events.push(status(order, 3, Completed, at));
                events.push(status(order, 2, Paid, at));
            }
            // Still on its way.
            4 => {}
            _ => {
                events.push(payment(order, ev::PaymentStatus::Paid, amount, at));
                events.push(status(order, 2, Paid, at));
                events.push(status(order, 3, Completed, at));
            }
        }
    }
    // Delivered twice: the same events again (same ids), after the rest.
    let again: Vec<Event> = events.iter().skip(5).take(7).cloned().collect();
    events.extend(again);
    events.push(Event::CatalogueItemChanged(ev::CatalogueItemChanged {
        event_id: ev::new_event_id(),
        occurred_at: NOON,
        sku: "sku-0".into(),
        available: 10,
        revision: 1,
    }));
    events
}

fn messages(events: &[Event]) -> Vec<(Event, MessageContext)> {
    events
        .iter()
        .map(|e| (e.clone(), MessageContext::replayed("order-status", 1)))
        .collect()
}

/// Applies `batch` as the consumer loop's fast path does, in a transaction of its own.
async fn apply(pool: &PgPool, batch: &[(Event, MessageContext)]) -> Result<(), BatchFailure> {
    let signal = OutboxSignal::default();
    apply_committed(
        pool,
        "analytics",
        &Topics::default(),
        &AnalyticsHandler,
        batch,
        &signal,
    )
    .await
    .map(drop)
}

/// Every figure and every order's row.
async fn everything(pool: &PgPool) -> (store::Figures, Vec<(Uuid, String, i64)>) {
    let figures = store::figures(pool, 1_000).await.unwrap();
    let rows = sqlx::query_as("SELECT order_id, status, version FROM order_status ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap();
    (figures, rows)
}

#[tokio::test]
async fn batches_of_any_size_leave_the_figures_one_event_at_a_time_leaves() {
    let events = a_days_events();
    let all = messages(&events);

    let (_one_db, one_at_a_time) = TestDatabase::migrated("analytics", &MIGRATOR).await;
    for message in &all {
        apply(&one_at_a_time, std::slice::from_ref(message))
            .await
            .expect("a message applies");
    }
    let expected = everything(&one_at_a_time).await;

    // What the events must have made, counted by hand: 12 orders, 2 declined (k = 1, 7),
    // 2 out of stock (2, 8), 2 on their way (4, 10), the other 6 completed.
    let (figures, rows) = &expected;
    assert_eq!(rows.len(), 12);
    let orders: Vec<(&str, i64)> = figures
        .orders
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    assert_eq!(
        orders,
        [
            ("COMPLETED", 6),
            ("FAILED", 2),
            ("OUT_OF_STOCK", 2),
            ("PENDING", 2)
        ]
    );
    assert_eq!((figures.paid, figures.declined), (8, 2));
    let units_short: i64 = figures.stock_outs.iter().map(|(_, _, short)| short).sum();
    assert_eq!(units_short, 4);

    for size in [2, 5, 64] {
        let (_db, batched) = TestDatabase::migrated("analytics", &MIGRATOR).await;
        for batch in all.chunks(size) {
            apply(&batched, batch).await.expect("a batch applies");
        }
        assert_eq!(everything(&batched).await, expected, "batches of {size}");
        // Delivered again whole (a rebalance): every id was recorded, nothing moves.
        apply(&batched, &all)
            .await
            .expect("the batch applies again");
        assert_eq!(
            everything(&batched).await,
            expected,
            "batches of {size}, again"
        );
    }
}

#[tokio::test]
async fn a_message_the_handler_refuses_fails_its_batch_and_writes_nothing() {
    let (_db, pool) = TestDatabase::migrated("analytics", &MIGRATOR).await;
    let order = Uuid::now_v7();
    let mut events = vec![
        status(order, 1, ev::OrderStatus::Pending, NOON),
        payment(order, ev::PaymentStatus::Paid, money(500, "EUR"), NOON),
    ];
    let Event::OrderStatusChanged(mut bad) = status(order, 2, ev::OrderStatus::Paid, NOON) else {
        unreachable!()
    };
    bad.order_id = "not-a-uuid".into();
    events.push(Event::OrderStatusChanged(bad));

    let failure = apply(&pool, &messages(&events))
        .await
        .expect_err("the batch is refused");
    assert!(
        failure.to_string().contains("not-a-uuid"),
        "the error names what is wrong: {failure}"
    );
    assert_eq!(
        everything(&pool).await,
        (store::Figures::default(), Vec::new())
    );
    // Applied alone, as the loop does next, the good ones count and the bad one is refused.
    for message in messages(&events) {
        let _ = apply(&pool, std::slice::from_ref(&message)).await;
    }
    let (figures, rows) = everything(&pool).await;
    assert_eq!(rows, [(order, "PENDING".to_owned(), 1)]);
    assert_eq!(figures.paid, 1);
}

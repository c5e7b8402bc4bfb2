//! Batches of the order consumer against real PostgreSQL: two instances applying batches
//! that touch the same orders at the same time (one consuming `payments`, the other
//! `inventory`, as partition assignments can fall), as the consumer loop applies them
//! (`apply_batch` in one transaction each), must not deadlock.

use orderflow_domain::NewOrder;
use orderflow_events::{self as ev, Event, Topics};
use orderflow_order::{OrderHandler, Store, TransitionMetrics};
use orderflow_platform::consumer::apply_batch;
use orderflow_platform::{MessageContext, OutboxSignal};
use orderflow_proto::v1 as pb;
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;

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

/// Applies `events` as one batch in one transaction and commits it, as the consumer loop's
/// fast path does; the error, if the batch failed.
async fn apply(pool: &PgPool, events: Vec<Event>) -> Result<(), String> {
    let handler = OrderHandler {
        transitions: TransitionMetrics::default(),
    };
    let batch: Vec<(Event, MessageContext)> = events.into_iter().map(|e| (e, ctx())).collect();
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    match apply_batch(&mut tx, "order", &Topics::default(), &handler, &batch).await {
        Ok(_) => tx.commit().await.map_err(|e| e.to_string()),
        Err(failure) => {
            let _ = tx.rollback().await;
            Err(failure.to_string())
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
                .place(&order, &Topics::default())
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

//! Batches of the inventory consumer against real PostgreSQL: two instances applying batches
//! that share SKUs at the same time, as the consumer loop applies them (`apply_batch` in one
//! transaction each), must not deadlock.

use orderflow_events::{self as ev, Event, Topics};
use orderflow_inventory::InventoryHandler;
use orderflow_platform::MessageContext;
use orderflow_platform::consumer::apply_batch;
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;

/// A paid order for one unit of each of `skus`.
fn paid(skus: &[&str]) -> Event {
    let price = ev::Money {
        amount_minor: 100,
        currency: "EUR".into(),
    };
    Event::PaymentProcessed(ev::PaymentProcessed {
        event_id: ev::new_event_id(),
        order_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: ev::now_millis(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        status: ev::PaymentStatus::Paid,
        amount: ev::Money {
            amount_minor: 100 * skus.len() as i64,
            currency: "EUR".into(),
        },
        items: skus
            .iter()
            .map(|sku| ev::OrderLine {
                sku: (*sku).into(),
                quantity: 1,
                unit_price: price.clone(),
            })
            .collect(),
        failure_reason: None,
        provider_reference: Some("ref".into()),
    })
}

fn ctx() -> MessageContext {
    MessageContext::replayed("payments", 1)
}

/// Applies `events` as one batch in one transaction and commits it, as the consumer loop's
/// fast path does; the error, if the batch failed.
async fn apply(pool: &PgPool, events: Vec<Event>) -> Result<(), String> {
    let batch: Vec<(Event, MessageContext)> = events.into_iter().map(|e| (e, ctx())).collect();
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    match apply_batch(
        &mut tx,
        "inventory",
        &Topics::default(),
        &InventoryHandler,
        &batch,
    )
    .await
    {
        Ok(_) => tx.commit().await.map_err(|e| e.to_string()),
        Err(failure) => {
            let _ = tx.rollback().await;
            Err(failure.to_string())
        }
    }
}

/// Finding 9 of issue 11: two batches over the same SKUs in opposite orders (one instance
/// has a's order first, the other b's), each message slowed inside its transaction so the two
/// overlap, as they do under load. Every batch commits as a whole, and PostgreSQL detected no
/// deadlock.
#[tokio::test]
async fn batches_over_shared_skus_in_opposite_orders_do_not_deadlock() {
    let db = TestDatabase::create("inventory").await;
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(db.url()),
        &orderflow_inventory::MIGRATOR,
    )
    .await
    .expect("inventory database");
    sqlx::query("INSERT INTO stock (sku, available) VALUES ('sku-a', 1000), ('sku-b', 1000), ('sku-c', 1000)")
        .execute(&pool)
        .await
        .unwrap();
    // Each order's settlement takes a while once its rows are locked.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$;
         CREATE TRIGGER slow_down AFTER INSERT ON reservations FOR EACH ROW EXECUTE FUNCTION slow_down();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = orderflow_testkit::deadlocks(&pool).await;

    let mut failures = Vec::new();
    for round in 0..3 {
        let (one, other) = tokio::join!(
            apply(
                &pool,
                vec![paid(&["sku-a"]), paid(&["sku-c"]), paid(&["sku-b"])]
            ),
            apply(
                &pool,
                vec![
                    paid(&["sku-b"]),
                    paid(&["sku-c"]),
                    paid(&["sku-a", "sku-c"])
                ]
            ),
        );
        for (instance, result) in [(1, one), (2, other)] {
            if let Err(e) = result {
                failures.push(format!("round {round}, instance {instance}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "batches that fell back to one message at a time:\n{}",
        failures.join("\n")
    );
    let reserved: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reserved, 18, "every order settled");
    let available: Vec<i32> = sqlx::query_scalar("SELECT available FROM stock ORDER BY sku")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(available, vec![994, 994, 991]);
    assert_eq!(
        orderflow_testkit::deadlocks(&pool).await - before,
        0,
        "deadlocks detected"
    );
}

//! The inventory service's writes against real PostgreSQL: two instances applying batches
//! that share SKUs at the same time, as the consumer loop applies them (`apply_batch` in one
//! transaction each), must not deadlock; and every change of a SKU's stock, by an operator or
//! by a paid order, puts the SKU's new catalogue entry in the outbox with it.

use orderflow_domain::{Sku, StockDelta, StockLevel};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_inventory::{InventoryHandler, Store};
use orderflow_platform::consumer::apply_batch;
use orderflow_platform::{MessageContext, OutboxSignal};
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

async fn database() -> (TestDatabase, PgPool) {
    TestDatabase::migrated("inventory", &orderflow_inventory::MIGRATOR).await
}

/// The catalogue entries in the outbox, in outbox order, as (key, sku, available, revision).
async fn catalogue_entries(pool: &PgPool) -> Vec<(String, String, i32, i64)> {
    let rows: Vec<(String, String, serde_json::Value)> =
        sqlx::query_as("SELECT topic, event_key, payload FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .filter_map(|(topic, key, payload)| {
            match serde_json::from_value::<Event>(payload).unwrap() {
                Event::CatalogueItemChanged(e) => {
                    assert_eq!(topic, Topics::default().catalogue);
                    Some((key, e.sku, e.available, e.revision))
                }
                _ => None,
            }
        })
        .collect()
}

fn sku(name: &str) -> Sku {
    Sku::parse("sku", name).unwrap()
}

#[tokio::test]
async fn every_stock_change_publishes_the_sku_s_catalogue_entry() {
    let (_db, pool) = database().await;
    let store = Store::new(pool.clone(), Topics::default(), OutboxSignal::default());
    store
        .set(&sku("sku-a"), StockLevel::parse("available", 10).unwrap())
        .await
        .unwrap();
    store
        .adjust(&sku("sku-a"), StockDelta::parse("delta", 5).unwrap())
        .await
        .unwrap();
    // A refused change changes nothing and publishes nothing.
    store
        .adjust(&sku("sku-a"), StockDelta::parse("delta", -100).unwrap())
        .await
        .unwrap_err();
    store
        .set(&sku("sku-b"), StockLevel::parse("available", 0).unwrap())
        .await
        .unwrap();
    // A paid order deducts: its SKU's new level is published; one out of stock changes none.
    apply(&pool, vec![paid(&["sku-a"]), paid(&["sku-b"])])
        .await
        .unwrap();
    let entry =
        |sku: &str, available, revision| (sku.to_owned(), sku.to_owned(), available, revision);
    assert_eq!(
        catalogue_entries(&pool).await,
        vec![
            entry("sku-a", 10, 1),
            entry("sku-a", 15, 2),
            entry("sku-b", 0, 1),
            entry("sku-a", 14, 3),
        ]
    );
}

#[tokio::test]
async fn stock_from_before_the_catalogue_is_announced_once_at_start() {
    let (_db, pool) = database().await;
    // As the migration leaves stock that existed before it: revision 0, never published.
    sqlx::query("INSERT INTO stock (sku, available) VALUES ('old-a', 4), ('old-b', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let store = Store::new(pool.clone(), Topics::default(), OutboxSignal::default());
    assert_eq!(store.announce_unpublished().await.unwrap(), 2);
    assert_eq!(
        store.announce_unpublished().await.unwrap(),
        0,
        "announced once"
    );
    let mut entries = catalogue_entries(&pool).await;
    entries.sort();
    assert_eq!(
        entries,
        vec![
            ("old-a".into(), "old-a".into(), 4, 1),
            ("old-b".into(), "old-b".into(), 0, 1)
        ]
    );
}

/// Finding 9 of issue 11: two batches over the same SKUs in opposite orders (one instance
/// has a's order first, the other b's), each message slowed inside its transaction so the two
/// overlap, as they do under load. Every batch commits as a whole, and PostgreSQL detected no
/// deadlock.
#[tokio::test]
async fn batches_over_shared_skus_in_opposite_orders_do_not_deadlock() {
    let (_db, pool) = database().await;
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

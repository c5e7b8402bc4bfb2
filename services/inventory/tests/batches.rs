//! The inventory service's writes against real PostgreSQL: two instances applying batches
//! that share SKUs at the same time, as the consumer loop applies them (`apply_committed`, one
//! transaction each), must not deadlock; and every change of a SKU's stock, by an operator or
//! by a paid order, puts the SKU's new catalogue entry in the outbox with it.

use orderflow_domain::{Sku, StockDelta, StockLevel};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_inventory::{InventoryHandler, Store};
use orderflow_platform::consumer::apply_committed;
use orderflow_platform::{MessageContext, OutboxSignal};
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;

/// A paid order for one unit of each of `skus`.
fn paid(skus: &[&str]) -> Event {
    let lines: Vec<(&str, i32)> = skus.iter().map(|sku| (*sku, 1)).collect();
    paid_for(&uuid::Uuid::now_v7().to_string(), &lines)
}

/// The payment of order `order_id` for `lines` (SKU, quantity), PAID.
fn paid_for(order_id: &str, lines: &[(&str, i32)]) -> Event {
    let price = ev::Money {
        amount_minor: 100,
        currency: "EUR".into(),
    };
    let units: i32 = lines.iter().map(|(_, quantity)| quantity).sum();
    Event::PaymentProcessed(ev::PaymentProcessed {
        event_id: ev::new_event_id(),
        order_id: order_id.into(),
        occurred_at: ev::now_millis(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        status: ev::PaymentStatus::Paid,
        amount: ev::Money {
            amount_minor: 100 * i64::from(units),
            currency: "EUR".into(),
        },
        items: lines
            .iter()
            .map(|(sku, quantity)| ev::OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
                unit_price: price.clone(),
            })
            .collect(),
        failure_reason: None,
        provider_reference: Some("ref".into()),
    })
}

/// The payment of order `order_id` for `lines`, declined.
fn declined_for(order_id: &str, lines: &[(&str, i32)]) -> Event {
    let Event::PaymentProcessed(mut payment) = paid_for(order_id, lines) else {
        unreachable!()
    };
    payment.status = ev::PaymentStatus::Failed;
    payment.failure_reason = Some("card declined".into());
    payment.provider_reference = None;
    Event::PaymentProcessed(payment)
}

fn ctx() -> MessageContext {
    MessageContext::replayed("payments", 1)
}

/// Applies `events` as one batch, as the consumer loop's fast path does, in a transaction of
/// its own; the error, if the batch failed.
async fn apply(pool: &PgPool, events: Vec<Event>) -> Result<(), String> {
    let batch: Vec<(Event, MessageContext)> = events.into_iter().map(|e| (e, ctx())).collect();
    let signal = OutboxSignal::default();
    apply_committed(
        pool,
        "inventory",
        &Topics::default(),
        &InventoryHandler,
        &batch,
        &signal,
    )
    .await
    .map(drop)
    .map_err(|failure| failure.to_string())
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

/// What the inventory database holds, to compare: each SKU's (available, revision), each
/// order's reservation (status, items, missing), and the outbox's events in order, as
/// (topic, key, payload) without the fields that differ run to run (ids, times).
#[derive(Debug, PartialEq)]
struct Snapshot {
    stock: Vec<(String, i32, i64)>,
    reservations: Vec<(uuid::Uuid, String, serde_json::Value, serde_json::Value)>,
    outbox: Vec<(String, String, serde_json::Value)>,
}

async fn snapshot(pool: &PgPool) -> Snapshot {
    fn without_ids(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(fields) => {
                fields.remove("event_id");
                fields.remove("occurred_at");
                fields.values_mut().for_each(without_ids);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(without_ids),
            _ => {}
        }
    }
    let outbox: Vec<(String, String, serde_json::Value)> =
        sqlx::query_as("SELECT topic, event_key, payload FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    Snapshot {
        stock: sqlx::query_as("SELECT sku, available, revision FROM stock ORDER BY sku")
            .fetch_all(pool)
            .await
            .unwrap(),
        reservations: sqlx::query_as(
            "SELECT order_id, status, items, missing FROM reservations ORDER BY order_id",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        outbox: outbox
            .into_iter()
            .map(|(topic, key, mut payload)| {
                without_ids(&mut payload);
                (topic, key, payload)
            })
            .collect(),
    }
}

/// A batch's paid orders are settled together (four statements for the batch): each order
/// must be decided on what the orders before it left, a repeated payment must settle nothing
/// again, and the catalogue must get one entry per deduction, with its revision, exactly as
/// when every message is its own batch. The scenario, by hand: a 10, b 3, c 0, d never
/// stocked.
#[tokio::test]
async fn batches_settle_the_stock_as_one_message_at_a_time_does() {
    let order = |n: u32| format!("00000000-0000-7000-8000-{n:012}");
    let events = || {
        vec![
            paid_for(&order(1), &[("sku-a", 4)]), // CONFIRMED: a 6
            paid_for(&order(2), &[("sku-a", 3), ("sku-b", 2)]), // CONFIRMED: a 3, b 1
            declined_for(&order(3), &[("sku-a", 1)]), // nothing
            paid_for(&order(4), &[("sku-a", 4)]), // OUT_OF_STOCK: a has 3
            paid_for(&order(5), &[("sku-b", 1), ("sku-c", 1)]), // OUT_OF_STOCK: c has 0
            paid_for(&order(6), &[("sku-d", 1)]), // OUT_OF_STOCK: d unknown
            paid_for(&order(1), &[("sku-a", 4)]), // repeated: nothing
            paid_for(&order(7), &[("sku-a", 3), ("sku-b", 1)]), // CONFIRMED: a 0, b 0
            paid_for(&order(8), &[("sku-a", 1), ("sku-a", 1)]), // OUT_OF_STOCK: a 2 of 0
            paid_for(&order(9), &[("sku-b", 1)]), // OUT_OF_STOCK: b has 0
        ]
    };
    let mut snapshots = Vec::new();
    for size in [1, 2, 3, 10] {
        let (_db, pool) = database().await;
        sqlx::query(
            "INSERT INTO stock (sku, available, revision)
             VALUES ('sku-a', 10, 1), ('sku-b', 3, 1), ('sku-c', 0, 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for batch in events().chunks(size) {
            apply(&pool, batch.to_vec())
                .await
                .unwrap_or_else(|e| panic!("batches of {size}: {e}"));
        }
        snapshots.push((size, snapshot(&pool).await));
    }
    let (_, one_at_a_time) = &snapshots[0];
    // By hand, one message at a time.
    assert_eq!(
        one_at_a_time.stock,
        vec![
            ("sku-a".into(), 0, 4),
            ("sku-b".into(), 0, 3),
            ("sku-c".into(), 0, 1)
        ]
    );
    let statuses: Vec<(u128, &str)> = one_at_a_time
        .reservations
        .iter()
        .map(|(id, status, ..)| (id.as_u128() & 0xffff, status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (1, "CONFIRMED"),
            (2, "CONFIRMED"),
            (4, "OUT_OF_STOCK"),
            (5, "OUT_OF_STOCK"),
            (6, "OUT_OF_STOCK"),
            (7, "CONFIRMED"),
            (8, "OUT_OF_STOCK"),
            (9, "OUT_OF_STOCK"),
        ]
    );
    // The catalogue entries, (sku, available, revision), one per deduction, in order.
    let entries: Vec<(&str, i64, i64)> = one_at_a_time
        .outbox
        .iter()
        .filter(|(topic, ..)| *topic == Topics::default().catalogue)
        .map(|(_, _, payload)| {
            assert_eq!(payload["type"], "CatalogueItemChanged");
            let entry = &payload["event"];
            (
                entry["sku"].as_str().unwrap(),
                entry["available"].as_i64().unwrap(),
                entry["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("sku-a", 6, 2),
            ("sku-a", 3, 3),
            ("sku-b", 1, 2),
            ("sku-a", 0, 4),
            ("sku-b", 0, 3),
        ]
    );
    assert_eq!(
        one_at_a_time.outbox.len(),
        8 + 5,
        "an outcome per order settled"
    );
    for (size, snapshot) in &snapshots[1..] {
        assert_eq!(snapshot, one_at_a_time, "batches of {size}");
    }
}

//! The order service's read models of the catalogue and of the customer directory against
//! real PostgreSQL, fed as the consumer loop feeds them (`apply_committed`): the newest revision
//! of each SKU wins whatever order entries arrive in, a customer's last entry is its
//! standing, and PlaceOrder's checks read only those models.

use std::collections::HashSet;

use orderflow_domain::{NewOrder, Sku, Standing, check_known, check_standing};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_order::Store;
use orderflow_platform::OutboxSignal;
use orderflow_platform::trace::TraceParent;
use orderflow_proto::v1 as pb;
use orderflow_testkit::TestDatabase;
use sqlx::PgPool;

mod common;
use common::apply;

fn entry(sku: &str, available: i32, revision: i64) -> Event {
    Event::CatalogueItemChanged(ev::CatalogueItemChanged {
        event_id: ev::new_event_id(),
        occurred_at: ev::now_millis(),
        sku: sku.into(),
        available,
        revision,
    })
}

async fn database() -> (TestDatabase, PgPool) {
    TestDatabase::migrated("order", &orderflow_order::MIGRATOR).await
}

async fn kept(pool: &PgPool, sku: &str) -> Option<(i32, i64)> {
    sqlx::query_as("SELECT available, revision FROM catalogue WHERE sku = $1")
        .bind(sku)
        .fetch_optional(pool)
        .await
        .unwrap()
}

fn order(skus: &[&str]) -> NewOrder {
    let request = pb::PlaceOrderRequest {
        customer_id: "ana".into(),
        items: skus
            .iter()
            .map(|sku| pb::OrderLine {
                sku: (*sku).into(),
                quantity: 1,
                unit_price: Some(pb::Money {
                    amount_minor: 100,
                    currency: "EUR".into(),
                }),
            })
            .collect(),
        payment_method: "pm_card_visa".into(),
        idempotency_key: "k".into(),
        validate_only: false,
    };
    NewOrder::try_from(&request).expect("valid order")
}

#[tokio::test]
async fn the_newest_revision_of_each_sku_is_kept_whatever_the_order_of_arrival() {
    let (_db, pool) = database().await;
    apply(
        &pool,
        vec![entry("a", 10, 1), entry("a", 7, 2), entry("b", 5, 1)],
    )
    .await
    .unwrap();
    assert_eq!(kept(&pool, "a").await, Some((7, 2)));
    // An older entry read late (a replay from the beginning, a redelivery) changes nothing.
    apply(&pool, vec![entry("a", 10, 1), entry("a", 7, 2)])
        .await
        .unwrap();
    assert_eq!(kept(&pool, "a").await, Some((7, 2)));
    apply(&pool, vec![entry("a", 0, 5)]).await.unwrap();
    assert_eq!(kept(&pool, "a").await, Some((0, 5)));
    assert_eq!(kept(&pool, "b").await, Some((5, 1)));
    assert_eq!(kept(&pool, "c").await, None);
}

#[tokio::test]
async fn an_invalid_entry_is_refused_naming_the_field_and_keeps_nothing() {
    let (_db, pool) = database().await;
    let err = apply(&pool, vec![entry("not a sku", 1, 1)])
        .await
        .unwrap_err();
    assert!(err.contains("sku"), "{err}");
    let err = apply(&pool, vec![entry("a", -3, 1)]).await.unwrap_err();
    assert!(err.contains("available"), "{err}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM catalogue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn place_order_s_check_reads_the_read_model_alone() {
    let (_db, pool) = database().await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let known = |skus: &[&str]| -> HashSet<Sku> {
        skus.iter().map(|s| Sku::parse("sku", s).unwrap()).collect()
    };
    let two = order(&["a", "b"]);
    assert_eq!(store.admission(&two).await.unwrap().known_skus, known(&[]));
    assert_eq!(
        check_known(&two, &store.admission(&two).await.unwrap().known_skus)
            .unwrap_err()
            .field,
        "items[0].sku"
    );
    // A SKU at zero stock is still in the catalogue: its orders end OUT_OF_STOCK, refunded.
    apply(&pool, vec![entry("a", 0, 1)]).await.unwrap();
    assert_eq!(
        store.admission(&two).await.unwrap().known_skus,
        known(&["a"])
    );
    assert_eq!(
        check_known(&two, &store.admission(&two).await.unwrap().known_skus)
            .unwrap_err()
            .field,
        "items[1].sku"
    );
    apply(&pool, vec![entry("b", 3, 1)]).await.unwrap();
    assert_eq!(
        check_known(&two, &store.admission(&two).await.unwrap().known_skus),
        Ok(())
    );
}

/// A directory entry published at `at` (epoch milliseconds).
fn standing(customer: &str, status: ev::CustomerStatus, reason: Option<&str>, at: i64) -> Event {
    Event::CustomerStatusChanged(ev::CustomerStatusChanged {
        event_id: ev::new_event_id(),
        occurred_at: at,
        customer_id: customer.into(),
        status,
        reason: reason.map(Into::into),
    })
}

#[tokio::test]
async fn a_customer_s_newest_directory_entry_is_its_standing_whatever_the_order_of_arrival() {
    let (_db, pool) = database().await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let ana = order(&["a"]);
    let blocked = Some(Standing::Blocked {
        reason: "chargebacks".into(),
    });
    // Never listed: in good standing.
    assert_eq!(store.admission(&ana).await.unwrap().standing, None);
    let t = ev::now_millis();
    apply(
        &pool,
        vec![
            standing("ana", ev::CustomerStatus::Active, None, t),
            standing(
                "ana",
                ev::CustomerStatus::Blocked,
                Some("chargebacks"),
                t + 1,
            ),
        ],
    )
    .await
    .unwrap();
    let admission = store.admission(&ana).await.unwrap();
    assert_eq!(admission.standing, blocked);
    let refused = check_standing(&ana.customer_id, admission.standing.as_ref()).unwrap_err();
    assert_eq!(refused.to_string(), "customer ana is blocked: chargebacks");
    // An older entry that arrives late (a redriven dead letter, a delivery after its call
    // timed out) changes nothing, in a batch of its own or after the newer one in the same.
    apply(
        &pool,
        vec![standing("ana", ev::CustomerStatus::Active, None, t - 10)],
    )
    .await
    .unwrap();
    assert_eq!(store.admission(&ana).await.unwrap().standing, blocked);
    apply(
        &pool,
        vec![
            standing("ana", ev::CustomerStatus::Active, None, t + 5),
            standing("ana", ev::CustomerStatus::Blocked, Some("late"), t + 2),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        store.admission(&ana).await.unwrap().standing,
        Some(Standing::Active)
    );
    // A status this build does not know is refused, naming the field, and changes nothing.
    let err = apply(
        &pool,
        vec![standing("ana", ev::CustomerStatus::Unknown, None, t + 9)],
    )
    .await
    .unwrap_err();
    assert!(err.contains("status"), "{err}");
    assert_eq!(
        store.admission(&ana).await.unwrap().standing,
        Some(Standing::Active)
    );
}

#[tokio::test]
async fn a_retry_of_a_placed_order_is_let_through_whatever_the_read_models_say_now() {
    let (_db, pool) = database().await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    apply(&pool, vec![entry("a", 5, 1)]).await.unwrap();
    let first = order(&["a"]);
    store
        .admission(&first)
        .await
        .unwrap()
        .check(&first)
        .unwrap();
    store
        .place(&first, &TraceParent::new_root(), &Topics::default())
        .await
        .unwrap();
    // Blocked since: a new order is refused, the retry of the placed one is not.
    apply(
        &pool,
        vec![standing(
            "ana",
            ev::CustomerStatus::Blocked,
            None,
            ev::now_millis(),
        )],
    )
    .await
    .unwrap();
    let retry = store.admission(&first).await.unwrap();
    assert!(retry.placed);
    retry.check(&first).unwrap();
    let mut another = order(&["a"]);
    another.idempotency_key = orderflow_domain::IdempotencyKey::parse("k", "another").unwrap();
    let refused = store
        .admission(&another)
        .await
        .unwrap()
        .check(&another)
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("customer ana is blocked: {}", orderflow_domain::NO_REASON)
    );
}

#[tokio::test]
async fn orders_read_together_each_get_their_own_admission_in_order() {
    let (_db, pool) = database().await;
    let store = Store::new(pool.clone(), OutboxSignal::default());
    let t = ev::now_millis();
    apply(
        &pool,
        vec![
            entry("a", 5, 1),
            entry("b", 0, 1),
            standing("bob", ev::CustomerStatus::Blocked, Some("fraud"), t),
            standing("cy", ev::CustomerStatus::Active, None, t),
        ],
    )
    .await
    .unwrap();
    let of = |customer: &str, key: &str, skus: &[&str]| {
        let mut o = order(skus);
        o.customer_id = orderflow_domain::CustomerId::parse("customer_id", customer).unwrap();
        o.idempotency_key = orderflow_domain::IdempotencyKey::parse("k", key).unwrap();
        o
    };
    let placed = of("ana", "k", &["a", "b"]);
    store
        .place(&placed, &TraceParent::new_root(), &Topics::default())
        .await
        .unwrap();
    let orders = [
        placed,
        of("bob", "k", &["a"]),
        of("cy", "k2", &["c", "a"]),
        of("ana", "new", &["c"]),
    ];
    let together = store
        .admission_all(&orders.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let known = |skus: &[&str]| -> HashSet<Sku> {
        skus.iter().map(|s| Sku::parse("sku", s).unwrap()).collect()
    };
    let expected = [
        (true, known(&["a", "b"]), None),
        (
            false,
            known(&["a"]),
            Some(Standing::Blocked {
                reason: "fraud".into(),
            }),
        ),
        (false, known(&["a"]), Some(Standing::Active)),
        (false, known(&[]), None),
    ];
    assert_eq!(together.len(), orders.len());
    for ((order, admission), (placed, known_skus, standing)) in
        orders.iter().zip(&together).zip(expected)
    {
        let who = order.customer_id.as_str();
        assert_eq!(admission.placed, placed, "{who}");
        assert_eq!(admission.known_skus, known_skus, "{who}");
        assert_eq!(admission.standing, standing, "{who}");
        // The same as each read alone.
        assert_eq!(admission, &store.admission(order).await.unwrap(), "{who}");
    }
}

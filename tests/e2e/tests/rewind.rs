//! `orderflow replay <service> --reprocess-effects`: a service that is not a projection,
//! moved back to the beginning of its input, reads it all again and repeats no effect, as
//! long as its dedup records still hold the events.

use std::time::Duration;

use orderflow_e2e::scenario::{count, place, set_stock, stock};
use orderflow_e2e::{Component, System, order_request, wait_for, watch_to_end};
use orderflow_platform::replay::{self, Start};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_service_moved_back_reads_its_input_again_and_repeats_no_effect() {
    let mut system = System::start().await;
    set_stock(&system, "rewind-sku", 10).await;
    let mut orders = system.orders("alice").await;
    let mut placed = Vec::new();
    for (quantity, method) in [(3, "pm_card_visa"), (8, "pm_card_visa")] {
        let order = place(
            &system,
            order_request("alice", "rewind-sku", quantity, method),
        )
        .await;
        watch_to_end(&mut orders, &order.order_id, order.version).await;
        placed.push(order.order_id);
    }
    let charges = "SELECT count(*) FROM charges";
    let refunds = "SELECT count(*) FROM refunds";
    let payment_db = system.payment_db.pool().await;
    assert_eq!(
        (
            count(&payment_db, charges).await,
            count(&payment_db, refunds).await
        ),
        (2, 1)
    );

    let kafka = system.kafka.clone();
    let group = kafka.group("payment");
    let inputs = orderflow_payment::input_topics(&kafka.topics());
    let refused = replay::rewind(&kafka, &group, "payment", &inputs, Start::Beginning)
        .await
        .expect_err("a running service");
    assert!(
        format!("{refused:#}").contains("stop every payment instance first"),
        "{refused:#}"
    );

    system.stop_component(Component::Payment).await;
    wait_for("the payment group to be empty", WAIT, || async {
        (replay::group_members(&kafka, &group).await.ok()? == 0).then_some(())
    })
    .await;
    // Two OrderCreated, two InventoryUpdated (CONFIRMED, OUT_OF_STOCK).
    let again = replay::rewind(&kafka, &group, "payment", &inputs, Start::Beginning)
        .await
        .expect("rewind");
    assert_eq!(again, 4);
    system.start_component(Component::Payment).await;
    // The payment group reads everything again.
    orderflow_e2e::wait_caught_up(&kafka, &group, &inputs, WAIT).await;

    // Nothing charged, refunded or deducted twice; no order moved again.
    assert_eq!(
        (
            count(&payment_db, charges).await,
            count(&payment_db, refunds).await
        ),
        (2, 1)
    );
    for order_id in &placed {
        let ledger = system.provider.ledger(order_id);
        assert_eq!(ledger.charge_calls, 1, "order {order_id}: {ledger:?}");
    }
    assert_eq!(system.provider.ledger(&placed[1]).refund_calls, 1);
    assert_eq!(stock(&system, "rewind-sku").await, 7);
    let order_db = system.order_db.pool().await;
    assert_eq!(
        count(&order_db, "SELECT count(*) FROM order_status_history").await,
        3 + 4
    );
}

//! The orders the order service's tests place: one unit of `sku-a`, paid by card.

use orderflow_domain::NewOrder;
use orderflow_events::Topics;
use orderflow_order::{Placed, Store};
use orderflow_platform::trace::TraceParent;
use orderflow_proto::v1 as pb;

/// An order of one unit of `sku-a` at `amount_minor` EUR cents for `customer`, keyed `key`.
pub fn order(customer: &str, key: &str, amount_minor: i64) -> NewOrder {
    let request = pb::PlaceOrderRequest {
        customer_id: customer.into(),
        items: vec![pb::OrderLine {
            sku: "sku-a".into(),
            quantity: 1,
            unit_price: Some(pb::Money {
                amount_minor,
                currency: "EUR".into(),
            }),
        }],
        payment_method: "pm_card_visa".into(),
        idempotency_key: key.into(),
        validate_only: false,
    };
    NewOrder::try_from(&request).expect("valid order")
}

/// Places ana's order keyed `key` (1 EUR) directly in `store`, in a trace of its own.
pub async fn place(store: &Store, key: &str) -> Placed {
    store
        .place(
            &order("ana", key, 100),
            &TraceParent::new_root(),
            &Topics::default(),
        )
        .await
        .expect("place")
}

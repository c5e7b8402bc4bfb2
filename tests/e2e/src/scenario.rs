//! Scenarios more than one suite runs, on any [`System`].

use orderflow_auth::BearerChannel;
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use sqlx::Row;

use crate::{System, order_request, status_name, watch_to_end};

/// Sets a SKU's stock as an operator, through the gateway.
pub async fn set_stock(system: &System, sku: &str, units: i32) {
    crate::set_stock(
        system.inventory().await,
        (system.orders("stocker").await, "stocker"),
        sku,
        units,
    )
    .await
}

/// A SKU's stock, through the gateway.
pub async fn stock(system: &System, sku: &str) -> i32 {
    crate::stock(system.inventory().await, sku).await
}

/// Places `request` as its customer; asserts it was created PENDING at version 1.
pub async fn place(system: &System, request: pb::PlaceOrderRequest) -> pb::Order {
    let response = system
        .orders(&request.customer_id)
        .await
        .place_order(request)
        .await
        .expect("PlaceOrder")
        .into_inner();
    assert!(response.created);
    let order = response.order.expect("order");
    assert_eq!(status_name(order.status), "PENDING");
    assert_eq!(order.version, 1);
    order
}

/// Every transition of a just-placed order: PENDING (v1) from PlaceOrder, then a stream that
/// resumes after v1, the way a client that must not miss a change watches.
pub async fn transitions(
    orders: &mut OrderServiceClient<BearerChannel>,
    placed: &pb::Order,
) -> Vec<(i64, &'static str)> {
    let mut seen = vec![(placed.version, status_name(placed.status))];
    seen.extend(watch_to_end(orders, &placed.order_id, placed.version).await);
    seen
}

/// The order `order_id` as it stands now.
async fn get_order(orders: &mut OrderServiceClient<BearerChannel>, order_id: &str) -> pb::Order {
    orders
        .get_order(pb::GetOrderRequest {
            order_id: order_id.into(),
        })
        .await
        .expect("GetOrder")
        .into_inner()
}

/// The single number `sql` returns.
pub async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .expect(sql)
        .get::<i64, _>(0)
}

/// The seed scenario: 10 units; approved 3 → COMPLETED (7 left); declined → FAILED (still
/// 7); approved 8 → OUT_OF_STOCK then REFUNDED with the missing item reported (still 7);
/// two charges, one decline and one refund recorded by payment.
pub async fn seed(system: &System) {
    set_stock(system, "widget", 10).await;
    let mut orders = system.orders("alice").await;

    let approved = place(system, order_request("alice", "widget", 3, "pm_card_visa")).await;
    assert_eq!(
        transitions(&mut orders, &approved).await,
        vec![(1, "PENDING"), (2, "PAID"), (3, "COMPLETED")]
    );
    assert_eq!(stock(system, "widget").await, 7);

    let declined = place(
        system,
        order_request("alice", "widget", 2, "pm_card_chargeDeclined"),
    )
    .await;
    assert_eq!(
        transitions(&mut orders, &declined).await,
        vec![(1, "PENDING"), (2, "FAILED")]
    );
    let failed = get_order(&mut orders, &declined.order_id).await;
    assert_eq!(failed.status_reason, "card declined");
    assert_eq!(stock(system, "widget").await, 7);

    let too_many = place(system, order_request("alice", "widget", 8, "pm_card_visa")).await;
    assert_eq!(
        transitions(&mut orders, &too_many).await,
        vec![
            (1, "PENDING"),
            (2, "PAID"),
            (3, "OUT_OF_STOCK"),
            (4, "REFUNDED")
        ]
    );
    let refunded = get_order(&mut orders, &too_many.order_id).await;
    assert_eq!(
        refunded.missing_items,
        vec![pb::MissingItem {
            sku: "widget".into(),
            requested: 8,
            available: 7
        }]
    );
    assert!(
        refunded
            .status_reason
            .contains("widget: requested 8, available 7"),
        "{}",
        refunded.status_reason
    );
    assert_eq!(stock(system, "widget").await, 7);

    let payments = system.payment_db.pool().await;
    assert_eq!(
        count(
            &payments,
            "SELECT count(*) FROM charges WHERE status = 'PAID'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &payments,
            "SELECT count(*) FROM charges WHERE status = 'FAILED'"
        )
        .await,
        1
    );
    assert_eq!(count(&payments, "SELECT count(*) FROM refunds").await, 1);
}

/// The seed scenario as `customer` on `sku` (stocked with 10): an approved order of 3
/// (COMPLETED), a declined one of 2 (FAILED), an approved one of 8 (OUT_OF_STOCK, REFUNDED),
/// each watched to its end before the next. Returns their ids, in that order.
pub async fn seed_orders(system: &System, customer: &str, sku: &str) -> Vec<String> {
    set_stock(system, sku, 10).await;
    let mut orders = system.orders(customer).await;
    let mut placed = Vec::new();
    for (quantity, method) in [
        (3, "pm_card_visa"),
        (2, "pm_card_chargeDeclined"),
        (8, "pm_card_visa"),
    ] {
        let order = place(system, order_request(customer, sku, quantity, method)).await;
        watch_to_end(&mut orders, &order.order_id, order.version).await;
        placed.push(order.order_id);
    }
    placed
}

/// Publishes every message `topic` holds a second time, byte for byte (key and payload), as
/// a redelivery would; returns how many.
pub async fn deliver_again(system: &System, topic: &str) -> usize {
    let messages = orderflow_platform::dlq::read_messages(&system.kafka, topic, 0, 1000)
        .await
        .expect("read the topic");
    let producer = orderflow_platform::kafka::producer(&system.kafka).expect("producer");
    for message in &messages {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(message.key.as_deref().unwrap_or_default())
                    .payload(message.payload.as_deref().unwrap_or_default()),
                std::time::Duration::from_secs(30),
            )
            .await
            .expect("deliver again");
    }
    messages.len()
}

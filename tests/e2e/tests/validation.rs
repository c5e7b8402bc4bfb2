//! Validation without synchronous calls (seed 004): the inventory service publishes its
//! catalogue on the compacted `catalogue` topic, operators publish customers' standing on the
//! compacted `customers` topic, and the order service judges PlaceOrder against its own
//! copies. With the inventory service stopped, and the order service restarted meanwhile, an
//! unknown SKU is still refused at once, naming the line, and a known one is accepted; those
//! orders complete, with exact stock, once the inventory service returns. A blocked customer
//! is refused with the reason, across a restart of the order service, until unblocked.

use std::time::Duration;

use orderflow_auth::BearerChannel;
use orderflow_e2e::scenario::{place, set_stock, stock};
use orderflow_e2e::{Component, System, order_request, status_name, wait_for, watch_to_end};
use orderflow_events::{self as ev, Event};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::customer_service_client::CustomerServiceClient;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

/// PlaceOrder's refusal of `request`: INVALID_ARGUMENT, its message.
async fn refused(system: &System, request: pb::PlaceOrderRequest) -> String {
    let status = system
        .orders(&request.customer_id)
        .await
        .place_order(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status.message().to_owned()
}

/// The first page (up to 100) of `customer`'s orders.
async fn listed(system: &System, customer: &str) -> Vec<pb::Order> {
    system
        .orders(customer)
        .await
        .list_orders(pb::ListOrdersRequest {
            customer_id: customer.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("ListOrders")
        .into_inner()
        .orders
}

async fn status_of(system: &System, customer: &str, order_id: &str) -> &'static str {
    let order = system
        .orders(customer)
        .await
        .get_order(pb::GetOrderRequest {
            order_id: order_id.into(),
        })
        .await
        .expect("GetOrder")
        .into_inner();
    status_name(order.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_judged_against_the_catalogue_while_inventory_is_down() {
    let mut system = System::start().await;
    set_stock(&system, "cat-known", 10).await;
    system.stop_component(Component::Inventory).await;
    // The order service's copy survives its own restart: it lives in its database.
    system.stop_component(Component::Order).await;
    system.start_component(Component::Order).await;

    let message = refused(
        &system,
        order_request("cat", "cat-nobody-stocks", 1, "pm_card_visa"),
    )
    .await;
    assert!(message.starts_with("items[0].sku:"), "{message}");
    assert!(message.contains("\"cat-nobody-stocks\""), "{message}");
    let mut two_lines = order_request("cat", "cat-known", 1, "pm_card_visa");
    two_lines.items.push(two_lines.items[0].clone());
    two_lines.items[1].sku = "cat-unknown-too".into();
    let message = refused(&system, two_lines).await;
    assert!(message.starts_with("items[1].sku:"), "{message}");
    // validate_only says the same, and places nothing.
    let mut check = order_request("cat", "cat-known", 3, "pm_card_visa");
    check.validate_only = true;
    let response = system
        .orders("cat")
        .await
        .place_order(check)
        .await
        .expect("validate_only")
        .into_inner();
    assert!(
        response.order.is_none() && !response.created,
        "{response:?}"
    );

    // Known SKUs are accepted with the inventory service down: paid, then waiting for stock.
    let first = place(
        &system,
        order_request("cat", "cat-known", 3, "pm_card_visa"),
    )
    .await;
    let second = place(
        &system,
        order_request("cat", "cat-known", 8, "pm_card_visa"),
    )
    .await;
    for order in [&first, &second] {
        wait_for("the order to be paid", WAIT, || async {
            (status_of(&system, "cat", &order.order_id).await == "PAID").then_some(())
        })
        .await;
    }
    let listed = listed(&system, "cat").await;
    assert_eq!(
        listed.len(),
        2,
        "refused and validate_only requests placed nothing"
    );

    system.start_component(Component::Inventory).await;
    let mut orders = system.orders("cat").await;
    let ends = [
        watch_to_end(&mut orders, &first.order_id, 1).await,
        watch_to_end(&mut orders, &second.order_id, 1).await,
    ];
    let last: Vec<&str> = ends
        .iter()
        .map(|seen| seen.last().expect("an end").1)
        .collect();
    assert_eq!(last, ["COMPLETED", "REFUNDED"], "{ends:?}");
    assert_eq!(stock(&system, "cat-known").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_s_copy_follows_every_stock_change() {
    let system = System::start().await;
    set_stock(&system, "cat-level", 5).await;
    let order = place(
        &system,
        order_request("cat", "cat-level", 2, "pm_card_visa"),
    )
    .await;
    let mut orders = system.orders("cat").await;
    let seen = watch_to_end(&mut orders, &order.order_id, 1).await;
    assert_eq!(seen.last().map(|s| s.1), Some("COMPLETED"));
    // Set (revision 1), then the order's deduction (revision 2): the copy ends at 3 units.
    let pool = system.order_db.pool().await;
    let copy = wait_for("the deduction to reach the catalogue", WAIT, || async {
        let kept: (i32, i64) =
            sqlx::query_as("SELECT available, revision FROM catalogue WHERE sku = 'cat-level'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (kept.1 == 2).then_some(kept)
    })
    .await;
    assert_eq!(copy, (3, 2));
    assert_eq!(stock(&system, "cat-level").await, 3);
}

fn standing(
    customer: &str,
    status: pb::CustomerStatus,
    reason: &str,
) -> pb::SetCustomerStatusRequest {
    pb::SetCustomerStatusRequest {
        customer_id: customer.into(),
        status: status.into(),
        reason: reason.into(),
    }
}

/// Waits until the order service answers `customer`'s validate_only PlaceOrder with `code`
/// (`Code::Ok`: accepts it); returns the message.
async fn judged(system: &System, customer: &str, code: Code) -> String {
    let mut orders = system.orders(customer).await;
    wait_for(
        "the directory entry to reach the order service",
        WAIT,
        || {
            let mut check = order_request(customer, "dir-sku", 1, "pm_card_visa");
            check.validate_only = true;
            let mut orders = orders.clone();
            async move {
                match orders.place_order(check).await {
                    Ok(_) if code == Code::Ok => Some(String::new()),
                    Err(status) if status.code() == code => Some(status.message().to_owned()),
                    _ => None,
                }
            }
        },
    )
    .await;
    let request = order_request(customer, "dir-sku", 1, "pm_card_visa");
    match orders.place_order(request).await {
        Ok(placed) if code == Code::Ok => placed.into_inner().order.expect("order").order_id,
        Err(status) if status.code() == code => status.message().to_owned(),
        other => panic!("{customer}: expected {code:?}, got {other:?}"),
    }
}

async fn set(
    directory: &mut CustomerServiceClient<BearerChannel>,
    request: pb::SetCustomerStatusRequest,
) -> Result<pb::CustomerStatusChange, tonic::Status> {
    directory
        .set_customer_status(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_customer_is_refused_with_the_reason_until_unblocked() {
    let mut system = System::start().await;
    set_stock(&system, "dir-sku", 10).await;
    let issuer = &system.credentials.issuer;
    let mut directory = system.customers(issuer.operator()).await;

    // Only an operator writes the directory, and a bad request is refused naming the field.
    let mut as_customer = system.customers(issuer.customer("mallory")).await;
    let refused = set(
        &mut as_customer,
        standing("mallory", pb::CustomerStatus::Active, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = set(
        &mut directory,
        standing("mallory", pb::CustomerStatus::Unspecified, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("status:"), "{refused:?}");

    let blocked = set(
        &mut directory,
        standing("mallory", pb::CustomerStatus::Blocked, "chargebacks"),
    )
    .await
    .expect("SetCustomerStatus");
    assert_eq!(blocked.status, i32::from(pb::CustomerStatus::Blocked));
    let message = judged(&system, "mallory", Code::PermissionDenied).await;
    assert_eq!(message, "customer mallory is blocked: chargebacks");
    // Others are not affected, listed or not.
    set(
        &mut directory,
        standing("trent", pb::CustomerStatus::Active, ""),
    )
    .await
    .expect("SetCustomerStatus");
    judged(&system, "trent", Code::Ok).await;
    judged(&system, "peggy", Code::Ok).await;

    // The order service's copy lives in its database: still refused after a restart.
    system.stop_component(Component::Order).await;
    system.start_component(Component::Order).await;
    let message = judged(&system, "mallory", Code::PermissionDenied).await;
    assert_eq!(message, "customer mallory is blocked: chargebacks");
    let listed = listed(&system, "mallory").await;
    assert!(listed.is_empty(), "a blocked customer placed {listed:?}");

    set(
        &mut directory,
        standing("mallory", pb::CustomerStatus::Active, ""),
    )
    .await
    .expect("SetCustomerStatus");
    let order_id = judged(&system, "mallory", Code::Ok).await;
    let mut orders = system.orders("mallory").await;
    let seen = watch_to_end(&mut orders, &order_id, 1).await;
    assert_eq!(seen.last().map(|s| s.1), Some("COMPLETED"), "{seen:?}");

    // The directory holds what was accepted, nothing of what was refused: mallory blocked,
    // trent active, mallory active again, at offsets 0, 1 and 2. The topic is compacted, by
    // the broker at a time of its own (tansu every ten minutes, Kafka once a segment rolls):
    // it may have dropped mallory's superseded entry, never the newest entry of a key, and
    // it never reuses an offset. So every entry kept is the one accepted at its offset, and
    // the newest of each customer is there: a refused change published anywhere would have
    // moved them.
    let accepted = [
        (
            0,
            "mallory",
            ev::CustomerStatus::Blocked,
            Some("chargebacks"),
        ),
        (1, "trent", ev::CustomerStatus::Active, None),
        (2, "mallory", ev::CustomerStatus::Active, None),
    ];
    let published = orderflow_platform::dlq::read_messages(
        &system.kafka,
        &system.kafka.topics().customers,
        0,
        100,
    )
    .await
    .expect("read the directory");
    let codec = system.credentials.codec(&system.registry_url);
    let mut kept = Vec::new();
    for message in &published {
        let Event::CustomerStatusChanged(entry) = codec
            .decode(message.payload.as_deref())
            .await
            .expect("a directory entry")
        else {
            panic!("not a directory entry at offset {}", message.offset);
        };
        assert_eq!(
            message.key.as_deref(),
            Some(entry.customer_id.as_bytes()),
            "offset {}",
            message.offset
        );
        kept.push((message.offset, entry));
    }
    let described: Vec<_> = kept
        .iter()
        .map(|(offset, e)| {
            (
                *offset,
                e.customer_id.as_str(),
                e.status,
                e.reason.as_deref(),
            )
        })
        .collect();
    for entry in &described {
        assert!(
            accepted.contains(entry),
            "not accepted: {entry:?}; kept {described:?}"
        );
    }
    for newest in &accepted[1..] {
        assert!(
            described.contains(newest),
            "{newest:?} missing; kept {described:?}"
        );
    }
}

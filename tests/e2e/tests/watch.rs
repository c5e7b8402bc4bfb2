//! WatchOrder where a stream used to stay open forever or without bound: status events the
//! gateway could not decode while the registry was down, a gateway whose status feed is not
//! positioned yet, a version the order has not reached, more streams than the gateway allows,
//! and a client that vanished without closing its connection.

use std::net::SocketAddr;
use std::time::Duration;

use orderflow_e2e::process::{Broker, Databases, Proc, ProcessSystem};
use orderflow_e2e::{
    Component, GatewaySettings, System, load, order_request, status_name, wait_for, watch_to_end,
};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Reads `stream` to its end, at most `timeout`; panics naming what it saw if it stays open.
async fn read_to_end(
    stream: &mut tonic::Streaming<pb::OrderUpdate>,
    seen: &mut Vec<(i64, &'static str)>,
    timeout: Duration,
) {
    let ended = tokio::time::timeout(timeout, async {
        while let Some(update) = stream.next().await {
            let update = update.expect("stream item");
            seen.push((update.version, status_name(update.status)));
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream did not end within {timeout:?}; saw {seen:?}"
    );
}

/// The customer of [`live_order`]'s order.
const WATCHER: &str = "watcher";

/// Places an order with the inventory service stopped, so it stays PAID (version 2) for as
/// long as the test needs a live order; returns its id.
async fn live_order(system: &mut System) -> String {
    orderflow_e2e::scenario::set_stock(system, "gear", 100).await;
    system.stop_component(Component::Inventory).await;
    let mut orders = system.orders(WATCHER).await;
    let order_id = orders
        .place_order(order_request(WATCHER, "gear", 1, "pm_card_visa"))
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order
        .expect("order")
        .order_id;
    wait_for("the order to be paid", Duration::from_secs(60), || {
        let mut orders = orders.clone();
        let order_id = order_id.clone();
        async move {
            let order = orders
                .get_order(pb::GetOrderRequest { order_id })
                .await
                .ok()?
                .into_inner();
            (order.version == 2).then_some(())
        }
    })
    .await;
    order_id
}

fn watch_request(order_id: &str, after_version: i64) -> pb::WatchOrderRequest {
    pb::WatchOrderRequest {
        order_id: order_id.to_owned(),
        after_version,
    }
}

/// The gateway's count of open WatchOrder streams, from its `/metrics`.
async fn open_streams(system: &System) -> Option<f64> {
    load::metric(
        &system.admin_url(Component::Gateway),
        "orderflow_gateway_watchers",
    )
    .await
}

async fn wait_open_streams(system: &System, n: f64, within: Duration) {
    wait_for(
        &format!("the gateway to count {n} open streams"),
        within,
        || async { (open_streams(system).await == Some(n)).then_some(()) },
    )
    .await;
}

/// The registry is down while an order moves on, so the (freshly restarted) gateway cannot
/// decode its status events; once the registry is back, the watcher still gets every change
/// and its stream ends with the terminal status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_with_the_terminal_status_after_the_registry_was_down() {
    let mut system = ProcessSystem::start(Databases::shared().await).await;
    load::stock_up(&system.load_gateway()).await;
    // The customer of the seed mix's order 0.
    let mut orders = system.orders("load-0").await;
    // One order through every service, so each has the schemas it needs cached and keeps
    // working without the registry.
    let warm_up = load::place(&system.load_gateway(), 0).await;
    let seen = watch_to_end(&mut orders, &warm_up, 0).await;
    assert_eq!(seen.last(), Some(&(3, "COMPLETED")));

    // Only the gateway restarts: it has decoded no status event yet, so it has no schema.
    assert_eq!(system.terminate(Proc::Gateway).await, Some(0));
    system.start_proc(Proc::Gateway).await;
    system.terminate(Proc::Registry).await;
    // The payment service holds the order at PENDING until the watch is open.
    system.signal_instance(Proc::Payment, 1, "STOP");
    let order_id = load::place(&system.load_gateway(), 0).await;
    let mut stream = orders
        .watch_order(watch_request(&order_id, 0))
        .await
        .expect("WatchOrder")
        .into_inner();
    let first = stream.next().await.expect("a snapshot").expect("snapshot");
    let mut seen = vec![(first.version, status_name(first.status))];
    assert_eq!(seen, [(1, "PENDING")]);
    system.signal_instance(Proc::Payment, 1, "CONT");
    wait_for("the order to complete", Duration::from_secs(60), || {
        let mut orders = orders.clone();
        let order_id = order_id.clone();
        async move {
            let order = orders
                .get_order(pb::GetOrderRequest { order_id })
                .await
                .ok()?
                .into_inner();
            (order.version == 3).then_some(())
        }
    })
    .await;

    system.start_proc(Proc::Registry).await;
    read_to_end(&mut stream, &mut seen, Duration::from_secs(30)).await;
    assert_eq!(seen, [(1, "PENDING"), (2, "PAID"), (3, "COMPLETED")]);
}

/// An event on `order-status` that will never decode is skipped, but it may have been an
/// order's last change: the watchers of its order (its key) read their history again, and a
/// stream whose order has ended, ends. Here the order's completion is written to its history
/// directly, and its event is one with a schema id no registry knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_status_event_makes_its_watchers_read_their_history() {
    let mut system = System::start().await;
    let order_id = live_order(&mut system).await;
    let mut orders = system.orders(WATCHER).await;
    let mut stream = orders
        .watch_order(watch_request(&order_id, 0))
        .await
        .expect("WatchOrder")
        .into_inner();
    let snapshot = stream.next().await.expect("a snapshot").expect("snapshot");
    let mut seen = vec![(snapshot.version, status_name(snapshot.status))];

    let order_db = system.order_db.pool().await;
    let id = uuid::Uuid::parse_str(&order_id).unwrap();
    sqlx::query("UPDATE orders SET status = 'COMPLETED', version = 3 WHERE order_id = $1")
        .bind(id)
        .execute(&order_db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO order_status_history (order_id, version, status, occurred_at)
         VALUES ($1, 3, 'COMPLETED', now())",
    )
    .bind(id)
    .execute(&order_db)
    .await
    .unwrap();
    let producer = orderflow_platform::kafka::producer(&system.kafka).unwrap();
    let unknown_schema: &[u8] = &[0, 0x7f, 0xff, 0xff, 0xfe, 2, 4, 6];
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&system.kafka.topics().order_status)
                .key(&order_id)
                .payload(unknown_schema),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");

    read_to_end(&mut stream, &mut seen, Duration::from_secs(30)).await;
    assert_eq!(seen, [(2, "PAID"), (3, "COMPLETED")]);
}

/// A gateway started before its broker serves (PlaceOrder needs no broker) but refuses
/// WatchOrder with UNAVAILABLE and reports the order service NOT_SERVING until its status
/// feed is positioned; then it serves watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_refused_until_the_status_feed_is_positioned() {
    let system = System::start().await;
    let mut orders = system.orders("early").await;
    orderflow_e2e::scenario::set_stock(&system, "nut", 10).await;
    let order_id = orders
        .place_order(order_request("early", "nut", 1, "pm_card_visa"))
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order
        .expect("order")
        .order_id;
    watch_to_end(&mut orders, &order_id, 0).await;

    let mut broker = Broker::start().await;
    broker.stop(false).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_url = format!("https://{}", listener.local_addr().unwrap());
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let mut kafka = orderflow_e2e::kafka_args(
        broker.address(),
        format!("t{}-", orderflow_testkit::unique_suffix()),
    );
    kafka.fetch_wait_ms = 25;
    let mut args = orderflow_gateway::GatewayArgs {
        bus: orderflow_platform::EventBusArgs {
            kafka,
            registry_url: system.registry_url.clone(),
            registry_user_info: Some(system.credentials.registry_writer.as_str().into()),
            registry_ca_file: Some(system.credentials.tls.ca()),
        },
        auth: system.credentials.auth_args(),
        tls: Default::default(),
        owner_ca: None,
        owner_cert: None,
        owner_key: None,
        listen: listener.local_addr().unwrap(),
        admin_listen: admin.local_addr().unwrap(),
        order_url: system.order_url(),
        inventory_url: system.inventory_url(),
        history_url: system.history_url(),
        analytics_url: system.analytics_url(),
        request_timeout_ms: 10_000,
        max_concurrent_requests: 1024,
        max_watch_streams: 10_000,
        max_watch_streams_per_connection: 100,
        max_watch_streams_per_caller: 50,
        rate_limit_per_sec: 50,
        rate_limit_burst: 100,
        max_message_bytes: 256 * 1024,
        max_metadata_bytes: 16 * 1024,
        keepalive_interval_secs: 30,
        keepalive_timeout_secs: 10,
    };
    system.credentials.secure_gateway(&mut args);
    let stop = tokio_util::sync::CancellationToken::new();
    let gateway = tokio::spawn(orderflow_gateway::run(args, listener, admin, stop.clone()));
    let _stop_gateway = stop.clone().drop_guard();

    let channel = Channel::from_shared(gateway_url)
        .unwrap()
        .tls_config(system.credentials.client_tls())
        .unwrap()
        .connect_lazy();
    let health = HealthClient::new(channel.clone());
    let mut early =
        OrderServiceClient::new(system.credentials.issuer.customer("early").on(channel));
    let check = tonic_health::pb::HealthCheckRequest {
        service: "orderflow.v1.OrderService".into(),
    };
    let status = wait_for("the gateway to answer", Duration::from_secs(30), || {
        let mut health = health.clone();
        let check = check.clone();
        let gateway = &gateway;
        async move {
            assert!(
                !gateway.is_finished(),
                "the gateway exited without a broker"
            );
            health.check(check).await.ok()
        }
    })
    .await;
    assert_eq!(
        status.into_inner().status,
        ServingStatus::NotServing as i32,
        "serving before the status feed is positioned"
    );
    let refused = early
        .watch_order(watch_request(&order_id, 0))
        .await
        .expect_err("a watch before the status feed is positioned");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let admin_health = reqwest::get(format!("{admin_url}/health")).await.unwrap();
    assert_eq!(admin_health.status(), 503);
    // Not sent to the order service (the owner would have answered this order).
    assert!(
        refused.message().contains("status feed"),
        "{}",
        refused.message()
    );

    broker.restart().await;
    wait_for("the gateway to serve", Duration::from_secs(60), || {
        let mut health = health.clone();
        let check = check.clone();
        async move {
            let status = health.check(check).await.ok()?.into_inner().status;
            (status == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;
    let seen = watch_to_end(&mut early, &order_id, 0).await;
    assert_eq!(seen, [(3, "COMPLETED")]);
}

/// A version the order has not reached is refused with OUT_OF_RANGE naming the version it
/// has, rather than a stream that waits for changes it treats as already seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_version_beyond_the_order_is_out_of_range() {
    let mut system = System::start().await;
    let order_id = live_order(&mut system).await;
    let mut orders = system.orders(WATCHER).await;
    for after_version in [3, 1_000] {
        let refused = orders
            .watch_order(watch_request(&order_id, after_version))
            .await
            .expect_err("a version beyond the order's");
        assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
        assert!(
            refused.message().contains("current version 2"),
            "{}",
            refused.message()
        );
    }
    // Up to the current version is a valid resume point.
    orders
        .watch_order(watch_request(&order_id, 2))
        .await
        .expect("resuming from the current version");
}

/// At most 2 streams per connection and 3 in total: beyond either a new stream is refused
/// with RESOURCE_EXHAUSTED; a closed stream frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_beyond_the_bounds_are_refused() {
    let limits: GatewaySettings = Box::new(|args| {
        args.max_watch_streams = 3;
        args.max_watch_streams_per_connection = 2;
    });
    let mut system = System::start_with(Some(limits)).await;
    let order_id = live_order(&mut system).await;
    // `orders()` opens a new connection each time.
    let mut first = system.orders(WATCHER).await;
    let mut second = system.orders(WATCHER).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            first
                .watch_order(watch_request(&order_id, 0))
                .await
                .expect("within the connection's bound")
                .into_inner(),
        );
    }
    let refused = first
        .watch_order(watch_request(&order_id, 0))
        .await
        .expect_err("a third stream on one connection");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    open.push(
        second
            .watch_order(watch_request(&order_id, 0))
            .await
            .expect("within the total bound")
            .into_inner(),
    );
    let refused = second
        .watch_order(watch_request(&order_id, 0))
        .await
        .expect_err("a fourth stream in total");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    wait_open_streams(&system, 3.0, Duration::from_secs(10)).await;

    // The client closes one stream: its place is free again.
    drop(open.remove(0));
    wait_open_streams(&system, 2.0, Duration::from_secs(10)).await;
    open.push(
        second
            .watch_order(watch_request(&order_id, 0))
            .await
            .expect("a place freed by a closed stream")
            .into_inner(),
    );
}

/// A TCP proxy to `upstream` that forwards both ways until `blackhole` is set, then forwards
/// nothing more while keeping every connection open: a client that vanished without a FIN.
async fn proxy(upstream: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (blackhole, holes) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, holes.clone()));
            tokio::spawn(forward(server_read, client_write, holes.clone()));
        }
    });
    (address, blackhole)
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blackhole: tokio::sync::watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if *blackhole.borrow() {
            // Hold both halves open, forwarding nothing, for as long as the test runs.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            _ = blackhole.changed() => {}
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// A client whose connection goes silent (no FIN, no RST) while it watches an order that
/// does not change: keepalive pings go unanswered, and the gateway ends its stream within
/// the keepalive interval and timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_s_stream_is_reaped() {
    let keepalive: GatewaySettings = Box::new(|args| {
        args.keepalive_interval_secs = 1;
        args.keepalive_timeout_secs = 1;
    });
    let mut system = System::start_with(Some(keepalive)).await;
    let order_id = live_order(&mut system).await;
    let (address, blackhole) = proxy(system.gateway_addr).await;
    let channel = Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(system.credentials.client_tls())
        .unwrap()
        .connect()
        .await
        .expect("connect through the proxy");
    let mut stream =
        OrderServiceClient::new(system.credentials.issuer.customer(WATCHER).on(channel))
            .watch_order(watch_request(&order_id, 0))
            .await
            .expect("WatchOrder")
            .into_inner();
    let snapshot = stream.next().await.expect("a snapshot").expect("snapshot");
    assert_eq!(snapshot.version, 2);
    wait_open_streams(&system, 1.0, Duration::from_secs(10)).await;
    // Longer than a keepalive round, to show a live client keeps its stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(open_streams(&system).await, Some(1.0));

    blackhole.send(true).unwrap();
    let started = tokio::time::Instant::now();
    // Interval and timeout are 1 s each; allow for a ping just missed and a loaded machine.
    wait_open_streams(&system, 0.0, Duration::from_secs(8)).await;
    eprintln!(
        "stream reaped {:?} after the client vanished",
        started.elapsed()
    );
    drop(stream);
}

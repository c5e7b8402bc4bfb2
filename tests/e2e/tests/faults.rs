//! Real faults against the system running as processes: SIGKILL mid-load, a service down for a
//! while, the broker and PostgreSQL restarted mid-load, the gateway killed under watchers.
//! After each, what a user cares about is checked: every order ended as it must, exactly
//! once; stock is exact; one charge per order and one refund per refunded order; every
//! order's status events are a gap-free sequence of versions.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use orderflow_auth::Bearer;
use orderflow_domain::OrderStatus;
use orderflow_e2e::load;
use orderflow_e2e::process::{Databases, Proc, ProcessSystem};
use orderflow_e2e::{status_name, wait_for};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, ClientTlsConfig};

const ORDERS: usize = 40;
const INTERVAL: Duration = Duration::from_millis(50);

type Load = load::Running;

/// Starts the system and a load of `orders` orders in the background.
async fn start_with(
    databases: Databases,
    orders: usize,
) -> (ProcessSystem, Arc<AtomicUsize>, Load) {
    let system = ProcessSystem::start(databases).await;
    let (progress, running) = load::start(&system, orders, INTERVAL).await;
    (system, progress, running)
}

async fn start(databases: Databases) -> (ProcessSystem, Arc<AtomicUsize>, Load) {
    start_with(databases, ORDERS).await
}

async fn finish(system: &ProcessSystem, running: Load) {
    let placed = running.await.expect("load task");
    load::wait_all_terminal(&system.load_gateway(), &placed, Duration::from_secs(180)).await;
    load::verify(system, &placed).await;
}

/// SIGKILL `victim` while orders flow, start it again, and check nothing was lost or doubled.
async fn killed_mid_load(victim: Proc) {
    let (mut system, progress, running) = start(Databases::shared().await).await;
    load::wait_progress(&progress, 15).await;
    system.kill(victim).await;
    system.start_proc(victim).await;
    finish(&system, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_service_killed_mid_load() {
    killed_mid_load(Proc::Order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_service_killed_mid_load() {
    killed_mid_load(Proc::Payment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_service_killed_mid_load() {
    killed_mid_load(Proc::Inventory).await;
}

/// The history service SIGKILLed while orders flow, and started again after more orders
/// went by without it: the orders end as they must (nothing else noticed), and every order's
/// timeline ends whole, each event in it once, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_service_killed_mid_load() {
    let mut system = ProcessSystem::start(Databases::shared().await).await;
    system.start_proc(Proc::History).await;
    let (progress, running) = load::start(&system, ORDERS, INTERVAL).await;
    load::wait_progress(&progress, 15).await;
    system.kill(Proc::History).await;
    load::wait_progress(&progress, 25).await;
    system.start_proc(Proc::History).await;
    let placed = running.await.expect("load task");
    load::wait_all_terminal(&system.load_gateway(), &placed, Duration::from_secs(180)).await;
    load::verify(&system, &placed).await;

    let history = system.pool(Proc::History).await;
    // The messages one order causes, by how it ends (the services' flow, seeds 002 and 003).
    let entries = |expect: load::Outcome| match expect {
        // OrderCreated, PENDING; PaymentProcessed, PAID; InventoryUpdated, COMPLETED.
        load::Outcome::Completed => 6,
        // OrderCreated, PENDING; PaymentProcessed, FAILED.
        load::Outcome::Failed => 4,
        // … PAID; InventoryUpdated, OUT_OF_STOCK; PaymentRefunded, REFUNDED.
        load::Outcome::Refunded => 8,
    };
    let recorded = || async {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT order_id::text, count(*) FROM order_timeline GROUP BY order_id")
                .fetch_all(&history)
                .await
                .ok()?;
        Some(
            rows.into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
    };
    wait_for(
        "every order's timeline to be whole",
        Duration::from_secs(120),
        || async {
            let counts = recorded().await?;
            placed
                .iter()
                .all(|p| counts.get(&p.order_id).copied().unwrap_or(0) >= entries(p.expect))
                .then_some(())
        },
    )
    .await;
    let counts = recorded().await.expect("the timelines");
    for p in &placed {
        assert_eq!(
            counts[&p.order_id],
            entries(p.expect),
            "order {} ({:?})",
            p.order_id,
            p.expect
        );
    }
    assert_eq!(
        counts.len(),
        placed.len(),
        "timelines of orders nobody placed"
    );
    let doubled: Vec<(String, String)> = sqlx::query_as(
        "SELECT order_id::text, event_id FROM order_timeline
         GROUP BY order_id, event_id HAVING count(*) > 1",
    )
    .fetch_all(&history)
    .await
    .unwrap();
    assert!(doubled.is_empty(), "events recorded twice: {doubled:?}");
}

/// The notifications service SIGKILLed while orders flow, and started again after more
/// orders went by without it: every status of every order is told exactly once by its
/// notification id (a line written just before the kill may be written again, with the same
/// id and body, as a webhook receiver would see it), none is missing, and the service's own
/// records end delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_service_killed_mid_load() {
    let mut system = ProcessSystem::start(Databases::shared().await).await;
    system.start_proc(Proc::Notifications).await;
    let (progress, running) = load::start(&system, ORDERS, INTERVAL).await;
    load::wait_progress(&progress, 15).await;
    system.kill(Proc::Notifications).await;
    load::wait_progress(&progress, 25).await;
    system.start_proc(Proc::Notifications).await;
    let placed = running.await.expect("load task");
    load::wait_all_terminal(&system.load_gateway(), &placed, Duration::from_secs(180)).await;
    load::verify(&system, &placed).await;

    // The statuses one order goes through, by how it ends (seeds 002 and 003).
    let statuses = |expect: load::Outcome| -> &'static [&'static str] {
        match expect {
            load::Outcome::Completed => &["PENDING", "PAID", "COMPLETED"],
            load::Outcome::Failed => &["PENDING", "FAILED"],
            load::Outcome::Refunded => &["PENDING", "PAID", "OUT_OF_STOCK", "REFUNDED"],
        }
    };
    let expected: usize = placed.iter().map(|p| statuses(p.expect).len()).sum();
    let file = system.notifications_file();
    // Each notification by its id: (order, status, version, the line), and how often written.
    let read = || {
        let mut told: std::collections::HashMap<String, (String, String, i64, String)> =
            Default::default();
        let mut repeats = 0;
        // (order, version) of each notification where first written, in file order.
        let mut written: Vec<(String, i64)> = Vec::new();
        for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
            let n: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let id = n["notification_id"].as_str().unwrap().to_owned();
            let entry = (
                n["order_id"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
                n["version"].as_i64().unwrap(),
                line.to_owned(),
            );
            if !told.contains_key(&id) {
                written.push((entry.0.clone(), entry.2));
            }
            if let Some(before) = told.insert(id.clone(), entry.clone()) {
                assert_eq!(
                    before.3, entry.3,
                    "notification {id} written twice, differently"
                );
                repeats += 1;
            }
        }
        (told, repeats, written)
    };
    wait_for("every status told", Duration::from_secs(120), || async {
        (read().0.len() >= expected).then_some(())
    })
    .await;
    let (told, repeats, written) = read();
    // Only a round in flight at the kill can be written again.
    assert!(
        repeats <= orderflow_notifications::deliverer::BATCH as usize,
        "{repeats} lines written again"
    );
    assert_eq!(
        told.len(),
        expected,
        "one notification per status of every placed order"
    );
    for p in &placed {
        let mut mine: Vec<(i64, &str)> = told
            .values()
            .filter(|(order, ..)| *order == p.order_id)
            .map(|(_, status, version, _)| (*version, status.as_str()))
            .collect();
        // In the file, each order's statuses came in version order.
        let in_file: Vec<i64> = written
            .iter()
            .filter(|(order, _)| *order == p.order_id)
            .map(|(_, v)| *v)
            .collect();
        assert!(
            in_file.is_sorted(),
            "order {}: written out of order: {in_file:?}",
            p.order_id
        );
        mine.sort();
        let got: Vec<&str> = mine.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            got,
            statuses(p.expect),
            "order {} ({:?})",
            p.order_id,
            p.expect
        );
    }
    let notifications = system.pool(Proc::Notifications).await;
    let undelivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE state <> 'delivered'")
            .fetch_one(&notifications)
            .await
            .unwrap();
    assert_eq!(undelivered, 0);
    eprintln!("{expected} notifications, {repeats} line(s) written again after the kill");
}

/// The seed's "inventory down for five minutes", compressed: stopped gracefully (SIGTERM, exit
/// 0), orders keep being accepted and wait as PAID, and all complete once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_down_for_a_while() {
    let (mut system, progress, running) = start(Databases::shared().await).await;
    load::wait_progress(&progress, 5).await;
    assert_eq!(
        system.terminate(Proc::Inventory).await,
        Some(0),
        "inventory exits 0 on SIGTERM"
    );
    // Orders keep being accepted while it is down.
    load::wait_progress(&progress, 30).await;
    system.start_proc(Proc::Inventory).await;
    finish(&system, running).await;
}

/// The broker stopped and restarted mid-load (durable sqlite storage): PlaceOrder keeps
/// succeeding (the outbox holds the events), and everything completes after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_load() {
    const LONG_LOAD: usize = 300;
    let (mut system, progress, running) = start_with(Databases::shared().await, LONG_LOAD).await;
    load::wait_progress(&progress, 10).await;
    system.broker.stop(false).await;
    let down_at = progress.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        down_at + 10 <= LONG_LOAD,
        "the load ended before the broker was down ({down_at} placed)"
    );
    // Orders are still accepted with the broker down; their events wait in the outbox, and
    // the order service's metrics show the backlog.
    load::wait_progress(&progress, down_at + 10).await;
    let order_admin = system.admin_url(Proc::Order);
    wait_for(
        "the outbox backlog to show on /metrics",
        Duration::from_secs(60),
        || async {
            (load::metric(&order_admin, "orderflow_outbox_backlog").await? > 0.0).then_some(())
        },
    )
    .await;
    system.broker.restart().await;
    finish(&system, running).await;
    wait_for(
        "the outbox backlog to drain to 0",
        Duration::from_secs(60),
        || async {
            (load::metric(&order_admin, "orderflow_outbox_backlog").await? == 0.0).then_some(())
        },
    )
    .await;
}

/// PostgreSQL restarted mid-load (a private cluster, so no other test is disturbed): the
/// services report themselves unhealthy, recover by themselves, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load() {
    let (system, progress, running) = start(Databases::private().await).await;
    load::wait_progress(&progress, 15).await;
    system.databases.cluster().stop().await;
    // The order service notices (its relay cannot read the outbox) and says so.
    let health = format!("{}/health", system.admin_url(Proc::Order));
    wait_for(
        "the order service to report itself unhealthy",
        Duration::from_secs(60),
        || {
            let health = health.clone();
            async move {
                let r = reqwest::get(&health).await.ok()?;
                (r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some(())
            }
        },
    )
    .await;
    system.databases.cluster().start_again().await;
    wait_for(
        "the order service to recover by itself",
        Duration::from_secs(60),
        || {
            let health = health.clone();
            async move {
                reqwest::get(&health)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        },
    )
    .await;
    finish(&system, running).await;
}

/// Watches `order_id` from `after_version` to its end, reconnecting (from the last version
/// seen) whenever the stream breaks. Returns every (version, status) received.
async fn resilient_watch(
    gateway_url: String,
    tls: ClientTlsConfig,
    bearer: Bearer,
    order_id: String,
    after_version: i64,
    connected: Arc<AtomicUsize>,
) -> (Vec<(i64, &'static str)>, usize) {
    let mut seen: Vec<(i64, &'static str)> = Vec::new();
    let mut interruptions = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch of {order_id} did not end; saw {seen:?}"
        );
        let last = seen.last().map(|(v, _)| *v).unwrap_or(after_version);
        let channel = Channel::from_shared(gateway_url.clone())
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let request = pb::WatchOrderRequest {
            order_id: order_id.clone(),
            after_version: last,
        };
        let mut client = OrderServiceClient::new(bearer.clone().on(channel));
        let mut stream = match client.watch_order(request).await {
            Ok(response) => response.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut broken = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(update) => {
                    if seen.is_empty() {
                        connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    seen.push((update.version, status_name(update.status)));
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        let ended = seen
            .last()
            .is_some_and(|(_, s)| s.parse().is_ok_and(OrderStatus::is_terminal));
        if ended && !broken {
            return (seen, interruptions);
        }
        // A stream cut without an error (the connection died) also counts as an interruption.
        interruptions += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gateway stopped (SIGTERM: streams end with UNAVAILABLE, exit 0) and later killed
/// (SIGKILL) while clients watch; orders complete while it is down; every client reconnects
/// from its last version and sees every change exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_while_clients_watch() {
    let mut system = ProcessSystem::start(Databases::shared().await).await;
    load::stock_up(&system.load_gateway()).await;
    system.terminate(Proc::Inventory).await;
    let gateway = system.load_gateway();
    let mut orders = Vec::new();
    // Orders 0, 1, 2, 5, 6, 7 of the load mix complete; keep to those.
    for i in [0, 1, 2, 5, 6, 7] {
        let customer = load::Mix::seed().order(i).request.customer_id;
        orders.push((load::place(&gateway, i).await, customer));
    }
    for (id, customer) in &orders {
        wait_for("orders to be paid", Duration::from_secs(60), || {
            let mut client = gateway.orders(0, customer);
            let id = id.clone();
            async move {
                (client
                    .get_order(pb::GetOrderRequest { order_id: id })
                    .await
                    .ok()?
                    .into_inner()
                    .version
                    == 2)
                    .then_some(())
            }
        })
        .await;
    }
    // Three watchers per order, each starting after PENDING; wait until all are streaming.
    let connected = Arc::new(AtomicUsize::new(0));
    let watchers: Vec<_> = orders
        .iter()
        .flat_map(|order| std::iter::repeat_n(order.clone(), 3))
        .map(|(id, customer)| {
            tokio::spawn(resilient_watch(
                system.gateway_url(),
                system.credentials.client_tls(),
                system.credentials.issuer.customer(&customer),
                id,
                1,
                connected.clone(),
            ))
        })
        .collect();
    load::wait_progress(&connected, watchers.len()).await;

    // A graceful stop first: open streams end with UNAVAILABLE and the process exits 0.
    assert_eq!(
        system.terminate(Proc::Gateway).await,
        Some(0),
        "gateway exits 0 on SIGTERM"
    );
    system.start_proc(Proc::Gateway).await;
    // Then a hard kill, with the orders completing while the gateway is gone.
    system.kill(Proc::Gateway).await;
    system.start_proc(Proc::Inventory).await;
    system.start_proc(Proc::Gateway).await;

    for watcher in watchers {
        let (seen, interruptions) = watcher.await.expect("watcher");
        assert_eq!(
            seen,
            vec![(2, "PAID"), (3, "COMPLETED")],
            "each change exactly once, in order"
        );
        assert!(
            interruptions >= 1,
            "the watcher's stream was never interrupted, so the test proved nothing"
        );
    }
}

/// The sum of every series of `name` (a labelled counter) on an admin endpoint's `/metrics`;
/// 0 when the family has no series yet.
async fn metric_sum(admin_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{admin_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(orderflow_dev::scrape::series_sum(&text, name))
}

/// Messages the services dead-lettered so far.
async fn dead_letters(system: &ProcessSystem) -> f64 {
    let mut total = 0.0;
    for p in [Proc::Order, Proc::Payment, Proc::Inventory] {
        total += metric_sum(&system.admin_url(p), "orderflow_dead_letters_total")
            .await
            .expect("the service's metrics");
    }
    total
}

/// Switches the database of `p` to read-only (or back), as a failover does to the clients of
/// a demoted primary: new transactions are read-only, and the open connections are cut, so
/// the pool reconnects into read-only sessions. Writes then fail with SQLSTATE 25006.
async fn set_read_only(system: &ProcessSystem, p: Proc, read_only: bool) {
    let options: sqlx::postgres::PgConnectOptions =
        system.database_url(p).parse().expect("database url");
    let name = options.get_database().expect("a database name").to_owned();
    let admin = sqlx::PgPool::connect(&orderflow_testkit::admin_database_url())
        .await
        .expect("connect to the server");
    let setting = if read_only { "on" } else { "off" };
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {setting}"
    ))
    .execute(&admin)
    .await
    .expect("alter database");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&admin)
    .await
    .expect("terminate the database's connections");
    admin.close().await;
}

/// Issue 11, finding 8: `victim`'s database turns read-only under load, as during a failover.
/// Messages in flight fail with SQLSTATE 25006, which a retry can get past: the service
/// retries them, dead-letters nothing, and once the database is writable again every order
/// ends as it must, exactly once.
async fn read_only_database_under_load(victim: Proc) {
    let (system, progress, running) = start(Databases::shared().await).await;
    load::wait_progress(&progress, 10).await;
    let admin = system.admin_url(victim);
    let retries = "orderflow_consumer_retries_total";
    let retried_before = metric_sum(&admin, retries).await.expect("metrics");
    set_read_only(&system, victim, true).await;
    // The service meets the read-only database: it retries, or (the defect) dead-letters.
    wait_for(
        "the service to retry writes to its read-only database",
        Duration::from_secs(60),
        || async {
            let retried = metric_sum(&admin, retries).await? > retried_before + 2.0;
            (retried || dead_letters(&system).await > 0.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        dead_letters(&system).await,
        0.0,
        "messages dead-lettered while {victim:?}'s database was read-only"
    );
    set_read_only(&system, victim, false).await;
    finish(&system, running).await;
    assert_eq!(dead_letters(&system).await, 0.0, "messages dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_database_read_only_under_load() {
    read_only_database_under_load(Proc::Inventory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_database_read_only_under_load() {
    read_only_database_under_load(Proc::Payment).await;
}

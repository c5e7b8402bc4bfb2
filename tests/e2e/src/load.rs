//! Load through the gateway, and the checks that matter to a user after a fault: every order
//! reached its expected end exactly once, stock is exact, one charge per order and one refund
//! per refunded order, and every order's status events are a gap-free sequence of versions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orderflow_events::Event;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::Row;

use crate::process::{Proc, ProcessSystem};

pub use orderflow_dev::load::{Gateway, Mix, Outcome, Placed};

/// Units of the seed mix's `plenty` SKU: more than any test takes.
pub const PLENTY_UNITS: i32 = 100_000;

/// Sets the stock of the seed mix: `plenty` that never runs out, `none` with nothing.
pub async fn stock_up(gateway: &Gateway) {
    gateway
        .stock_up(&Mix::seed().stock(PLENTY_UNITS))
        .await
        .expect("SetStock");
}

/// Places `count` orders of the seed mix, one every `interval`, counting them in `progress`.
pub async fn run_load(
    gateway: Gateway,
    count: usize,
    interval: Duration,
    progress: Arc<AtomicUsize>,
) -> Vec<Placed> {
    orderflow_dev::load::paced(&gateway, &Mix::seed(), count, interval, progress)
        .await
        .expect("the load")
}

/// Order `i` of the seed mix, placed (retried while the system cannot answer); its id.
pub async fn place(gateway: &Gateway, i: usize) -> String {
    let order = Mix::seed().order(i);
    orderflow_dev::load::place_with_retry(
        &mut gateway.orders(0, &order.request.customer_id),
        order.request,
        Duration::from_secs(180),
    )
    .await
    .expect("PlaceOrder")
}

/// A load running in the background: the orders it placed, once it is done.
pub type Running = tokio::task::JoinHandle<Vec<Placed>>;

/// Stocks `system` for the seed mix and starts placing `orders` of it in the background,
/// one every `interval`; the counter says how many are placed so far.
pub async fn start(
    system: &ProcessSystem,
    orders: usize,
    interval: Duration,
) -> (Arc<AtomicUsize>, Running) {
    let gateway = system.load_gateway();
    stock_up(&gateway).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn(run_load(gateway, orders, interval, progress.clone()));
    (progress, running)
}

/// Waits until `progress` (e.g. orders placed) reaches at least `n`.
pub async fn wait_progress(progress: &AtomicUsize, n: usize) {
    crate::wait_for(
        &format!("progress to reach {n}"),
        Duration::from_secs(180),
        || async { (progress.load(Ordering::SeqCst) >= n).then_some(()) },
    )
    .await;
}

/// Waits until every order is terminal (read through the gateway).
pub async fn wait_all_terminal(gateway: &Gateway, placed: &[Placed], timeout: Duration) {
    orderflow_dev::load::wait_all_terminal(gateway, placed, timeout)
        .await
        .expect("every order terminal");
}

/// Everything a user cares about after the run, read from each service's own database and
/// from the `order-status` topic.
pub async fn verify(system: &ProcessSystem, placed: &[Placed]) {
    let Mix::Seed { plenty, none } = Mix::seed() else {
        unreachable!("the seed mix")
    };
    let connect =
        |p: Proc| sqlx::PgPool::connect_lazy(&system.database_url(p)).expect("database url");
    let orders = connect(Proc::Order);
    let payments = connect(Proc::Payment);
    let inventory = connect(Proc::Inventory);

    // Each order exactly once, ending as expected through exactly the expected statuses.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&orders)
        .await
        .unwrap();
    assert_eq!(
        stored,
        placed.len() as i64,
        "orders stored (a retried PlaceOrder must not create a second order)"
    );
    let mut history: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for row in sqlx::query("SELECT order_id::text AS id, version, status FROM order_status_history ORDER BY order_id, version")
        .fetch_all(&orders)
        .await
        .unwrap()
    {
        history.entry(row.get("id")).or_default().push((row.get("version"), row.get("status")));
    }
    for p in placed {
        let got = history.get(&p.order_id).cloned().unwrap_or_default();
        let want: Vec<(i64, String)> = p.expect.versions().collect();
        assert_eq!(got, want, "order {} ({:?})", p.order_id, p.expect);
    }

    // One charge per order; one refund per refunded order, and no other.
    let count = |outcome: Outcome| placed.iter().filter(|p| p.expect == outcome).count() as i64;
    let charges: Vec<(String, String)> =
        sqlx::query("SELECT order_id::text AS id, status FROM charges")
            .fetch_all(&payments)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("id"), r.get("status")))
            .collect();
    assert_eq!(charges.len(), placed.len(), "one charge row per order");
    let paid = charges.iter().filter(|(_, s)| s == "PAID").count() as i64;
    assert_eq!(
        paid,
        count(Outcome::Completed) + count(Outcome::Refunded),
        "paid charges"
    );
    let refunded: BTreeSet<String> = sqlx::query_scalar("SELECT order_id::text FROM refunds")
        .fetch_all(&payments)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want_refunded: BTreeSet<String> = placed
        .iter()
        .filter(|p| p.expect == Outcome::Refunded)
        .map(|p| p.order_id.clone())
        .collect();
    assert_eq!(refunded, want_refunded, "refunds");

    // Stock: initial minus what completed orders took, deducted once each.
    let available: i32 = sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
        .bind(&plenty)
        .fetch_one(&inventory)
        .await
        .unwrap();
    let taken: i32 = placed
        .iter()
        .filter(|p| p.expect == Outcome::Completed)
        .map(|p| p.quantity)
        .sum();
    assert_eq!(available, PLENTY_UNITS - taken, "stock of {}", plenty);
    let none: i32 = sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
        .bind(&none)
        .fetch_one(&inventory)
        .await
        .unwrap();
    assert_eq!(none, 0);

    // On the wire: each order's status events carry versions 1..=n with no gap (a version
    // may appear twice: delivery is at-least-once), each with the status recorded for it.
    let topic = format!("{}order-status", system.topic_prefix);
    let on_topic = read_status_topic(&system.registry_url(), system, &topic).await;
    for p in placed {
        let seen = on_topic.get(&p.order_id).cloned().unwrap_or_default();
        let want: BTreeMap<i64, String> = p.expect.versions().collect();
        assert_eq!(seen, want, "status events of order {}", p.order_id);
    }
}

/// Every (order, version) → status on the status topic, read from the beginning.
async fn read_status_topic(
    registry_url: &str,
    system: &ProcessSystem,
    topic: &str,
) -> BTreeMap<String, BTreeMap<i64, String>> {
    let codec = system.credentials.codec(registry_url);
    let consumer: StreamConsumer = system
        .kafka
        .client_config()
        .set("group.id", format!("verify-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "25")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        list.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        remaining += high - low;
        ends.insert(p, high);
    }
    consumer.assign(&list).expect("assign");
    let mut seen: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
    while remaining > 0 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("read the status topic")
            .expect("message");
        if message.offset() >= ends[&message.partition()] {
            continue;
        }
        remaining -= 1;
        let Event::OrderStatusChanged(e) = codec.decode(message.payload()).await.expect("decode")
        else {
            panic!("not a status event on {topic}");
        };
        let status = orderflow_domain::OrderStatus::try_from(e.status)
            .map_or("?".to_owned(), |s| s.as_str().to_owned());
        let previous = seen
            .entry(e.order_id.clone())
            .or_default()
            .insert(e.version, status.clone());
        if let Some(previous) = previous {
            assert_eq!(
                previous, status,
                "order {} version {} published with two statuses",
                e.order_id, e.version
            );
        }
    }
    seen
}

/// The value of an unlabelled gauge or counter on a `/metrics` page, if present.
pub async fn metric(admin_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{admin_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

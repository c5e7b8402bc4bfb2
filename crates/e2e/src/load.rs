//! Load through the gateway, and the checks that matter to a user after a fault: every order
//! reached its expected end exactly once, stock is exact, one charge per order and one refund
//! per refunded order, and every order's status events are a gap-free sequence of versions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orderflow_events::{Event, EventCodec};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sqlx::Row;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::process::{Proc, ProcessSystem};
use crate::status_name;

/// How an order must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Refunded,
}

impl Outcome {
    /// The statuses the order passes through, version 1 first.
    pub fn path(self) -> &'static [&'static str] {
        match self {
            Outcome::Completed => &["PENDING", "PAID", "COMPLETED"],
            Outcome::Failed => &["PENDING", "FAILED"],
            Outcome::Refunded => &["PENDING", "PAID", "OUT_OF_STOCK", "REFUNDED"],
        }
    }

    /// The `(version, status)` pairs the order goes through.
    pub fn versions(self) -> impl Iterator<Item = (i64, String)> {
        (1..).zip(self.path().iter().map(|s| s.to_string()))
    }
}

/// One order the load placed.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: String,
    pub quantity: i32,
    pub expect: Outcome,
}

/// The stock the load draws from: `plenty` never runs out, `none` has no units.
pub struct Skus {
    pub plenty: String,
    pub plenty_units: i32,
    pub none: String,
}

impl Skus {
    pub fn new() -> Skus {
        Skus {
            plenty: "plenty".into(),
            plenty_units: 100_000,
            none: "none".into(),
        }
    }
}

impl Default for Skus {
    fn default() -> Self {
        Skus::new()
    }
}

fn lazy_channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .expect("gateway url")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// Sets up stock through the gateway.
pub async fn stock_up(gateway_url: &str, skus: &Skus) {
    let mut inventory = orderflow_proto::v1::inventory_service_client::InventoryServiceClient::new(
        lazy_channel(gateway_url),
    );
    for (sku, units) in [(&skus.plenty, skus.plenty_units), (&skus.none, 0)] {
        inventory
            .set_stock(pb::SetStockRequest {
                sku: sku.clone(),
                available: units,
            })
            .await
            .expect("SetStock");
    }
}

/// The request for order `i` of a load: mostly approved orders of 1–3 units, every fifth
/// declined, every fifth for a SKU with no stock.
pub fn load_request(i: usize, skus: &Skus) -> (pb::PlaceOrderRequest, i32, Outcome) {
    let quantity = 1 + (i % 3) as i32;
    let (sku, token, outcome) = match i % 5 {
        3 => (&skus.plenty, "pm_card_chargeDeclined", Outcome::Failed),
        4 => (&skus.none, "pm_card_visa", Outcome::Refunded),
        _ => (&skus.plenty, "pm_card_visa", Outcome::Completed),
    };
    let request = pb::PlaceOrderRequest {
        customer_id: format!("load-{}", i % 7),
        items: vec![pb::OrderLine {
            sku: sku.clone(),
            quantity,
            unit_price: Some(pb::Money {
                amount_minor: 500,
                currency: "EUR".into(),
            }),
        }],
        payment_method: token.into(),
        idempotency_key: format!("load-{i}-{}", uuid::Uuid::new_v4()),
    };
    (request, quantity, outcome)
}

/// Places one order, retrying with the same idempotency key while the system cannot answer
/// (gateway or order service down): what a well-behaved client does.
pub async fn place_with_retry(
    client: &mut OrderServiceClient<Channel>,
    request: pb::PlaceOrderRequest,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        match client.place_order(request.clone()).await {
            Ok(response) => return response.into_inner().order.expect("order").order_id,
            Err(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument | Code::AlreadyExists | Code::NotFound
                ) =>
            {
                panic!("PlaceOrder refused a valid request: {status:?}")
            }
            Err(status) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "PlaceOrder kept failing: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Places `count` orders, one every `interval`, counting them in `progress` so a test can
/// inject its fault at a chosen point while the load goes on. Returns what was placed.
pub async fn run_load(
    gateway_url: String,
    count: usize,
    interval: Duration,
    progress: Arc<AtomicUsize>,
) -> Vec<Placed> {
    let skus = Skus::new();
    let mut client = OrderServiceClient::new(lazy_channel(&gateway_url));
    let mut placed = Vec::with_capacity(count);
    for i in 0..count {
        let (request, quantity, expect) = load_request(i, &skus);
        let order_id = place_with_retry(&mut client, request).await;
        placed.push(Placed {
            order_id,
            quantity,
            expect,
        });
        progress.store(i + 1, Ordering::SeqCst);
        tokio::time::sleep(interval).await;
    }
    placed
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
pub async fn wait_all_terminal(gateway_url: &str, placed: &[Placed], timeout: Duration) {
    let client = OrderServiceClient::new(lazy_channel(gateway_url));
    let mut pending: Vec<&Placed> = placed.iter().collect();
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for p in pending {
            let order = client
                .clone()
                .get_order(pb::GetOrderRequest {
                    order_id: p.order_id.clone(),
                })
                .await;
            let terminal = order.is_ok_and(|o| {
                matches!(
                    status_name(o.into_inner().status),
                    "COMPLETED" | "FAILED" | "REFUNDED"
                )
            });
            if !terminal {
                still.push(p);
            }
        }
        pending = still;
        if !pending.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} orders not terminal within {timeout:?}, e.g. {:?}",
                pending.len(),
                pending.first()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Everything a user cares about after the run, read from each service's own database and
/// from the `order-status` topic.
pub async fn verify(system: &ProcessSystem, skus: &Skus, placed: &[Placed]) {
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
        .bind(&skus.plenty)
        .fetch_one(&inventory)
        .await
        .unwrap();
    let taken: i32 = placed
        .iter()
        .filter(|p| p.expect == Outcome::Completed)
        .map(|p| p.quantity)
        .sum();
    assert_eq!(
        available,
        skus.plenty_units - taken,
        "stock of {}",
        skus.plenty
    );
    let none: i32 = sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
        .bind(&skus.none)
        .fetch_one(&inventory)
        .await
        .unwrap();
    assert_eq!(none, 0);

    // On the wire: each order's status events carry versions 1..=n with no gap (a version
    // may appear twice: delivery is at-least-once), each with the status recorded for it.
    let topic = format!("{}order-status", system.topic_prefix);
    let on_topic =
        read_status_topic(&system.broker.address(), &system.registry_url(), &topic).await;
    for p in placed {
        let seen = on_topic.get(&p.order_id).cloned().unwrap_or_default();
        let want: BTreeMap<i64, String> = p.expect.versions().collect();
        assert_eq!(seen, want, "status events of order {}", p.order_id);
    }
}

/// Every (order, version) → status on the status topic, read from the beginning.
async fn read_status_topic(
    brokers: &str,
    registry_url: &str,
    topic: &str,
) -> BTreeMap<String, BTreeMap<i64, String>> {
    let codec = EventCodec::new(registry_url).expect("codec");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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
        let status = format!("{:?}", e.status);
        let status = match status.as_str() {
            "OutOfStock" => "OUT_OF_STOCK".to_owned(),
            other => other.to_uppercase(),
        };
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

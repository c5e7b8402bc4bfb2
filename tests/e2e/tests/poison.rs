//! Messages that must not break the flow, with the services running as processes against the
//! real broker, registry and PostgreSQL:
//! poison in every consumed topic lands in its dead-letter topic with the headers that say
//! where it came from and why, re-published events have no second effect, and a dead letter
//! redriven once its cause is fixed is processed exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orderflow_e2e::process::{Databases, Proc, ProcessSystem};
use orderflow_e2e::{order_request, status_name, wait_for, watch_to_end};
use orderflow_events::{self as ev, Event, EventCodec, EventKind, Topics};
use orderflow_platform::dlq::{self, MessageRef, Selection, StoredMessage};
use orderflow_platform::producer::KafkaProducer;
use orderflow_proto::v1 as pb;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sqlx::{PgPool, Row};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(60);

/// Produces raw bytes to the system's topics, the way a misbehaving producer would.
struct Injector {
    producer: KafkaProducer,
    codec: EventCodec,
    topics: Topics,
}

impl Injector {
    fn new(system: &ProcessSystem) -> Injector {
        Injector {
            producer: orderflow_platform::kafka::producer(&system.kafka).expect("producer"),
            codec: system.credentials.codec(&system.registry_url()),
            topics: system.kafka.topics(),
        }
    }

    /// Produces `payload` with `key` and a `traceparent` header; returns (partition, offset).
    async fn produce(&self, topic: &str, key: &str, payload: &[u8]) -> (i32, i64) {
        self.produce_with(
            topic,
            Some(key.as_bytes()),
            Some(payload),
            &[("traceparent", Some(TRACEPARENT.as_bytes()))],
        )
        .await
    }

    async fn produce_with(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> (i32, i64) {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header { key: k, value: *v });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        let delivery = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        (delivery.partition, delivery.offset)
    }

    async fn encode(&self, event: &Event) -> Vec<u8> {
        self.codec
            .encode(&self.topics, event)
            .await
            .expect("encode through the registry")
    }
}

async fn set_stock(system: &ProcessSystem, sku: &str, units: i32) {
    orderflow_e2e::set_stock(
        system.inventory().await,
        (system.orders("stocker").await, "stocker"),
        sku,
        units,
    )
    .await
}

async fn stock(system: &ProcessSystem, sku: &str) -> i32 {
    orderflow_e2e::stock(system.inventory().await, sku).await
}

async fn place(
    system: &ProcessSystem,
    customer: &str,
    sku: &str,
    quantity: i32,
    method: &str,
) -> pb::Order {
    let response = system
        .orders(customer)
        .await
        .place_order(order_request(customer, sku, quantity, method))
        .await
        .expect("PlaceOrder")
        .into_inner();
    assert!(response.created);
    let order = response.order.expect("order");
    assert_eq!(order.version, 1);
    order
}

/// Every status of a placed order until its stream ends, versions checked gap-free.
async fn statuses(system: &ProcessSystem, placed: &pb::Order) -> Vec<&'static str> {
    let mut seen = vec![(placed.version, status_name(placed.status))];
    let mut orders = system.orders(&placed.customer_id).await;
    seen.extend(watch_to_end(&mut orders, &placed.order_id, placed.version).await);
    let versions: Vec<i64> = seen.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (1..=seen.len() as i64).collect::<Vec<_>>(),
        "order {}: versions not gap-free: {seen:?}",
        placed.order_id
    );
    seen.into_iter().map(|(_, s)| s).collect()
}

/// The stored status history of every order, `order_id -> [(version, status)]`.
async fn histories(pool: &PgPool) -> BTreeMap<String, Vec<(i64, String)>> {
    let mut all: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT order_id::text AS id, version, status FROM order_status_history ORDER BY order_id, version",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        all.entry(row.get("id"))
            .or_default()
            .push((row.get("version"), row.get("status")));
    }
    all
}

/// Rows of `sql` as text columns, for comparing before and after.
async fn rows(pool: &PgPool, sql: &str) -> Vec<Vec<Option<String>>> {
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

/// Waits until dead-letter topic `topic` holds `count` messages and returns them.
async fn dead_letters(system: &ProcessSystem, topic: &str, count: usize) -> Vec<StoredMessage> {
    wait_for(
        &format!("{count} message(s) in {topic}"),
        WAIT,
        || async move {
            let messages = dlq::read_dead_letters(&system.kafka, topic, 0, 1000)
                .await
                .ok()?;
            (messages.len() >= count).then_some(messages)
        },
    )
    .await
}

fn line(sku: &str, quantity: i32) -> ev::OrderLine {
    ev::OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: ev::Money {
            amount_minor: 250,
            currency: "EUR".into(),
        },
    }
}

fn new_order_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// What each consumer of a topic must record for a poison message:
/// consumer -> (error class, a part of the error message).
type Expect = BTreeMap<&'static str, (&'static str, String)>;

/// A poison message produced to `topic`, and what each consumer of the topic must record.
struct Poison {
    topic: String,
    key: String,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    expect: Expect,
}

/// The poison of one kind for every consumed topic.
async fn inject(injector: &Injector, kind: &str) -> Vec<Poison> {
    let topics = &injector.topics;
    let mut poisons = Vec::new();
    let consumers: [(&str, &[&'static str]); 5] = [
        (&topics.orders, &["payment"]),
        (&topics.payments, &["order", "inventory"]),
        (&topics.inventory, &["order", "payment"]),
        (&topics.catalogue, &["order"]),
        (&topics.customers, &["order"]),
    ];
    for (topic, readers) in consumers {
        // Keyed like the events of orders, by an order id no service knows (on the
        // catalogue and the directory, a SKU and a customer nobody has).
        let key = new_order_id();
        let (payload, expect): (Vec<u8>, Expect) = match kind {
            "garbage" => (
                b"{\"order\": \"this is JSON, not Avro\"}".to_vec(),
                readers
                    .iter()
                    .map(|c| (*c, ("not_framed", "0x7b".to_owned())))
                    .collect(),
            ),
            "unknown-schema" => {
                let mut bytes = vec![0];
                bytes.extend_from_slice(&999_999u32.to_be_bytes());
                bytes.extend_from_slice(b"\x02\x04datum");
                (
                    bytes,
                    readers
                        .iter()
                        .map(|c| (*c, ("unknown_schema", "999999".to_owned())))
                        .collect(),
                )
            }
            "invalid" => invalid_content(injector, topic, &key).await,
            other => unreachable!("poison kind {other}"),
        };
        let (partition, offset) = injector.produce(topic, &key, &payload).await;
        poisons.push(Poison {
            topic: topic.to_owned(),
            key,
            partition,
            offset,
            payload,
            expect,
        });
    }
    poisons
}

/// A correctly encoded event for `topic` that its consumers must refuse as invalid content,
/// about an order (`order_id`) no service knows.
async fn invalid_content(injector: &Injector, topic: &str, order_id: &str) -> (Vec<u8>, Expect) {
    let topics = &injector.topics;
    let invalid = |s: &str| ("invalid_content", s.to_owned());
    let unknown_order = format!("unknown order {order_id}");
    let (event, expect): (Event, Expect) = if topic == topics.orders {
        // A negative quantity: payment must refuse it before charging anything.
        (
            Event::OrderCreated(ev::OrderCreated {
                event_id: ev::new_event_id(),
                order_id: order_id.to_owned(),
                occurred_at: ev::now_millis(),
                customer_id: "mallory".into(),
                items: vec![line("poison-sku", -1)],
                total: ev::Money {
                    amount_minor: 250,
                    currency: "EUR".into(),
                },
                payment_method: "pm_card_visa".into(),
            }),
            Expect::from([("payment", invalid("items[0].quantity"))]),
        )
    } else if topic == topics.payments {
        // Paid, for an order nobody placed, with a negative quantity: the order service
        // does not know the order, inventory refuses the line before deducting anything.
        (
            Event::PaymentProcessed(ev::PaymentProcessed {
                event_id: ev::new_event_id(),
                order_id: order_id.to_owned(),
                occurred_at: ev::now_millis(),
                payment_id: new_order_id(),
                status: ev::PaymentStatus::Paid,
                amount: ev::Money {
                    amount_minor: 250,
                    currency: "EUR".into(),
                },
                items: vec![line("poison-sku", -1)],
                failure_reason: None,
                provider_reference: None,
            }),
            Expect::from([
                ("order", invalid(&unknown_order)),
                ("inventory", invalid("items[0].quantity")),
            ]),
        )
    } else if topic == topics.catalogue {
        // A negative stock level: the order service keeps nothing of it.
        (
            Event::CatalogueItemChanged(ev::CatalogueItemChanged {
                event_id: ev::new_event_id(),
                occurred_at: ev::now_millis(),
                sku: order_id.to_owned(),
                available: -5,
                revision: 1,
            }),
            Expect::from([("order", invalid("available"))]),
        )
    } else if topic == topics.customers {
        // A standing this build does not know: the order service keeps nothing of it.
        (
            Event::CustomerStatusChanged(ev::CustomerStatusChanged {
                event_id: ev::new_event_id(),
                occurred_at: ev::now_millis(),
                customer_id: order_id.to_owned(),
                status: ev::CustomerStatus::Unknown,
                reason: None,
            }),
            Expect::from([("order", invalid("status"))]),
        )
    } else {
        // Out of stock for an order nobody placed or paid: nothing to move, nothing to refund.
        (
            Event::InventoryUpdated(ev::InventoryUpdated {
                event_id: ev::new_event_id(),
                order_id: order_id.to_owned(),
                occurred_at: ev::now_millis(),
                status: ev::InventoryStatus::OutOfStock,
                items: vec![ev::StockLine {
                    sku: "poison-sku".into(),
                    quantity: 1,
                }],
                missing: vec![ev::MissingItem {
                    sku: "poison-sku".into(),
                    requested: 1,
                    available: 0,
                }],
            }),
            Expect::from([
                ("order", invalid(&unknown_order)),
                (
                    "payment",
                    invalid(&format!("no charge for order {order_id}")),
                ),
            ]),
        )
    };
    (injector.encode(&event).await, expect)
}

/// Checks one dead letter against the poison it must be, written by `consumer`.
fn check_dead_letter(
    system: &ProcessSystem,
    message: &StoredMessage,
    poison: &Poison,
    consumer: &str,
    since: DateTime<Utc>,
) {
    let at = message.location();
    let header = |name: &str| {
        message
            .header(name)
            .unwrap_or_else(|| panic!("{at}: header {name} missing: {:?}", message.headers))
    };
    let (class, mentions) = &poison.expect[consumer];
    assert_eq!(header("dlq.origin.topic"), poison.topic, "{at}");
    assert_eq!(
        header("dlq.origin.partition"),
        poison.partition.to_string(),
        "{at}"
    );
    assert_eq!(
        header("dlq.origin.offset"),
        poison.offset.to_string(),
        "{at}"
    );
    assert_eq!(header("dlq.origin.key"), poison.key, "{at}");
    assert_eq!(
        header("dlq.consumer.group"),
        system.kafka.group(consumer),
        "{at}"
    );
    assert_eq!(header("dlq.error.class"), *class, "{at}");
    let reason = header("dlq.error.message");
    assert!(
        reason.contains(mentions.as_str()),
        "{at}: error message {reason:?} should mention {mentions:?}"
    );
    let first = DateTime::parse_from_rfc3339(&header("dlq.first.failure"))
        .unwrap_or_else(|e| panic!("{at}: dlq.first.failure is not RFC 3339: {e}"));
    assert!(
        first >= since && first <= Utc::now(),
        "{at}: first failure {first} not between {since} and now"
    );
    // A permanent failure is not retried: dead-lettered at the first attempt.
    assert_eq!(header("dlq.attempts"), "1", "{at}");
    // The message itself is unchanged, with its own headers.
    assert_eq!(header("traceparent"), TRACEPARENT, "{at}");
    assert_eq!(message.key.as_deref(), Some(poison.key.as_bytes()), "{at}");
    assert_eq!(
        message.payload.as_deref(),
        Some(poison.payload.as_slice()),
        "{at}"
    );
}

/// Garbage bytes, an unknown schema id and invalid content in every consumed topic, between
/// good orders: each poison message lands in `<topic>.<consumer>.dlq` of every consumer of its
/// topic with headers naming its origin and the error, and every good order still ends in the
/// right state with exact stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_in_every_topic_is_dead_lettered_and_good_orders_complete() {
    let system = ProcessSystem::start(Databases::shared().await).await;
    let since = Utc::now();
    let injector = Injector::new(&system);
    set_stock(&system, "poison-sku", 10).await;

    let mut good = Vec::new();
    let mut poisons = Vec::new();
    good.push((
        place(&system, "before", "poison-sku", 2, "pm_card_visa").await,
        "COMPLETED",
    ));
    poisons.extend(inject(&injector, "garbage").await);
    good.push((
        place(
            &system,
            "between-1",
            "poison-sku",
            1,
            "pm_card_chargeDeclined",
        )
        .await,
        "FAILED",
    ));
    poisons.extend(inject(&injector, "unknown-schema").await);
    good.push((
        place(&system, "between-2", "poison-sku", 3, "pm_card_visa").await,
        "COMPLETED",
    ));
    poisons.extend(inject(&injector, "invalid").await);
    // Placed after every poison message, these pass every consumer of every topic after it:
    // a completed order crosses orders, payments and inventory; a refunded one also makes
    // the payment service read the inventory topic.
    good.push((
        place(&system, "after-1", "poison-sku", 4, "pm_card_visa").await,
        "COMPLETED",
    ));
    good.push((
        place(&system, "after-2", "poison-sku", 20, "pm_card_visa").await,
        "REFUNDED",
    ));

    for (order, end) in &good {
        let path = statuses(&system, order).await;
        let want: &[&str] = match *end {
            "COMPLETED" => &["PENDING", "PAID", "COMPLETED"],
            "FAILED" => &["PENDING", "FAILED"],
            _ => &["PENDING", "PAID", "OUT_OF_STOCK", "REFUNDED"],
        };
        assert_eq!(path, want, "order {}", order.order_id);
    }
    assert_eq!(stock(&system, "poison-sku").await, 10 - 2 - 3 - 4);

    // Effects only for the good orders: one charge each, one refund, stock settled 4 times.
    let good_ids: BTreeSet<String> = good.iter().map(|(o, _)| o.order_id.clone()).collect();
    let payments = system.pool(Proc::Payment).await;
    let charged: Vec<Vec<Option<String>>> = rows(
        &payments,
        "SELECT order_id::text, status FROM charges ORDER BY order_id",
    )
    .await;
    assert_eq!(
        charged
            .iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<BTreeSet<_>>(),
        good_ids,
        "one charge per good order, none for poison"
    );
    assert_eq!(charged.len(), good.len());
    assert_eq!(
        rows(&payments, "SELECT order_id::text FROM refunds")
            .await
            .len(),
        1
    );
    let inventory = system.pool(Proc::Inventory).await;
    assert_eq!(
        rows(&inventory, "SELECT order_id::text FROM reservations")
            .await
            .len(),
        4
    );
    let order_db = system.pool(Proc::Order).await;
    let stored = histories(&order_db).await;
    assert_eq!(stored.keys().cloned().collect::<BTreeSet<_>>(), good_ids);

    // Every poison message in the dead-letter topic of every consumer of its topic, and
    // nothing else there.
    let mut expected: BTreeMap<String, Vec<&Poison>> = BTreeMap::new();
    for poison in &poisons {
        for consumer in poison.expect.keys() {
            expected
                .entry(format!("{}.{consumer}.dlq", poison.topic))
                .or_default()
                .push(poison);
        }
    }
    assert_eq!(expected.len(), 7, "{:?}", expected.keys());
    for (topic, wanted) in &expected {
        let consumer = topic.trim_end_matches(".dlq").rsplit('.').next().unwrap();
        let found = dead_letters(&system, topic, wanted.len()).await;
        assert_eq!(
            found.len(),
            wanted.len(),
            "{topic}: {:?}",
            found
                .iter()
                .map(|m| m.header("dlq.error.class"))
                .collect::<Vec<_>>()
        );
        for poison in wanted {
            let message = found
                .iter()
                .find(|m| m.header("dlq.origin.offset") == Some(poison.offset.to_string()))
                .unwrap_or_else(|| {
                    panic!("{topic}: nothing from {}@{}", poison.topic, poison.offset)
                });
            check_dead_letter(&system, message, poison, consumer, since);
        }
    }

    // `list` finds exactly these topics with their counts.
    let listed = dlq::list_dead_letter_topics(&system.kafka, &system.kafka.topic_prefix)
        .await
        .expect("list dead-letter topics");
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.name.clone(), t.messages))
            .collect::<BTreeMap<_, _>>(),
        expected
            .iter()
            .map(|(t, w)| (t.clone(), w.len() as i64))
            .collect::<BTreeMap<_, _>>()
    );
    // Reading from an offset with a limit returns that window.
    let topic = format!("{}.payment.dlq", injector.topics.orders);
    let window = dlq::read_dead_letters(&system.kafka, &topic, 1, 1)
        .await
        .unwrap();
    assert_eq!(window.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1]);
}

/// Every event already processed is published again (duplicate delivery): no second charge,
/// refund or stock deduction, no new status version, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_has_no_second_effect() {
    let system = ProcessSystem::start(Databases::shared().await).await;
    let injector = Injector::new(&system);
    set_stock(&system, "dup-sku", 5).await;
    let first = [
        (
            place(&system, "dup-1", "dup-sku", 2, "pm_card_visa").await,
            3,
        ),
        (
            place(&system, "dup-2", "dup-sku", 10, "pm_card_visa").await,
            4,
        ),
        (
            place(&system, "dup-3", "dup-sku", 1, "pm_card_chargeDeclined").await,
            2,
        ),
    ];
    for (order, versions) in &first {
        assert_eq!(statuses(&system, order).await.len(), *versions);
    }
    let order_db = system.pool(Proc::Order).await;
    let payment_db = system.pool(Proc::Payment).await;
    let inventory_db = system.pool(Proc::Inventory).await;
    let orders_sql = "SELECT order_id::text, status, version::text FROM orders ORDER BY order_id";
    let charges_sql =
        "SELECT order_id::text, payment_id::text, status FROM charges ORDER BY order_id";
    let refunds_sql = "SELECT order_id::text, refund_id::text FROM refunds ORDER BY order_id";
    let reservations_sql = "SELECT order_id::text, status FROM reservations ORDER BY order_id";
    let before = (
        rows(&order_db, orders_sql).await,
        histories(&order_db).await,
        rows(&payment_db, charges_sql).await,
        rows(&payment_db, refunds_sql).await,
        rows(&inventory_db, reservations_sql).await,
    );
    assert_eq!(before.2.len(), 3);
    assert_eq!(before.3.len(), 1);
    assert_eq!(before.4.len(), 2);
    assert_eq!(stock(&system, "dup-sku").await, 3);

    // Read every consumed topic back and publish each message again, unchanged, twice in a
    // row: a consumer batch then holds the same event twice as well as events it applied.
    let topics = &injector.topics;
    let mut republished = BTreeMap::new();
    for topic in [
        &topics.orders,
        &topics.payments,
        &topics.inventory,
        &topics.catalogue,
    ] {
        let messages = orderflow_platform::dlq::read_messages(&system.kafka, topic, 0, 1000)
            .await
            .expect("read the topic back");
        for m in &messages {
            let headers: Vec<(&str, Option<&[u8]>)> = m
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            let again =
                || injector.produce_with(topic, m.key.as_deref(), m.payload.as_deref(), &headers);
            // Sent together, the two copies travel in one produce request and one fetch.
            futures::join!(again(), again());
        }
        republished.insert(topic.clone(), messages.len());
    }
    // 3 OrderCreated; 3 PaymentProcessed and 1 PaymentRefunded; CONFIRMED and OUT_OF_STOCK;
    // the SKU's catalogue entries: stocked (5), then dup-1's deduction (3). The catalogue is
    // compacted, by the broker at a time of its own (docs/tansu.md): the first entry may be
    // gone, the newest never is.
    let catalogue = republished
        .remove(&topics.catalogue)
        .expect("the catalogue read back");
    assert!(
        (1..=2).contains(&catalogue),
        "{catalogue} catalogue entries"
    );
    assert_eq!(
        republished,
        BTreeMap::from([
            (topics.orders.clone(), 3),
            (topics.payments.clone(), 4),
            (topics.inventory.clone(), 2),
        ])
    );

    // Orders placed after the duplicates pass every consumer of every topic after them.
    let completed = place(&system, "dup-after-1", "dup-sku", 1, "pm_card_visa").await;
    let refunded = place(&system, "dup-after-2", "dup-sku", 50, "pm_card_visa").await;
    assert_eq!(
        statuses(&system, &completed).await,
        ["PENDING", "PAID", "COMPLETED"]
    );
    assert_eq!(
        statuses(&system, &refunded).await,
        ["PENDING", "PAID", "OUT_OF_STOCK", "REFUNDED"]
    );

    let later: BTreeSet<String> = [completed.order_id.clone(), refunded.order_id.clone()].into();
    let without_later = |rows: Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
        rows.into_iter()
            .filter(|r| !later.contains(r[0].as_deref().unwrap()))
            .collect()
    };
    let mut after_histories = histories(&order_db).await;
    after_histories.retain(|id, _| !later.contains(id));
    let after = (
        without_later(rows(&order_db, orders_sql).await),
        after_histories,
        without_later(rows(&payment_db, charges_sql).await),
        without_later(rows(&payment_db, refunds_sql).await),
        without_later(rows(&inventory_db, reservations_sql).await),
    );
    assert_eq!(after.0, before.0, "order status or version changed");
    assert_eq!(after.1, before.1, "status history changed");
    assert_eq!(after.2, before.2, "charges changed");
    assert_eq!(after.3, before.3, "refunds changed");
    assert_eq!(after.4, before.4, "reservations changed");
    // Deducted once for dup-1 and once for the later completed order.
    assert_eq!(stock(&system, "dup-sku").await, 5 - 2 - 1);
    // The order service's copy of the catalogue did not go back to an older entry: it holds
    // the third revision (the later order's deduction) once that entry arrived.
    let copy = orderflow_e2e::wait_for("the catalogue copy", Duration::from_secs(30), || async {
        let kept = rows(
            &order_db,
            "SELECT available::text, revision::text FROM catalogue WHERE sku = 'dup-sku'",
        )
        .await;
        (kept.first()?.get(1)?.as_deref() == Some("3")).then_some(kept)
    })
    .await;
    assert_eq!(copy, vec![vec![Some("2".to_owned()), Some("3".to_owned())]]);
    // An older entry under a new event id (not a duplicate, so dedup does not catch it: the
    // revision does) changes nothing either.
    let stale = Event::CatalogueItemChanged(ev::CatalogueItemChanged {
        event_id: ev::new_event_id(),
        occurred_at: ev::now_millis(),
        sku: "dup-sku".into(),
        available: 5,
        revision: 1,
    });
    injector
        .produce(&topics.catalogue, "dup-sku", &injector.encode(&stale).await)
        .await;
    orderflow_e2e::wait_caught_up(
        &system.kafka,
        &system.kafka.group("order"),
        std::slice::from_ref(&topics.catalogue),
        WAIT,
    )
    .await;
    assert_eq!(
        rows(
            &order_db,
            "SELECT available::text, revision::text FROM catalogue WHERE sku = 'dup-sku'"
        )
        .await,
        copy
    );

    // No status change event beyond each order's versions reached order-status.
    let codec = system.credentials.codec(&system.registry_url());
    let mut changes: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in dlq::read_messages(&system.kafka, &topics.order_status, 0, 1000)
        .await
        .unwrap()
    {
        if let Event::OrderStatusChanged(c) = codec.decode(m.payload.as_deref()).await.unwrap() {
            changes.entry(c.order_id).or_default().push(c.version);
        }
    }
    for (order, versions) in &first {
        assert_eq!(
            changes[&order.order_id],
            (1..=*versions as i64).collect::<Vec<i64>>(),
            "order {}",
            order.order_id
        );
    }
    // A duplicate is not a failure: nothing was dead-lettered.
    for topic in dlq::list_dead_letter_topics(&system.kafka, &system.kafka.topic_prefix)
        .await
        .unwrap()
    {
        assert_eq!(topic.messages, 0, "{}", topic.name);
    }
}

/// A message written with a schema the registry did not know is dead-lettered; once the
/// schema is registered, `redrive` publishes it again and it is processed exactly once (a
/// second redrive is a duplicate). The dead-letter topic keeps the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_redriven_after_the_fix_is_processed_once() {
    let system = ProcessSystem::start(Databases::shared().await).await;
    let injector = Injector::new(&system);
    let topics = injector.topics.clone();
    set_stock(&system, "redrive-sku", 5).await;
    let http = reqwest::Client::new();
    let registry = system.registry_url();
    let admin = |request| system.credentials.as_registry_admin(request);

    // A writer schema the registry does not know: OrderCreated under an alias only this test
    // uses (aliases count in the registry's fingerprint, not in the binary encoding). It is
    // registered to learn its id, then deleted permanently, so the id is unknown.
    let mut schema: serde_json::Value =
        serde_json::from_str(EventKind::OrderCreated.schema_text()).unwrap();
    schema["aliases"] = serde_json::json!([format!(
        "orderflow.events.Probe{}",
        uuid::Uuid::new_v4().simple()
    )]);
    let subject = format!("{}redrive-probe", system.kafka.topic_prefix);
    let register = || async {
        let request = http.post(format!("{registry}/subjects/{subject}/versions"));
        let response = admin(request)
            .json(&serde_json::json!({ "schema": schema.to_string() }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "register: {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        u32::try_from(body["id"].as_i64().unwrap()).unwrap()
    };
    let id = register().await;
    for permanent in [false, true] {
        let request = http.delete(format!(
            "{registry}/subjects/{subject}/versions/1?permanent={permanent}"
        ));
        let response = admin(request).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "delete: {}",
            response.status()
        );
    }
    let known = |id: u32| {
        let http = http.clone();
        let request = admin(http.get(format!("{registry}/schemas/ids/{id}")));
        async move { request.send().await.unwrap().status().is_success() }
    };
    assert!(!known(id).await, "schema {id} should be unknown now");

    let order_id = new_order_id();
    let event = Event::OrderCreated(ev::OrderCreated {
        event_id: ev::new_event_id(),
        order_id: order_id.clone(),
        occurred_at: ev::now_millis(),
        customer_id: "late-schema".into(),
        items: vec![line("redrive-sku", 2)],
        total: ev::Money {
            amount_minor: 500,
            currency: "EUR".into(),
        },
        payment_method: "pm_card_visa".into(),
    });
    let payload = ev::encode_plain(id, &event).unwrap();
    let (partition, offset) = injector.produce(&topics.orders, &order_id, &payload).await;

    let dlq_topic = format!("{}.payment.dlq", topics.orders);
    let dead = dead_letters(&system, &dlq_topic, 1).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(
        letter.header("dlq.error.class").as_deref(),
        Some("unknown_schema")
    );
    assert_eq!(letter.header("dlq.origin.offset"), Some(offset.to_string()));
    assert_eq!(
        letter.header("dlq.origin.partition"),
        Some(partition.to_string())
    );
    let payment_db = system.pool(Proc::Payment).await;
    let charges = |pool: PgPool, order_id: String| async move {
        sqlx::query_scalar::<_, String>("SELECT status FROM charges WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    assert!(
        charges(payment_db.clone(), order_id.clone())
            .await
            .is_empty()
    );

    // Selections that do not name a dead letter are refused, and nothing is sent.
    let missing = Selection::Messages(vec![MessageRef {
        partition: Some(0),
        offset: 99,
    }]);
    assert!(
        dlq::redrive(&system.kafka, &dlq_topic, &missing)
            .await
            .is_err()
    );
    assert!(
        dlq::redrive(&system.kafka, &topics.orders, &Selection::All)
            .await
            .is_err()
    );

    // The fix: the schema is registered (again, under the same id).
    assert_eq!(register().await, id);
    assert!(known(id).await);
    // The running service picks the fix up without a restart (the codec forgets a cached
    // unknown-schema failure), but nothing happens to the dead letter until it is redriven:
    // an order placed now is charged and completes while the dead-lettered order stays
    // uncharged.
    let before = place(&system, "before-redrive", "redrive-sku", 1, "pm_card_visa").await;
    assert_eq!(
        statuses(&system, &before).await,
        ["PENDING", "PAID", "COMPLETED"]
    );
    assert!(
        charges(payment_db.clone(), order_id.clone())
            .await
            .is_empty()
    );

    let selection = Selection::Messages(vec![MessageRef {
        partition: Some(letter.partition),
        offset: letter.offset,
    }]);
    let redriven = dlq::redrive(&system.kafka, &dlq_topic, &selection)
        .await
        .expect("redrive");
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].origin_topic, topics.orders);
    assert_eq!(redriven[0].from, letter.location());

    // Back on the origin topic: key, payload and original headers, plus where it came from.
    let copy = dlq::read_messages(&system.kafka, &topics.orders, redriven[0].offset, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(copy.partition, redriven[0].partition);
    assert_eq!(copy.key.as_deref(), Some(order_id.as_bytes()));
    assert_eq!(copy.payload.as_deref(), Some(payload.as_slice()));
    assert_eq!(copy.header("traceparent").as_deref(), Some(TRACEPARENT));
    assert_eq!(copy.header(dlq::REDRIVEN_FROM), Some(letter.location()));
    let dlq_headers: Vec<&str> = copy
        .headers
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("dlq.") && *k != dlq::REDRIVEN_FROM)
        .collect();
    assert!(dlq_headers.is_empty(), "{dlq_headers:?}");

    // Processed: charged once, stock deducted once.
    let charged = wait_for("the redriven order to be charged", WAIT, || {
        let (pool, id) = (payment_db.clone(), order_id.clone());
        async move { Some(charges(pool, id).await).filter(|c| !c.is_empty()) }
    })
    .await;
    assert_eq!(charged, ["PAID"]);
    wait_for("the redriven order's stock deduction", WAIT, || async {
        (stock(&system, "redrive-sku").await == 5 - 1 - 2).then_some(())
    })
    .await;

    // Redriving it again publishes a duplicate, which changes nothing. An order placed after
    // it passes the payment and inventory consumers after it.
    let again = dlq::redrive(&system.kafka, &dlq_topic, &Selection::All)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].offset > redriven[0].offset);
    let after = place(&system, "after-redrive", "redrive-sku", 1, "pm_card_visa").await;
    assert_eq!(
        statuses(&system, &after).await,
        ["PENDING", "PAID", "COMPLETED"]
    );
    assert_eq!(
        charges(payment_db.clone(), order_id.clone()).await,
        ["PAID"]
    );
    assert_eq!(stock(&system, "redrive-sku").await, 5 - 1 - 2 - 1);
    // The dead letter is still there (Kafka cannot delete it), and was not dead-lettered again.
    let listed = dlq::list_dead_letter_topics(&system.kafka, &system.kafka.topic_prefix)
        .await
        .unwrap();
    let count = listed
        .iter()
        .find(|t| t.name == dlq_topic)
        .map(|t| t.messages);
    assert_eq!(count, Some(1));
}

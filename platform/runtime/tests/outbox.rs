//! The outbox relay against real PostgreSQL and the real broker, with a bad row among good
//! ones: the relay publishes around it, moves it aside with the reason, counts it and says so
//! on health, while later rows of the same order wait behind it, in order.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use orderflow_events::{
    CodecError, Event, EventCodec, EventKind, FixedResolver, Money, OrderStatus,
    OrderStatusChanged, PaymentRefunded, Resolving, SchemaResolver, Topics, WriterSchema,
};
use orderflow_platform::health::Health;
use orderflow_platform::kafka::{self, Producer};
use orderflow_platform::metrics::{Metrics, PipelineMetrics};
use orderflow_platform::migrations::with_platform;
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{KafkaArgs, Outbox, OutboxSignal, Published, Relay};
use orderflow_testkit::{TestDatabase, wait_for};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

/// The order service's database: its own migrations and the platform's.
static ORDER_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| with_platform(sqlx::migrate!("../../migrations/order")));

/// This build's schemas, except that the registry refuses the schema of `PaymentRefunded`
/// for good (as it does a schema incompatible with its subject's history).
struct RefusingRefunds(FixedResolver);

impl SchemaResolver for RefusingRefunds {
    fn register<'a>(&'a self, topic: &'a str, kind: EventKind) -> Resolving<'a, u32> {
        if kind == EventKind::PaymentRefunded {
            return Box::pin(std::future::ready(Err(CodecError::Rejected(
                "incompatible with the subject's schemas".into(),
            ))));
        }
        self.0.register(topic, kind)
    }

    fn writer_schema(&self, id: u32) -> Resolving<'_, WriterSchema> {
        self.0.writer_schema(id)
    }
}

fn kafka_args() -> KafkaArgs {
    KafkaArgs {
        brokers: std::env::var("ORDERFLOW_TEST_BROKER")
            .expect("ORDERFLOW_TEST_BROKER: the address of the test broker"),
        topic_prefix: format!("t{}-", orderflow_testkit::unique_suffix()),
        partitions: 1,
        fetch_wait_ms: 500,
        fetch_min_bytes: 1,
        linger_ms: 2,
        group_suffix: String::new(),
        instance_id: String::new(),
        consumer_batch: 64,
        debug: None,
        security: Default::default(),
    }
}

/// The id (a UUID, as the schema wants) of the order the test calls `name` ("A", "B", …).
/// Each test has its own topics, so fixed ids do not collide.
fn order_id(name: &str) -> String {
    format!("00000000-0000-4000-8000-{:012x}", name.as_bytes()[0])
}

/// The test's name of the order `id`.
fn order_name(id: &str) -> String {
    let byte = u8::from_str_radix(&id[id.len() - 2..], 16).expect("an order id of the test");
    char::from(byte).to_string()
}

fn status(order: &str, version: i64) -> Event {
    Event::OrderStatusChanged(OrderStatusChanged {
        event_id: uuid::Uuid::new_v4().to_string(),
        order_id: order_id(order),
        occurred_at: 1,
        customer_id: "customer".into(),
        version,
        status: OrderStatus::Paid,
        reason: None,
    })
}

fn refund(order: &str) -> Event {
    Event::PaymentRefunded(PaymentRefunded {
        event_id: uuid::Uuid::new_v4().to_string(),
        order_id: order_id(order),
        occurred_at: 1,
        payment_id: "payment".into(),
        refund_id: "refund".into(),
        amount: Money {
            amount_minor: 100,
            currency: "EUR".into(),
        },
        reason: "out of stock".into(),
    })
}

/// Adds `events` to the outbox in one transaction; returns the id of each row.
async fn insert(pool: &PgPool, topics: &Topics, events: &[Event]) -> Vec<i64> {
    let mut tx = pool.begin().await.unwrap();
    Outbox::insert(&mut tx, topics, events, &TraceParent::new_root())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query_scalar("SELECT id FROM outbox ORDER BY id DESC LIMIT $1")
        .bind(events.len() as i64)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .collect()
}

/// An outbox row for `order` on `topic` that is not an event at all.
async fn insert_garbage(pool: &PgPool, topic: &str, order: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO outbox (topic, event_key, payload)
         VALUES ($1, $2, '{\"type\": \"OrderStatusChanged\", \"event\": {\"version\": \"two\"}}')
         RETURNING id",
    )
    .bind(topic)
    .bind(order_id(order))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Reads `topic` from its start, decoding each message: (order name, version) of status
/// events, (order name, 0) of others.
struct Reader {
    consumer: StreamConsumer,
    codec: EventCodec,
    seen: Vec<(String, i64)>,
}

impl Reader {
    fn new(kafka: &KafkaArgs, topic: &str) -> Reader {
        let consumer: StreamConsumer = kafka::plain_consumer(
            kafka,
            &format!("reader-{}", orderflow_testkit::unique_suffix()),
        )
        .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Offset(0))
            .unwrap();
        consumer.assign(&list).unwrap();
        Reader {
            consumer,
            codec: EventCodec::with_resolver(FixedResolver::new()),
            seen: Vec::new(),
        }
    }

    /// Reads until `want` messages were seen in all, or `within` passed.
    async fn read(&mut self, want: usize, within: Duration) -> &[(String, i64)] {
        let deadline = tokio::time::Instant::now() + within;
        while self.seen.len() < want {
            let Ok(message) = tokio::time::timeout_at(deadline, self.consumer.recv()).await else {
                break;
            };
            let message = message.expect("a message");
            let key = order_name(std::str::from_utf8(message.key().unwrap()).unwrap());
            let version = match self.codec.decode(message.payload()).await.unwrap() {
                Event::OrderStatusChanged(e) => e.version,
                _ => 0,
            };
            self.seen.push((key, version));
        }
        &self.seen
    }
}

fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

/// An order database and its own topics, made for one test.
async fn order_database_and_topics(name: &str) -> (TestDatabase, PgPool, KafkaArgs, Topics) {
    let db = TestDatabase::create(name).await;
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(db.url()),
        &ORDER_MIGRATIONS,
    )
    .await
    .expect("order database");
    let kafka = kafka_args();
    let topics = kafka.topics();
    let names: Vec<String> = topics.all().iter().map(|t| t.to_string()).collect();
    kafka::ensure_topics(&kafka, &names).await.unwrap();
    (db, pool, kafka, topics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_is_set_aside_and_only_its_order_waits_behind_it() {
    let _unexported = orderflow_platform::telemetry::init("outbox-test", &Default::default())
        .expect("no endpoint, nothing to refuse");
    let (_db, pool, kafka, topics) = order_database_and_topics("outbox").await;

    // In id order. A: published, then a row that is no event, then A's next change, which
    // must wait behind it. C: a refund whose schema the registry refuses for good, then C's
    // status, which must wait. B: both published, around the bad rows.
    insert(&pool, &topics, &[status("A", 1), status("B", 1)]).await;
    let bad_a = insert_garbage(&pool, &topics.order_status, "A").await;
    let waiting = insert(
        &pool,
        &topics,
        &[status("A", 3), refund("C"), status("C", 1), status("B", 2)],
    )
    .await;
    let bad_c = waiting[1];

    let metrics = Metrics::new();
    let pipeline = PipelineMetrics::register(&metrics);
    let health = Health::new();
    let signal = OutboxSignal::default();
    let relay = Relay::new(
        pool.clone(),
        Producer::new(&kafka).unwrap(),
        Arc::new(EventCodec::with_resolver(RefusingRefunds(
            FixedResolver::new(),
        ))),
        topics.clone(),
        health.clone(),
        pipeline.relay(&topics.all()),
        signal.clone(),
    );
    let stop = CancellationToken::new();
    let relay = tokio::spawn(relay.run(stop.clone()));

    let mut statuses = Reader::new(&kafka, &topics.order_status);
    let key = |k: &str, v: i64| (k.to_owned(), v);
    assert_eq!(
        statuses.read(3, Duration::from_secs(20)).await,
        [key("A", 1), key("B", 1), key("B", 2)],
        "the rows of other orders are published around the bad ones"
    );

    // The broker may hand the rows out before the relay's transaction has committed, and
    // health and the gauge follow the commit: wait for health to say so.
    let problem = wait_for(
        "health to report the rows set aside",
        Duration::from_secs(10),
        || {
            let health = health.clone();
            async move {
                health
                    .problems()
                    .into_iter()
                    .find(|(component, _)| component == "outbox-quarantine")
                    .map(|(_, reason)| reason)
            }
        },
    )
    .await;
    assert!(problem.contains("2 outbox rows set aside"), "{problem}");
    assert!(problem.contains(&format!("row {bad_a}")), "{problem}");
    let quarantined: HashMap<i64, String> =
        sqlx::query_as("SELECT outbox_id, reason FROM outbox_quarantine")
            .fetch_all(&pool)
            .await
            .expect("the quarantine")
            .into_iter()
            .collect();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(
        quarantined[&bad_a].contains("not an event"),
        "{quarantined:?}"
    );
    assert!(
        quarantined[&bad_c].contains("incompatible"),
        "{quarantined:?}"
    );
    let text = metrics.render();
    let counted = |topic: &str| {
        sample(
            &text,
            &format!("orderflow_outbox_quarantined_total{{topic=\"{topic}\"}}"),
        )
    };
    assert_eq!(counted(&topics.order_status), Some(1.0), "{text}");
    assert_eq!(counted(&topics.payments), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "orderflow_outbox_quarantine_rows "),
        Some(2.0),
        "{text}"
    );

    // Other orders keep flowing.
    insert(&pool, &topics, &[status("D", 1)]).await;
    signal.committed();
    assert_eq!(
        statuses.read(4, Duration::from_secs(20)).await[3..],
        [key("D", 1)]
    );

    // The operator repairs A's row and releases it: it goes out first, then the row that
    // waited behind it.
    let repaired = serde_json::to_value(status("A", 2)).unwrap();
    sqlx::query("UPDATE outbox SET payload = $1 WHERE id = $2")
        .bind(&repaired)
        .bind(bad_a)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox_quarantine WHERE outbox_id = $1")
        .bind(bad_a)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        statuses.read(6, Duration::from_secs(20)).await[4..],
        [key("A", 2), key("A", 3)]
    );
    // C still waits: nothing of it was published.
    assert!(statuses.seen.iter().all(|(k, _)| k != "C"));

    // The operator gives up on C's refund (marks it published): C's status follows, and
    // health recovers once the quarantine is empty.
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = $1")
        .bind(bad_c)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox_quarantine WHERE outbox_id = $1")
        .bind(bad_c)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        statuses.read(7, Duration::from_secs(20)).await[6..],
        [key("C", 1)]
    );
    wait_for("health to recover", Duration::from_secs(10), || async {
        health.is_healthy().then_some(())
    })
    .await;
    stop.cancel();
    relay.await.unwrap();
}

/// The relay deletes what the broker acknowledged (the default, `--outbox-retention 0s`), or
/// keeps it marked published for the purge (a longer retention); unpublished rows stay either
/// way, and nothing is published twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_rows_are_deleted_or_kept_as_the_retention_says() {
    for published in [Published::Deleted, Published::Kept] {
        let (_db, pool, kafka, topics) = order_database_and_topics("outbox_ack").await;
        let metrics = Metrics::new();
        let relay = Relay::new(
            pool.clone(),
            Producer::new(&kafka).unwrap(),
            Arc::new(EventCodec::with_resolver(FixedResolver::new())),
            topics.clone(),
            Health::new(),
            PipelineMetrics::register(&metrics).relay(&topics.all()),
            OutboxSignal::default(),
        )
        .acknowledged_rows(published);
        let stop = CancellationToken::new();
        let relay = tokio::spawn(relay.run(stop.clone()));
        let ids = insert(
            &pool,
            &topics,
            &[status("A", 1), status("B", 1), status("A", 2)],
        )
        .await;

        let mut statuses = Reader::new(&kafka, &topics.order_status);
        let key = |k: &str, v: i64| (k.to_owned(), v);
        assert_eq!(
            statuses.read(3, Duration::from_secs(20)).await,
            [key("A", 1), key("B", 1), key("A", 2)],
            "{published:?}"
        );
        let rows = |pool: PgPool| async move {
            sqlx::query_as::<_, (i64, bool)>(
                "SELECT id, published_at IS NOT NULL FROM outbox ORDER BY id",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        };
        let expected: Vec<(i64, bool)> = match published {
            Published::Deleted => vec![],
            Published::Kept => ids.iter().map(|id| (*id, true)).collect(),
        };
        wait_for("the acknowledged rows", Duration::from_secs(10), || {
            let pool = pool.clone();
            let expected = expected.clone();
            async move { (rows(pool).await == expected).then_some(()) }
        })
        .await;
        stop.cancel();
        relay.await.unwrap();
        // Nothing more was published: each event went out once.
        assert_eq!(statuses.read(4, Duration::from_secs(2)).await.len(), 3);

        // Each round that published rows timed its three phases, and took some time for them.
        let text = metrics.render();
        let phase = |phase: &str, series: &str| {
            sample(
                &text,
                &format!("orderflow_outbox_relay_round_seconds_{series}{{phase=\"{phase}\"}}"),
            )
            .unwrap_or_else(|| panic!("no {series} of phase {phase}:\n{text}"))
        };
        let rounds = phase("read", "count");
        assert!(rounds >= 1.0, "{text}");
        for name in ["read", "acknowledgement", "commit"] {
            assert_eq!(phase(name, "count"), rounds, "{name}: {text}");
            assert!(phase(name, "sum") > 0.0, "{name}: {text}");
        }
    }
}

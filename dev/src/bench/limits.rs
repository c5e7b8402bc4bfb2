//! The limits orderflow cannot beat on this machine, measured in the benchmark's own run: the
//! broker's produce→consume rate and PostgreSQL's rate for the writes one order causes.
//!
//! Both are expressed in orders per second by dividing by what one COMPLETED order needs,
//! counted from the services' code (`ORDER_MESSAGES`, `ORDER_TRANSACTIONS` shared by the
//! consumers' batches), so the report can put orderflow's achieved rate beside the tighter of
//! the two.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use orderflow_domain::{MAX_STOCK, NewOrder, Sku, StockLevel};
use orderflow_events::{self as ev, Event, EventKind, Topics};
use orderflow_inventory::InventoryHandler;
use orderflow_order::{OrderHandler, TransitionMetrics};
use orderflow_payment::PaymentHandler;
use orderflow_payment::provider::{SimulatedProvider, tokens};
use orderflow_platform::consumer::{Applied, apply_committed};
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{
    Handler, KafkaArgs, MessageContext, Outbox, OutboxSignal, Published, Relay, kafka, outbox,
};
use orderflow_proto::v1 as pb;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One measured limit, expressed both in its own unit and in orders per second.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limit {
    /// `broker`, or `postgres` with the consumers' batch size when it is above 1.
    pub name: String,
    /// One line: exactly what was measured and under which settings.
    pub what: String,
    /// Messages/s (broker) or transactions/s (PostgreSQL).
    pub ops_per_sec: f64,
    /// How many of those one completed order needs, counted from the code.
    pub per_order: f64,
    /// `ops_per_sec / per_order`.
    pub orders_per_sec: f64,
    /// Whether it bounds the system as configured (false for a comparison, such as PostgreSQL
    /// without the consumers' batching).
    pub bounds_the_system: bool,
}

impl Limit {
    fn new(name: impl Into<String>, what: String, ops_per_sec: f64, per_order: f64) -> Limit {
        Limit {
            name: name.into(),
            what,
            ops_per_sec,
            per_order,
            orders_per_sec: ops_per_sec / per_order,
            bounds_the_system: true,
        }
    }

    /// Marks the limit as a comparison that does not bound the configured system.
    pub fn for_comparison(mut self) -> Limit {
        self.bounds_the_system = false;
        self
    }
}

/// One kind of Kafka message a COMPLETED order causes: how many, and which consumers read it
/// (each reader is one more delivery of the same message). Its topic is the one events of
/// its kind travel on.
struct OrderMessage {
    kind: EventKind,
    per_order: usize,
    readers: &'static [&'static str],
}

/// The Kafka messages one COMPLETED order causes, from the services' outbox writes and the
/// topics each consumer subscribes to (`services/*/src/lib.rs`, `gateway/`). Every replay of
/// [`postgres_limit`] checks the counts against what the services' code published.
const ORDER_MESSAGES: [OrderMessage; 5] = [
    // services/order/src/store.rs `Store::place`, in the same outbox insert as PENDING.
    OrderMessage {
        kind: EventKind::OrderCreated,
        per_order: 1,
        readers: &["payment"],
    },
    // `Store::place` (PENDING, v1), `store::apply_all` on PaymentProcessed (PAID, v2) and on
    // InventoryUpdated (COMPLETED, v3). Only the gateway reads order-status.
    OrderMessage {
        kind: EventKind::OrderStatusChanged,
        per_order: 3,
        readers: &["gateway"],
    },
    // services/payment/src/handler.rs `PaymentHandler::charge_all`.
    OrderMessage {
        kind: EventKind::PaymentProcessed,
        per_order: 1,
        readers: &["order", "inventory"],
    },
    // services/inventory/src/handler.rs; the payment service reads it too (refunds) and
    // ignores CONFIRMED.
    OrderMessage {
        kind: EventKind::InventoryUpdated,
        per_order: 1,
        readers: &["order", "payment"],
    },
    // The same handler: the new stock level of the order's SKU (one line), for the order
    // service's catalogue.
    OrderMessage {
        kind: EventKind::CatalogueItemChanged,
        per_order: 1,
        readers: &["order"],
    },
];

/// Messages one COMPLETED order publishes.
fn published_per_order() -> usize {
    ORDER_MESSAGES.iter().map(|m| m.per_order).sum()
}

/// Deliveries to consumers one COMPLETED order causes (published × readers).
fn deliveries_per_order() -> usize {
    ORDER_MESSAGES
        .iter()
        .map(|m| m.per_order * m.readers.len())
        .sum()
}

/// `OrderCreated→orders(payment), OrderStatusChanged×3→order-status(gateway), ...`
fn describe_order_messages() -> String {
    let topics = Topics::default();
    ORDER_MESSAGES
        .iter()
        .map(|m| {
            let times = if m.per_order > 1 {
                format!("×{}", m.per_order)
            } else {
                String::new()
            };
            let topic = topics.for_kind(m.kind);
            format!("{:?}{times}→{topic}({})", m.kind, m.readers.join("+"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The database transactions one COMPLETED order causes without batching, in the order
/// [`complete_orders`] replays them; the first is one per order, the consumers' six are
/// shared by a batch. The outbox relay's transactions are not per order (it batches) and run
/// beside the replay instead.
const ORDER_TRANSACTIONS: [&str; 7] = [
    "order place",
    "payment charge",
    "order PAID",
    "inventory deduct",
    "order COMPLETED",
    "payment dedup of InventoryUpdated",
    "order catalogue entry",
];

/// Deliveries the producer may have outstanding before it waits for the oldest.
const PRODUCE_WINDOW: usize = 10_000;
/// How long the reader waits for the next message before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker's end-to-end rate: `messages` of `message_bytes` produced to the benchmark
/// topic with the services' producer, and read back with the services' consumer settings,
/// from the first produce to the last message read.
pub async fn broker_limit(
    kafka: &KafkaArgs,
    message_bytes: usize,
    messages: usize,
) -> anyhow::Result<Limit> {
    anyhow::ensure!(messages > 0, "the broker limit needs at least one message");
    // One topic, reused by every run and never deleted: deleting a topic on tansu 0.6.0
    // crashes the other clients of the broker (librdkafka 2.12 dies with SIGSEGV on the
    // metadata that follows; seen killing the gateway and the services). Each run reads from
    // the end offsets it finds before producing.
    let topic = format!("{}bench-limit", kafka.topic_prefix);
    tracing::info!(%topic, messages, message_bytes, "measuring the broker's produce→consume rate");
    let measured = async {
        kafka::ensure_topics(kafka, std::slice::from_ref(&topic)).await?;
        produce_and_read(kafka, &topic, message_bytes, messages).await
    }
    .await;
    let run = measured?;
    let per_second = messages as f64 / run.end_to_end.as_secs_f64();
    let what = format!(
        "{messages} messages of {message_bytes} B (incompressible) to a {partitions}-partition topic, \
         random UUID keys, the services' producer (idempotent, acks=all, linger.ms={linger}) and consumer \
         (fetch.wait.max.ms={fetch}, fetch.min.bytes={min_bytes}, partitions assigned, no group join), first produce to last read; all acknowledged \
         after {acked:.2} s; one order publishes {published} messages ({messages_list}), read {deliveries} times in all",
        partitions = kafka.partitions,
        linger = kafka.linger_ms,
        fetch = kafka.fetch_wait_ms,
        min_bytes = kafka.fetch_min_bytes,
        acked = run.acknowledged.as_secs_f64(),
        published = published_per_order(),
        messages_list = describe_order_messages(),
        deliveries = deliveries_per_order(),
    );
    Ok(Limit::new(
        "broker",
        what,
        per_second,
        published_per_order() as f64,
    ))
}

struct BrokerRun {
    /// First produce to the last message read.
    end_to_end: Duration,
    /// First produce to the last acknowledgement.
    acknowledged: Duration,
}

async fn produce_and_read(
    kafka: &KafkaArgs,
    topic: &str,
    message_bytes: usize,
    messages: usize,
) -> anyhow::Result<BrokerRun> {
    // Assigned, not subscribed: a group join would add its own delay to the measurement.
    let consumer = kafka::consumer(kafka, &format!("{topic}-reader"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..kafka.partitions {
        // Earlier runs' messages stay in the topic: read from where this run's will start.
        let (_, end) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(end))?;
    }
    consumer.assign(&assignment)?;
    let producer = kafka::producer(kafka)?;
    let payload = payload(message_bytes);

    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut read = 0usize;
        while read < messages {
            let message = tokio::time::timeout(READ_TIMEOUT, consumer.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "read {read} of {messages} messages, then nothing for {READ_TIMEOUT:?}"
                    )
                })??;
            let size = message.payload().map_or(0, <[u8]>::len);
            anyhow::ensure!(
                size == message_bytes,
                "read a {size} B message, produced {message_bytes} B"
            );
            read += 1;
        }
        anyhow::Ok(Instant::now())
    });

    let produced = async {
        let mut in_flight = VecDeque::with_capacity(PRODUCE_WINDOW);
        for _ in 0..messages {
            let key = Uuid::new_v4().to_string();
            let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        in_flight.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match in_flight.pop_front() {
                            Some(oldest) => ensure_acknowledged(oldest.await)?,
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => return Err(anyhow::Error::new(e).context("cannot produce")),
                }
            }
            if in_flight.len() >= PRODUCE_WINDOW
                && let Some(oldest) = in_flight.pop_front()
            {
                ensure_acknowledged(oldest.await)?;
            }
        }
        while let Some(delivery) = in_flight.pop_front() {
            ensure_acknowledged(delivery.await)?;
        }
        anyhow::Ok(start.elapsed())
    }
    .await;
    let acknowledged = match produced {
        Ok(elapsed) => elapsed,
        Err(e) => {
            reader.abort();
            return Err(e);
        }
    };
    let last_read = reader.await.context("the reader task failed")??;
    Ok(BrokerRun {
        end_to_end: last_read - start,
        acknowledged,
    })
}

fn ensure_acknowledged(
    delivery: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, impl Sized>,
) -> anyhow::Result<()> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::Error::new(e).context("the broker did not acknowledge")),
        Err(_) => anyhow::bail!("the producer dropped a delivery"),
    }
}

/// `bytes` of pseudo-random data, so that compression, if the producer ever enables it,
/// cannot make the benchmark's messages cheaper than real (Avro) ones.
fn payload(bytes: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

/// SKUs the replayed orders are spread over, so one hot stock row does not serialise them.
const SKUS: usize = 100;

fn sku(n: u64) -> String {
    format!("BENCH-{:03}", n % SKUS as u64)
}

/// The SKUs of replay worker `worker` of `workers`: each worker has its own, as the real
/// inventory service is the only writer of its stock rows, so concurrent replay workers do
/// not wait on each other's stock locks.
fn worker_skus(worker: usize, workers: usize) -> Vec<String> {
    (0..SKUS as u64)
        .filter(|k| *k as usize % workers == worker % workers)
        .map(sku)
        .collect()
}

/// The three scratch databases, one per service, since every service has its own `outbox`
/// and `processed_events` tables.
fn bench_databases(tag: &str) -> [String; 3] {
    ["order", "payment", "inventory"].map(|service| format!("orderflow_bench_{tag}_{service}"))
}

/// PostgreSQL's rate for the writes one COMPLETED order causes: `concurrency` workers replay
/// whole orders (`ORDER_TRANSACTIONS`) for `duration` with the services' own code (the
/// order service's store places each order; each consumer stage runs the service's handler
/// in the consumer loop's batch transaction, [`apply_committed`]) against fresh databases
/// migrated with the services' migrations, on the server of `admin_database_url`, with its
/// durability settings, while an outbox relay per database marks the rows published with
/// the relay's statements. The databases are dropped afterwards.
pub async fn postgres_limit(
    admin_database_url: &str,
    concurrency: usize,
    duration: Duration,
    batch: usize,
    published: Published,
) -> anyhow::Result<Limit> {
    anyhow::ensure!(
        concurrency > 0 && concurrency <= SKUS && batch > 0,
        "the PostgreSQL limit needs 1 to {SKUS} workers and a batch of at least 1"
    );
    let admin: PgConnectOptions = admin_database_url
        .parse()
        .context("invalid PostgreSQL URL")?;
    let tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let names = bench_databases(&tag);
    tracing::info!(databases = ?names, concurrency, ?duration, "measuring PostgreSQL's rate for the per-order writes");
    let measured = async {
        let services = Services::create(&admin, &names, concurrency).await?;
        let measured = async {
            let settings = Durability::read(&services.order.db.pool).await?;
            let run = replay(&services, concurrency, duration, batch, published).await?;
            anyhow::Ok((settings, run))
        }
        .await;
        services.close().await;
        measured
    }
    .await;
    drop_databases(&admin, &names).await;
    let (settings, run) = measured?;
    if !settings.durable() {
        tracing::warn!(
            fsync = %settings.fsync,
            synchronous_commit = %settings.synchronous_commit,
            "PostgreSQL runs without full durability; the measured limit is not what a user gets"
        );
    }
    // Each transaction serves `batch` orders: PlaceOrder's statement places `batch` orders, as
    // the order service's placer does with the PlaceOrders waiting together, and each
    // consumer's transaction applies `batch` messages.
    let per_order = ORDER_TRANSACTIONS.len() as f64 / batch as f64;
    let seconds = run.elapsed.as_secs_f64();
    let transactions = run.orders as f64 * per_order;
    let rows_per_relay = if run.relay_transactions == 0 {
        0.0
    } else {
        run.relay_rows as f64 / run.relay_transactions as f64
    };
    let what = format!(
        "{concurrency} workers for {seconds:.1} s replaying whole COMPLETED orders with the services' code \
         (the order service's store, each consumer's handler in the consumer loop's batch transaction), \
         {batching}, {per_order:.2} transactions per order ({transactions_list}), one line each over {SKUS} SKUs round-robin (each worker its own), \
         on three fresh databases with the services' migrations; beside them one outbox relay per database \
         (woken in-process after each commit, up to {relay_batch} rows per transaction, no Kafka round trip, acknowledged rows {acknowledged}): {relay} relay \
         transactions of {rows_per_relay:.1} rows on average, not counted in transactions/s; \
         fsync={fsync}, synchronous_commit={sync}, PostgreSQL {version}",
        transactions_list = ORDER_TRANSACTIONS.join(", "),
        batching = if batch == 1 {
            "one transaction per consumed message".to_owned()
        } else {
            format!(
                "{batch} orders per PlaceOrder statement and {batch} messages per consumer transaction"
            )
        },
        relay_batch = Relay::BATCH_SIZE,
        acknowledged = published,
        relay = run.relay_transactions,
        fsync = settings.fsync,
        sync = settings.synchronous_commit,
        version = settings.version,
    );
    Ok(Limit::new(
        if batch == 1 {
            "postgres".to_owned()
        } else {
            format!("postgres, batches of {batch}")
        },
        what,
        transactions / seconds,
        per_order,
    ))
}

/// The durability settings the services' sessions get on this server.
struct Durability {
    fsync: String,
    synchronous_commit: String,
    version: String,
}

impl Durability {
    async fn read(pool: &PgPool) -> anyhow::Result<Durability> {
        let show = |name: &'static str| async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                .fetch_one(pool)
                .await
                .with_context(|| format!("cannot read {name}"))
        };
        Ok(Durability {
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
            version: show("server_version").await?,
        })
    }

    fn durable(&self) -> bool {
        // Every other synchronous_commit level waits at least for the local WAL flush.
        self.fsync == "on" && self.synchronous_commit != "off"
    }
}

/// One scratch database: its pool, and the signal its writers wake its relay with.
#[derive(Clone)]
struct Db {
    pool: PgPool,
    signal: OutboxSignal,
}

/// One service's consumer on its service's database: its name (the scope of its dedup
/// records) and its handler.
#[derive(Clone)]
struct Consumer {
    name: &'static str,
    db: Db,
    handler: Arc<dyn Handler>,
}

impl Consumer {
    /// Consumes the events among `published` that travel on `topic`, `batch` messages per
    /// transaction, as the consumer loop applies the messages that arrived together (each
    /// batch with [`apply_committed`], which wakes the relay). Returns the events they caused.
    async fn consume(
        &self,
        topics: &Topics,
        topic: &str,
        published: &[Event],
        batch: usize,
    ) -> anyhow::Result<Vec<Event>> {
        let messages: Vec<(Event, MessageContext)> = published
            .iter()
            .filter(|event| topics.for_kind(event.kind()) == topic)
            .map(|event| (event.clone(), MessageContext::replayed(topic, 1)))
            .collect();
        let mut caused = Vec::with_capacity(messages.len());
        for messages in messages.chunks(batch) {
            let applied = apply_committed(
                &self.db.pool,
                self.name,
                topics,
                &*self.handler,
                messages,
                &self.db.signal,
            )
            .await
            .with_context(|| format!("the {} consumer failed on {topic}", self.name))?;
            for applied in applied {
                match applied {
                    Applied::Processed(events) => caused.extend(events),
                    Applied::Duplicate => {
                        anyhow::bail!("the {} consumer got an event twice", self.name)
                    }
                }
            }
        }
        Ok(caused)
    }
}

/// The three services, each on its own database as in production: the order service's store
/// for PlaceOrder and each service's consumer.
#[derive(Clone)]
struct Services {
    store: orderflow_order::Store,
    order: Consumer,
    payment: Consumer,
    inventory: Consumer,
    topics: Topics,
}

impl Services {
    async fn create(
        admin: &PgConnectOptions,
        names: &[String; 3],
        concurrency: usize,
    ) -> anyhow::Result<Services> {
        let [order, payment, inventory] = names;
        let db = |pool| Db {
            pool,
            signal: OutboxSignal::default(),
        };
        let order =
            db(create_database(admin, order, &orderflow_order::MIGRATOR, concurrency).await?);
        let payment =
            db(create_database(admin, payment, &orderflow_payment::MIGRATOR, concurrency).await?);
        let inventory = db(create_database(
            admin,
            inventory,
            &orderflow_inventory::MIGRATOR,
            concurrency,
        )
        .await?);
        // As much stock as the inventory service takes: more than any run can use.
        let stock = orderflow_inventory::Store::new(
            inventory.pool.clone(),
            Topics::default(),
            inventory.signal.clone(),
        );
        let level = StockLevel::parse("stock", i64::from(MAX_STOCK))?;
        for n in 0..SKUS as u64 {
            stock
                .set(&Sku::parse("sku", &sku(n))?, level)
                .await
                .context("cannot stock the bench SKUs")?;
        }
        // The orders pay with an approving token, so the provider is never unavailable
        // and the attempt budgets (1, 1) are never consulted.
        let payment_handler = PaymentHandler::new(
            Arc::new(SimulatedProvider::new()),
            payment.pool.clone(),
            1,
            1,
        );
        let services = Services {
            store: orderflow_order::Store::new(order.pool.clone(), order.signal.clone()),
            order: Consumer {
                name: "order",
                db: order,
                handler: Arc::new(OrderHandler {
                    transitions: TransitionMetrics::default(),
                }),
            },
            payment: Consumer {
                name: "payment",
                db: payment,
                handler: Arc::new(payment_handler),
            },
            inventory: Consumer {
                name: "inventory",
                db: inventory,
                handler: Arc::new(InventoryHandler),
            },
            topics: Topics::default(),
        };
        services.learn_catalogue().await?;
        Ok(services)
    }

    /// Gives the order service's catalogue the bench SKUs, as its consumer reads them from
    /// the inventory service's outbox, so PlaceOrder's check passes.
    async fn learn_catalogue(&self) -> anyhow::Result<()> {
        let payloads: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
                .fetch_all(&self.inventory.db.pool)
                .await?;
        let entries = payloads
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<Event>, _>>()?;
        self.order
            .consume(
                &self.topics,
                &self.topics.catalogue,
                &entries,
                entries.len(),
            )
            .await?;
        Ok(())
    }

    fn databases(&self) -> [&Db; 3] {
        [&self.order.db, &self.payment.db, &self.inventory.db]
    }

    async fn close(&self) {
        for db in self.databases() {
            db.pool.close().await;
        }
    }

    /// Places the orders `ns`, order `n` one unit of `skus[n mod skus.len()]` paid with an
    /// approving token, as PlaceOrder does with valid requests: each is admitted (the order
    /// service's read of its catalogue and customer copies), then the store writes them and
    /// their events in one statement (`Store::place_all`, as the order service's placer writes
    /// the PlaceOrders waiting together) and wakes the relay. Returns the events published.
    async fn place(&self, ns: &[u64], skus: &[String]) -> anyhow::Result<Vec<Event>> {
        let mut orders = Vec::with_capacity(ns.len());
        for &n in ns {
            let request = pb::PlaceOrderRequest {
                customer_id: format!("bench-customer-{}", n % 1000),
                items: vec![pb::OrderLine {
                    sku: skus[n as usize % skus.len()].clone(),
                    quantity: 1,
                    unit_price: Some(pb::Money {
                        amount_minor: 1999,
                        currency: "EUR".to_owned(),
                    }),
                }],
                payment_method: tokens::VISA.to_owned(),
                idempotency_key: Uuid::new_v4().to_string(),
                validate_only: false,
            };
            let order = NewOrder::try_from(&request)?;
            self.store.admission(&order).await?.check(&order)?;
            orders.push(order);
        }
        let traces: Vec<TraceParent> = orders.iter().map(|_| TraceParent::new_root()).collect();
        let placing: Vec<(&NewOrder, &TraceParent)> = orders.iter().zip(&traces).collect();
        let mut events = Vec::with_capacity(2 * ns.len());
        for (n, placed) in ns
            .iter()
            .zip(self.store.place_all(&placing, &self.topics).await?)
        {
            let placed = placed?;
            anyhow::ensure!(
                placed.created,
                "order {n} collided with an earlier one's idempotency key"
            );
            events.extend(placed.events);
        }
        Ok(events)
    }
}

/// Creates database `name`, connects a pool to it (room for every worker and the relay)
/// and applies `migrator`.
async fn create_database(
    admin: &PgConnectOptions,
    name: &str,
    migrator: &sqlx::migrate::Migrator,
    concurrency: usize,
) -> anyhow::Result<PgPool> {
    let mut connection = PgConnection::connect_with(admin).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut connection)
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    connection.close().await?;
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32 + 2)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(admin.clone().database(name))
        .await?;
    migrator
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate {name}"))?;
    Ok(pool)
}

/// Drops the scratch databases, whichever of them exist; a failure is only logged.
async fn drop_databases(admin: &PgConnectOptions, names: &[String]) {
    let dropped = async {
        let mut connection = PgConnection::connect_with(admin).await?;
        for name in names {
            // FORCE: a connection a failed run left behind must not keep the database alive.
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut connection)
                .await?;
        }
        connection.close().await
    }
    .await;
    if let Err(e) = dropped {
        tracing::warn!(databases = ?names, error = %e, "cannot drop the benchmark databases");
    }
}

struct Replay {
    orders: u64,
    elapsed: Duration,
    relay_transactions: u64,
    relay_rows: u64,
}

/// Runs the workers until `duration` is over (each finishes the orders it is in) beside one
/// relay per database.
async fn replay(
    services: &Services,
    concurrency: usize,
    duration: Duration,
    batch: usize,
    published: Published,
) -> anyhow::Result<Replay> {
    let stop = CancellationToken::new();
    let mut relays = JoinSet::new();
    for db in services.databases() {
        relays.spawn(relay(db.clone(), published, stop.clone()));
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let (services, next) = (services.clone(), next.clone());
        let skus = worker_skus(worker, concurrency);
        workers.spawn(async move {
            let mut orders = 0u64;
            while Instant::now() < deadline {
                let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                let ns: Vec<u64> = (first..first + batch as u64).collect();
                complete_orders(&services, &ns, &skus, batch).await?;
                orders += batch as u64;
            }
            anyhow::Ok(orders)
        });
    }
    let mut orders = 0u64;
    let mut failed = None;
    while let Some(joined) = workers.join_next().await {
        match joined.context("a replay worker failed").and_then(|r| r) {
            Ok(n) => orders += n,
            Err(e) => {
                failed.get_or_insert(e);
                workers.abort_all();
            }
        }
    }
    let elapsed = start.elapsed();
    stop.cancel();
    let (mut relay_transactions, mut relay_rows) = (0u64, 0u64);
    while let Some(joined) = relays.join_next().await {
        match joined.context("a relay failed").and_then(|r| r) {
            Ok((transactions, rows)) => {
                relay_transactions += transactions;
                relay_rows += rows;
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Replay {
        orders,
        elapsed,
        relay_transactions,
        relay_rows,
    })
}

/// The database side of `Relay::run` without the broker: woken after each commit by the
/// writers' [`OutboxSignal`] (or the relay's poll), it publishes up to [`Relay::BATCH_SIZE`]
/// rows per transaction, and counts the backlog after a full batch, with the relay's
/// statements. Returns (transactions that published rows, rows).
async fn relay(
    db: Db,
    published: Published,
    stop: CancellationToken,
) -> anyhow::Result<(u64, u64)> {
    let (mut transactions, mut rows) = (0u64, 0u64);
    loop {
        let acknowledged = relay_batch(&db.pool, published).await?;
        if acknowledged > 0 {
            transactions += 1;
            rows += acknowledged as u64;
        }
        if acknowledged as i64 == Relay::BATCH_SIZE {
            Outbox::backlog(&db.pool).await?;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = db.signal.wait() => {}
            _ = tokio::time::sleep(outbox::POLL) => {}
        }
    }
    Ok((transactions, rows))
}

/// One transaction of `Relay::publish_batch` with every row acknowledged at once: the rows
/// are locked and read, then deleted or marked published as `published` says.
async fn relay_batch(pool: &PgPool, published: Published) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = Outbox::lock_unpublished(&mut tx, Relay::BATCH_SIZE).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    Outbox::acknowledged(&mut tx, &ids, published).await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// Replays the transactions of `ns.len()` orders that end COMPLETED, stage by stage in causal
/// order, each with the services' own code. The orders are placed `batch` at a time in one
/// statement, as the order service's placer shares one among the PlaceOrders waiting; each
/// consumer stage reads the events published to its topic and applies
/// them `batch` at a time in one transaction, as the consumer loop applies up to
/// `ORDERFLOW_CONSUMER_BATCH` messages that arrived together (`batch` 1 is one transaction
/// per message). Order `n` takes one unit of `skus[n mod skus.len()]`. Fails unless every
/// order ended COMPLETED having published what [`ORDER_MESSAGES`] counts.
async fn complete_orders(
    services: &Services,
    ns: &[u64],
    skus: &[String],
    batch: usize,
) -> anyhow::Result<()> {
    let Services {
        order,
        payment,
        inventory,
        topics,
        ..
    } = services;
    let mut placed = Vec::with_capacity(2 * ns.len());
    for ns in ns.chunks(batch) {
        placed.extend(services.place(ns, skus).await?);
    }
    let charged = payment
        .consume(topics, &topics.orders, &placed, batch)
        .await?;
    let paid = order
        .consume(topics, &topics.payments, &charged, batch)
        .await?;
    let settled = inventory
        .consume(topics, &topics.payments, &charged, batch)
        .await?;
    let completed = order
        .consume(topics, &topics.inventory, &settled, batch)
        .await?;
    // The payment service reads `inventory` for refunds; a CONFIRMED update still costs its
    // dedup record.
    let refunds = payment
        .consume(topics, &topics.inventory, &settled, batch)
        .await?;
    let catalogued = order
        .consume(topics, &topics.catalogue, &settled, batch)
        .await?;
    let published = [
        placed, charged, paid, settled, completed, refunds, catalogued,
    ]
    .concat();
    check_published(ns.len(), &published)
}

/// Checks that `orders` orders ended COMPLETED having published, kind by kind, what
/// [`ORDER_MESSAGES`] says one COMPLETED order publishes.
fn check_published(orders: usize, published: &[Event]) -> anyhow::Result<()> {
    let completed = published
        .iter()
        .filter(
            |e| matches!(e, Event::OrderStatusChanged(c) if c.status == ev::OrderStatus::Completed),
        )
        .count();
    anyhow::ensure!(
        completed == orders,
        "{completed} of {orders} replayed orders ended COMPLETED"
    );
    let mut counted: HashMap<EventKind, usize> = HashMap::new();
    for event in published {
        *counted.entry(event.kind()).or_default() += 1;
    }
    let expected: HashMap<EventKind, usize> = ORDER_MESSAGES
        .iter()
        .map(|m| (m.kind, m.per_order * orders))
        .collect();
    anyhow::ensure!(
        counted == expected,
        "{orders} replayed orders published {counted:?}; ORDER_MESSAGES counts {expected:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_order_publishes_seven_messages_read_nine_times() {
        assert_eq!(published_per_order(), 7);
        assert_eq!(deliveries_per_order(), 9);
        assert_eq!(
            describe_order_messages(),
            "OrderCreated→orders(payment), OrderStatusChanged×3→order-status(gateway), \
             PaymentProcessed→payments(order+inventory), InventoryUpdated→inventory(order+payment), \
             CatalogueItemChanged→catalogue(order)"
        );
    }

    fn status(status: ev::OrderStatus) -> Event {
        Event::OrderStatusChanged(ev::OrderStatusChanged {
            event_id: ev::new_event_id(),
            order_id: "o1".into(),
            occurred_at: 0,
            customer_id: "c1".into(),
            version: 1,
            status,
            reason: None,
        })
    }

    /// The events one order publishes through the services: placed and paid, then its stock
    /// is CONFIRMED (it completes) or OUT_OF_STOCK (it is refunded).
    fn one_order(confirmed: bool) -> Vec<Event> {
        let money = ev::Money {
            amount_minor: 1999,
            currency: "EUR".into(),
        };
        let mut events = vec![
            Event::OrderCreated(ev::OrderCreated {
                event_id: ev::new_event_id(),
                order_id: "o1".into(),
                occurred_at: 0,
                customer_id: "c1".into(),
                items: Vec::new(),
                total: money.clone(),
                payment_method: tokens::VISA.into(),
            }),
            status(ev::OrderStatus::Pending),
            Event::PaymentProcessed(ev::PaymentProcessed {
                event_id: ev::new_event_id(),
                order_id: "o1".into(),
                occurred_at: 0,
                payment_id: "p1".into(),
                status: ev::PaymentStatus::Paid,
                amount: money.clone(),
                items: Vec::new(),
                failure_reason: None,
                provider_reference: None,
            }),
            status(ev::OrderStatus::Paid),
            Event::InventoryUpdated(ev::InventoryUpdated {
                event_id: ev::new_event_id(),
                order_id: "o1".into(),
                occurred_at: 0,
                status: if confirmed {
                    ev::InventoryStatus::Confirmed
                } else {
                    ev::InventoryStatus::OutOfStock
                },
                items: Vec::new(),
                missing: Vec::new(),
            }),
        ];
        if confirmed {
            events.push(status(ev::OrderStatus::Completed));
            events.push(Event::CatalogueItemChanged(ev::CatalogueItemChanged {
                event_id: ev::new_event_id(),
                occurred_at: 0,
                sku: "s1".into(),
                available: 9,
                revision: 2,
            }));
        } else {
            events.push(status(ev::OrderStatus::OutOfStock));
            events.push(Event::PaymentRefunded(ev::PaymentRefunded {
                event_id: ev::new_event_id(),
                order_id: "o1".into(),
                occurred_at: 0,
                payment_id: "p1".into(),
                refund_id: "r1".into(),
                amount: money,
                reason: "out of stock".into(),
            }));
            events.push(status(ev::OrderStatus::Refunded));
        }
        events
    }

    #[test]
    fn a_replay_counts_only_if_its_orders_completed_as_order_messages_says() {
        let two = [one_order(true), one_order(true)].concat();
        check_published(2, &two).unwrap();
        // One order too many claimed, one that was refunded, one message missing.
        assert!(check_published(3, &two).is_err());
        let refunded = [one_order(true), one_order(false)].concat();
        assert!(check_published(2, &refunded).is_err());
        let mut missing = two.clone();
        missing.retain(|e| e.kind() != EventKind::OrderCreated);
        assert!(check_published(2, &missing).is_err());
    }

    #[test]
    fn orders_per_second_divides_by_what_one_order_needs() {
        let limit = Limit::new("postgres", String::new(), 1200.0, 6.0);
        assert_eq!(limit.orders_per_sec, 200.0);
    }

    #[test]
    fn payload_has_the_asked_size_and_varied_bytes() {
        let bytes = payload(250);
        assert_eq!(bytes.len(), 250);
        let distinct: std::collections::BTreeSet<u8> = bytes.iter().copied().collect();
        assert!(
            distinct.len() > 100,
            "only {} distinct bytes",
            distinct.len()
        );
        assert!(payload(0).is_empty());
    }

    #[test]
    fn replay_workers_share_no_sku_and_cover_them_all() {
        let workers = 8;
        let all: Vec<String> = (0..workers).flat_map(|w| worker_skus(w, workers)).collect();
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!((all.len(), distinct.len()), (SKUS, SKUS));
        assert!((0..workers).all(|w| !worker_skus(w, workers).is_empty()));
    }

    #[test]
    fn orders_spread_evenly_over_every_sku() {
        let mut counts = std::collections::BTreeMap::new();
        for n in 0..(SKUS as u64 * 3) {
            *counts.entry(sku(n)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), SKUS);
        assert!(counts.values().all(|&c| c == 3));
    }

    #[test]
    fn scratch_databases_are_distinct_valid_names() {
        let names = bench_databases("0123abcd");
        assert_eq!(
            names,
            [
                "orderflow_bench_0123abcd_order",
                "orderflow_bench_0123abcd_payment",
                "orderflow_bench_0123abcd_inventory",
            ]
        );
        // PostgreSQL truncates identifiers past 63 bytes, which would merge names.
        assert!(names.iter().all(|n| n.len() <= 63));
    }
}

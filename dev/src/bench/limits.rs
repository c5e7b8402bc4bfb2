//! The limits orderflow cannot beat on this machine, measured in the benchmark's own run: the
//! broker's produce→consume rate and PostgreSQL's rate for the writes one order causes.
//!
//! Both are expressed in orders per second by dividing by what one COMPLETED order needs,
//! counted from the services' code ([`ORDER_MESSAGES`], [`ORDER_TRANSACTIONS`] shared by the
//! consumers' batches), so the report can put orderflow's achieved rate beside the tighter of
//! the two.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use orderflow_events::{self as ev, Event, Topics};
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{KafkaArgs, Outbox, kafka};
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::chrono::Utc;
use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Row as _, Transaction};
use tokio::sync::Notify;
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

/// One kind of Kafka message a COMPLETED order causes: how many, on which topic, and which
/// consumers read it (each reader is one more delivery of the same message).
struct OrderMessage {
    event: &'static str,
    topic: &'static str,
    per_order: usize,
    readers: &'static [&'static str],
}

/// The Kafka messages one COMPLETED order causes, from the services' outbox writes and the
/// topics each consumer subscribes to (`services/*/src/lib.rs`, `gateway/`).
const ORDER_MESSAGES: [OrderMessage; 4] = [
    // services/order/src/store.rs `Store::place`, in the same outbox insert as PENDING.
    OrderMessage {
        event: "OrderCreated",
        topic: "orders",
        per_order: 1,
        readers: &["payment"],
    },
    // `Store::place` (PENDING, v1), `Store::apply` on PaymentProcessed (PAID, v2) and on
    // InventoryUpdated (COMPLETED, v3). Only the gateway reads order-status.
    OrderMessage {
        event: "OrderStatusChanged",
        topic: "order-status",
        per_order: 3,
        readers: &["gateway"],
    },
    // services/payment/src/handler.rs `charge`.
    OrderMessage {
        event: "PaymentProcessed",
        topic: "payments",
        per_order: 1,
        readers: &["order", "inventory"],
    },
    // services/inventory/src/handler.rs; the payment service reads it too (refunds) and
    // ignores CONFIRMED.
    OrderMessage {
        event: "InventoryUpdated",
        topic: "inventory",
        per_order: 1,
        readers: &["order", "payment"],
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
    ORDER_MESSAGES
        .iter()
        .map(|m| {
            let times = if m.per_order > 1 {
                format!("×{}", m.per_order)
            } else {
                String::new()
            };
            format!("{}{times}→{}({})", m.event, m.topic, m.readers.join("+"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The database transactions one COMPLETED order causes without batching, in the order
/// [`complete_orders`] replays them; the first is one per order, the consumers' five are
/// shared by a batch. The outbox relay's transactions are not per order (it batches) and run
/// beside the replay instead.
const ORDER_TRANSACTIONS: [&str; 6] = [
    "order place",
    "payment charge",
    "order PAID",
    "inventory deduct",
    "order COMPLETED",
    "payment dedup of InventoryUpdated",
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
         (fetch.wait.max.ms={fetch}, partitions assigned, no group join), first produce to last read; all acknowledged \
         after {acked:.2} s; one order publishes {published} messages ({messages_list}), read {deliveries} times in all",
        partitions = kafka.partitions,
        linger = kafka.linger_ms,
        fetch = kafka.fetch_wait_ms,
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
/// Stock each SKU starts with: more than any run can take.
const SKU_STOCK: i32 = 1_000_000_000;
/// Rows the relay takes per transaction, as `Relay::new` sets it.
const RELAY_BATCH: usize = 500;

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
/// whole orders ([`ORDER_TRANSACTIONS`], the services' statements) for `duration` against
/// fresh databases migrated with the services' migrations, on the server of
/// `admin_database_url`, with its durability settings, while an outbox relay per database
/// marks the rows published as the real one does. The databases are dropped afterwards.
pub async fn postgres_limit(
    admin_database_url: &str,
    concurrency: usize,
    duration: Duration,
    batch: usize,
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
        let pools = Pools::create(&admin, &names, concurrency).await?;
        let measured = async {
            let settings = Durability::read(&pools.order.pool).await?;
            let run = replay(&pools, concurrency, duration, batch).await?;
            anyhow::Ok((settings, run))
        }
        .await;
        pools.close().await;
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
    // One PlaceOrder transaction per order; each consumer transaction serves `batch` orders.
    let per_order = 1.0 + (ORDER_TRANSACTIONS.len() - 1) as f64 / batch as f64;
    let seconds = run.elapsed.as_secs_f64();
    let transactions = run.orders as f64 * per_order;
    let rows_per_relay = if run.relay_transactions == 0 {
        0.0
    } else {
        run.relay_rows as f64 / run.relay_transactions as f64
    };
    let what = format!(
        "{concurrency} workers for {seconds:.1} s replaying whole COMPLETED orders with the services' statements, \
         {batching}, {per_order:.2} transactions per order ({transactions_list}), one line each over {SKUS} SKUs round-robin (each worker its own), \
         on three fresh databases with the services' migrations; beside them one outbox relay per database \
         (woken in-process after each commit, up to {RELAY_BATCH} rows per transaction, no Kafka round trip): {relay} relay \
         transactions of {rows_per_relay:.1} rows on average, not counted in transactions/s; \
         fsync={fsync}, synchronous_commit={sync}, PostgreSQL {version}",
        transactions_list = ORDER_TRANSACTIONS.join(", "),
        batching = if batch == 1 {
            "one transaction per consumed message".to_owned()
        } else {
            format!(
                "PlaceOrder one transaction per order and each consumer {batch} messages per transaction"
            )
        },
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
    signal: Arc<Notify>,
}

impl Db {
    fn new(pool: PgPool) -> Db {
        Db {
            pool,
            signal: Arc::default(),
        }
    }
}

/// One database per service, as each service has its own.
#[derive(Clone)]
struct Pools {
    order: Db,
    payment: Db,
    inventory: Db,
    topics: Topics,
}

impl Pools {
    async fn create(
        admin: &PgConnectOptions,
        names: &[String; 3],
        concurrency: usize,
    ) -> anyhow::Result<Pools> {
        let [order, payment, inventory] = names;
        let pools = Pools {
            order: Db::new(
                create_database(admin, order, &orderflow_order::MIGRATOR, concurrency).await?,
            ),
            payment: Db::new(
                create_database(admin, payment, &orderflow_payment::MIGRATOR, concurrency).await?,
            ),
            inventory: Db::new(
                create_database(
                    admin,
                    inventory,
                    &orderflow_inventory::MIGRATOR,
                    concurrency,
                )
                .await?,
            ),
            topics: Topics::default(),
        };
        let skus: Vec<String> = (0..SKUS as u64).map(sku).collect();
        sqlx::query(
            "INSERT INTO stock (sku, available) SELECT sku, $2 FROM UNNEST($1::text[]) AS s(sku)",
        )
        .bind(&skus)
        .bind(SKU_STOCK)
        .execute(&pools.inventory.pool)
        .await
        .context("cannot stock the bench SKUs")?;
        Ok(pools)
    }

    async fn close(&self) {
        self.order.pool.close().await;
        self.payment.pool.close().await;
        self.inventory.pool.close().await;
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

/// Runs the workers until `duration` is over (each finishes the order it is in) beside one
/// relay per database.
async fn replay(
    pools: &Pools,
    concurrency: usize,
    duration: Duration,
    batch: usize,
) -> anyhow::Result<Replay> {
    let stop = CancellationToken::new();
    let mut relays = JoinSet::new();
    for pool in [&pools.order, &pools.payment, &pools.inventory] {
        relays.spawn(relay(pool.pool.clone(), pool.signal.clone(), stop.clone()));
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let (pools, next) = (pools.clone(), next.clone());
        let skus = worker_skus(worker, concurrency);
        workers.spawn(async move {
            let mut orders = 0u64;
            while Instant::now() < deadline {
                let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                let ns: Vec<u64> = (first..first + batch as u64).collect();
                complete_orders(&pools, &ns, &skus, batch).await?;
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

/// The database side of `Relay::run` (crates/platform/src/outbox.rs) without the broker:
/// woken after each commit by the writers' [`OutboxSignal`] (or a 500 ms poll), it marks up to [`RELAY_BATCH`] rows
/// published per transaction with the relay's statements. Returns (transactions that
/// published rows, rows).
async fn relay(
    pool: PgPool,
    signal: Arc<Notify>,
    stop: CancellationToken,
) -> anyhow::Result<(u64, u64)> {
    let (mut transactions, mut rows) = (0u64, 0u64);
    loop {
        let published = relay_batch(&pool).await?;
        if published > 0 {
            transactions += 1;
            rows += published as u64;
        }
        if published == RELAY_BATCH {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = signal.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    Ok((transactions, rows))
}

/// `Relay::publish_batch`'s statements; the rows are read as the relay reads them.
async fn relay_batch(pool: &PgPool) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = sqlx::query(
        "SELECT id, topic, event_key, payload, traceparent FROM outbox
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE",
    )
    .bind(RELAY_BATCH as i64)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.get("id"))
    .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "UPDATE outbox SET published_at = now() WHERE id BETWEEN $2 AND $3 AND id = ANY($1)",
    )
    .bind(&ids)
    .bind(ids[0])
    .bind(ids[ids.len() - 1])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// Replays the transactions of `ns.len()` orders that end COMPLETED, stage by stage in causal
/// order, each with the statements of the code it copies. Each order is placed in its own
/// transaction, as PlaceOrder does; each consumer stage applies the orders' messages `batch`
/// at a time in one transaction, as the consumer loop applies up to `ORDERFLOW_CONSUMER_BATCH`
/// messages that arrived together (`batch` 1 is one transaction per message). Order `n`
/// takes one unit of `skus[n mod skus.len()]`.
async fn complete_orders(
    pools: &Pools,
    ns: &[u64],
    skus: &[String],
    batch: usize,
) -> anyhow::Result<()> {
    let topics = &pools.topics;
    let mut created = Vec::with_capacity(ns.len());
    for &n in ns {
        created.push(place(pools, n, &skus[n as usize % skus.len()]).await?);
    }
    let mut paid = Vec::with_capacity(ns.len());
    for orders in created.chunks(batch) {
        let mut tx = pools.payment.pool.begin().await?;
        for order in orders {
            paid.push(charge(&mut tx, topics, order).await?);
        }
        commit(tx, &pools.payment).await?;
    }
    for (orders, payments) in created.chunks(batch).zip(paid.chunks(batch)) {
        let mut tx = pools.order.pool.begin().await?;
        for (order, payment) in orders.iter().zip(payments) {
            let (event, status) = (&payment.event_id, ev::OrderStatus::Paid);
            advance_order(&mut tx, topics, event, order, 2, status).await?;
        }
        commit(tx, &pools.order).await?;
    }
    let mut settled = Vec::with_capacity(ns.len());
    for payments in paid.chunks(batch) {
        let mut tx = pools.inventory.pool.begin().await?;
        for payment in payments {
            settled.push(deduct_stock(&mut tx, topics, payment).await?);
        }
        commit(tx, &pools.inventory).await?;
    }
    for (orders, updates) in created.chunks(batch).zip(settled.chunks(batch)) {
        let mut tx = pools.order.pool.begin().await?;
        for (order, update) in orders.iter().zip(updates) {
            let (event, status) = (&update.event_id, ev::OrderStatus::Completed);
            advance_order(&mut tx, topics, event, order, 3, status).await?;
        }
        commit(tx, &pools.order).await?;
    }
    // The payment service reads `inventory` for refunds; a CONFIRMED update still costs its
    // dedup record.
    for updates in settled.chunks(batch) {
        let mut tx = pools.payment.pool.begin().await?;
        for update in updates {
            consumed(&mut tx, "payment", &update.event_id).await?;
        }
        commit(tx, &pools.payment).await?;
    }
    Ok(())
}

/// The consumer loop's first statement for each message (crates/platform/src/consumer.rs
/// `apply_in`): the dedup record.
async fn consumed(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    event_id: &str,
) -> anyhow::Result<()> {
    let fresh = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    anyhow::ensure!(fresh, "event {event_id} was already processed");
    Ok(())
}

/// Adds the caused events to the outbox with the real `Outbox::insert`.
async fn caused(
    tx: &mut Transaction<'_, Postgres>,
    topics: &Topics,
    events: &[Event],
) -> anyhow::Result<()> {
    Outbox::insert(tx, topics, events, &TraceParent::new_root()).await?;
    Ok(())
}

/// Commits and wakes the database's relay, as the services do.
async fn commit(tx: Transaction<'_, Postgres>, db: &Db) -> anyhow::Result<()> {
    tx.commit().await?;
    db.signal.notify_one();
    Ok(())
}

fn status_event(
    created: &ev::OrderCreated,
    version: i64,
    status: ev::OrderStatus,
    at: i64,
) -> Event {
    Event::OrderStatusChanged(ev::OrderStatusChanged {
        event_id: ev::new_event_id(),
        order_id: created.order_id.clone(),
        occurred_at: at,
        customer_id: created.customer_id.clone(),
        version,
        status,
        reason: None,
    })
}

/// services/order/src/store.rs `Store::place` for a new order.
async fn place(pools: &Pools, n: u64, sku: &str) -> anyhow::Result<ev::OrderCreated> {
    let order_id = Uuid::now_v7();
    let now = Utc::now();
    let items = vec![ev::OrderLine {
        sku: sku.to_owned(),
        quantity: 1,
        unit_price: ev::Money {
            amount_minor: 1999,
            currency: "EUR".to_owned(),
        },
    }];
    let created = ev::OrderCreated {
        event_id: ev::new_event_id(),
        order_id: order_id.to_string(),
        occurred_at: now.timestamp_millis(),
        customer_id: format!("bench-customer-{}", n % 1000),
        items,
        total: ev::Money {
            amount_minor: 1999,
            currency: "EUR".to_owned(),
        },
        payment_method: "pm_card_visa".to_owned(),
    };
    // A client's idempotency key, and a stand-in of the request fingerprint's length (its
    // SHA-256 is CPU work, not database work).
    let idempotency_key = Uuid::new_v4().to_string();
    let request_hash = format!("{}{}", order_id.simple(), order_id.simple());
    let mut tx = pools.order.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, customer_id, idempotency_key, request_hash, items, total_minor, currency,
                             payment_method, status, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', 1, $9, $9)
         ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
    )
    .bind(order_id)
    .bind(&created.customer_id)
    .bind(&idempotency_key)
    .bind(&request_hash)
    .bind(serde_json::to_value(&created.items)?)
    .bind(created.total.amount_minor)
    .bind(&created.total.currency)
    .bind(&created.payment_method)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    anyhow::ensure!(inserted, "order {order_id} collided with an earlier one");
    sqlx::query("INSERT INTO order_status_history (order_id, version, status, occurred_at) VALUES ($1, 1, 'PENDING', $2)")
        .bind(order_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let pending = status_event(&created, 1, ev::OrderStatus::Pending, created.occurred_at);
    caused(
        &mut tx,
        &pools.topics,
        &[Event::OrderCreated(created.clone()), pending],
    )
    .await?;
    commit(tx, &pools.order).await?;
    Ok(created)
}

/// The payment service on OrderCreated (services/payment/src/handler.rs `charge`), approved.
async fn charge(
    tx: &mut Transaction<'_, Postgres>,
    topics: &Topics,
    created: &ev::OrderCreated,
) -> anyhow::Result<ev::PaymentProcessed> {
    let order_id: Uuid = created.order_id.parse()?;
    consumed(tx, "payment", &created.event_id).await?;
    let already: Option<String> =
        sqlx::query_scalar("SELECT status FROM charges WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut **tx)
            .await?;
    anyhow::ensure!(already.is_none(), "order {order_id} was already charged");
    let payment_id = Uuid::now_v7();
    let reference = Some(format!("sim_ch_{order_id}"));
    sqlx::query(
        "INSERT INTO charges (order_id, payment_id, amount_minor, currency, status, failure_reason, provider_reference, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(order_id)
    .bind(payment_id)
    .bind(created.total.amount_minor)
    .bind(&created.total.currency)
    .bind("PAID")
    .bind(None::<String>)
    .bind(&reference)
    .bind(1i32)
    .execute(&mut **tx)
    .await?;
    let paid = ev::PaymentProcessed {
        event_id: ev::new_event_id(),
        order_id: created.order_id.clone(),
        occurred_at: ev::now_millis(),
        payment_id: payment_id.to_string(),
        status: ev::PaymentStatus::Paid,
        amount: created.total.clone(),
        items: created.items.clone(),
        failure_reason: None,
        provider_reference: reference,
    };
    caused(tx, topics, &[Event::PaymentProcessed(paid.clone())]).await?;
    Ok(paid)
}

/// The order service on an outcome that moves the order one status on
/// (services/order/src/store.rs `Store::apply`).
async fn advance_order(
    tx: &mut Transaction<'_, Postgres>,
    topics: &Topics,
    event_id: &str,
    created: &ev::OrderCreated,
    expected_version: i64,
    to: ev::OrderStatus,
) -> anyhow::Result<()> {
    let order_id: Uuid = created.order_id.parse()?;
    let status = match orderflow_domain::OrderStatus::try_from(to) {
        Ok(s @ (orderflow_domain::OrderStatus::Paid | orderflow_domain::OrderStatus::Completed)) => {
            s.as_str()
        }
        _ => anyhow::bail!("the replay never moves an order to {to:?}"),
    };
    consumed(tx, "order", event_id).await?;
    let row = sqlx::query(
        "SELECT customer_id, status, version FROM orders WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_one(&mut **tx)
    .await?;
    let version = row.get::<i64, _>("version") + 1;
    anyhow::ensure!(
        version == expected_version,
        "order {order_id} is at version {} before {status}",
        version - 1
    );
    let now = Utc::now();
    sqlx::query("INSERT INTO order_status_history (order_id, version, status, reason, occurred_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(order_id)
        .bind(version)
        .bind(status)
        .bind(None::<String>)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE orders SET status = $2, version = $3, status_reason = COALESCE($4, status_reason), updated_at = $5 WHERE order_id = $1")
        .bind(order_id)
        .bind(status)
        .bind(version)
        .bind(None::<String>)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let changed = status_event(created, version, to, now.timestamp_millis());
    caused(tx, topics, &[changed]).await
}

/// The inventory service on PaymentProcessed PAID (services/inventory/src/handler.rs), with
/// stock to spare.
async fn deduct_stock(
    tx: &mut Transaction<'_, Postgres>,
    topics: &Topics,
    paid: &ev::PaymentProcessed,
) -> anyhow::Result<ev::InventoryUpdated> {
    let order_id: Uuid = paid.order_id.parse()?;
    consumed(tx, "inventory", &paid.event_id).await?;
    let done: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)")
            .bind(order_id)
            .fetch_one(&mut **tx)
            .await?;
    anyhow::ensure!(!done, "stock was already settled for order {order_id}");
    let skus: Vec<&str> = paid.items.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = paid.items.iter().map(|l| l.quantity).collect();
    let rows =
        sqlx::query("SELECT sku, available FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .bind(&skus)
            .fetch_all(&mut **tx)
            .await?;
    anyhow::ensure!(
        rows.len() == skus.len() && rows.iter().all(|r| r.get::<i32, _>("available") > 0),
        "the bench SKUs ran out of stock"
    );
    sqlx::query(
        "UPDATE stock SET available = available - d.quantity, updated_at = now()
         FROM UNNEST($1::text[], $2::int[]) AS d(sku, quantity) WHERE stock.sku = d.sku",
    )
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut **tx)
    .await?;
    let lines: Vec<ev::StockLine> = paid
        .items
        .iter()
        .map(|l| ev::StockLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect();
    sqlx::query(
        "INSERT INTO reservations (order_id, status, items, missing) VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id)
    .bind("CONFIRMED")
    .bind(serde_json::to_value(&lines)?)
    .bind(serde_json::to_value(Vec::<ev::MissingItem>::new())?)
    .execute(&mut **tx)
    .await?;
    let updated = ev::InventoryUpdated {
        event_id: ev::new_event_id(),
        order_id: paid.order_id.clone(),
        occurred_at: ev::now_millis(),
        status: ev::InventoryStatus::Confirmed,
        items: lines,
        missing: Vec::new(),
    };
    caused(tx, topics, &[Event::InventoryUpdated(updated.clone())]).await?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_order_publishes_six_messages_read_eight_times() {
        assert_eq!(published_per_order(), 6);
        assert_eq!(deliveries_per_order(), 8);
        assert_eq!(
            describe_order_messages(),
            "OrderCreated→orders(payment), OrderStatusChanged×3→order-status(gateway), \
             PaymentProcessed→payments(order+inventory), InventoryUpdated→inventory(order+payment)"
        );
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

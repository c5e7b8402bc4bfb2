//! The one load generator: orders placed through the gateway as a real client places them.
//! Two drivers share the requests ([`Mix`]): [`paced`] places orders one after another at a
//! fixed interval and retries while the system cannot answer (the fault tests inject faults
//! meanwhile); [`open_loop`] offers a fixed rate whatever happens to earlier orders and
//! watches each through WatchOrder (the benchmark: order `i` is due at `start + i / rate`
//! and every latency is measured from its due time, so a slow system cannot hide its
//! queueing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orderflow_auth::{Bearer, BearerChannel, LocalIssuer};
use orderflow_domain::OrderStatus;
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

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

/// One order of a load: the request, and what it must lead to.
#[derive(Debug, Clone)]
pub struct Planned {
    pub request: pb::PlaceOrderRequest,
    /// Index of the SKU in the mix's SKUs.
    pub sku: usize,
    pub quantity: i32,
    pub expect: Outcome,
}

/// Which orders a load places.
#[derive(Debug, Clone)]
pub enum Mix {
    /// Every order approved, one unit of `skus[i % skus.len()]`, spread round-robin so one
    /// hot stock row does not serialise the inventory service (the benchmark).
    Completing { skus: Vec<String> },
    /// The seed scenario's mix: of every five orders, three approved for 1–3 units of `plenty`
    /// (which never runs out), one declined, and one approved for `none` (no stock, so it is
    /// refunded).
    Seed { plenty: String, none: String },
}

impl Mix {
    /// The seed mix over the SKUs `plenty` and `none` (each test system has its own stock).
    pub fn seed() -> Mix {
        Mix::Seed {
            plenty: "plenty".into(),
            none: "none".into(),
        }
    }

    /// Every SKU the mix orders, with the stock it needs to start with.
    pub fn stock(&self, plenty_units: i32) -> Vec<(String, i32)> {
        match self {
            Mix::Completing { skus } => skus.iter().map(|s| (s.clone(), plenty_units)).collect(),
            Mix::Seed { plenty, none } => vec![(plenty.clone(), plenty_units), (none.clone(), 0)],
        }
    }

    /// Order `i` of the load.
    pub fn order(&self, i: usize) -> Planned {
        let (sku, name, quantity, token, expect) = match self {
            Mix::Completing { skus } => {
                let k = i % skus.len();
                (k, &skus[k], 1, "pm_card_visa", Outcome::Completed)
            }
            Mix::Seed { plenty, none } => {
                let quantity = 1 + (i % 3) as i32;
                match i % 5 {
                    3 => (
                        0,
                        plenty,
                        quantity,
                        "pm_card_chargeDeclined",
                        Outcome::Failed,
                    ),
                    4 => (1, none, quantity, "pm_card_visa", Outcome::Refunded),
                    _ => (0, plenty, quantity, "pm_card_visa", Outcome::Completed),
                }
            }
        };
        let request = pb::PlaceOrderRequest {
            customer_id: format!("load-{}", i % 97),
            items: vec![pb::OrderLine {
                sku: name.clone(),
                quantity,
                unit_price: Some(pb::Money {
                    amount_minor: 999,
                    currency: "EUR".into(),
                }),
            }],
            payment_method: token.into(),
            idempotency_key: format!("load-{i}-{}", uuid::Uuid::new_v4()),
            validate_only: false,
        };
        Planned {
            request,
            sku,
            quantity,
            expect,
        }
    }
}

/// WatchOrder streams the gateway allows open at once on one connection, by default
/// (`--max-watch-streams-per-connection`): a load keeps to it, as a well-behaved client does,
/// and an order whose watch would exceed it waits for one of that connection's streams to end.
pub const WATCH_STREAMS_PER_CONNECTION: usize = 100;

/// The gateway connections a load is spread over.
#[derive(Clone)]
pub struct Gateway {
    channels: Vec<Channel>,
    /// Per connection, the WatchOrder streams it may still open.
    watch_slots: Vec<Arc<Semaphore>>,
    /// Signs each customer's token; none for a gateway that runs without authentication.
    issuer: Option<Arc<LocalIssuer>>,
}

impl Gateway {
    /// `connections` connections to `url` (over TLS when `tls` is given), made when first
    /// used, so a load can start while the gateway is still coming up (or is down, in a
    /// fault test).
    pub fn lazy(
        url: &str,
        connections: usize,
        tls: Option<ClientTlsConfig>,
        issuer: Option<Arc<LocalIssuer>>,
    ) -> anyhow::Result<Gateway> {
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let mut endpoint = Endpoint::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10));
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone())?;
            }
            channels.push(endpoint.connect_lazy());
        }
        let watch_slots = channels
            .iter()
            .map(|_| Arc::new(Semaphore::new(WATCH_STREAMS_PER_CONNECTION)))
            .collect();
        Ok(Gateway {
            channels,
            watch_slots,
            issuer,
        })
    }

    /// The order API on connection `i` (modulo the connections), as `customer`.
    pub fn orders(&self, i: usize, customer: &str) -> OrderServiceClient<BearerChannel> {
        let bearer = match &self.issuer {
            Some(issuer) => issuer.customer(customer),
            None => Bearer::none(),
        };
        OrderServiceClient::new(bearer.on(self.channels[i % self.channels.len()].clone()))
    }

    /// The WatchOrder streams connection `i` (modulo the connections) may still open.
    fn watch_slots(&self, i: usize) -> Arc<Semaphore> {
        self.watch_slots[i % self.watch_slots.len()].clone()
    }

    /// The inventory API, as an operator.
    pub fn inventory(&self) -> InventoryServiceClient<BearerChannel> {
        let bearer = match &self.issuer {
            Some(issuer) => issuer.operator(),
            None => Bearer::none(),
        };
        InventoryServiceClient::new(bearer.on(self.channels[0].clone()))
    }

    /// Sets each SKU's stock, then waits until the order service's catalogue lists each, so
    /// that the load's first orders are not refused as unknown SKUs.
    pub async fn stock_up(&self, stock: &[(String, i32)]) -> anyhow::Result<()> {
        let inventory = self.inventory();
        for (sku, available) in stock {
            let request = pb::SetStockRequest {
                sku: sku.clone(),
                available: *available,
            };
            within_rate_limit(|| {
                let (mut inventory, request) = (inventory.clone(), request.clone());
                async move { inventory.set_stock(request).await }
            })
            .await?;
        }
        let customer = "catalogue-check";
        let mut orders = self.orders(0, customer);
        for (sku, _) in stock {
            wait_catalogued(&mut orders, customer, sku, CATALOGUE_PATIENCE).await?;
        }
        Ok(())
    }

    /// Each SKU's available stock, in `skus` order.
    pub async fn stock_of(&self, skus: &[String]) -> Result<Vec<i32>, tonic::Status> {
        let inventory = self.inventory();
        let mut stock = Vec::with_capacity(skus.len());
        for sku in skus {
            let level = within_rate_limit(|| {
                let mut inventory = inventory.clone();
                let request = pb::GetStockRequest { sku: sku.clone() };
                async move { inventory.get_stock(request).await }
            })
            .await?;
            stock.push(level.into_inner().available);
        }
        Ok(stock)
    }
}

/// How long an operator's call waits, at most, for the gateway's rate limit to let it
/// through.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(30);

/// Makes `call` again while the gateway refuses it for the caller's rate limit
/// (RESOURCE_EXHAUSTED), as a well-behaved client does. The operator stocks and reads each
/// bench SKU in its own call, one after another: a run's calls, or two runs back to back,
/// are more than the limit's burst.
async fn within_rate_limit<T, F, Fut>(call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    again_while_exhausted(RATE_LIMIT_PATIENCE, call).await.0
}

/// Makes `call` again while the gateway refuses it with RESOURCE_EXHAUSTED, for at most
/// `patience`, as a well-behaved client does: the gateway sheds calls beyond its limits
/// (calls in progress, a caller's rate and streams) at once rather than queue them. Each
/// wait is about twice the last (10–20 ms first, 250–500 ms at most) and half of it random
/// ([`orderflow_retry::backoff`]), so calls shed together do not all come back together.
/// Returns the last answer and how many times the call was refused.
async fn again_while_exhausted<T, F, Fut>(
    patience: Duration,
    mut call: F,
) -> (Result<T, tonic::Status>, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut refused = 0;
    loop {
        match call().await {
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(shed_wait(refused)).await;
                refused += 1;
            }
            answer => return (answer, refused),
        }
    }
}

/// How long a call shed `refused` times before waits until it is made again: about twice the
/// last wait, half of it random.
fn shed_wait(refused: usize) -> Duration {
    orderflow_retry::backoff(
        u32::try_from(refused).unwrap_or(u32::MAX),
        Duration::from_millis(20),
        Duration::from_millis(500),
    )
}

/// True for an order status (as a message carries it) that never changes again.
pub fn is_terminal(status: i32) -> bool {
    orderflow_proto::convert::order_status(status).is_some_and(OrderStatus::is_terminal)
}

/// How long a SKU just stocked may take to reach the order service's catalogue: the
/// inventory service's outbox relay, the broker and the order service's consumer, each a
/// few milliseconds when all is well.
pub const CATALOGUE_PATIENCE: Duration = Duration::from_secs(30);

/// Waits until PlaceOrder accepts `sku` from `customer` (the client's caller), asking with
/// `validate_only` (nothing is placed): a SKU reaches the order service's catalogue a moment
/// after the inventory service stocks it. Waits through an unavailable system and a rate
/// limit too; any other refusal is an error at once.
pub async fn wait_catalogued(
    client: &mut OrderServiceClient<BearerChannel>,
    customer: &str,
    sku: &str,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    let request = pb::PlaceOrderRequest {
        customer_id: customer.into(),
        items: vec![pb::OrderLine {
            sku: sku.into(),
            quantity: 1,
            unit_price: Some(pb::Money {
                amount_minor: 1,
                currency: "EUR".into(),
            }),
        }],
        payment_method: "pm_card_visa".into(),
        idempotency_key: "catalogue-check".into(),
        validate_only: true,
    };
    loop {
        let status = match client.place_order(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(status) => status,
        };
        let not_yet = match status.code() {
            Code::InvalidArgument => status.message().contains("not in the catalogue"),
            // The system is away, or the caller is over its rate limit: wait and ask again.
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => true,
            _ => false,
        };
        if !not_yet {
            anyhow::bail!("PlaceOrder refused the catalogue check of {sku}: {status:?}");
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{sku} was not in the order service's catalogue within {patience:?}: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Places one order, retrying with the same idempotency key while the system cannot answer
/// (gateway or order service down), as a well-behaved client does, for at most `patience`.
/// Returns the order id. A refusal of the request itself is an error at once.
pub async fn place_with_retry(
    client: &mut OrderServiceClient<BearerChannel>,
    request: pb::PlaceOrderRequest,
    patience: Duration,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match client.place_order(request.clone()).await {
            Ok(response) => {
                let order = response.into_inner().order;
                return Ok(order
                    .ok_or_else(|| anyhow::anyhow!("PlaceOrder answered without the order"))?
                    .order_id);
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::AlreadyExists
                        | Code::NotFound
                        | Code::Unauthenticated
                        | Code::PermissionDenied
                ) =>
            {
                anyhow::bail!("PlaceOrder refused a valid request: {status:?}")
            }
            Err(status) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("PlaceOrder kept failing for {patience:?}: {status:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One order a load placed.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: String,
    /// Who placed it (and so may read it).
    pub customer: String,
    pub quantity: i32,
    pub expect: Outcome,
}

/// Places `count` orders of `mix`, one every `interval`, each retried until the system takes
/// it, counting them in `progress` so that a test can inject its fault at a chosen point
/// while the load goes on. Returns what was placed.
pub async fn paced(
    gateway: &Gateway,
    mix: &Mix,
    count: usize,
    interval: Duration,
    progress: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Placed>> {
    let mut placed = Vec::with_capacity(count);
    for i in 0..count {
        let order = mix.order(i);
        let customer = order.request.customer_id.clone();
        let mut client = gateway.orders(0, &customer);
        let order_id =
            place_with_retry(&mut client, order.request, Duration::from_secs(180)).await?;
        placed.push(Placed {
            order_id,
            customer,
            quantity: order.quantity,
            expect: order.expect,
        });
        progress.store(i + 1, Ordering::SeqCst);
        tokio::time::sleep(interval).await;
    }
    Ok(placed)
}

/// Waits until every order is terminal (read through the gateway), at most `timeout`.
pub async fn wait_all_terminal(
    gateway: &Gateway,
    placed: &[Placed],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut pending: Vec<&Placed> = placed.iter().collect();
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for p in pending {
            let order = gateway
                .orders(0, &p.customer)
                .get_order(pb::GetOrderRequest {
                    order_id: p.order_id.clone(),
                })
                .await;
            if !order.is_ok_and(|o| is_terminal(o.into_inner().status)) {
                still.push(p);
            }
        }
        pending = still;
        if let Some(first) = pending.first() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} orders not terminal within {timeout:?}, e.g. {first:?}",
                pending.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// What happened to one order of an open-loop load.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Index of the SKU in the mix's SKUs.
    pub sku: usize,
    /// The order's id, once PlaceOrder answered.
    pub order_id: Option<String>,
    pub expect: Outcome,
    /// Due time → PlaceOrder answered.
    pub place: Option<Duration>,
    /// Due time → terminal status seen on WatchOrder.
    pub terminal: Option<Duration>,
    /// When the terminal status was seen.
    pub finished: Option<Instant>,
    /// The terminal status seen.
    pub status: Option<pb::OrderStatus>,
    /// Whether its watch had to wait for a stream of its connection to end (the load has
    /// more orders in flight than its connections may watch at once).
    pub watch_waited: bool,
    /// How many times the gateway shed its PlaceOrder or WatchOrder (RESOURCE_EXHAUSTED)
    /// before taking it; each was made again (the wait is in its latency).
    pub shed: usize,
    pub error: Option<String>,
}

/// Places `order` when it is due and watches it until its terminal status, on a stream of
/// `watch_slots` (waited for when all are taken; the wait counts in its latency).
async fn place_and_watch(
    orders: OrderServiceClient<BearerChannel>,
    watch_slots: Arc<Semaphore>,
    due: Instant,
    order: Planned,
    watch_timeout: Duration,
) -> Watched {
    let mut result = Watched {
        sku: order.sku,
        order_id: None,
        expect: order.expect,
        place: None,
        terminal: None,
        finished: None,
        status: None,
        watch_waited: false,
        shed: 0,
        error: None,
    };
    // Made again with the same idempotency key when shed: at most one order is placed.
    let (placed, shed) = again_while_exhausted(watch_timeout, || {
        let (mut orders, request) = (orders.clone(), order.request.clone());
        async move { orders.place_order(request).await }
    })
    .await;
    result.shed += shed;
    let placed = match placed {
        Ok(r) => r.into_inner().order.expect("order in response"),
        Err(status) => {
            result.error = Some(format!(
                "PlaceOrder: {:?} {}",
                status.code(),
                status.message()
            ));
            return result;
        }
    };
    result.place = Some(due.elapsed());
    result.order_id = Some(placed.order_id.clone());
    let _slot = match watch_slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            result.watch_waited = true;
            watch_slots
                .acquire_owned()
                .await
                .expect("the watch slots are never closed")
        }
    };
    let mut watch_shed = 0;
    let watch = async {
        let request = pb::WatchOrderRequest {
            order_id: placed.order_id.clone(),
            after_version: placed.version,
        };
        let (stream, shed) = again_while_exhausted(watch_timeout, || {
            let (mut orders, request) = (orders.clone(), request.clone());
            async move { orders.watch_order(request).await }
        })
        .await;
        watch_shed = shed;
        let mut stream = stream?.into_inner();
        let mut last = None;
        while let Some(update) = stream.next().await {
            last = Some(update?.status);
        }
        Ok::<_, tonic::Status>(last)
    };
    let watched = tokio::time::timeout(watch_timeout, watch).await;
    result.shed += watch_shed;
    match watched {
        Ok(Ok(Some(status))) => {
            let now = Instant::now();
            result.terminal = Some(now - due);
            result.finished = Some(now);
            result.status = pb::OrderStatus::try_from(status).ok();
        }
        Ok(Ok(None)) => result.error = Some("WatchOrder ended without an update".into()),
        Ok(Err(status)) => {
            result.error = Some(format!(
                "WatchOrder: {:?} {}",
                status.code(),
                status.message()
            ))
        }
        Err(_) => result.error = Some(format!("no terminal status within {watch_timeout:?}")),
    }
    result
}

/// Offers `count` orders of `mix` at `rate` per second from `start`, each on its own task,
/// and waits for every one to end. Returns them in placing order.
pub async fn open_loop(
    gateway: &Gateway,
    mix: &Mix,
    rate: f64,
    count: usize,
    start: Instant,
) -> anyhow::Result<Vec<Watched>> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let results = Arc::new(Mutex::new(vec![None; count]));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let order = mix.order(i);
        let task = place_and_watch(
            gateway.orders(i, &order.request.customer_id),
            gateway.watch_slots(i),
            due,
            order,
            Duration::from_secs(60),
        );
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let r = task.await;
            results.lock().await[i] = Some(r);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let results = std::mem::take(&mut *results.lock().await);
    Ok(results.into_iter().flatten().collect())
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index].as_secs_f64() * 1000.0
        };
        Percentiles {
            count: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples);
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(vec![]).count, 0);
        assert_eq!(Percentiles::of(vec![Duration::from_millis(7)]).p99_ms, 7.0);
    }

    #[test]
    fn seed_mix_has_every_outcome_in_every_five() {
        let mix = Mix::seed();
        let outcomes: Vec<Outcome> = (0..5).map(|i| mix.order(i).expect).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Completed,
                Outcome::Completed,
                Outcome::Completed,
                Outcome::Failed,
                Outcome::Refunded
            ]
        );
        let refunded = mix.order(4);
        assert_eq!(refunded.request.items[0].sku, "none");
    }

    /// A call answered by each of `answers` in turn, counting its calls.
    fn answering(
        answers: Vec<Result<u8, tonic::Status>>,
    ) -> (
        Arc<AtomicUsize>,
        impl FnMut() -> std::future::Ready<Result<u8, tonic::Status>>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let call = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(answers[n.min(answers.len() - 1)].clone())
        };
        (calls, call)
    }

    #[tokio::test]
    async fn a_shed_call_is_made_again_until_taken_and_other_refusals_are_not() {
        let shed = || Err(tonic::Status::resource_exhausted("shed"));
        let (calls, call) = answering(vec![shed(), shed(), Ok(7)]);
        let (answer, refused) = again_while_exhausted(Duration::from_secs(5), call).await;
        assert_eq!((answer.unwrap(), refused), (7, 2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let (calls, call) = answering(vec![Err(tonic::Status::unavailable("down")), Ok(7)]);
        let (answer, refused) = again_while_exhausted(Duration::from_secs(5), call).await;
        assert_eq!(
            (answer.unwrap_err().code(), refused),
            (Code::Unavailable, 0)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Past its patience, the last refusal is the answer.
        let (_, call) = answering(vec![shed()]);
        let (answer, refused) = again_while_exhausted(Duration::from_millis(50), call).await;
        assert_eq!(answer.unwrap_err().code(), Code::ResourceExhausted);
        assert!((1..=3).contains(&refused), "{refused} refusals in 50 ms");
    }

    #[test]
    fn calls_shed_together_come_back_at_different_times() {
        let ms = Duration::from_millis;
        let first: std::collections::HashSet<Duration> = (0..200).map(|_| shed_wait(0)).collect();
        assert!(first.len() > 1, "every first wait was {first:?}");
        assert!(
            first.iter().all(|wait| (ms(10)..=ms(20)).contains(wait)),
            "{first:?}"
        );
        // The waits grow to their cap and stay there, still spread.
        let late: std::collections::HashSet<Duration> = (0..200).map(|_| shed_wait(40)).collect();
        assert!(late.len() > 1, "every late wait was {late:?}");
        assert!(
            late.iter().all(|wait| (ms(250)..=ms(500)).contains(wait)),
            "{late:?}"
        );
    }

    #[test]
    fn completing_mix_spreads_orders_round_robin() {
        let mix = Mix::Completing {
            skus: vec!["a".into(), "b".into(), "c".into()],
        };
        let skus: Vec<usize> = (0..6).map(|i| mix.order(i).sku).collect();
        assert_eq!(skus, [0, 1, 2, 0, 1, 2]);
        assert!((0..6).all(|i| mix.order(i).expect == Outcome::Completed));
        assert_ne!(
            mix.order(0).request.idempotency_key,
            mix.order(3).request.idempotency_key
        );
    }
}

//! The open-loop load: order `i` is due at `start + i / rate` whatever happened to earlier
//! orders, and every latency is measured from when the order was due, so a slow system
//! cannot hide its queueing (no coordinated omission). Each order is placed through the
//! gateway and watched through WatchOrder until its terminal status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// Units each bench SKU starts with: more than any run can take.
pub const INITIAL_STOCK: i32 = 1_000_000;

/// The gateway connections orders are spread over.
pub struct Clients {
    channels: Vec<Channel>,
}

impl Clients {
    pub async fn connect(gateway: &str, connections: usize) -> anyhow::Result<Clients> {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            channels.push(
                Endpoint::from_shared(gateway.to_owned())?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
        Ok(Clients { channels })
    }

    fn orders(&self, i: usize) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channels[i % self.channels.len()].clone())
    }

    pub fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channels[0].clone())
    }
}

/// What happened to one order.
#[derive(Debug, Clone)]
struct OrderResult {
    sku: usize,
    /// Due time → PlaceOrder answered.
    place: Option<Duration>,
    /// Due time → terminal status seen on WatchOrder.
    terminal: Option<Duration>,
    /// When the terminal status was seen.
    finished: Option<Instant>,
    status: Option<&'static str>,
    error: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Percentiles {
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

/// One run at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub offered_per_sec: f64,
    pub duration_secs: f64,
    pub orders: usize,
    /// Orders that reached COMPLETED, per second, from the first due time to the last completion.
    pub achieved_per_sec: f64,
    pub completed: usize,
    pub errors: usize,
    pub first_errors: Vec<String>,
    pub place_order: Percentiles,
    pub time_to_terminal: Percentiles,
    /// Every order COMPLETED and every SKU's stock exactly what the run found minus what its completed orders took.
    pub correct: bool,
    pub correctness: String,
    /// Cores each component used on average while the run offered load and drained.
    pub cpu: super::cpu::Usage,
}

/// The bench SKUs of one run: orders are spread round-robin so one hot stock row does not
/// serialise the inventory service.
pub fn skus(run_id: &str, count: usize) -> Vec<String> {
    (0..count).map(|k| format!("bench-{run_id}-{k}")).collect()
}

/// Each SKU's available stock, in `skus` order.
async fn stock_of(clients: &Clients, skus: &[String]) -> anyhow::Result<Vec<i32>> {
    let mut inventory = clients.inventory();
    let mut stock = Vec::with_capacity(skus.len());
    for sku in skus {
        stock.push(
            inventory
                .get_stock(pb::GetStockRequest { sku: sku.clone() })
                .await?
                .into_inner()
                .available,
        );
    }
    Ok(stock)
}

pub async fn stock_up(clients: &Clients, skus: &[String]) -> anyhow::Result<()> {
    let mut inventory = clients.inventory();
    for sku in skus {
        inventory
            .set_stock(pb::SetStockRequest {
                sku: sku.clone(),
                available: INITIAL_STOCK,
            })
            .await?;
    }
    Ok(())
}

async fn one_order(
    mut orders: OrderServiceClient<Channel>,
    due: Instant,
    sku_index: usize,
    sku: String,
    watch_timeout: Duration,
) -> OrderResult {
    let mut result = OrderResult {
        sku: sku_index,
        place: None,
        terminal: None,
        finished: None,
        status: None,
        error: None,
    };
    let request = pb::PlaceOrderRequest {
        customer_id: format!("bench-{}", sku_index % 97),
        items: vec![pb::OrderLine {
            sku,
            quantity: 1,
            unit_price: Some(pb::Money {
                amount_minor: 999,
                currency: "EUR".into(),
            }),
        }],
        payment_method: "pm_card_visa".into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    };
    let placed = match orders.place_order(request).await {
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
    let watch = async {
        let mut stream = orders
            .watch_order(pb::WatchOrderRequest {
                order_id: placed.order_id.clone(),
                after_version: placed.version,
            })
            .await?
            .into_inner();
        let mut last = None;
        while let Some(update) = stream.next().await {
            last = Some(update?.status);
        }
        Ok::<_, tonic::Status>(last)
    };
    match tokio::time::timeout(watch_timeout, watch).await {
        Ok(Ok(Some(status))) => {
            let now = Instant::now();
            result.terminal = Some(now - due);
            result.finished = Some(now);
            result.status = Some(match pb::OrderStatus::try_from(status) {
                Ok(pb::OrderStatus::Completed) => "COMPLETED",
                Ok(pb::OrderStatus::Failed) => "FAILED",
                Ok(pb::OrderStatus::Refunded) => "REFUNDED",
                _ => "OTHER",
            });
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

/// Offers `rate` orders per second for `duration`, then waits for every order to end.
pub async fn run(
    label: &str,
    clients: &Clients,
    skus: &[String],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    // Earlier runs took stock from the same SKUs; this run is checked against what it found.
    let stock_before = stock_of(clients, skus).await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let results = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let start = Instant::now() + Duration::from_millis(50);
    let cpu_before = super::cpu::Snapshot::take();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let sku_index = i % skus.len();
        let task = one_order(
            clients.orders(i),
            due,
            sku_index,
            skus[sku_index].clone(),
            Duration::from_secs(60),
        );
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let r = task.await;
            results.lock().await.push(r);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let cpu = cpu_before.usage_until(&super::cpu::Snapshot::take());
    let results = std::mem::take(&mut *results.lock().await);
    let completed = results
        .iter()
        .filter(|r| r.status == Some("COMPLETED"))
        .count();
    // From the first order's due time to the last terminal status seen.
    let last_end = results
        .iter()
        .filter_map(|r| r.finished)
        .max()
        .map(|end| end.saturating_duration_since(start))
        .unwrap_or_default();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();

    // Stock must be exactly what the run found minus the orders that completed, SKU by SKU.
    let stock_after = stock_of(clients, skus).await?;
    let mut mismatches = Vec::new();
    for (k, sku) in skus.iter().enumerate() {
        let taken = results
            .iter()
            .filter(|r| r.sku == k && r.status == Some("COMPLETED"))
            .count() as i32;
        let expected = stock_before[k] - taken;
        if stock_after[k] != expected {
            mismatches.push(format!(
                "{sku}: {} left, expected {expected}",
                stock_after[k]
            ));
        }
    }
    let stock_ok = mismatches.is_empty();
    let all_completed = completed == count;
    let correctness = match (all_completed, stock_ok) {
        (true, true) => format!(
            "all {count} orders COMPLETED; stock exact on {} SKUs",
            skus.len()
        ),
        _ => format!(
            "{completed}/{count} COMPLETED; stock: {}",
            if stock_ok {
                "exact".into()
            } else {
                mismatches.join(", ")
            }
        ),
    };
    Ok(RunResult {
        label: label.to_owned(),
        offered_per_sec: rate,
        duration_secs: duration.as_secs_f64(),
        orders: count,
        achieved_per_sec: if last_end.is_zero() {
            0.0
        } else {
            completed as f64 / last_end.as_secs_f64()
        },
        completed,
        errors: errors.len(),
        first_errors: errors.iter().take(3).map(|e| e.to_string()).collect(),
        place_order: Percentiles::of(results.iter().filter_map(|r| r.place).collect()),
        time_to_terminal: Percentiles::of(results.iter().filter_map(|r| r.terminal).collect()),
        correct: all_completed && stock_ok,
        correctness,
        cpu,
    })
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
}

//! `orderflow demo`: the seed scenario against a running gateway. A SKU gets 10 units; an
//! approved order of 3 completes (stock 7), a declined order fails (stock still 7), an
//! approved order of 8 is out of stock and refunded (stock still 7). Every stream is printed;
//! the command fails if any outcome differs. It acts as a customer and as an operator with
//! tokens signed by the development key `up` made, shows that another customer cannot see
//! the customer's order, that a SKU nobody stocks is refused at once, and prints each
//! order's timeline from the history service and the
//! figures over every order from the analytics service, and what the customer was told
//! (the notifications service's file).

use std::time::Duration;

use clap::Args;
use orderflow_auth::{BearerChannel, LocalIssuer};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use orderflow_proto::v1::stats_service_client::StatsServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

#[derive(Args)]
pub struct DemoArgs {
    /// The gateway's URL.
    #[arg(
        long,
        env = "ORDERFLOW_GATEWAY_URL",
        default_value = "https://127.0.0.1:9200"
    )]
    pub gateway: String,
    /// How long to wait for each order to reach its end.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Where `up` keeps its state (the development signing key among it).
    #[command(flatten)]
    pub home: crate::local::HomeArgs,
}

/// The customer the demo places its orders as.
const CUSTOMER: &str = "demo-customer";

use orderflow_proto::convert::status_name;

/// The demo customer's order of `quantity` units of `sku` at 19.99 EUR.
fn demo_order(
    sku: &str,
    quantity: i32,
    payment_method: &str,
    idempotency_key: &str,
) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: CUSTOMER.into(),
        items: vec![pb::OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: Some(pb::Money {
                amount_minor: 1999,
                currency: "EUR".into(),
            }),
        }],
        payment_method: payment_method.into(),
        idempotency_key: idempotency_key.into(),
        validate_only: false,
    }
}

async fn place_and_watch(
    orders: &mut OrderServiceClient<BearerChannel>,
    label: &str,
    sku: &str,
    quantity: i32,
    payment_method: &str,
    timeout: Duration,
) -> anyhow::Result<(String, Vec<String>)> {
    let key = uuid::Uuid::new_v4().to_string();
    let placed = orders
        .place_order(demo_order(sku, quantity, payment_method, &key))
        .await?
        .into_inner();
    let order = placed
        .order
        .ok_or_else(|| anyhow::anyhow!("no order in the response"))?;
    println!("\n{label}: {quantity} x {sku}, paying with {payment_method}");
    println!(
        "  placed order {} -> {}",
        order.order_id,
        status_name(order.status)
    );
    let mut stream = orders
        .watch_order(pb::WatchOrderRequest {
            order_id: order.order_id.clone(),
            // Resume after the version PlaceOrder returned: every later change, none missed.
            after_version: order.version,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    let watch = async {
        while let Some(update) = stream.next().await {
            let update = update?;
            let reason = if update.reason.is_empty() {
                String::new()
            } else {
                format!("  ({})", update.reason)
            };
            println!(
                "  watch: v{} {}{reason}",
                update.version,
                status_name(update.status)
            );
            seen.push(status_name(update.status).to_owned());
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(timeout, watch)
        .await
        .map_err(|_| anyhow::anyhow!("{label}: no terminal status within {timeout:?}"))??;
    Ok((order.order_id, seen))
}

/// The order's timeline once the history service has recorded its terminal status `want`.
async fn timeline(
    orders: &mut OrderServiceClient<BearerChannel>,
    order_id: &str,
    want: &str,
    timeout: Duration,
) -> anyhow::Result<pb::OrderTimeline> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let timeline = orders
            .get_order_timeline(pb::GetOrderTimelineRequest {
                order_id: order_id.into(),
            })
            .await?
            .into_inner();
        let ended = timeline
            .entries
            .last()
            .is_some_and(|e| e.event_type == "OrderStatusChanged" && e.summary.contains(want));
        if ended {
            return Ok(timeline);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the timeline of order {order_id} did not reach {want} within {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The figures once the analytics service has counted the third order's stock-out of `sku`.
async fn counted(
    stats: &mut StatsServiceClient<BearerChannel>,
    sku: &str,
    timeout: Duration,
) -> anyhow::Result<pb::Stats> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let figures = stats
            .get_stats(pb::GetStatsRequest { revenue_minutes: 5 })
            .await?
            .into_inner();
        if figures.stock_outs.iter().any(|s| s.sku == sku) {
            return Ok(figures);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("the stock-out of {sku} was not counted within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut endpoint = Channel::from_shared(args.gateway.clone())?;
    if let Some(tls) = crate::local::client_tls(&args.home.home, &args.gateway)? {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await?;
    let key = args.home.home.join(orderflow_auth::DEV_SIGNING_KEY_FILE);
    let issuer = LocalIssuer::read(&key)
        .map_err(|e| e.context("run `./orderflow up` first: it makes the development key"))?;
    let mut orders = OrderServiceClient::new(issuer.customer(CUSTOMER).on(channel.clone()));
    let mut inventory = InventoryServiceClient::new(issuer.operator().on(channel.clone()));
    let stats_channel = channel.clone();
    let mut someone_else = OrderServiceClient::new(issuer.customer("someone-else").on(channel));
    let timeout = Duration::from_secs(args.timeout_secs);
    let sku = format!(
        "demo-widget-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let stock = inventory
        .set_stock(pb::SetStockRequest {
            sku: sku.clone(),
            available: 10,
        })
        .await?
        .into_inner();
    println!("stock of {sku} set to {}", stock.available);
    // The order service learns of the SKU from the catalogue topic, a moment later.
    crate::load::wait_catalogued(&mut orders, CUSTOMER, &sku, timeout).await?;

    let mut failures = Vec::new();
    // A SKU nobody stocks is refused at once, from the order service's own catalogue.
    let unknown = format!("{sku}-unknown");
    match orders
        .place_order(demo_order(&unknown, 1, "pm_card_visa", "demo-unknown-sku"))
        .await
    {
        Err(status) if status.code() == tonic::Code::InvalidArgument => println!(
            "\n0. an unknown SKU\n  PlaceOrder refused: INVALID_ARGUMENT {}",
            status.message()
        ),
        other => failures.push(format!(
            "an order for the unknown SKU {unknown} got {other:?}, not INVALID_ARGUMENT"
        )),
    }
    let mut placed = Vec::new();
    let steps: [(&str, i32, &str, &str); 3] = [
        ("1. an approved order", 3, "pm_card_visa", "COMPLETED"),
        ("2. a declined card", 2, "pm_card_chargeDeclined", "FAILED"),
        ("3. more than is in stock", 8, "pm_card_visa", "REFUNDED"),
    ];
    for (label, quantity, payment_method, want) in steps {
        let (order_id, seen) =
            place_and_watch(&mut orders, label, &sku, quantity, payment_method, timeout).await?;
        // Another customer learns nothing about the order, not even that it exists.
        let peek = someone_else
            .get_order(pb::GetOrderRequest {
                order_id: order_id.clone(),
            })
            .await;
        match peek {
            Err(status) if status.code() == tonic::Code::NotFound => {
                println!("  another customer asking for it: NOT_FOUND");
            }
            other => failures.push(format!(
                "{label}: another customer reading order {order_id} got {other:?}, not NOT_FOUND"
            )),
        }
        let stock = inventory
            .get_stock(pb::GetStockRequest { sku: sku.clone() })
            .await?
            .into_inner()
            .available;
        placed.push((label, order_id.clone(), want));
        let last = seen.last().map(String::as_str).unwrap_or("nothing");
        println!("  -> ends {last}; stock of {sku} is now {stock}");
        // Only the first order deducts: 10 - 3 = 7 from then on.
        if last != want || stock != 7 {
            failures.push(format!(
                "{label}: expected {want} and stock 7, saw {seen:?} and stock {stock}"
            ));
        }
    }

    let placed_ids: Vec<(&str, String)> = placed
        .iter()
        .map(|(label, id, _)| (*label, id.clone()))
        .collect();
    // Each order's whole story, as the history service tells it from the log.
    for (label, order_id, want) in placed {
        match timeline(&mut orders, &order_id, want, timeout).await {
            Ok(timeline) => {
                println!("\n{label}, as the event log tells it:");
                print!("{}", orderflow_history::render(&timeline, false));
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }

    // The figures over every order, as the analytics service counts them.
    let mut stats = StatsServiceClient::new(issuer.operator().on(stats_channel));
    match counted(&mut stats, &sku, timeout).await {
        Ok(figures) => {
            println!("\nthe figures over every order so far (analytics):");
            print!("{}", orderflow_analytics::render(&figures));
        }
        Err(e) => failures.push(format!("GetStats: {e}")),
    }

    // What the customer was told, as the notifications service's file sink wrote it.
    let file = crate::local::notifications_file(&args.home.home);
    if file.exists() {
        let order_ids: Vec<String> = placed_ids.iter().map(|(_, id)| id.clone()).collect();
        match told(&file, &order_ids, timeout).await {
            Ok(lines) => {
                println!("\nwhat {CUSTOMER} was told ({}):", file.display());
                for (label, order_id) in &placed_ids {
                    println!("{label}:");
                    for (_, status, message) in lines.iter().filter(|(o, ..)| o == order_id) {
                        println!("  {status:<12} {message}");
                    }
                }
            }
            Err(e) => failures.push(format!("notifications: {e}")),
        }
    }

    if failures.is_empty() {
        println!("\nall three orders ended as expected");
        Ok(())
    } else {
        anyhow::bail!("unexpected outcomes:\n{}", failures.join("\n"))
    }
}

/// The notifications of `orders` in the file sink's `file`, once all nine of the seed
/// scenario's statuses are there (3 + 2 + 4): (order, status, message), in file order.
async fn told(
    file: &std::path::Path,
    orders: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = tokio::fs::read_to_string(file).await.unwrap_or_default();
        let lines: Vec<(String, String, String)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|n| {
                let order = n["order_id"].as_str()?.to_owned();
                orders.contains(&order).then(|| {
                    let field = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
                    (order, field("status"), field("message"))
                })
            })
            .collect();
        if lines.len() >= 9 {
            return Ok(lines);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} of the 9 notifications in {} after {timeout:?}",
                lines.len(),
                file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

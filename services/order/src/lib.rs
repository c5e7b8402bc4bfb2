//! The order service: the owner of orders. PlaceOrder stores a PENDING order and its
//! OrderCreated event in one transaction; payment and inventory outcomes move the order
//! through the pure state machine, each change recorded with its OrderStatusChanged event.

mod error;
mod grpc;
mod handler;
mod metrics;
mod store;

use std::net::SocketAddr;

use clap::Args;
use orderflow_platform::{CommonArgs, ServiceKit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::OrderError;

/// The migrations of the order database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");

/// Settings of the order service.
#[derive(Debug, Clone, Args)]
pub struct OrderArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the order service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_order"
    )]
    pub database_url: String,
    /// Address of the gRPC API the gateway calls.
    #[arg(
        long = "grpc-listen",
        env = "ORDERFLOW_ORDER_GRPC_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_ORDER_ADMIN_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub admin_listen: SocketAddr,
}

/// Binds the configured addresses and runs until `shutdown`.
pub async fn serve(args: OrderArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(args.grpc_listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(args, grpc, admin, shutdown).await
}

/// Runs the service on the given listeners until `shutdown`: gRPC API, consumer of
/// `payments` and `inventory`, outbox relay, health.
pub async fn run(
    args: OrderArgs,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(&args.database_url),
        &MIGRATOR,
    )
    .await?;
    let kit = ServiceKit::start("order", &args.common, pool.clone()).await?;
    let topics = kit.topics.clone();
    let handler = handler::OrderHandler {
        transitions: metrics::TransitionMetrics::register(&kit.metrics),
    };
    let consumer = kit
        .consumer(&[&topics.payments, &topics.inventory], handler)
        .await?;

    let api = grpc::OrderApi::new(
        store::Store::new(pool, kit.outbox_signal.clone()),
        kit.topics.clone(),
    );
    let server = grpc::serve(api, grpc, shutdown.clone());
    kit.run(consumer, admin, Some(Box::pin(server)), shutdown)
        .await
}

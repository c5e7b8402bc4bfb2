//! The order service: the owner of orders. PlaceOrder stores a PENDING order and its
//! OrderCreated event in one transaction; payment and inventory outcomes move the order
//! through the pure state machine, each change recorded with its OrderStatusChanged event.

mod error;
mod grpc;
mod handler;
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
    /// Address of the HTTP health endpoint.
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
    let consumer = kit
        .consumer(
            &[&topics.payments, &topics.inventory],
            handler::OrderHandler,
        )
        .await?;

    // Work stops in order: no new requests, then consumers finish their message, then the
    // relay publishes what they wrote.
    let stop_intake = shutdown.clone();
    let stop_relay = CancellationToken::new();
    let relay = tokio::spawn(kit.relay().run(stop_relay.clone()));
    let consuming = tokio::spawn(consumer.run(stop_intake.clone()));
    let health = kit.health.clone();
    let admin_server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { health.serve(admin, Default::default(), shutdown).await }
    });
    tracing::info!(grpc = %grpc.local_addr()?, "order service ready");
    let api = grpc::OrderApi::new(store::Store::new(pool.clone()), kit.topics.clone());
    let grpc_result = grpc::serve(api, grpc, stop_intake.clone()).await;
    let _ = consuming.await;
    stop_relay.cancel();
    let _ = relay.await;
    let _ = admin_server.await;
    pool.close().await;
    grpc_result
}

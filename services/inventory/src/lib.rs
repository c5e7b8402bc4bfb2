//! The inventory service: on PaymentProcessed PAID, deducts every line of the order or none
//! and publishes InventoryUpdated; serves stock administration over gRPC.

mod grpc;
mod handler;

use std::net::SocketAddr;

use clap::Args;
use orderflow_platform::{CommonArgs, ServiceKit};
use orderflow_proto::v1::inventory_service_server::InventoryServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// The migrations of the inventory database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/inventory");

/// Settings of the inventory service.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the inventory service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_INVENTORY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_inventory"
    )]
    pub database_url: String,
    /// Address of the stock-administration gRPC API the gateway calls.
    #[arg(
        long = "grpc-listen",
        env = "ORDERFLOW_INVENTORY_GRPC_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_INVENTORY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9103"
    )]
    pub admin_listen: SocketAddr,
}

pub async fn serve(args: InventoryArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(args.grpc_listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(args, grpc, admin, shutdown).await
}

/// Runs the service on the given listeners until `shutdown`.
pub async fn run(
    args: InventoryArgs,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(&args.database_url),
        &MIGRATOR,
    )
    .await?;
    let kit = ServiceKit::start("inventory", &args.common, pool.clone()).await?;
    let topics = kit.topics.clone();
    let consumer = kit
        .consumer(&[&topics.payments], handler::InventoryHandler)
        .await?;
    let server = tonic::transport::Server::builder()
        .add_service(InventoryServiceServer::new(grpc::InventoryApi { pool }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        });
    let server = async move { Ok(server.await?) };
    kit.run(consumer, admin, Some(Box::pin(server)), shutdown)
        .await
}

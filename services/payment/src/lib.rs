//! The payment service: charges each order once on OrderCreated through a
//! [`provider::PaymentProvider`], and refunds it once if the inventory service reports it
//! OUT_OF_STOCK.

mod handler;
pub mod provider;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use orderflow_platform::{CommonArgs, ServiceKit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The migrations of the payment database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/payment");

/// Settings of the payment service.
#[derive(Debug, Clone, Args)]
pub struct PaymentArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the payment service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_PAYMENT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_payment"
    )]
    pub database_url: String,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_PAYMENT_ADMIN_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    pub admin_listen: SocketAddr,
    /// Attempts at an unavailable payment provider before the payment counts as FAILED.
    #[arg(
        long = "charge-attempts",
        env = "ORDERFLOW_PAYMENT_CHARGE_ATTEMPTS",
        default_value_t = 5
    )]
    pub charge_attempts: u32,
    /// Attempts at an unavailable provider before a refund goes to the dead-letter topic.
    #[arg(
        long = "refund-attempts",
        env = "ORDERFLOW_PAYMENT_REFUND_ATTEMPTS",
        default_value_t = 8
    )]
    pub refund_attempts: u32,
}

pub async fn serve(args: PaymentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(
        args,
        Arc::new(provider::SimulatedProvider::new()),
        admin,
        shutdown,
    )
    .await
}

/// Runs the service with `provider` until `shutdown`.
pub async fn run(
    args: PaymentArgs,
    provider: Arc<dyn provider::PaymentProvider>,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings::new(&args.database_url),
        &MIGRATOR,
    )
    .await?;
    let kit = ServiceKit::start("payment", &args.common, pool.clone()).await?;
    let topics = kit.topics.clone();
    let handler = handler::PaymentHandler {
        provider,
        charge_attempts: args.charge_attempts,
        refund_attempts: args.refund_attempts,
    };
    let consumer = kit
        .consumer(&[&topics.orders, &topics.inventory], handler)
        .await?;
    kit.run(consumer, admin, None, shutdown).await
}

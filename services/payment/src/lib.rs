//! The payment service: charges each order once on OrderCreated through a
//! [`provider::PaymentProvider`], and refunds it once if the inventory service reports it
//! OUT_OF_STOCK.

mod config;
mod error;
mod handler;
pub mod provider;
mod store;

use std::sync::{Arc, LazyLock};

use orderflow_platform::ServiceKit;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::PaymentArgs;
pub use handler::PaymentHandler;

/// The migrations of the payment database: the payment service's own and the platform's.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    orderflow_platform::migrations::with_platform(sqlx::migrate!("../../migrations/payment"))
});

/// The topics this service consumes.
pub fn input_topics(topics: &orderflow_events::Topics) -> Vec<String> {
    vec![topics.orders.clone(), topics.inventory.clone()]
}

pub async fn serve(args: PaymentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let admin = TcpListener::bind(args.admin_listen).await?;
    let provider = provider::SimulatedProvider::with_retention(args.provider_key_retention);
    run(args, Arc::new(provider), admin, shutdown).await
}

/// Runs the service with `provider` until `shutdown`.
pub async fn run(
    args: PaymentArgs,
    provider: Arc<dyn provider::PaymentProvider>,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings {
            max_connections: args.common.database_max_connections,
            ..orderflow_db::DbSettings::new(args.database_url.clone())
        },
        &MIGRATOR,
    )
    .await?;
    let kit = ServiceKit::start("payment", &args.common, pool.clone(), admin.local_addr()?).await?;
    let topics = kit.topics.clone();
    let handler = handler::PaymentHandler::new(
        provider,
        pool.clone(),
        args.charge_attempts,
        args.refund_attempts,
    );
    let consumer = kit.consumer(&input_topics(&topics), handler).await?;
    kit.run(consumer, admin, None, shutdown).await
}

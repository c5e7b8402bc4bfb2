//! The inventory service: on PaymentProcessed PAID, deducts every line of the order or none
//! and publishes InventoryUpdated; serves stock administration over gRPC; publishes every
//! change of a SKU's stock on the compacted `catalogue` topic, the catalogue other services
//! validate against without calling this one.

mod config;
mod error;
mod grpc;
mod handler;
mod store;

use std::sync::LazyLock;

use orderflow_platform::ServiceKit;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::InventoryArgs;
pub use handler::InventoryHandler;
pub use store::Store;

/// The migrations of the inventory database: the inventory service's own and the platform's.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    orderflow_platform::migrations::with_platform(sqlx::migrate!("../../migrations/inventory"))
});

/// The topics this service consumes.
pub fn input_topics(topics: &orderflow_events::Topics) -> Vec<String> {
    vec![topics.payments.clone()]
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
    // Checked first: a service that would refuse every call should not start.
    let tls = args.tls.config(
        "inventory service's gRPC API",
        orderflow_tls::ClientCerts::Required,
    )?;
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings {
            max_connections: args.common.database_max_connections,
            ..orderflow_db::DbSettings::new(args.database_url.clone())
        },
        &MIGRATOR,
    )
    .await?;
    let kit =
        ServiceKit::start("inventory", &args.common, pool.clone(), admin.local_addr()?).await?;
    let topics = kit.topics.clone();
    let consumer = kit
        .consumer(&input_topics(&topics), handler::InventoryHandler)
        .await?;
    let store = store::Store::new(pool, topics.clone(), kit.outbox_signal.clone());
    store.announce_unpublished().await?;
    let api = grpc::InventoryApi::new(store);
    let server = grpc::serve(api, grpc, tls, shutdown.clone());
    kit.run(consumer, admin, Some(Box::pin(server)), shutdown)
        .await
}

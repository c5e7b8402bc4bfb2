//! The order service: the owner of orders. PlaceOrder stores a PENDING order and its
//! OrderCreated event in one statement, shared with the PlaceOrders that arrive meanwhile
//! ([`Placer`]); payment and inventory outcomes move the order
//! through the pure state machine, each change recorded with its OrderStatusChanged event.
//! PlaceOrder refuses SKUs the catalogue does not list and customers the directory lists as
//! blocked, judged against the service's own read models of the `catalogue` and `customers`
//! topics, never by calling another service.

mod batch;
mod config;
mod error;
mod grpc;
mod handler;
mod metrics;
mod placer;
mod reader;
mod store;

use std::sync::LazyLock;

use orderflow_platform::ServiceKit;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use batch::WORKERS as BATCH_WORKERS;
pub use config::OrderArgs;
pub use error::OrderError;
pub use handler::OrderHandler;
pub use metrics::{BatchMetrics, TransitionMetrics};
pub use placer::Placer;
pub use reader::HistoryReader;
pub use store::{Admission, History, OrderRecord, Placed, StatusChange, Store};

/// The migrations of the order database: the order service's own and the platform's.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    orderflow_platform::migrations::with_platform(sqlx::migrate!("../../migrations/order"))
});

/// The topics this service consumes: outcomes of its orders, and the catalogue and customer
/// directory it judges PlaceOrder against.
pub fn input_topics(topics: &orderflow_events::Topics) -> Vec<String> {
    vec![
        topics.payments.clone(),
        topics.inventory.clone(),
        topics.catalogue.clone(),
        topics.customers.clone(),
    ]
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
    // Checked first: a service that would refuse every call should not start.
    let tls = args.tls.config(
        "order service's gRPC API",
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
    let kit = ServiceKit::start("order", &args.common, pool.clone(), admin.local_addr()?).await?;
    let topics = kit.topics.clone();
    let handler = handler::OrderHandler {
        transitions: metrics::TransitionMetrics::register(&kit.metrics),
    };
    let consumer = kit.consumer(&input_topics(&topics), handler).await?;

    let api = grpc::OrderApi::new(
        store::Store::new(pool, kit.outbox_signal.clone()),
        kit.topics.clone(),
        metrics::BatchMetrics::register(&kit.metrics),
    );
    let server = grpc::serve(api, grpc, tls, shutdown.clone());
    kit.run(consumer, admin, Some(Box::pin(server)), shutdown)
        .await
}

//! The analytics service: figures over every order, projected from the events (orders per
//! status, revenue per currency per minute, the payment decline rate, stock-outs per SKU),
//! served to the gateway's operators (`GetStats`) and as Prometheus gauges. It publishes
//! nothing, and no other service knows it is there: it is a consumer added without changing
//! them. Everything it holds can be rebuilt from the log ([`replay`]).

mod config;
mod error;
mod gauges;
mod grpc;
mod handler;
mod render;
pub mod replay;
pub mod store;

use std::sync::LazyLock;

use orderflow_platform::ServiceKit;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::AnalyticsArgs;
pub use grpc::stats;
pub use handler::AnalyticsHandler;
pub use render::render;

/// The migrations of the analytics database: the analytics service's own and the platform's.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    orderflow_platform::migrations::with_platform(sqlx::migrate!("../../migrations/analytics"))
});

/// The topics this service consumes: the status changes, payments and stock outcomes.
pub fn input_topics(topics: &orderflow_events::Topics) -> Vec<String> {
    vec![
        topics.order_status.clone(),
        topics.payments.clone(),
        topics.inventory.clone(),
    ]
}

/// Binds the configured addresses and runs until `shutdown`.
pub async fn serve(args: AnalyticsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(args.grpc_listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(args, grpc, admin, shutdown).await
}

/// Runs the service on the given listeners until `shutdown`: the consumer, the gauges, the
/// gRPC API and the admin endpoint.
pub async fn run(
    args: AnalyticsArgs,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked first: a service that would refuse every call should not start.
    let tls = args.tls.config(
        "analytics service's gRPC API",
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
    let kit = ServiceKit::start(
        replay::SERVICE,
        &args.common,
        pool.clone(),
        admin.local_addr()?,
    )
    .await?;
    let consumer = kit
        .consumer(&input_topics(&kit.topics), AnalyticsHandler)
        .await?;
    let gauges = gauges::Gauges::register(&kit.metrics);
    tokio::spawn(gauges.run(pool.clone(), shutdown.clone()));
    let server = grpc::serve(grpc::AnalyticsApi { pool }, grpc, tls, shutdown.clone());
    kit.run(consumer, admin, Some(Box::pin(server)), shutdown)
        .await
}

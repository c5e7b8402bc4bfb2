//! The history service: every order's whole story from the event log, for audit. It consumes
//! every event topic and every consumer's dead-letter topics, keeps one row per message about
//! an order (type, topic, partition, offset, writer, event time, trace id), and serves each
//! order's timeline to the gateway. It publishes nothing, and no other service knows it is
//! there: it is a consumer added without changing them.

mod config;
pub mod dead_letters;
mod error;
mod grpc;
mod handler;
mod render;
pub mod replay;
pub mod store;
pub mod story;

use std::sync::LazyLock;
use std::time::Duration;

use orderflow_platform::ServiceKit;
use prometheus_client::metrics::counter::Counter;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::HistoryArgs;
pub use grpc::timeline;
pub use handler::HistoryHandler;
pub use render::render;

/// The migrations of the history database: the history service's own and the platform's.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    orderflow_platform::migrations::with_platform(sqlx::migrate!("../../migrations/history"))
});

/// How long the dead-letter follower may finish after shutdown.
const FOLLOWER_DRAIN: Duration = Duration::from_secs(4);

/// The event topics this service consumes: those of orders' flow, every event on them part of
/// one order's story (the dead-letter topics it follows by pattern, [`dead_letters::pattern`]).
pub fn input_topics(topics: &orderflow_events::Topics) -> Vec<String> {
    topics.order_flow().iter().map(|t| t.to_string()).collect()
}

/// Binds the configured addresses and runs until `shutdown`.
pub async fn serve(args: HistoryArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(args.grpc_listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(args, grpc, admin, shutdown).await
}

/// Runs the service on the given listeners until `shutdown`: the consumer of the event
/// topics, the dead-letter follower, the gRPC API and the admin endpoint.
pub async fn run(
    args: HistoryArgs,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked first: a service that would refuse every call should not start.
    let tls = args.tls.config(
        "history service's gRPC API",
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
        .consumer(&input_topics(&kit.topics), HistoryHandler)
        .await?;
    let recorded = Counter::default();
    kit.metrics.register(
        "history_dead_letters_recorded",
        "Dead letters recorded in their order's timeline",
        recorded.clone(),
    );
    let follower = dead_letters::DeadLetterFollower::new(
        &kit.common.bus.kafka,
        &kit.topics,
        pool.clone(),
        kit.health.clone(),
        recorded,
    )?;
    let following = tokio::spawn(follower.run(shutdown.clone()));
    let server = grpc::serve(grpc::HistoryApi { pool }, grpc, tls, shutdown.clone());
    let result = kit
        .run(consumer, admin, Some(Box::pin(server)), shutdown)
        .await;
    // The follower stops on the same shutdown; it finishes its row and commits, bounded.
    if tokio::time::timeout(FOLLOWER_DRAIN, following)
        .await
        .is_err()
    {
        tracing::warn!(drain = ?FOLLOWER_DRAIN, "dead-letter follower still busy at shutdown");
    }
    result
}

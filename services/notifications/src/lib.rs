//! The notifications service: every order status change becomes one notification to the
//! customer, delivered through a pluggable [`sink`]: an HTTP webhook (signed body, retries
//! with backoff, a dead letter once the budget is spent) or a file for local runs.
//!
//! It is a consumer added without changing any other service. The consumer loop writes each
//! status change as a row keyed by (order, status) in the service's own database, so a
//! redelivered event notifies nobody twice; the [`deliverer`] works through the pending rows
//! apart from the consumer, so a slow or failing receiver holds up no partition.

mod config;
pub mod deliverer;
mod handler;
pub mod notification;
pub mod sink;
pub mod store;

use std::sync::LazyLock;

use orderflow_platform::ServiceKit;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Budget, DEFAULT_FILE, NotificationsArgs, SinkArgs, SinkKind};
pub use handler::NotificationsHandler;

/// The service's name: its consumer group, dedup scope and dead-letter topics.
pub const SERVICE: &str = "notifications";

/// The migrations of the notifications database: the service's own and the platform's.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    orderflow_platform::migrations::with_platform(sqlx::migrate!("../../migrations/notifications"))
});

/// The topics this service consumes: the status changes.
pub fn input_topics(topics: &orderflow_events::Topics) -> Vec<String> {
    vec![topics.order_status.clone()]
}

/// Binds the admin address and runs until `shutdown`.
pub async fn serve(args: NotificationsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(args, admin, shutdown).await
}

/// Runs the service until `shutdown`: the consumer that records notifications, the deliverer
/// that hands them to the sink, and the admin endpoint.
pub async fn run(
    args: NotificationsArgs,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked first: a service that could deliver nothing should not start.
    let sink = sink::from_args(&args.sink)?;
    let pool = orderflow_db::connect_and_migrate(
        &orderflow_db::DbSettings {
            max_connections: args.common.database_max_connections,
            ..orderflow_db::DbSettings::new(args.database_url.clone())
        },
        &MIGRATOR,
    )
    .await?;
    let kit = ServiceKit::start(SERVICE, &args.common, pool.clone(), admin.local_addr()?).await?;
    let consumer = kit
        .consumer(&input_topics(&kit.topics), NotificationsHandler)
        .await?;
    let deliverer =
        deliverer::Deliverer::new(&kit, sink, args.sink.budget(), consumer.group.clone());
    // Beside the kit rather than as its API, which it would cut off after a short drain: on
    // shutdown the deliverer finishes its round (its transaction commits before `kit.run`
    // can close the pool, which waits for the connection), bounded by the process's grace.
    let (ran, delivered) = tokio::join!(
        kit.run(consumer, admin, None, shutdown.clone()),
        deliverer.run(shutdown)
    );
    ran.and(delivered)
}

//! `orderflow`: the production binary. `serve <component>` runs one component (what a
//! container, a unit file or `orderflow-dev up` starts); `schema` is the schema-evolution
//! gate; `dlq` inspects and redrives dead letters. Development tooling (up, down, status,
//! demo, bench) is the `orderflow-dev` binary's (dev/).

mod dlq;
mod schema;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "orderflow",
    version,
    about = "Event-driven order processing over Kafka, Avro and PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one component in the foreground until SIGTERM/Ctrl-C.
    Serve(ServeArgs),
    /// The schema-evolution gate.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Dead letters: list the topics, show their messages, redrive them once fixed.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// After SIGTERM, how long the component may take to finish in-flight work before the
    /// process gives up and exits non-zero.
    #[arg(long, env = "ORDERFLOW_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    shutdown_grace_secs: u64,
    #[command(subcommand)]
    component: Box<Serve>,
}

#[derive(Subcommand)]
enum Serve {
    /// The Confluent-compatible schema registry.
    Registry(orderflow_registry::RegistryArgs),
    /// The order service.
    Order(orderflow_order::OrderArgs),
    /// The payment service.
    Payment(orderflow_payment::PaymentArgs),
    /// The inventory service.
    Inventory(orderflow_inventory::InventoryArgs),
    /// The public gRPC gateway.
    Gateway(orderflow_gateway::GatewayArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, without a backtrace: this is a message for a person.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let shutdown = orderflow_platform::shutdown::on_signal();
            let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
            let overdue = {
                let shutdown = shutdown.clone();
                async move {
                    shutdown.cancelled().await;
                    tokio::time::sleep(grace).await;
                }
            };
            tokio::select! {
                result = serve(*args.component, shutdown) => result,
                _ = overdue => anyhow::bail!("in-flight work did not finish within {grace:?} of the shutdown request"),
            }
        }
        Command::Schema(command) => schema::run(command).await,
        Command::Dlq(command) => dlq::run(command).await,
    }
}

/// Runs one component until `shutdown`.
async fn serve(
    component: Serve,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    match component {
        Serve::Registry(args) => {
            orderflow_platform::telemetry::init("registry");
            orderflow_registry::serve(args, async move { shutdown.cancelled().await }).await
        }
        Serve::Order(args) => {
            orderflow_platform::telemetry::init("order");
            orderflow_order::serve(args, shutdown).await
        }
        Serve::Payment(args) => {
            orderflow_platform::telemetry::init("payment");
            orderflow_payment::serve(args, shutdown).await
        }
        Serve::Inventory(args) => {
            orderflow_platform::telemetry::init("inventory");
            orderflow_inventory::serve(args, shutdown).await
        }
        Serve::Gateway(args) => {
            orderflow_platform::telemetry::init("gateway");
            orderflow_gateway::serve(args, shutdown).await
        }
    }
}

//! `orderflow`: the production binary. `serve <component>` runs one component (what a
//! container, a unit file or `orderflow-dev up` starts); `schema` is the schema-evolution
//! gate; `dlq` inspects and redrives dead letters; `token` signs a bearer token; `timeline`
//! prints an order's story from the event log; `stats` the figures over every order; `replay`
//! rebuilds a projection from the log. Development tooling (up, down, status, demo,
//! bench) is the `orderflow-dev` binary's (dev/).

mod certs;
mod dlq;
mod gateway;
mod replay;
mod schema;
mod stats;
mod timeline;
mod token;

use std::ffi::OsString;
use std::future::Future;

use clap::{Parser, Subcommand};
use orderflow_platform::ServeArgs;
use orderflow_platform::config::{self, ConfigError};
use tokio_util::sync::CancellationToken;

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
    /// Run one component in the foreground until SIGTERM/Ctrl-C. Its settings come from its
    /// flags, then the environment, then the TOML file named by --config or ORDERFLOW_CONFIG,
    /// then the defaults: `orderflow serve <component> --help` lists them.
    #[command(subcommand)]
    Serve(Serve),
    /// The schema-evolution gate.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Dead letters: list the topics, show their messages, redrive them once fixed.
    #[command(subcommand)]
    Dlq(Box<dlq::DlqCommand>),
    /// Print a bearer token for a customer, signed with the development key (or --signing-key).
    Token(token::TokenArgs),
    /// Make a local CA and a certificate per component, for a deployment without its own PKI.
    Certs(certs::CertsArgs),
    /// Print an order's whole story from the event log: every event, who wrote it, when,
    /// and how long each hop took, with any dead letter and redrive.
    Timeline(timeline::TimelineArgs),
    /// Figures over every order (an operator's token): orders per status, revenue per
    /// minute, the decline rate, stock-outs per SKU.
    Stats(stats::StatsArgs),
    /// Rebuild a projection (the history service's timelines, the analytics figures) from
    /// the log; stop it first.
    Replay(Box<replay::ReplayArgs>),
}

#[derive(Subcommand)]
enum Serve {
    /// The Confluent-compatible schema registry.
    Registry(ComponentArgs),
    /// The order service.
    Order(ComponentArgs),
    /// The payment service.
    Payment(ComponentArgs),
    /// The inventory service.
    Inventory(ComponentArgs),
    /// The history service (every order's timeline).
    History(ComponentArgs),
    /// The analytics service (figures over every order).
    Analytics(ComponentArgs),
    /// The notifications service (customers told of each status change).
    Notifications(ComponentArgs),
    /// The public gRPC gateway.
    Gateway(ComponentArgs),
}

/// A component's command line, handed as it is to `orderflow_platform::config::load`, which
/// layers it over the environment, the configuration file and the defaults (and answers
/// `--help` with every setting).
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
struct ComponentArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<OsString>,
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(Cli::parse()));
    // Once the work is done, a client still closing on a blocking thread (librdkafka leaving
    // its group) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
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
        Command::Serve(component) => serve(component).await,
        Command::Schema(command) => schema::run(command).await,
        Command::Dlq(command) => dlq::run(*command).await,
        Command::Token(args) => token::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Timeline(args) => timeline::run(args).await,
        Command::Stats(args) => stats::run(args).await,
        Command::Replay(args) => replay::run(*args).await,
    }
}

/// Reads one component's settings and runs it until SIGTERM/Ctrl-C, then gives in-flight work
/// the shutdown grace period.
async fn serve(component: Serve) -> anyhow::Result<()> {
    match component {
        Serve::Registry(raw) => {
            let args = settings("orderflow serve registry", raw)?;
            until_shutdown("registry", args, |args, shutdown| {
                orderflow_registry::serve(args, async move { shutdown.cancelled().await })
            })
            .await
        }
        Serve::Order(raw) => {
            let args = settings("orderflow serve order", raw)?;
            until_shutdown("order", args, orderflow_order::serve).await
        }
        Serve::Payment(raw) => {
            let args = settings("orderflow serve payment", raw)?;
            until_shutdown("payment", args, orderflow_payment::serve).await
        }
        Serve::Inventory(raw) => {
            let args = settings("orderflow serve inventory", raw)?;
            until_shutdown("inventory", args, orderflow_inventory::serve).await
        }
        Serve::History(raw) => {
            let args = settings("orderflow serve history", raw)?;
            until_shutdown("history", args, orderflow_history::serve).await
        }
        Serve::Analytics(raw) => {
            let args = settings("orderflow serve analytics", raw)?;
            until_shutdown("analytics", args, orderflow_analytics::serve).await
        }
        Serve::Notifications(raw) => {
            let args = settings("orderflow serve notifications", raw)?;
            until_shutdown("notifications", args, orderflow_notifications::serve).await
        }
        Serve::Gateway(raw) => {
            let args = settings("orderflow serve gateway", raw)?;
            until_shutdown("gateway", args, orderflow_gateway::serve).await
        }
    }
}

/// The settings of the component run as `command`, from its command line and this process's
/// environment and files. Help and usage errors are printed the way clap prints them, and
/// end the process.
fn settings<T: clap::Args>(
    command: &'static str,
    raw: ComponentArgs,
) -> anyhow::Result<ServeArgs<T>> {
    match config::load(command, &config::Sources::process(raw.args)) {
        Ok(args) => Ok(args),
        Err(ConfigError::Command(e)) => e.exit(),
        Err(e) => Err(e.into()),
    }
}

/// Runs `component` until the shutdown signal, with logs set up as `args` says; fails if its
/// in-flight work outlasts the grace period.
async fn until_shutdown<T, F, Fut>(
    name: &'static str,
    args: ServeArgs<T>,
    component: F,
) -> anyhow::Result<()>
where
    T: clap::Args,
    F: FnOnce(T, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let telemetry = orderflow_platform::telemetry::init(name, &args.telemetry)?;
    let shutdown = orderflow_platform::shutdown::on_signal();
    let grace = args.shutdown_grace();
    let overdue = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    let result = tokio::select! {
        result = component(args.component, shutdown) => result,
        _ = overdue => Err(anyhow::anyhow!("in-flight work did not finish within {grace:?} of the shutdown request")),
    };
    telemetry.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_component_s_command_line_reaches_its_settings_unchanged() {
        for words in [
            vec!["--kafka-brokers", "k:9092", "--config", "order.toml"],
            vec!["--help"],
            vec![],
        ] {
            let argv = ["orderflow", "serve", "order"]
                .into_iter()
                .chain(words.clone());
            let cli = Cli::try_parse_from(argv).expect("parses");
            let Command::Serve(Serve::Order(raw)) = cli.command else {
                panic!("not serve order")
            };
            assert_eq!(raw.args, words, "{words:?}");
        }
    }

    #[test]
    fn a_component_s_settings_parse_from_its_own_words() {
        let no_env: [(&str, &str); 0] = [];
        let sources = config::Sources::fixed(
            ["--grpc-listen", "0.0.0.0:1", "--log-format", "json"],
            no_env,
        );
        let args: ServeArgs<orderflow_order::OrderArgs> =
            config::load("orderflow serve order", &sources).expect("settings");
        assert_eq!(args.component.grpc_listen.to_string(), "0.0.0.0:1");
        assert_eq!(
            args.telemetry.log_format,
            orderflow_platform::telemetry::LogFormat::Json
        );
    }
}

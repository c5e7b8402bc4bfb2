//! `orderflow-dev`: what a developer runs on this machine. `./orderflow up|down|status|demo|
//! bench` land here; the production commands (`serve`, `dlq`, `schema`) are the `orderflow`
//! binary's.

use clap::{Parser, Subcommand};
use orderflow_dev::{bench, demo, local};

#[derive(Parser)]
#[command(
    name = "orderflow-dev",
    version,
    about = "Run orderflow on this machine: up, down, status, demo, bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole system locally: broker, registry (with the schemas), services, gateway.
    Up(local::UpArgs),
    /// Stop everything `up` started (gracefully, then forcibly after a grace period).
    Down(local::HomeArgs),
    /// Show what `up` started and whether it is healthy.
    Status(local::HomeArgs),
    /// Walk the seed scenario against a running gateway and print the streams.
    Demo(demo::DemoArgs),
    /// Benchmark: orders/s and time to COMPLETED under load, beside this machine's limits.
    Bench(Box<bench::BenchArgs>),
    /// Run a local tansu broker in the foreground until SIGTERM (what the test suite uses).
    Broker(local::BrokerArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Up(args) => local::up(args).await,
        Command::Down(args) => local::down(args).await,
        Command::Status(args) => local::status(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(*args).await,
        Command::Broker(args) => local::broker(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, without a backtrace: this is a message for a person.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command's flags are consistent (clap checks unique ids, e.g. `bench`, which
    /// takes both `up`'s and the services' Kafka settings).
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

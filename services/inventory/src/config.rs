//! The inventory service's settings: what `orderflow serve inventory` reads (flags,
//! environment, `--config` file; see `orderflow_platform::config`).

use std::net::SocketAddr;

use clap::Args;
use orderflow_platform::{CommonArgs, Secret};

/// Settings of the inventory service.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the inventory service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_INVENTORY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_inventory",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Address of the stock-administration gRPC API the gateway calls.
    #[arg(
        long = "grpc-listen",
        env = "ORDERFLOW_INVENTORY_GRPC_LISTEN",
        default_value = "127.0.0.1:9203"
    )]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_INVENTORY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9103"
    )]
    pub admin_listen: SocketAddr,
    /// TLS of the gRPC API; only callers with a certificate from the client CA (the
    /// gateway) are served.
    #[command(flatten)]
    pub tls: orderflow_tls::ServerTls,
}

//! The order service's settings: what `orderflow serve order` reads (flags, environment,
//! `--config` file; see `orderflow_platform::config`).

use std::net::SocketAddr;

use clap::Args;
use orderflow_platform::{CommonArgs, Secret};

/// Settings of the order service.
#[derive(Debug, Clone, Args)]
pub struct OrderArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the order service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_order",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Address of the gRPC API the gateway calls.
    #[arg(
        long = "grpc-listen",
        env = "ORDERFLOW_ORDER_GRPC_LISTEN",
        default_value = "127.0.0.1:9201"
    )]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_ORDER_ADMIN_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub admin_listen: SocketAddr,
    /// TLS of the gRPC API; only callers with a certificate from the client CA (the
    /// gateway) are served.
    #[command(flatten)]
    pub tls: orderflow_tls::ServerTls,
}

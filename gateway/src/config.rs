//! The gateway's settings: what `orderflow serve gateway` reads (flags, environment,
//! `--config` file; see `orderflow_platform::config`). The gateway keeps no outbox and no
//! dedup records, so it has no retention settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use orderflow_auth::AuthArgs;
use orderflow_platform::EventBusArgs;

/// Settings of the gateway.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The broker and registry it reads `order-status` through.
    #[command(flatten)]
    pub bus: EventBusArgs,
    /// How callers prove who they are.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// TLS of the public API (client certificates optional, when a client CA is given).
    #[command(flatten)]
    pub tls: orderflow_tls::ServerTls,
    /// The CA of the order, inventory, history and analytics services' certificates; their URLs are then
    /// `https://`. Without it they are called in plaintext.
    #[arg(long = "owner-ca-file", env = "ORDERFLOW_OWNER_CA_FILE")]
    pub owner_ca: Option<PathBuf>,
    /// The certificate the gateway presents to the order, inventory, history and analytics services, which
    /// serve only callers with one (mutual TLS).
    #[arg(
        long = "owner-cert-file",
        env = "ORDERFLOW_OWNER_CERT_FILE",
        requires = "owner_key"
    )]
    pub owner_cert: Option<PathBuf>,
    /// The private key of `--owner-cert-file`.
    #[arg(
        long = "owner-key-file",
        env = "ORDERFLOW_OWNER_KEY_FILE",
        requires = "owner_cert"
    )]
    pub owner_key: Option<PathBuf>,
    /// Address clients connect to.
    #[arg(
        long = "listen",
        env = "ORDERFLOW_GATEWAY_LISTEN",
        default_value = "127.0.0.1:9200"
    )]
    pub listen: SocketAddr,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_GATEWAY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9100"
    )]
    pub admin_listen: SocketAddr,
    /// The order service's gRPC URL; several instances: their URLs, comma-separated.
    #[arg(
        long = "order-url",
        env = "ORDERFLOW_ORDER_URL",
        default_value = "http://127.0.0.1:9201"
    )]
    pub order_url: String,
    /// The inventory service's gRPC URL; several instances: their URLs, comma-separated.
    #[arg(
        long = "inventory-url",
        env = "ORDERFLOW_INVENTORY_URL",
        default_value = "http://127.0.0.1:9203"
    )]
    pub inventory_url: String,
    /// The history service's gRPC URL (GetOrderTimeline); several instances: their URLs,
    /// comma-separated.
    #[arg(
        long = "history-url",
        env = "ORDERFLOW_HISTORY_URL",
        default_value = "http://127.0.0.1:9204"
    )]
    pub history_url: String,
    /// The analytics service's gRPC URL (GetStats); several instances: their URLs,
    /// comma-separated.
    #[arg(
        long = "analytics-url",
        env = "ORDERFLOW_ANALYTICS_URL",
        default_value = "http://127.0.0.1:9205"
    )]
    pub analytics_url: String,
    /// Longest a unary call may take, in milliseconds.
    #[arg(
        long = "request-timeout-ms",
        env = "ORDERFLOW_GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,
    /// Calls in progress at once across all connections; beyond it calls are shed.
    #[arg(
        long = "max-concurrent-requests",
        env = "ORDERFLOW_GATEWAY_MAX_CONCURRENT",
        default_value_t = 1024
    )]
    pub max_concurrent_requests: usize,
    /// WatchOrder streams open at once across all connections; beyond it a new one is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(
        long = "max-watch-streams",
        env = "ORDERFLOW_GATEWAY_MAX_WATCH_STREAMS",
        default_value_t = 10_000
    )]
    pub max_watch_streams: usize,
    /// WatchOrder streams open at once on one client connection; beyond it a new one is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(
        long = "max-watch-streams-per-connection",
        env = "ORDERFLOW_GATEWAY_MAX_WATCH_STREAMS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_watch_streams_per_connection: usize,
    /// WatchOrder streams one caller may have open at once, over all its connections;
    /// beyond it a new one is refused with RESOURCE_EXHAUSTED.
    #[arg(
        long = "max-watch-streams-per-caller",
        env = "ORDERFLOW_GATEWAY_MAX_WATCH_STREAMS_PER_CALLER",
        default_value_t = 50
    )]
    pub max_watch_streams_per_caller: usize,
    /// Calls per second one caller may make on average (per client address when
    /// authentication is off); beyond it calls are refused with RESOURCE_EXHAUSTED.
    #[arg(
        long = "rate-limit-per-sec",
        env = "ORDERFLOW_GATEWAY_RATE_LIMIT_PER_SEC",
        default_value_t = 50
    )]
    pub rate_limit_per_sec: u32,
    /// Calls one caller may make at once above the average rate.
    #[arg(
        long = "rate-limit-burst",
        env = "ORDERFLOW_GATEWAY_RATE_LIMIT_BURST",
        default_value_t = 100
    )]
    pub rate_limit_burst: u32,
    /// Largest request message accepted, in bytes (beyond it tonic answers OUT_OF_RANGE).
    #[arg(
        long = "max-message-bytes",
        env = "ORDERFLOW_GATEWAY_MAX_MESSAGE_BYTES",
        default_value_t = 256 * 1024
    )]
    pub max_message_bytes: usize,
    /// Largest request metadata (all headers together) accepted, in bytes.
    #[arg(
        long = "max-metadata-bytes",
        env = "ORDERFLOW_GATEWAY_MAX_METADATA_BYTES",
        default_value_t = 16 * 1024
    )]
    pub max_metadata_bytes: u32,
    /// Seconds between HTTP/2 keepalive pings to each client; a client that does not answer
    /// one within `--keepalive-timeout-secs` is gone, and its streams end.
    #[arg(
        long = "keepalive-interval-secs",
        env = "ORDERFLOW_GATEWAY_KEEPALIVE_INTERVAL_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub keepalive_interval_secs: u64,
    /// Seconds a client has to answer a keepalive ping.
    #[arg(
        long = "keepalive-timeout-secs",
        env = "ORDERFLOW_GATEWAY_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub keepalive_timeout_secs: u64,
}

impl GatewayArgs {
    /// The TLS the gateway calls the order, inventory, history and analytics services with, if any.
    pub fn owner_tls(&self) -> Option<orderflow_tls::ClientTls> {
        let ca = self.owner_ca.clone()?;
        let identity = self.owner_cert.clone().zip(self.owner_key.clone());
        Some(orderflow_tls::ClientTls { ca, identity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_platform::config::{ConfigError, Sources, load};

    fn gateway(args: &[&str], file: &str) -> Result<GatewayArgs, ConfigError> {
        let args = args.iter().chain(&["--config", "gateway.toml"]);
        let no_env: [(&str, &str); 0] = [];
        let sources = Sources::fixed(args, no_env).with_file("gateway.toml", file);
        load("orderflow serve gateway", &sources)
    }

    #[test]
    fn the_gateway_takes_its_own_settings_and_no_retention() {
        let args = gateway(
            &["--listen", "0.0.0.0:50051"],
            "order-url = \"http://order:50052\"",
        )
        .expect("the gateway's own settings");
        assert_eq!(args.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(args.order_url, "http://order:50052");
        assert_eq!(args.bus.kafka.brokers, "127.0.0.1:9092");

        for retention in [
            "--outbox-retention",
            "--dedup-retention",
            "--broker-retention",
            "--purge-interval",
            "--purge-batch",
        ] {
            assert!(
                gateway(&[retention, "1h"], "").is_err(),
                "{retention} is not a gateway flag"
            );
            let key = retention.trim_start_matches('-');
            assert!(
                matches!(
                    gateway(&[], &format!("{key} = \"1h\"")),
                    Err(ConfigError::UnknownKeys { .. })
                ),
                "{key} is not a gateway setting"
            );
        }
    }
}

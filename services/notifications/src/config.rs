//! The notifications service's settings: what `orderflow serve notifications` reads (flags,
//! environment, `--config` file; see `orderflow_platform::config`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use orderflow_platform::{CommonArgs, Secret};

/// Settings of the notifications service.
#[derive(Debug, Clone, Args)]
pub struct NotificationsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the notifications service's own database (created if absent).
    #[arg(
        long = "database-url",
        env = "ORDERFLOW_NOTIFICATIONS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orderflow_notifications",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Address of the HTTP admin endpoint (`/health`, `/metrics`).
    #[arg(
        long = "admin-listen",
        env = "ORDERFLOW_NOTIFICATIONS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9106"
    )]
    pub admin_listen: SocketAddr,
    #[command(flatten)]
    pub sink: SinkArgs,
}

/// The file sink's file unless one is configured: relative to the working directory.
pub const DEFAULT_FILE: &str = "notifications.jsonl";

/// Where notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    /// One JSON line per notification appended to `--file`: for local runs.
    File,
    /// An HTTP POST of the JSON body to `--webhook-url`, signed with `--webhook-secret`.
    Webhook,
}

/// The sink and its delivery budget.
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// The sink notifications are delivered to.
    #[arg(
        long = "sink",
        env = "ORDERFLOW_NOTIFICATIONS_SINK",
        value_enum,
        default_value = "file"
    )]
    pub kind: SinkKind,
    /// The file sink's file (created if absent; appended to).
    #[arg(
        long = "file",
        env = "ORDERFLOW_NOTIFICATIONS_FILE",
        default_value = DEFAULT_FILE
    )]
    pub file: PathBuf,
    /// The webhook's URL (http or https).
    #[arg(long = "webhook-url", env = "ORDERFLOW_NOTIFICATIONS_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The secret the webhook body is signed with (HMAC-SHA256), shared with the receiver.
    #[arg(
        long = "webhook-secret",
        env = "ORDERFLOW_NOTIFICATIONS_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<Secret>,
    /// How long one webhook call may take, in milliseconds.
    #[arg(
        long = "webhook-timeout-ms",
        env = "ORDERFLOW_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub webhook_timeout_ms: u64,
    /// Delivery attempts per notification before it is dead-lettered.
    #[arg(
        long = "max-attempts",
        env = "ORDERFLOW_NOTIFICATIONS_MAX_ATTEMPTS",
        default_value_t = 10
    )]
    pub max_attempts: u32,
    /// The first retry's delay, in milliseconds; each later one doubles, with jitter.
    #[arg(
        long = "retry-base-ms",
        env = "ORDERFLOW_NOTIFICATIONS_RETRY_BASE_MS",
        default_value_t = 1_000
    )]
    pub retry_base_ms: u64,
    /// The longest delay between two attempts, in milliseconds.
    #[arg(
        long = "retry-cap-ms",
        env = "ORDERFLOW_NOTIFICATIONS_RETRY_CAP_MS",
        default_value_t = 300_000
    )]
    pub retry_cap_ms: u64,
}

/// How often, and how patiently, one notification is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Budget {
    /// The delay before attempt `attempts + 1`, after `attempts` failed ones.
    pub fn delay(&self, attempts: u32) -> Duration {
        orderflow_retry::backoff(attempts.saturating_sub(1), self.base, self.cap)
    }
}

impl SinkArgs {
    pub fn budget(&self) -> Budget {
        Budget {
            max_attempts: self.max_attempts.max(1),
            base: Duration::from_millis(self.retry_base_ms.max(1)),
            cap: Duration::from_millis(self.retry_cap_ms.max(self.retry_base_ms).max(1)),
        }
    }
}

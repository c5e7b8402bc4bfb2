//! Structured logs with `tracing`: human-readable by default, JSON with `--log-format json`
//! (`ORDERFLOW_LOG_FORMAT=json`), filtered by RUST_LOG (default `info`).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Compact lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The log settings every component has.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// How log lines are written; RUST_LOG filters them (default `info`).
    #[arg(
        long = "log-format",
        env = "ORDERFLOW_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(service: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rdkafka=warn,sqlx=warn,h2=warn,tower=warn,hyper=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}

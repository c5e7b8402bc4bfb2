//! Structured logs with `tracing`: human-readable by default, JSON with ORDERFLOW_LOG_FORMAT=json,
//! filtered by RUST_LOG (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rdkafka=warn,sqlx=warn,h2=warn,tower=warn,hyper=warn")
    });
    let json = std::env::var("ORDERFLOW_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}

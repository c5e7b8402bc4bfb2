//! Structured logs with `tracing`: human-readable by default, JSON with `--log-format json`
//! (`ORDERFLOW_LOG_FORMAT=json`), filtered by RUST_LOG (default `info`). With
//! `--otlp-endpoint` (`ORDERFLOW_OTLP_ENDPOINT`) the same spans are also exported over OTLP/gRPC
//! (to Jaeger, or any OpenTelemetry collector), joined across services into one trace per
//! order by the `traceparent` carried in gRPC metadata and Kafka headers ([`crate::trace`]).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Compact lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The log and trace settings every component has.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// How log lines are written; RUST_LOG filters them (default `info`).
    #[arg(
        long = "log-format",
        env = "ORDERFLOW_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// Where to export spans over OTLP/gRPC (a collector or Jaeger, e.g.
    /// `http://localhost:4317`); none are exported unless set.
    #[arg(long = "otlp-endpoint", env = "ORDERFLOW_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Whether spans are being exported: only then do spans carry OpenTelemetry contexts, and
/// only then does [`crate::trace`] open the spans that exist for the trace alone.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How long [`Telemetry::shutdown`] waits for the last spans to be exported.
const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

/// The installed telemetry: keeps the span exporter until [`Telemetry::shutdown`].
#[must_use = "call shutdown() at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (waiting at most a few seconds for the collector) and
    /// stops exporting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The exporter's own thread does the flush; wait for it off the async workers.
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_PATIENCE, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the last spans were not exported"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the last spans were not exported"),
            Err(_) => tracing::warn!(
                "the last spans were not exported within {FLUSH_PATIENCE:?}; the collector is slow or gone"
            ),
        }
    }
}

/// Installs the global subscriber: logs as `args` says and, with an OTLP endpoint, span export
/// under the service name `orderflow-<service>`. Safe to call more than once (later calls
/// install nothing). Must be called inside a Tokio runtime when exporting (the exporter's
/// gRPC channel runs on it). An endpoint that is not a URL is refused; one that does not
/// answer costs only the spans.
pub fn init(service: &str, args: &TelemetryArgs) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rdkafka=warn,sqlx=warn,h2=warn,tower=warn,hyper=warn")
    });
    let provider = match args.otlp_endpoint.as_deref() {
        Some(endpoint) => Some(
            exporter(service, endpoint)
                .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?,
        ),
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("orderflow"))
            .with_threads(false)
    });
    // Colours only for a person at a terminal: a log file (`./orderflow up` sends each
    // component's output to one) or a collector gets plain text; `NO_COLOR` (not empty) turns
    // them off.
    let colours = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(colours);
    let fmt = match args.log_format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.compact().boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        return Ok(Telemetry { provider: None });
    }
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    match &args.otlp_endpoint {
        Some(endpoint) => {
            tracing::info!(service, otlp_endpoint = %endpoint, "telemetry initialised; exporting spans")
        }
        None => tracing::info!(service, "telemetry initialised"),
    }
    Ok(Telemetry { provider })
}

/// A tracer provider that batches spans and sends them to `endpoint` over OTLP/gRPC.
fn exporter(service: &str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let collector = endpoint.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    });
    if !collector {
        anyhow::bail!("not an http:// or https:// URL of a collector (e.g. http://localhost:4317)");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(format!("orderflow-{service}"))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_must_be_a_collector_s_url() {
        for bad in ["localhost:4317", "jaeger", "ftp://jaeger:4317", "http://"] {
            let error = exporter("test", bad).expect_err(bad).to_string();
            assert!(
                error.contains("http://") || error.contains("invalid"),
                "{bad}: {error}"
            );
        }
        exporter("test", "http://127.0.0.1:4317").expect("a collector's URL");
    }
}

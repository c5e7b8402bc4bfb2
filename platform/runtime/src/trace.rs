//! W3C trace context (`traceparent`) across services: in gRPC metadata from the gateway to the
//! services it calls, in outbox rows and in Kafka headers from a producer to its consumers. One
//! order's journey shares one trace id in the logs; when spans are exported
//! ([`crate::telemetry`], `--otlp-endpoint`) the header also names the span that caused the
//! next hop, so the exported spans form one tree: the gateway's call, the order service's
//! call, the relay's publish of each event, each consumer's handling of it, and so on.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::time::Duration;

use tower_http::classify::GrpcFailureClass;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::exporting;

/// The header (Kafka) and metadata key (gRPC) that carries the trace context.
pub const HEADER: &str = "traceparent";

/// A `traceparent` value: `00-<32 hex trace id>-<16 hex span id>-01`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
}

impl TraceParent {
    /// A new trace (at the edge: an order placed).
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: hex::encode(rand::random::<[u8; 16]>()),
            span_id: new_span_id(),
        }
    }

    /// A child span in the same trace (a service handling a message of this trace).
    pub fn child(&self) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: new_span_id(),
        }
    }

    /// Parses a header value, or `None` when it is not a valid version-00 traceparent.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('-');
        let (version, trace_id, span_id, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        (version == "00"
            && hex(trace_id, 32)
            && hex(span_id, 16)
            && !zero(trace_id)
            && !zero(span_id)
            && parts.next().is_none())
        .then(|| TraceParent {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_ascii_lowercase(),
        })
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// The trace context of `span`, when spans are exported (otherwise spans have none).
    pub fn of_span(span: &Span) -> Option<Self> {
        if !exporting() {
            return None;
        }
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| TraceParent {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
        })
    }

    /// The context for what the current work causes (an outbox row): the current span's when
    /// spans are exported, else a new trace.
    pub fn current_or_new() -> Self {
        Self::of_span(&Span::current()).unwrap_or_else(Self::new_root)
    }

    /// As an OpenTelemetry parent: a sampled span of another process.
    fn remote_context(&self) -> Option<Context> {
        let trace_id = TraceId::from_hex(&self.trace_id).ok()?;
        let span_id = SpanId::from_hex(&self.span_id).ok()?;
        let span_context = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Some(Context::new().with_remote_span_context(span_context))
    }
}

/// Makes `span` (not yet entered) a child of `parent` in the exported trace; nothing when
/// spans are not exported.
pub fn adopt(span: &Span, parent: &TraceParent) {
    if !exporting() {
        return;
    }
    if let Some(context) = parent.remote_context()
        && let Err(e) = span.set_parent(context)
    {
        tracing::debug!(error = %e, "span not joined to its trace");
    }
}

/// The span of one gRPC call a server receives, named after its method; a child of the
/// caller's span when the call carries a `traceparent`. For tower-http's `TraceLayer`
/// (`make_span_with`), on the gateway and on every service's API.
pub fn grpc_span<B>(request: &http::Request<B>) -> Span {
    let span = tracing::info_span!("grpc", method = %request.uri().path());
    if let Some(parent) = request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
    {
        adopt(&span, &parent);
    }
    span
}

/// The request a gRPC server's layers see.
type GrpcRequest = http::Request<tonic::body::Body>;

/// The `TraceLayer` [`grpc_layer`] gives.
pub type GrpcTraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    fn(&GrpcRequest) -> Span,
    tower_http::trace::DefaultOnRequest,
    tower_http::trace::DefaultOnResponse,
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    fn(GrpcFailureClass, Duration, &Span),
>;

/// tower-http's `TraceLayer` for a gRPC server: spans from [`grpc_span`], failures logged by
/// `log_failure`.
pub fn grpc_layer() -> GrpcTraceLayer {
    tower_http::trace::TraceLayer::new_for_grpc()
        .make_span_with(grpc_span::<tonic::body::Body> as fn(&GrpcRequest) -> Span)
        .on_failure(log_failure as fn(GrpcFailureClass, Duration, &Span))
}

/// Logs a failed call at the level its code deserves: a fault of this service at ERROR, a
/// passing condition (unavailable, overloaded, too slow) at WARN, and a refusal of the
/// caller's request (invalid, not found, not allowed) at DEBUG: it is the caller's answer,
/// not this service's trouble.
fn log_failure(failure: GrpcFailureClass, latency: Duration, _span: &Span) {
    let latency_ms = latency.as_millis();
    let code = match failure {
        GrpcFailureClass::Code(code) => tonic::Code::from_i32(code.get()),
        GrpcFailureClass::Error(error) => {
            tracing::error!(%error, latency_ms, "call failed");
            return;
        }
    };
    use tonic::Code::*;
    match code {
        Unknown | Internal | DataLoss | Unimplemented => {
            tracing::error!(?code, latency_ms, "call failed")
        }
        Unavailable | DeadlineExceeded | ResourceExhausted | Aborted => {
            tracing::warn!(?code, latency_ms, "call failed")
        }
        _ => tracing::debug!(?code, latency_ms, "call refused"),
    }
}

/// A client interceptor that passes the current span's context on to the called service as
/// `traceparent` metadata (when spans are exported).
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagate;

impl tonic::service::Interceptor for Propagate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(current) = TraceParent::of_span(&Span::current())
            && let Ok(value) = current.header().parse()
        {
            request.metadata_mut().insert(HEADER, value);
        }
        Ok(request)
    }
}

/// A channel whose calls carry the caller's trace context.
pub type TracedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Propagate>;

fn new_span_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_children_keep_the_trace() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.header()), Some(root.clone()));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(TraceParent::parse("garbage"), None);
        assert_eq!(TraceParent::parse("01-aa-bb-01"), None);
    }

    #[test]
    fn all_zero_ids_are_invalid_and_hex_is_read_in_either_case() {
        let zeros = format!("00-{}-{}-01", "0".repeat(32), "ab".repeat(8));
        assert_eq!(
            TraceParent::parse(&zeros),
            None,
            "W3C: an all-zero trace id is invalid"
        );
        let upper = format!("00-{}-{}-01", "AB".repeat(16), "CD".repeat(8));
        let parsed = TraceParent::parse(&upper).expect("valid");
        assert_eq!(parsed.trace_id, "ab".repeat(16));
        assert!(parsed.remote_context().is_some());
    }

    #[test]
    fn nothing_is_joined_or_propagated_while_spans_are_not_exported() {
        let span = tracing::info_span!("test");
        adopt(&span, &TraceParent::new_root());
        assert_eq!(TraceParent::of_span(&span), None);
        let request = tonic::service::Interceptor::call(&mut Propagate, tonic::Request::new(()))
            .expect("never refuses");
        assert!(request.metadata().get(HEADER).is_none());
    }
}

//! Tracing across services: every process of a system exports its spans over OTLP to a small
//! OTLP/gRPC receiver in this test (as it would to Jaeger or a collector). One order's spans
//! form one trace, a single tree rooted at the gateway's PlaceOrder: the order service's call
//! and its placer's write, each relay's publication of each event, and each consumer's
//! handling of it, in every service that takes part.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use orderflow_e2e::process::{Databases, Options, Proc, ProcessSystem};
use orderflow_e2e::{order_request, set_stock, status_name, wait_for, watch_to_end};
use orderflow_proto::v1 as pb;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// One span as an OTLP exporter sent it.
#[derive(Debug, Clone)]
struct Collected {
    /// The exporting process's `service.name`.
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Collected>>>,
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("not poisoned");
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                spans.push(Collected {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    /// Listens on a free local port; returns the endpoint to give the exporters.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        format!("http://{address}")
    }

    fn trace(&self, trace_id: &str) -> Vec<Collected> {
        let spans = self.spans.lock().expect("not poisoned");
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// Why `spans` are not yet one complete tree (a single root, every parent present), or
/// `None` when they are.
fn incomplete(spans: &[Collected]) -> Option<String> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count();
    if roots != 1 {
        return Some(format!("{roots} root spans"));
    }
    let orphans: Vec<String> = spans
        .iter()
        .filter(|s| !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_str()))
        .map(|s| format!("{} {}", s.service, s.name))
        .collect();
    (!orphans.is_empty()).then(|| format!("spans whose parent has not arrived: {orphans:?}"))
}

/// The services that take part in an order's flow, by their exported `service.name`.
const EVERY_SERVICE: [&str; 7] = [
    "orderflow-gateway",
    "orderflow-order",
    "orderflow-payment",
    "orderflow-inventory",
    "orderflow-history",
    "orderflow-analytics",
    "orderflow-notifications",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_every_service() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut system = ProcessSystem::start_with(
        Databases::shared().await,
        Options {
            otlp_endpoint: Some(endpoint),
            ..Options::default()
        },
    )
    .await;
    // The consumers added beside the flow run too: their spans belong to the trace as well.
    for added in [Proc::History, Proc::Analytics, Proc::Notifications] {
        system.start_proc(added).await;
    }
    set_stock(
        system.inventory().await,
        (system.orders("tracy").await, "tracy"),
        "traced-widget",
        10,
    )
    .await;
    let mut orders = system.orders("tracy").await;
    let order = orders
        .place_order(order_request("tracy", "traced-widget", 2, "pm_card_visa"))
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order
        .expect("an order");
    let statuses = watch_to_end(&mut orders, &order.order_id, 0).await;
    assert_eq!(
        statuses.last().map(|(_, s)| *s),
        Some(status_name(pb::OrderStatus::Completed as i32))
    );

    // The timeline names the order's trace: every event of it carries the same trace id.
    let trace_id = wait_for(
        "the timeline to hold the order's story",
        Duration::from_secs(30),
        || {
            let mut orders = orders.clone();
            let order_id = order.order_id.clone();
            async move {
                let timeline = orders
                    .get_order_timeline(pb::GetOrderTimelineRequest { order_id })
                    .await
                    .ok()?
                    .into_inner();
                let ids: BTreeSet<String> = timeline
                    .entries
                    .iter()
                    .map(|e| e.trace_id.clone())
                    .collect();
                (timeline.entries.len() >= 5 && ids.len() == 1).then(|| ids.into_iter().next())?
            }
        },
    )
    .await;

    // Its spans arrive from every process, and form one tree.
    let spans = wait_for(
        "the order's spans from every service, as one tree",
        Duration::from_secs(60),
        || {
            let spans = receiver.trace(&trace_id);
            async move {
                let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
                (EVERY_SERVICE.iter().all(|s| services.contains(s)) && incomplete(&spans).is_none())
                    .then_some(spans.clone())
            }
        },
    )
    .await;
    let by_id: HashMap<&str, &Collected> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |s: &Collected| by_id.get(s.parent_span_id.as_str()).copied();

    // The root is the gateway's PlaceOrder; the order service's call is its child.
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root");
    assert_eq!(root.service, "orderflow-gateway", "{root:?}");
    assert_eq!(
        root.attributes.get("method").map(String::as_str),
        Some("/orderflow.v1.OrderService/PlaceOrder"),
        "{root:?}"
    );
    let placed = spans
        .iter()
        .find(|s| s.service == "orderflow-order" && s.name == "grpc")
        .expect("the order service's PlaceOrder span");
    assert_eq!(
        parent(placed).map(|p| p.span_id.as_str()),
        Some(root.span_id.as_str())
    );

    // The order service's placer wrote the order in a worker's `batch` span, under that call
    // (a lone order's batch is its own), so the write's statement is in the order's trace.
    let under = |span: &Collected, ancestor: &Collected| {
        let mut at = parent(span);
        while let Some(p) = at {
            if p.span_id == ancestor.span_id {
                return true;
            }
            at = parent(p);
        }
        false
    };
    let batch = spans
        .iter()
        .find(|s| {
            s.service == "orderflow-order"
                && s.name == "batch"
                && s.attributes.get("queue").map(String::as_str) == Some("placer")
        })
        .unwrap_or_else(|| panic!("no placer batch span in the order's trace: {spans:#?}"));
    assert!(under(batch, placed), "{batch:?} not under {placed:?}");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "place_all" && parent(s).map(|p| &p.span_id) == Some(&batch.span_id)),
        "no place_all span under {batch:?}: {spans:#?}"
    );

    // Every message handled is the child of its publication, in the service that wrote it.
    let handled: Vec<&Collected> = spans.iter().filter(|s| s.name == "message").collect();
    for span in &handled {
        let publish = parent(span).expect("a parent");
        assert_eq!(publish.name, "publish", "{span:?} under {publish:?}");
        assert_eq!(
            publish.attributes.get("topic"),
            span.attributes.get("topic"),
            "{span:?} under {publish:?}"
        );
    }
    // Each service that consumes handled this order's events, and each that produces
    // published them.
    for service in &EVERY_SERVICE[1..] {
        assert!(
            handled.iter().any(|s| s.service == *service),
            "no message span from {service}: {spans:#?}"
        );
    }
    for service in [
        "orderflow-order",
        "orderflow-payment",
        "orderflow-inventory",
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.service == service && s.name == "publish"),
            "no publish span from {service}"
        );
    }
}

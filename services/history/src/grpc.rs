//! The history service's gRPC API (`orderflow.internal.v1.HistoryStore`), called by the
//! gateway once it has checked that the caller may read the order.

use orderflow_domain::OrderId;
use orderflow_proto::internal::v1::history_store_server::{HistoryStore, HistoryStoreServer};
use orderflow_proto::v1 as pb;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::HistoryError;
use crate::store::{self, Entry};

/// The `HistoryStore` service over the history database.
pub struct HistoryApi {
    pub pool: PgPool,
}

/// Serves `api` on `listener` (over TLS unless `tls` is None) until `shutdown`.
pub async fn serve(
    api: HistoryApi,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        // One span per call, a child of the caller's when it passes its trace on.
        .layer(orderflow_platform::trace::grpc_layer())
        .add_service(HistoryStoreServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.cancelled().await
        })
        .await?;
    Ok(())
}

/// The timeline message of `entries` (oldest first), each with the time since the one before.
pub fn timeline(order_id: &OrderId, entries: &[Entry]) -> pb::OrderTimeline {
    let mut previous: Option<chrono::DateTime<chrono::Utc>> = None;
    let entries = entries
        .iter()
        .map(|e| {
            let since = previous
                .map(|p| (e.occurred_at - p).num_milliseconds().max(0))
                .unwrap_or(0);
            previous = Some(e.occurred_at);
            pb::TimelineEntry {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: e.occurred_at.timestamp(),
                    nanos: e.occurred_at.timestamp_subsec_nanos() as i32,
                }),
                event_type: e.event_type.clone(),
                summary: e.summary.clone(),
                producer: e.producer.clone(),
                topic: e.topic.clone(),
                partition: e.partition,
                offset: e.offset,
                event_id: e.event_id.clone().unwrap_or_default(),
                trace_id: e.trace_id.clone().unwrap_or_default(),
                since_previous_ms: since,
                redriven_from: e.redriven_from.clone().unwrap_or_default(),
            }
        })
        .collect();
    pb::OrderTimeline {
        order_id: order_id.to_string(),
        entries,
    }
}

#[tonic::async_trait]
impl HistoryStore for HistoryApi {
    async fn get_timeline(
        &self,
        request: Request<pb::GetOrderTimelineRequest>,
    ) -> Result<Response<pb::OrderTimeline>, Status> {
        let order_id =
            OrderId::parse("order_id", &request.get_ref().order_id).map_err(HistoryError::from)?;
        let entries = store::timeline(&self.pool, order_id.as_uuid())
            .await
            .map_err(HistoryError::from)?;
        Ok(Response::new(timeline(&order_id, &entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn entry(at_ms: i64, event_type: &str) -> Entry {
        Entry {
            topic: "orders".into(),
            partition: 0,
            offset: at_ms,
            order_id: uuid::Uuid::nil(),
            event_type: event_type.into(),
            event_id: None,
            producer: "order".into(),
            summary: String::new(),
            occurred_at: DateTime::from_timestamp_millis(at_ms).unwrap(),
            logged_at: None,
            trace_id: None,
            redriven_from: None,
        }
    }

    #[test]
    fn each_entry_says_how_long_after_the_previous_it_came() {
        let order = OrderId::generate();
        let t = timeline(
            &order,
            &[
                entry(1_000, "OrderCreated"),
                entry(1_031, "PaymentProcessed"),
                entry(1_250, "InventoryUpdated"),
            ],
        );
        let since: Vec<i64> = t.entries.iter().map(|e| e.since_previous_ms).collect();
        assert_eq!(since, [0, 31, 219]);
        assert_eq!(t.order_id, order.to_string());
        assert_eq!(t.entries[1].occurred_at.unwrap().nanos, 31_000_000);
    }
}

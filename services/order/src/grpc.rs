//! The order service's gRPC API (`orderflow.internal.v1.OrderStore`), called by the gateway.
//! Handlers are thin: validate into domain types, call the store, convert back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use orderflow_domain::{CustomerId, NewOrder, OrderId, ValidationError};
use orderflow_events::Topics;
use orderflow_proto::internal::v1::order_store_server::{OrderStore, OrderStoreServer};
use orderflow_proto::internal::v1::{GetOrderHistoryRequest, OrderHistory};
use orderflow_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::OrderError;
use crate::metrics::BatchMetrics;
use crate::placer::Placer;
use crate::reader::HistoryReader;
use crate::store::{Cursor, OrderRecord, StatusChange, Store};

/// The `OrderStore` service over the order database.
pub struct OrderApi {
    store: Store,
    placer: Placer,
    reader: HistoryReader,
}

impl OrderApi {
    /// An API over `store` that publishes to `topics`; new orders are written together
    /// ([`Placer`]), and histories read together ([`HistoryReader`]), each batch counted in
    /// `batches`.
    pub fn new(store: Store, topics: Topics, batches: BatchMetrics) -> Self {
        let placer = Placer::start(store.clone(), topics, batches.clone());
        let reader = HistoryReader::start(store.clone(), batches);
        OrderApi {
            store,
            placer,
            reader,
        }
    }
}

/// Serves `api` on `listener` (over TLS unless `tls` is None) until `shutdown`.
pub async fn serve(
    api: OrderApi,
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
        .add_service(OrderStoreServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.cancelled().await
        })
        .await?;
    Ok(())
}

const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;

/// Page tokens are opaque to clients: the (created_at, order_id) of the last order shown.
fn encode_cursor((at, id): Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

fn decode_cursor(token: &str) -> Result<Cursor, ValidationError> {
    let bad = || ValidationError::new("page_token", "is not a token returned by ListOrders");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

#[tonic::async_trait]
impl OrderStore for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let order = NewOrder::try_from(request.get_ref()).map_err(OrderError::from)?;
        if request.get_ref().validate_only {
            self.store.admission(&order).await?.check_new(&order)?;
            return Ok(Response::new(pb::PlaceOrderResponse {
                order: None,
                created: false,
            }));
        }
        let placed = self.placer.place(order).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some((&placed.record).into()),
            created: placed.created,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order_id =
            OrderId::parse("order_id", &request.get_ref().order_id).map_err(OrderError::from)?;
        let record = self.store.get(order_id).await?;
        Ok(Response::new((&record).into()))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let req = request.get_ref();
        let customer_id =
            CustomerId::parse("customer_id", &req.customer_id).map_err(OrderError::from)?;
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE,
            n if (1..=MAX_PAGE).contains(&n) => n,
            n => {
                return Err(OrderError::from(ValidationError::new(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE}, got {n}"),
                ))
                .into());
            }
        };
        let cursor = if req.page_token.is_empty() {
            None
        } else {
            Some(decode_cursor(&req.page_token).map_err(OrderError::from)?)
        };
        let mut records = self
            .store
            .list(&customer_id, cursor, i64::from(page_size) + 1)
            .await?;
        let next_page_token = if records.len() > page_size as usize {
            records.truncate(page_size as usize);
            let last = records.last().expect("non-empty page");
            encode_cursor((last.created_at, last.order_id.as_uuid()))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: records.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_order_history(
        &self,
        request: Request<GetOrderHistoryRequest>,
    ) -> Result<Response<OrderHistory>, Status> {
        let req = request.get_ref();
        let order_id = OrderId::parse("order_id", &req.order_id).map_err(OrderError::from)?;
        if req.after_version < 0 {
            return Err(OrderError::from(ValidationError::new(
                "after_version",
                "must not be negative",
            ))
            .into());
        }
        let (record, changes) = self.reader.read(order_id, req.after_version).await?;
        Ok(Response::new(OrderHistory {
            order: Some((&record).into()),
            changes: changes.iter().map(|c| update(order_id, c)).collect(),
        }))
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

impl From<&OrderRecord> for pb::Order {
    fn from(o: &OrderRecord) -> pb::Order {
        pb::Order {
            order_id: o.order_id.to_string(),
            customer_id: o.customer_id.to_string(),
            items: o.items.iter().map(Into::into).collect(),
            total: Some(o.total.into()),
            status: pb::OrderStatus::from(o.status).into(),
            version: o.version,
            status_reason: o.status_reason.clone().unwrap_or_default(),
            missing_items: o.missing_items.iter().map(Into::into).collect(),
            created_at: Some(timestamp(o.created_at)),
            updated_at: Some(timestamp(o.updated_at)),
        }
    }
}

/// One recorded change of `order_id`, as a WatchOrder stream sends it.
fn update(order_id: OrderId, change: &StatusChange) -> pb::OrderUpdate {
    pb::OrderUpdate {
        order_id: order_id.to_string(),
        version: change.version,
        status: pb::OrderStatus::from(change.status).into(),
        reason: change.reason.clone().unwrap_or_default(),
        occurred_at: Some(timestamp(change.occurred_at)),
        order: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_names_the_field() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = uuid::Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor((at, id))).unwrap(), (at, id));
        assert_eq!(decode_cursor("!!").unwrap_err().field, "page_token");
        assert_eq!(
            decode_cursor(&URL_SAFE_NO_PAD.encode("12|nope"))
                .unwrap_err()
                .field,
            "page_token"
        );
    }
}

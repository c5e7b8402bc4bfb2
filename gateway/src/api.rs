//! The public gRPC services. Handlers validate into domain types (so a bad request is
//! refused before anything is stored), forward to the owning service, and convert back.

use std::sync::Arc;

use orderflow_domain::{NewOrder, OrderId, OrderStatus, Sku, ValidationError};
use orderflow_platform::trace::TracedChannel;
use orderflow_proto::convert::order_status;
use orderflow_proto::internal::v1::GetOrderHistoryRequest;
use orderflow_proto::internal::v1::analytics_store_client::AnalyticsStoreClient;
use orderflow_proto::internal::v1::history_store_client::HistoryStoreClient;
use orderflow_proto::internal::v1::order_store_client::OrderStoreClient;
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::inventory_service_server::InventoryService;
use orderflow_proto::v1::order_service_server::OrderService;
use orderflow_proto::v1::stats_service_server::StatsService;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::access::Access;
use crate::error::GatewayError;
use crate::hub::{Change, Hub};
use crate::streams::StreamLimits;

/// Whether a message's status ends the order's life (a stream ends after it).
fn is_terminal(status: i32) -> bool {
    order_status(status).is_some_and(OrderStatus::is_terminal)
}

#[derive(Clone)]
pub struct OrderApi {
    pub orders: OrderStoreClient<TracedChannel>,
    /// The history service, which keeps every order's timeline.
    pub history: HistoryStoreClient<TracedChannel>,
    pub hub: Arc<Hub>,
    /// True once the status feed is positioned: a watch served before could miss a change.
    pub feed_ready: watch::Receiver<bool>,
    /// Bounds on open WatchOrder streams.
    pub streams: Arc<StreamLimits>,
    pub shutdown: CancellationToken,
    /// WatchOrder streams opened (the hub gauges those still open).
    pub streams_opened: Counter,
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let access = Access::of(&request)?;
        let mut order = request.into_inner();
        order.customer_id = access.customer_for(&order.customer_id)?;
        NewOrder::try_from(&order).map_err(GatewayError::from)?;
        let response = self
            .orders
            .clone()
            .place_order(order)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(response.into_inner()))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let access = Access::of(&request)?;
        OrderId::parse("order_id", &request.get_ref().order_id).map_err(GatewayError::from)?;
        let order = self
            .orders
            .clone()
            .get_order(request.into_inner())
            .await
            .map_err(GatewayError::from)?
            .into_inner();
        if !access.may_read(&order.customer_id) {
            return Err(GatewayError::NotFound(order.order_id).into());
        }
        Ok(Response::new(order))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let access = Access::of(&request)?;
        let mut list = request.into_inner();
        list.customer_id = access.customer_for(&list.customer_id)?;
        orderflow_domain::CustomerId::parse("customer_id", &list.customer_id)
            .map_err(GatewayError::from)?;
        let response = self
            .orders
            .clone()
            .list_orders(list)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(response.into_inner()))
    }

    /// Authorized as GetOrder is (the order service says whose order it is; another
    /// customer's order is NOT_FOUND), then read from the history service.
    async fn get_order_timeline(
        &self,
        request: Request<pb::GetOrderTimelineRequest>,
    ) -> Result<Response<pb::OrderTimeline>, Status> {
        let access = Access::of(&request)?;
        let order_id = request.get_ref().order_id.clone();
        OrderId::parse("order_id", &order_id).map_err(GatewayError::from)?;
        let order = self
            .orders
            .clone()
            .get_order(pb::GetOrderRequest {
                order_id: order_id.clone(),
            })
            .await
            .map_err(GatewayError::from)?
            .into_inner();
        if !access.may_read(&order.customer_id) {
            return Err(GatewayError::NotFound(order.order_id).into());
        }
        let timeline = self
            .history
            .clone()
            .get_timeline(request.into_inner())
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(timeline.into_inner()))
    }

    type WatchOrderStream = ReceiverStream<Result<pb::OrderUpdate, Status>>;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let access = Access::of(&request)?;
        // The client's connection, for the per-connection bound.
        let connection = request.remote_addr();
        let req = request.into_inner();
        let order_id = OrderId::parse("order_id", &req.order_id)
            .map_err(GatewayError::from)?
            .to_string();
        if req.after_version < 0 {
            return Err(GatewayError::from(ValidationError::new(
                "after_version",
                "must not be negative",
            ))
            .into());
        }
        if !*self.feed_ready.borrow() {
            return Err(GatewayError::FeedNotReady.into());
        }
        // Held by the stream's task: the place is taken until the stream ends.
        let permit = self.streams.try_open(connection, access.identity())?;
        // Subscribe before reading the history, so no change falls between the two.
        let mut subscription = self.hub.subscribe(&order_id);
        let mut orders = self.orders.clone();
        let history = orders
            .get_order_history(GetOrderHistoryRequest {
                order_id: order_id.clone(),
                after_version: req.after_version,
            })
            .await
            .map_err(GatewayError::from)?
            .into_inner();
        let order = history
            .order
            .ok_or_else(|| Status::internal("order service returned no order"))?;
        if !access.may_read(&order.customer_id) {
            return Err(GatewayError::NotFound(order.order_id).into());
        }
        if req.after_version > order.version {
            // Changes up to after_version would be taken as seen: the stream would never end.
            return Err(GatewayError::AheadOfOrder {
                after_version: req.after_version,
                current: order.version,
            }
            .into());
        }
        let (tx, rx) = mpsc::channel(16);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut watcher = Watcher {
                tx,
                last_version: req.after_version,
                status: order.status,
                order_id,
                orders,
            };
            if req.after_version == 0 {
                let snapshot = pb::OrderUpdate {
                    order_id: order.order_id.clone(),
                    version: order.version,
                    status: order.status,
                    reason: order.status_reason.clone(),
                    occurred_at: order.updated_at,
                    order: Some(order),
                };
                if !watcher.send(snapshot).await {
                    return;
                }
            } else {
                for change in history.changes {
                    if !watcher.send(change).await {
                        return;
                    }
                }
            }
            while !is_terminal(watcher.status) {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = watcher.tx.send(Err(Status::unavailable(format!(
                            "gateway shutting down; resume with after_version={}", watcher.last_version
                        )))).await;
                        return;
                    }
                    // The client went away (its stream was reset, or its connection closed,
                    // e.g. after unanswered keepalive pings).
                    _ = watcher.tx.closed() => return,
                    next = subscription.receiver.recv() => next,
                };
                let ok = match next {
                    Ok(Change::Update(update)) if update.version <= watcher.last_version => true,
                    Ok(Change::Update(update)) if update.version == watcher.last_version + 1 => {
                        watcher.send(Arc::unwrap_or_clone(update)).await
                    }
                    // A gap (missed or reordered change), a lagging receiver, or a feed that
                    // skipped an event or was repositioned: read the missing changes from the
                    // owner, in order.
                    Ok(Change::Update(_) | Change::Resync)
                    | Err(broadcast::error::RecvError::Lagged(_)) => watcher.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => false,
                };
                if !ok {
                    return;
                }
            }
        });
        self.streams_opened.inc();
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One WatchOrder stream's position.
struct Watcher {
    tx: mpsc::Sender<Result<pb::OrderUpdate, Status>>,
    last_version: i64,
    status: i32,
    order_id: String,
    orders: OrderStoreClient<TracedChannel>,
}

impl Watcher {
    /// Sends one update; false when the client has gone.
    async fn send(&mut self, update: pb::OrderUpdate) -> bool {
        self.last_version = self.last_version.max(update.version);
        self.status = update.status;
        self.tx.send(Ok(update)).await.is_ok()
    }

    /// Sends every change after the last one sent, read from the order service.
    async fn catch_up(&mut self) -> bool {
        let request = GetOrderHistoryRequest {
            order_id: self.order_id.clone(),
            after_version: self.last_version,
        };
        match self.orders.get_order_history(request).await {
            Ok(history) => {
                for change in history.into_inner().changes {
                    if !self.send(change).await {
                        return false;
                    }
                }
                true
            }
            Err(status) => {
                let _ = self
                    .tx
                    .send(Err(Status::new(status.code(), status.message().to_owned())))
                    .await;
                false
            }
        }
    }
}

#[derive(Clone)]
pub struct InventoryApi {
    pub inventory: InventoryServiceClient<TracedChannel>,
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        Sku::parse("sku", &request.get_ref().sku).map_err(GatewayError::from)?;
        Ok(Response::new(
            self.inventory
                .clone()
                .get_stock(request.into_inner())
                .await
                .map_err(GatewayError::from)?
                .into_inner(),
        ))
    }

    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        Access::of(&request)?.require_operator("SetStock")?;
        Sku::parse("sku", &request.get_ref().sku).map_err(GatewayError::from)?;
        if request.get_ref().available < 0 {
            return Err(GatewayError::from(ValidationError::new(
                "available",
                "must not be negative",
            ))
            .into());
        }
        Ok(Response::new(
            self.inventory
                .clone()
                .set_stock(request.into_inner())
                .await
                .map_err(GatewayError::from)?
                .into_inner(),
        ))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        Access::of(&request)?.require_operator("AdjustStock")?;
        Sku::parse("sku", &request.get_ref().sku).map_err(GatewayError::from)?;
        Ok(Response::new(
            self.inventory
                .clone()
                .adjust_stock(request.into_inner())
                .await
                .map_err(GatewayError::from)?
                .into_inner(),
        ))
    }
}

/// The figures over every order, for operators, from the analytics service.
#[derive(Clone)]
pub struct StatsApi {
    pub analytics: AnalyticsStoreClient<TracedChannel>,
}

#[tonic::async_trait]
impl StatsService for StatsApi {
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        Access::of(&request)?.require_operator("GetStats")?;
        Ok(Response::new(
            self.analytics
                .clone()
                .get_stats(request.into_inner())
                .await
                .map_err(GatewayError::from)?
                .into_inner(),
        ))
    }
}

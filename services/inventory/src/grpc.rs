//! Stock administration over gRPC (`orderflow.v1.InventoryService`), called by the gateway.
//! Handlers are thin: validate into domain types, call the store, convert back.

use orderflow_domain::{Sku, StockDelta, StockLevel};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::InventoryError;
use crate::store::Store;

/// The `InventoryService` over the stock table.
pub struct InventoryApi {
    store: Store,
}

impl InventoryApi {
    /// An API over `store`.
    pub fn new(store: Store) -> Self {
        InventoryApi { store }
    }
}

/// Serves `api` on `listener` (over TLS unless `tls` is None) until `shutdown`.
pub async fn serve(
    api: InventoryApi,
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
        .add_service(InventoryServiceServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.cancelled().await
        })
        .await?;
    Ok(())
}

fn level(sku: Sku, available: i32) -> Response<pb::StockLevel> {
    Response::new(pb::StockLevel {
        sku: sku.to_string(),
        available,
    })
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let sku = Sku::parse("sku", &request.get_ref().sku).map_err(InventoryError::from)?;
        let available = self.store.available(&sku).await?;
        Ok(level(sku, available))
    }

    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let req = request.get_ref();
        let sku = Sku::parse("sku", &req.sku).map_err(InventoryError::from)?;
        let target = StockLevel::parse("available", i64::from(req.available))
            .map_err(InventoryError::from)?;
        let available = self.store.set(&sku, target).await?;
        Ok(level(sku, available))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let req = request.get_ref();
        let sku = Sku::parse("sku", &req.sku).map_err(InventoryError::from)?;
        let delta =
            StockDelta::parse("delta", i64::from(req.delta)).map_err(InventoryError::from)?;
        let available = self.store.adjust(&sku, delta).await?;
        Ok(level(sku, available))
    }
}

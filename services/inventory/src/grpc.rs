//! Stock administration over gRPC (`orderflow.v1.InventoryService`), called by the gateway.

use orderflow_domain::{Sku, ValidationError};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_server::InventoryService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

pub struct InventoryApi {
    pub pool: PgPool,
}

fn invalid(e: ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn storage(e: sqlx::Error) -> Status {
    if orderflow_db::is_transient(&e) {
        tracing::warn!(error = %e, "database unavailable");
        Status::unavailable("stock storage is temporarily unavailable, retry")
    } else {
        tracing::error!(error = %e, "stock storage error");
        Status::internal("internal error")
    }
}

/// Largest stock a SKU may hold (fits the database's INT with room for arithmetic).
const MAX_STOCK: i64 = 1_000_000_000;

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let sku = Sku::parse("sku", &request.get_ref().sku).map_err(invalid)?;
        let available: Option<i32> =
            sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
                .bind(sku.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(storage)?;
        Ok(Response::new(pb::StockLevel {
            sku: sku.to_string(),
            available: available.unwrap_or(0),
        }))
    }

    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let req = request.get_ref();
        let sku = Sku::parse("sku", &req.sku).map_err(invalid)?;
        if req.available < 0 || i64::from(req.available) > MAX_STOCK {
            return Err(invalid(ValidationError::new(
                "available",
                format!("must be between 0 and {MAX_STOCK}, got {}", req.available),
            )));
        }
        let available: i32 = sqlx::query_scalar(
            "INSERT INTO stock (sku, available) VALUES ($1, $2)
             ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, updated_at = now() RETURNING available",
        )
        .bind(sku.as_str())
        .bind(req.available)
        .fetch_one(&self.pool)
        .await
        .map_err(storage)?;
        tracing::info!(%sku, available, "stock set");
        Ok(Response::new(pb::StockLevel {
            sku: sku.to_string(),
            available,
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let req = request.get_ref();
        let sku = Sku::parse("sku", &req.sku).map_err(invalid)?;
        if req.delta == 0 || i64::from(req.delta).abs() > MAX_STOCK {
            return Err(invalid(ValidationError::new(
                "delta",
                format!(
                    "must be non-zero and at most {MAX_STOCK} in size, got {}",
                    req.delta
                ),
            )));
        }
        let available: Option<i32> = sqlx::query_scalar(
            "INSERT INTO stock (sku, available) VALUES ($1, $2)
             ON CONFLICT (sku) DO UPDATE SET available = stock.available + $2, updated_at = now()
             WHERE stock.available + $2 BETWEEN 0 AND $3
             RETURNING available",
        )
        .bind(sku.as_str())
        .bind(req.delta)
        .bind(MAX_STOCK as i32)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| match &e {
            // A negative delta on a SKU never stocked violates available >= 0.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => invalid(
                ValidationError::new("delta", format!("would take {sku} below zero")),
            ),
            _ => storage(e),
        })?;
        let available = available.ok_or_else(|| {
            invalid(ValidationError::new(
                "delta",
                format!("would take {sku} below zero or above {MAX_STOCK}"),
            ))
        })?;
        tracing::info!(%sku, delta = req.delta, available, "stock adjusted");
        Ok(Response::new(pb::StockLevel {
            sku: sku.to_string(),
            available,
        }))
    }
}

//! The analytics service's gRPC API (`orderflow.internal.v1.AnalyticsStore`), called by the
//! gateway for operators.

use orderflow_domain::ValidationError;
use orderflow_proto::internal::v1::analytics_store_server::{AnalyticsStore, AnalyticsStoreServer};
use orderflow_proto::v1 as pb;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::AnalyticsError;
use crate::store::{self, Figures};

/// Revenue minutes returned when the request asks for none.
const DEFAULT_MINUTES: i32 = 60;
/// At most a day of minutes.
const MAX_MINUTES: i32 = 1440;

/// The `AnalyticsStore` service over the analytics database.
pub struct AnalyticsApi {
    pub pool: PgPool,
}

/// Serves `api` on `listener` (over TLS unless `tls` is None) until `shutdown`.
pub async fn serve(
    api: AnalyticsApi,
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
        .add_service(AnalyticsStoreServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.cancelled().await
        })
        .await?;
    Ok(())
}

/// The minutes of revenue a request asks for.
pub fn minutes(request: &pb::GetStatsRequest) -> Result<i64, ValidationError> {
    match request.revenue_minutes {
        0 => Ok(i64::from(DEFAULT_MINUTES)),
        n @ 1..=MAX_MINUTES => Ok(i64::from(n)),
        n => Err(ValidationError::new(
            "revenue_minutes",
            format!("must be 1 to {MAX_MINUTES} (or 0 for {DEFAULT_MINUTES}), got {n}"),
        )),
    }
}

/// The message of `figures`.
pub fn stats(figures: &Figures) -> pb::Stats {
    let decided = figures.paid + figures.declined;
    pb::Stats {
        orders: figures
            .orders
            .iter()
            .map(|(status, orders)| pb::StatusCount {
                status: pb::OrderStatus::from_str_name(&format!("ORDER_STATUS_{status}"))
                    .unwrap_or(pb::OrderStatus::Unspecified) as i32,
                orders: *orders,
            })
            .collect(),
        revenue: figures
            .revenue
            .iter()
            .map(|(minute, currency, captured, refunded)| pb::MinuteRevenue {
                minute: Some(prost_types::Timestamp {
                    seconds: minute.timestamp(),
                    nanos: 0,
                }),
                currency: currency.clone(),
                captured_minor: *captured,
                refunded_minor: *refunded,
            })
            .collect(),
        payments: Some(pb::PaymentOutcomes {
            paid: figures.paid,
            declined: figures.declined,
            decline_rate: if decided == 0 {
                0.0
            } else {
                figures.declined as f64 / decided as f64
            },
        }),
        stock_outs: figures
            .stock_outs
            .iter()
            .map(|(sku, orders, short)| pb::StockOut {
                sku: sku.clone(),
                orders: *orders,
                units_short: *short,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AnalyticsStore for AnalyticsApi {
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        let minutes = minutes(request.get_ref()).map_err(AnalyticsError::from)?;
        let figures = store::figures(&self.pool, minutes)
            .await
            .map_err(AnalyticsError::from)?;
        Ok(Response::new(stats(&figures)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decline_rate_is_declined_over_decided_and_zero_before_any() {
        let figures = Figures {
            orders: vec![("COMPLETED".into(), 3), ("REFUNDED".into(), 1)],
            paid: 3,
            declined: 1,
            ..Figures::default()
        };
        let stats = stats(&figures);
        assert_eq!(stats.payments.unwrap().decline_rate, 0.25);
        assert_eq!(stats.orders[0].status, pb::OrderStatus::Completed as i32);
        assert_eq!(stats.orders[1].status, pb::OrderStatus::Refunded as i32);
        assert_eq!(
            super::stats(&Figures::default())
                .payments
                .unwrap()
                .decline_rate,
            0.0
        );
    }

    #[test]
    fn minutes_default_to_an_hour_and_are_bounded_by_a_day() {
        let ask = |n| minutes(&pb::GetStatsRequest { revenue_minutes: n });
        assert_eq!(ask(0).unwrap(), 60);
        assert_eq!(ask(5).unwrap(), 5);
        let refused = ask(1441).unwrap_err().to_string();
        assert!(
            refused.starts_with("revenue_minutes: must be 1 to 1440"),
            "{refused}"
        );
        assert!(ask(-1).is_err());
    }
}

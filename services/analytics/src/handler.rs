//! Turns each event into its small write to the figures. Each event counts once: the
//! platform's consumer loop records its id (`processed_events`) in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_events::{Event, InventoryStatus, OrderStatus, PaymentStatus};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::store;

/// The analytics service's reaction to an event: its figures move, nothing is published.
pub struct AnalyticsHandler;

fn time(millis: i64, ctx: &MessageContext) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis)
        .or(ctx.logged_at)
        .unwrap_or_else(Utc::now)
}

/// The name a status is counted under: the domain's (`PENDING`, ...), as the API's
/// `ORDER_STATUS_*` without the prefix; `UNKNOWN` for the Avro enum's default symbol.
pub fn status_name(status: OrderStatus) -> &'static str {
    orderflow_domain::OrderStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str())
}

#[async_trait]
impl Handler for AnalyticsHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        match event {
            Event::OrderStatusChanged(e) => {
                let order_id = e.order_id.parse().map_err(|_| {
                    HandleError::invalid(format!("order_id {:?} is not a UUID", e.order_id))
                })?;
                store::order_status(
                    &mut **tx,
                    order_id,
                    status_name(e.status),
                    e.version,
                    time(e.occurred_at, ctx),
                )
                .await?;
            }
            Event::PaymentProcessed(e) => match e.status {
                PaymentStatus::Paid => {
                    let at = time(e.occurred_at, ctx);
                    store::revenue(&mut **tx, at, &e.amount.currency, e.amount.amount_minor, 0)
                        .await?;
                    store::payment(&mut **tx, store::PAID).await?;
                }
                PaymentStatus::Failed => store::payment(&mut **tx, store::DECLINED).await?,
                PaymentStatus::Unknown => {}
            },
            Event::PaymentRefunded(e) => {
                let at = time(e.occurred_at, ctx);
                store::revenue(&mut **tx, at, &e.amount.currency, 0, e.amount.amount_minor).await?;
            }
            Event::InventoryUpdated(e) if e.status == InventoryStatus::OutOfStock => {
                for missing in &e.missing {
                    let short = i64::from(missing.requested) - i64::from(missing.available);
                    store::stock_out(&mut **tx, &missing.sku, short.max(0)).await?;
                }
            }
            // Placed orders are counted by their first status change (PENDING, v1).
            Event::OrderCreated(_)
            | Event::InventoryUpdated(_)
            | Event::CatalogueItemChanged(_)
            | Event::CustomerStatusChanged(_) => {}
        }
        Ok(Vec::new())
    }
}

//! Turns events into what they add to the figures, a batch's events summed and written
//! together. Each event counts once: the platform's consumer loop records its id
//! (`processed_events`) in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_events::{Event, InventoryStatus, OrderStatus, PaymentStatus};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::store::{self, Changes};

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

/// Adds what `event` does to the figures to `changes`. An order status change whose order id
/// is no UUID is refused by name.
pub fn add(changes: &mut Changes, event: &Event, ctx: &MessageContext) -> Result<(), HandleError> {
    match event {
        Event::OrderStatusChanged(e) => {
            let order_id = e.order_id.parse().map_err(|_| {
                HandleError::invalid(format!("order_id {:?} is not a UUID", e.order_id))
            })?;
            changes.order_status(
                order_id,
                status_name(e.status),
                e.version,
                time(e.occurred_at, ctx),
            );
        }
        Event::PaymentProcessed(e) => match e.status {
            PaymentStatus::Paid => {
                let at = time(e.occurred_at, ctx);
                changes.revenue(at, &e.amount.currency, e.amount.amount_minor, 0);
                changes.payment(store::PAID);
            }
            PaymentStatus::Failed => changes.payment(store::DECLINED),
            PaymentStatus::Unknown => {}
        },
        Event::PaymentRefunded(e) => {
            let at = time(e.occurred_at, ctx);
            changes.revenue(at, &e.amount.currency, 0, e.amount.amount_minor);
        }
        Event::InventoryUpdated(e) if e.status == InventoryStatus::OutOfStock => {
            for missing in &e.missing {
                let short = i64::from(missing.requested) - i64::from(missing.available);
                changes.stock_out(&missing.sku, short.max(0));
            }
        }
        // Placed orders are counted by their first status change (PENDING, v1).
        Event::OrderCreated(_)
        | Event::InventoryUpdated(_)
        | Event::CatalogueItemChanged(_)
        | Event::CustomerStatusChanged(_) => {}
    }
    Ok(())
}

#[async_trait]
impl Handler for AnalyticsHandler {
    /// The messages' events summed, then written in at most one statement per table.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        let mut changes = Changes::default();
        for (event, ctx) in messages {
            add(&mut changes, event, ctx)?;
        }
        if !changes.is_empty() {
            store::record(tx, &changes).await?;
        }
        Ok(vec![Vec::new(); messages.len()])
    }
}

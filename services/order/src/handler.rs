//! The order service's reaction to payment and inventory outcomes: each event becomes an
//! [`OrderOutcome`], which the store applies through the state machine. Catalogue and
//! customer directory entries update the read models PlaceOrder is judged against.

use async_trait::async_trait;
use orderflow_domain::{
    CatalogueEntry, CustomerEntry, OrderId, OrderOutcome, PaymentOutcome, StockSettlement,
};
use orderflow_events::Event;
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::error::OrderError;
use crate::metrics::TransitionMetrics;
use crate::store;

/// Applies payment and inventory outcomes through the state machine.
pub struct OrderHandler {
    pub transitions: TransitionMetrics,
}

/// What an event means for its order, or `None` for events this service does not act on.
fn outcome_of(event: &Event) -> Result<Option<OrderOutcome>, OrderError> {
    Ok(Some(match event {
        Event::PaymentProcessed(payment) => PaymentOutcome::try_from(payment)?.into(),
        Event::InventoryUpdated(update) => {
            OrderOutcome::try_from(StockSettlement::try_from(update)?)?
        }
        Event::PaymentRefunded(refund) => OrderOutcome::try_from(refund)?,
        Event::OrderCreated(_)
        | Event::OrderStatusChanged(_)
        | Event::CatalogueItemChanged(_)
        | Event::CustomerStatusChanged(_) => {
            return Ok(None);
        }
    }))
}

#[async_trait]
impl Handler for OrderHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        _ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        match event {
            Event::CatalogueItemChanged(entry) => {
                let entry = CatalogueEntry::try_from(entry).map_err(OrderError::from)?;
                store::record_catalogue(tx, &entry).await?;
                return Ok(Vec::new());
            }
            Event::CustomerStatusChanged(entry) => {
                let entry = CustomerEntry::try_from(entry).map_err(OrderError::from)?;
                store::record_customer(tx, &entry).await?;
                return Ok(Vec::new());
            }
            _ => {}
        }
        let Some(outcome) = outcome_of(event)? else {
            return Ok(Vec::new());
        };
        Ok(store::apply(tx, &outcome, &self.transitions).await?)
    }

    /// Locks every order the batch moves at once, in order-id order: applied one after
    /// another, a batch would lock them in arrival order, and two instances (one consuming an
    /// order's `payments` partition, the other its `inventory` partition) could deadlock.
    async fn lock_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[&Event],
    ) -> Result<(), HandleError> {
        let orders: Vec<OrderId> = events
            .iter()
            .filter(|event| !matches!(event, Event::OrderCreated(_) | Event::OrderStatusChanged(_)))
            // An invalid id is refused when its event is handled.
            .filter_map(|event| OrderId::parse("order_id", event.order_id()?).ok())
            .collect();
        Ok(store::lock_orders(tx, &orders).await?)
    }
}

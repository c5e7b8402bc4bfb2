//! The inventory service's reaction to payments: for a PAID order, deduct every line or
//! none, and publish the new stock level of each SKU deducted on the catalogue. The decision is the domain's [`settle`]; the store locks the order's rows in SKU
//! order first, and a batch's rows all at once in SKU order before its first order (no
//! deadlocks between concurrent orders or batches), and the `available >= 0` constraint
//! backs the rule, so stock never goes below zero.

use async_trait::async_trait;
use orderflow_domain::{PaymentOutcome, PaymentResult, StockDecision, StockRequest, settle};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::error::InventoryError;
use crate::store;

/// Settles the stock of every paid order.
pub struct InventoryHandler;

impl InventoryHandler {
    async fn settle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        payment: &ev::PaymentProcessed,
    ) -> Result<Vec<Event>, InventoryError> {
        // Stock is touched only for a paid order.
        let PaymentResult::Paid = PaymentOutcome::try_from(payment)?.result else {
            return Ok(Vec::new());
        };
        let StockRequest { order_id, units } = StockRequest::try_from(payment)?;
        if store::is_settled(tx, order_id).await? {
            tracing::info!(%order_id, "stock already settled for this order");
            return Ok(Vec::new());
        }
        let available = store::lock_available(tx, &units).await?;
        let decision = settle(&units, &available);
        let catalogue = if decision == StockDecision::Confirmed {
            store::deduct(tx, &units).await?
        } else {
            Vec::new()
        };
        store::record_reservation(tx, order_id, &units, &decision).await?;
        let status = ev::InventoryStatus::from(&decision);
        let missing = decision.missing();
        tracing::info!(%order_id, ?status, missing = missing.len(), "stock settled");
        let settled = Event::InventoryUpdated(ev::InventoryUpdated {
            event_id: ev::new_event_id(),
            order_id: order_id.to_string(),
            occurred_at: ev::now_millis(),
            status,
            items: units.iter().map(Into::into).collect(),
            missing: missing.iter().map(Into::into).collect(),
        });
        // The order's outcome first, then the new stock levels of the catalogue.
        Ok(std::iter::once(settled).chain(catalogue).collect())
    }
}

#[async_trait]
impl Handler for InventoryHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        _ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        match event {
            Event::PaymentProcessed(payment) => Ok(self.settle(tx, payment).await?),
            _ => Ok(Vec::new()),
        }
    }

    /// Locks the stock rows of every paid order in the batch at once, in SKU order: each
    /// order locks its own SKUs in that order, but a batch's orders one after another would
    /// lock them in arrival order, and two instances sharing SKUs could deadlock.
    async fn lock_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[&Event],
    ) -> Result<(), HandleError> {
        let skus: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                Event::PaymentProcessed(p) if p.status == ev::PaymentStatus::Paid => {
                    Some(p.items.iter().map(|line| line.sku.as_str()))
                }
                _ => None,
            })
            .flatten()
            .collect();
        Ok(store::lock_skus(tx, &skus).await?)
    }
}

//! The inventory service's reaction to payments: for a PAID order, deduct every line or
//! none, and publish the new stock level of each SKU deducted on the catalogue. The decision
//! is the domain's [`orderflow_domain::settle`], order after order; the store locks every
//! row the orders need at once, in SKU order (no deadlocks between concurrent batches), and
//! the `available >= 0` constraint backs the rule, so stock never goes below zero. A batch's
//! paid orders are settled together, in four statements.

use async_trait::async_trait;
use orderflow_domain::{PaymentOutcome, PaymentResult, StockRequest};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::error::InventoryError;
use crate::store::{self, Settlement};

/// Settles the stock of every paid order.
pub struct InventoryHandler;

/// What a payment asks of the stock: the units of a paid order, or nothing.
fn stock_request(event: &Event) -> Result<Option<StockRequest>, InventoryError> {
    let Event::PaymentProcessed(payment) = event else {
        return Ok(None);
    };
    // Stock is touched only for a paid order.
    let PaymentResult::Paid = PaymentOutcome::try_from(payment)?.result else {
        return Ok(None);
    };
    Ok(Some(StockRequest::try_from(payment)?))
}

/// The events a settled order causes: its outcome first, then the new stock levels of the
/// catalogue.
fn settled_events(request: &StockRequest, settlement: Settlement) -> Vec<Event> {
    let StockRequest { order_id, units } = request;
    let status = ev::InventoryStatus::from(&settlement.decision);
    let missing = settlement.decision.missing();
    tracing::info!(%order_id, ?status, missing = missing.len(), "stock settled");
    let settled = Event::InventoryUpdated(ev::InventoryUpdated {
        event_id: ev::new_event_id(),
        order_id: order_id.to_string(),
        occurred_at: ev::now_millis(),
        status,
        items: units.iter().map(Into::into).collect(),
        missing: missing.iter().map(Into::into).collect(),
    });
    std::iter::once(settled)
        .chain(settlement.catalogue)
        .collect()
}

#[async_trait]
impl Handler for InventoryHandler {
    /// The paid orders among the messages settled together (`store::settle_all`): four
    /// statements, not four per order. The first locks every stock row they need at once, in
    /// SKU order, before anything is read or written, so two instances whose batches share
    /// SKUs do not deadlock. A message the service refuses fails them all.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[(&Event, &MessageContext)],
    ) -> Result<Vec<Vec<Event>>, HandleError> {
        // Which events ask for stock, and what they ask.
        let mut requests = Vec::new();
        let mut asks = Vec::with_capacity(messages.len());
        for (event, _) in messages {
            let request = stock_request(event)?;
            asks.push(request.is_some());
            requests.extend(request);
        }
        let settlements = store::settle_all(tx, &requests).await?;
        let mut settled = requests.iter().zip(settlements);
        Ok(asks
            .into_iter()
            .map(|asks| {
                if !asks {
                    return Vec::new();
                }
                match settled.next().expect("one settlement per request") {
                    (request, Some(settlement)) => settled_events(request, settlement),
                    // Settled before: nothing again.
                    (_, None) => Vec::new(),
                }
            })
            .collect())
    }
}

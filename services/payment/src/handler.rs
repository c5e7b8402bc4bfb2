//! The payment service's reaction to events: charge on OrderCreated, refund on
//! InventoryUpdated OUT_OF_STOCK. One charge row and at most one refund row per order, so
//! a redelivered or re-published event never charges or refunds twice.

use std::sync::Arc;

use async_trait::async_trait;
use orderflow_domain::{
    MissingItem, OrderId, PaymentResult, PlacedOrder, StockSettlement, describe_missing,
};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::error::PaymentError;
use crate::provider::{ChargeOutcome, ChargeRequest, PaymentProvider};
use crate::store::{self, NewCharge, NewRefund};

/// Charges placed orders and refunds out-of-stock ones through `provider`.
pub struct PaymentHandler {
    pub provider: Arc<dyn PaymentProvider>,
    /// Attempts at an unavailable provider before the payment is recorded as FAILED.
    pub charge_attempts: u32,
    /// Attempts at an unavailable provider before a refund is dead-lettered for re-drive.
    pub refund_attempts: u32,
}

#[async_trait]
impl Handler for PaymentHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        Ok(match event {
            Event::OrderCreated(order) => {
                let order = PlacedOrder::try_from(order).map_err(PaymentError::from)?;
                self.charge(tx, &order, ctx).await?
            }
            // Only an order that ran out of stock concerns payment; other stock outcomes
            // (confirmed, or a status from a newer schema) are not read any further.
            Event::InventoryUpdated(update) if update.status == ev::InventoryStatus::OutOfStock => {
                let settled = StockSettlement::try_from(update).map_err(PaymentError::from)?;
                self.refund(tx, settled.order_id, settled.decision.missing(), ctx)
                    .await?
            }
            _ => Vec::new(),
        })
    }
}

impl PaymentHandler {
    async fn charge(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        order: &PlacedOrder,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, PaymentError> {
        let order_id = order.order_id;
        if let Some(status) = store::charge_status(tx, order_id).await? {
            tracing::info!(%order_id, %status, "order already charged, not charging again");
            return Ok(Vec::new());
        }
        let request = ChargeRequest {
            idempotency_key: order_id.to_string(),
            amount_minor: order.total.amount_minor(),
            currency: order.total.currency().to_string(),
            payment_method: order.payment_method.to_string(),
        };
        let outcome = match self.provider.charge(&request).await {
            Ok(outcome) => outcome,
            Err(e) if ctx.attempt < self.charge_attempts => return Err(e.into()),
            Err(e) => ChargeOutcome::Declined {
                reason: format!(
                    "payment provider unavailable after {} attempts ({e})",
                    ctx.attempt
                ),
            },
        };
        let (result, reference) = match outcome {
            ChargeOutcome::Approved { reference } => (PaymentResult::Paid, Some(reference)),
            ChargeOutcome::Declined { reason } => (PaymentResult::Failed { reason }, None),
        };
        let payment_id = uuid::Uuid::now_v7();
        store::insert_charge(
            tx,
            &NewCharge {
                order_id,
                payment_id,
                amount: order.total,
                result: &result,
                provider_reference: reference.as_deref(),
                attempts: ctx.attempt,
            },
        )
        .await?;
        let (status, failure_reason) = match result {
            PaymentResult::Paid => (ev::PaymentStatus::Paid, None),
            PaymentResult::Failed { reason } => (ev::PaymentStatus::Failed, Some(reason)),
        };
        tracing::info!(%order_id, ?status, reason = failure_reason.as_deref().unwrap_or(""), "payment processed");
        Ok(vec![Event::PaymentProcessed(ev::PaymentProcessed {
            event_id: ev::new_event_id(),
            order_id: order_id.to_string(),
            occurred_at: ev::now_millis(),
            payment_id: payment_id.to_string(),
            status,
            amount: order.total.into(),
            items: order.items.iter().map(Into::into).collect(),
            failure_reason,
            provider_reference: reference,
        })])
    }

    async fn refund(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        order_id: OrderId,
        missing: &[MissingItem],
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, PaymentError> {
        let charge = store::lock_charge(tx, order_id)
            .await?
            .ok_or(PaymentError::NoCharge(order_id))?;
        if !charge.is_paid() {
            return Err(PaymentError::NotPaid {
                order_id,
                status: charge.status,
            });
        }
        if store::is_refunded(tx, order_id).await? {
            tracing::info!(%order_id, "already refunded");
            return Ok(Vec::new());
        }
        match self
            .provider
            .refund(&order_id.to_string(), charge.amount_minor)
            .await
        {
            Ok(_) => {}
            Err(e) if ctx.attempt < self.refund_attempts => return Err(e.into()),
            Err(source) => {
                return Err(PaymentError::RefundFailed {
                    attempts: ctx.attempt,
                    source,
                });
            }
        }
        let refund_id = uuid::Uuid::now_v7();
        let reason = describe_missing(missing);
        store::insert_refund(
            tx,
            &NewRefund {
                order_id,
                refund_id,
                charge: &charge,
                reason: &reason,
            },
        )
        .await?;
        tracing::info!(%order_id, amount_minor = charge.amount_minor, "payment refunded");
        Ok(vec![Event::PaymentRefunded(ev::PaymentRefunded {
            event_id: ev::new_event_id(),
            order_id: order_id.to_string(),
            occurred_at: ev::now_millis(),
            payment_id: charge.payment_id.to_string(),
            refund_id: refund_id.to_string(),
            amount: ev::Money {
                amount_minor: charge.amount_minor,
                currency: charge.currency,
            },
            reason,
        })])
    }
}

//! The payment service's reaction to events: charge on OrderCreated, refund on
//! InventoryUpdated OUT_OF_STOCK. One charge row and at most one refund row per order, so
//! a redelivered or re-published event never charges or refunds twice.

use std::sync::Arc;

use async_trait::async_trait;
use orderflow_domain::{Money, OrderId, OrderLine};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Row, Transaction};

use crate::provider::{ChargeOutcome, ChargeRequest, PaymentProvider};

pub struct PaymentHandler {
    pub provider: Arc<dyn PaymentProvider>,
    /// Attempts at an unavailable provider before the payment is recorded as FAILED.
    pub charge_attempts: u32,
    /// Attempts at an unavailable provider before a refund is dead-lettered for re-drive.
    pub refund_attempts: u32,
}

fn invalid(e: impl std::fmt::Display) -> HandleError {
    HandleError::invalid(e.to_string())
}

#[async_trait]
impl Handler for PaymentHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        match event {
            Event::OrderCreated(order) => self.charge(tx, order, ctx).await,
            Event::InventoryUpdated(update) if update.status == ev::InventoryStatus::OutOfStock => {
                self.refund(tx, update, ctx).await
            }
            _ => Ok(Vec::new()),
        }
    }
}

impl PaymentHandler {
    async fn charge(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        order: &ev::OrderCreated,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        let order_id = OrderId::parse("order_id", &order.order_id).map_err(invalid)?;
        let total = Money::new("total", order.total.amount_minor, &order.total.currency)
            .map_err(invalid)?;
        if order.items.is_empty() {
            return Err(HandleError::invalid("order has no items"));
        }
        for (i, line) in order.items.iter().enumerate() {
            OrderLine::parse(
                &format!("items[{i}]"),
                &line.sku,
                i64::from(line.quantity),
                Some((line.unit_price.amount_minor, &line.unit_price.currency)),
            )
            .map_err(invalid)?;
        }
        let already: Option<String> =
            sqlx::query_scalar("SELECT status FROM charges WHERE order_id = $1")
                .bind(order_id.as_uuid())
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(status) = already {
            tracing::info!(%order_id, %status, "order already charged, not charging again");
            return Ok(Vec::new());
        }
        let request = ChargeRequest {
            idempotency_key: order_id.to_string(),
            amount_minor: total.amount_minor(),
            currency: total.currency().to_string(),
            payment_method: order.payment_method.clone(),
        };
        let outcome = match self.provider.charge(&request).await {
            Ok(outcome) => outcome,
            Err(e) if ctx.attempt < self.charge_attempts => {
                return Err(HandleError::Transient(e.to_string()));
            }
            Err(e) => ChargeOutcome::Declined {
                reason: format!(
                    "payment provider unavailable after {} attempts ({e})",
                    ctx.attempt
                ),
            },
        };
        let payment_id = uuid::Uuid::now_v7();
        let (status, failure_reason, reference) = match &outcome {
            ChargeOutcome::Approved { reference } => {
                (ev::PaymentStatus::Paid, None, Some(reference.clone()))
            }
            ChargeOutcome::Declined { reason } => {
                (ev::PaymentStatus::Failed, Some(reason.clone()), None)
            }
        };
        sqlx::query(
            "INSERT INTO charges (order_id, payment_id, amount_minor, currency, status, failure_reason, provider_reference, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(order_id.as_uuid())
        .bind(payment_id)
        .bind(total.amount_minor())
        .bind(total.currency().as_str())
        .bind(if status == ev::PaymentStatus::Paid { "PAID" } else { "FAILED" })
        .bind(&failure_reason)
        .bind(&reference)
        .bind(ctx.attempt as i32)
        .execute(&mut **tx)
        .await?;
        tracing::info!(%order_id, ?status, reason = failure_reason.as_deref().unwrap_or(""), "payment processed");
        Ok(vec![Event::PaymentProcessed(ev::PaymentProcessed {
            event_id: ev::new_event_id(),
            order_id: order.order_id.clone(),
            occurred_at: ev::now_millis(),
            payment_id: payment_id.to_string(),
            status,
            amount: order.total.clone(),
            items: order.items.clone(),
            failure_reason,
            provider_reference: reference,
        })])
    }

    async fn refund(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        update: &ev::InventoryUpdated,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        let order_id = OrderId::parse("order_id", &update.order_id).map_err(invalid)?;
        let Some(charge) = sqlx::query("SELECT payment_id, amount_minor, currency, status FROM charges WHERE order_id = $1 FOR UPDATE")
            .bind(order_id.as_uuid())
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Err(HandleError::invalid(format!("no charge for order {order_id}, nothing to refund")));
        };
        let status: String = charge.get("status");
        if status != "PAID" {
            return Err(HandleError::invalid(format!(
                "order {order_id} is out of stock but its payment is {status}"
            )));
        }
        let refunded: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refunds WHERE order_id = $1)")
                .bind(order_id.as_uuid())
                .fetch_one(&mut **tx)
                .await?;
        if refunded {
            tracing::info!(%order_id, "already refunded");
            return Ok(Vec::new());
        }
        let amount_minor: i64 = charge.get("amount_minor");
        let currency: String = charge.get("currency");
        let payment_id: uuid::Uuid = charge.get("payment_id");
        match self
            .provider
            .refund(&order_id.to_string(), amount_minor)
            .await
        {
            Ok(_) => {}
            Err(e) if ctx.attempt < self.refund_attempts => {
                return Err(HandleError::Transient(e.to_string()));
            }
            Err(e) => {
                return Err(HandleError::Permanent {
                    class: "refund_failed",
                    message: format!("refund failed after {} attempts: {e}", ctx.attempt),
                });
            }
        }
        let refund_id = uuid::Uuid::now_v7();
        let reason = if update.missing.is_empty() {
            "out of stock".to_owned()
        } else {
            ev::describe_missing(&update.missing)
        };
        sqlx::query("INSERT INTO refunds (order_id, refund_id, amount_minor, currency, reason) VALUES ($1, $2, $3, $4, $5)")
            .bind(order_id.as_uuid())
            .bind(refund_id)
            .bind(amount_minor)
            .bind(&currency)
            .bind(&reason)
            .execute(&mut **tx)
            .await?;
        tracing::info!(%order_id, amount_minor, "payment refunded");
        Ok(vec![Event::PaymentRefunded(ev::PaymentRefunded {
            event_id: ev::new_event_id(),
            order_id: update.order_id.clone(),
            occurred_at: ev::now_millis(),
            payment_id: payment_id.to_string(),
            refund_id: refund_id.to_string(),
            amount: ev::Money {
                amount_minor,
                currency,
            },
            reason,
        })])
    }
}

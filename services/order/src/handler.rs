//! The order service's reaction to payment and inventory outcomes.

use async_trait::async_trait;
use orderflow_domain::{OrderId, OrderInput};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::metrics::TransitionMetrics;
use crate::store::Store;

/// Applies payment and inventory outcomes through the state machine.
pub struct OrderHandler {
    pub transitions: TransitionMetrics,
}

/// What an event means for its order, or `None` for events this service does not act on.
fn input_of(event: &Event) -> Result<Option<(OrderInput, &[ev::MissingItem])>, HandleError> {
    Ok(Some(match event {
        Event::PaymentProcessed(p) => match p.status {
            ev::PaymentStatus::Paid => (OrderInput::PaymentSucceeded, &[][..]),
            ev::PaymentStatus::Failed => (
                OrderInput::PaymentFailed {
                    reason: p
                        .failure_reason
                        .clone()
                        .unwrap_or_else(|| "payment failed".into()),
                },
                &[][..],
            ),
            ev::PaymentStatus::Unknown => {
                return Err(HandleError::invalid(
                    "payment status UNKNOWN (written by a newer schema?)",
                ));
            }
        },
        Event::InventoryUpdated(i) => match i.status {
            ev::InventoryStatus::Confirmed => (OrderInput::StockConfirmed, &[][..]),
            ev::InventoryStatus::OutOfStock => {
                if i.missing.is_empty() {
                    return Err(HandleError::invalid("OUT_OF_STOCK without missing items"));
                }
                (
                    OrderInput::StockShort {
                        reason: ev::describe_missing(&i.missing),
                    },
                    &i.missing[..],
                )
            }
            ev::InventoryStatus::Unknown => {
                return Err(HandleError::invalid(
                    "inventory status UNKNOWN (written by a newer schema?)",
                ));
            }
        },
        Event::PaymentRefunded(r) => (
            OrderInput::Refunded {
                reason: r.reason.clone(),
            },
            &[][..],
        ),
        Event::OrderCreated(_) | Event::OrderStatusChanged(_) => return Ok(None),
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
        let Some((input, missing)) = input_of(event)? else {
            return Ok(Vec::new());
        };
        let order_id = OrderId::parse("order_id", event.order_id())
            .map_err(|e| HandleError::invalid(e.to_string()))?;
        Store::apply(tx, order_id, &input, missing, &self.transitions)
            .await?
            .map_err(HandleError::invalid)
    }
}

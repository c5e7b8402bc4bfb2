//! Turns each status change into a recorded notification. Idempotent by itself, keyed by
//! (order, status) rather than by event id: a redelivery records nothing, and a status
//! change redriven from this service's dead letters puts its notification back to be
//! delivered again.

use async_trait::async_trait;
use orderflow_events::Event;
use orderflow_platform::consumer::dead_letter_topic;
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Transaction};

use crate::notification::{NotNotified, Notification};
use crate::{SERVICE, store};

/// The notifications service's reaction to an event: a notification to deliver, or nothing.
pub struct NotificationsHandler;

/// Whether `ctx`'s message was put back from this service's own dead letters.
fn redriven_from_here(ctx: &MessageContext) -> bool {
    let ours = format!("{}/", dead_letter_topic(&ctx.topic, SERVICE));
    ctx.redriven_from
        .as_deref()
        .is_some_and(|from| from.starts_with(&ours))
}

#[async_trait]
impl Handler for NotificationsHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        let Event::OrderStatusChanged(change) = event else {
            return Ok(Vec::new());
        };
        let notification = match Notification::of(change) {
            Ok(n) => n,
            Err(NotNotified::UnknownStatus) => {
                tracing::warn!(order_id = %change.order_id, version = change.version, "status unknown to this version: not notified");
                return Ok(Vec::new());
            }
            Err(NotNotified::Invalid(reason)) => return Err(HandleError::invalid(reason)),
        };
        let origin = store::Origin {
            topic: &ctx.topic,
            partition: ctx.partition,
            offset: ctx.offset,
            traceparent: ctx.trace.header(),
        };
        let event = serde_json::to_value(change).expect("an event serializes");
        let recorded = store::record(tx, &notification, &event, &origin).await?;
        if !recorded && redriven_from_here(ctx) {
            let revived = store::revive(tx, notification.order_id, notification.status).await?;
            tracing::info!(order_id = %notification.order_id, status = notification.status, revived, "redriven status change");
        }
        Ok(Vec::new())
    }

    /// Keyed by (order, status): see the module's documentation.
    fn records_event_ids(&self) -> bool {
        false
    }
}
